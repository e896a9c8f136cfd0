--- A supervisor's restart policy: whether a service that exited comes
-- back, after how long, which services come back with it, and when the
-- supervisor gives up. Plain data and arithmetic on the clock values it is
-- given: the supervisor arms the timers and changes the wishes.
--
-- A service here is one of orch.services' records: `restart`, the
-- restart delay's options, `started_at`, `pos` (its place in the start
-- order); the policy keeps `in_a_row` in it (restarts in a row).
local restarts = {}

local Restarts = {}
Restarts.__index = Restarts

--- restarts.new(spec) -> the policy of a supervisor's (checked) spec:
-- its strategy, max_restarts and restart_window, with the defaults.
function restarts.new(spec)
  return setmetatable({
    strategy = spec.strategy or "one_for_one",
    max_restarts = spec.max_restarts or 3, window = spec.restart_window or 5,
    times = {},  -- when the restarts within the window happened
  }, Restarts)
end

--- restarts.again(s, failed) -> whether s, having exited by itself
-- (failed: not with code 0), is to be restarted: always when permanent,
-- only after a failure when transient, never when temporary.
function restarts.again(s, failed)
  return s.restart == "permanent" or (s.restart == "transient" and failed)
end

--- policy:exceeded(now) -> counts a restart at now and says whether
-- there are now more than max_restarts within the window.
function Restarts:exceeded(now)
  local recent = {}
  for _, t in ipairs(self.times) do
    if now - t < self.window then recent[#recent + 1] = t end
  end
  recent[#recent + 1] = now
  self.times = recent
  return #recent > self.max_restarts
end

--- policy:forget(): the restarts counted so far no longer count (the
-- supervisor runs again after it had ended).
function Restarts:forget()
  self.times = {}
end

--- policy:delay(s, now) -> the seconds s waits before it restarts:
-- restart_delay times restart_backoff for each restart in a row, at most
-- restart_delay_max; a run that lasted the window (s.started_at) starts
-- the row over. Counts this restart in the row.
function Restarts:delay(s, now)
  if s.started_at and now - s.started_at >= self.window then s.in_a_row = 0 end
  local n = s.in_a_row or 0
  s.in_a_row = n + 1
  return math.min(s.restart_delay * s.restart_backoff ^ n, s.restart_delay_max)
end

--- policy:set(s, order) -> the set of services a restart of s takes
-- along, by strategy: s alone (one_for_one), every service of order
-- (one_for_all), or s and those after it in order (rest_for_one).
function Restarts:set(s, order)
  local set = { [s] = true }
  if self.strategy == "one_for_all" then
    for _, t in ipairs(order) do set[t] = true end
  elseif self.strategy == "rest_for_one" then
    for _, t in ipairs(order) do
      if t.pos > s.pos then set[t] = true end
    end
  end
  return set
end

--- policy:limit_error(s, failed) -> why the supervisor gives up on s.
function Restarts:limit_error(s, failed)
  return ("service '%s' %s and the restart limit was reached (%d restarts in %gs): giving up")
    :format(s.name, failed and "failed" or "exited", self.max_restarts, self.window)
end

return restarts
