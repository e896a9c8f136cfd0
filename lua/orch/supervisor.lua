--- orch.supervisor: long-running services with an ordered start and stop.
--
-- Each service runs run(table.unpack(args)) in its own forked child. The
-- supervisor is a small reconciler driven by the loop's events (a child
-- ready, a child exited, a timer): every service has a wish, `want` ("up"
-- or "down"), and reconcile() moves each one a step towards it:
--
-- - up:   a service that is not running starts once every service it lists
--         in `after` is ready;
-- - down: a running service is asked to stop once every service that lists
--         it in `after` has exited; SIGKILL follows after its `grace`.
--
-- Restarts, strategies, sup:stop(name), sup:start(name) and the whole
-- shutdown only change wishes. A restart of several services (one_for_all,
-- rest_for_one, sup:restart) is a `cycle`: its services go down in order,
-- and once all of them are down they all go up again, in order.
--
-- Invariants:
-- - a service has at most one child (s.proc) at a time; s.proc is cleared
--   only in on_exit, after every frame the child wrote was dispatched, so a
--   consumer is asked to stop only when all its producers' puts are in.
-- - nothing alive and no restart waiting out its delay (s.delay_timer)
--   after reconcile() means nothing will ever happen again: run() is over.
-- - every transition is logged with the service's name and pid.
--
-- Beside it: orch.services checks the spec, orch.deps holds the `after`
-- graph (start order, needs, dependents), orch.restarts the restart policy
-- (whether, after how long, with which others, when to give up), and
-- orch.party the running supervisors' two-stage INT/TERM handling.
local core = require "orch.core"
local check = require "orch.check"
local loop = require "orch.loop"
local log = require "orch.log"
local party = require "orch.party"
local deps = require "orch.deps"
local restarts = require "orch.restarts"
local child = require "orch.child"
local status = require "orch.status"
local services_of = require("orch.services").check
local keys = require("orch.services").keys

local MSG = core.msg
local unpack = table.unpack

local M = {}

--- Services with an ordered start and stop, made by orch.supervisor(spec);
-- a to-be-closed value (leaving its scope stops it, in order).
-- @type Supervisor
local Supervisor = {}
Supervisor.__index = Supervisor
Supervisor.__name = "orch.supervisor"

-- In a service's child: the service's name (orch.ready needs it).
M.current_service = nil

-- -------------------------------------------------------------------------
-- the reconciler

local function alive(s) return s.proc ~= nil end

local function say(s, level, fmt, ...)
  log.deliver(level, fmt:format(...), s.name, s.pid or 0)
end

local function spawn(self, s)
  local function main()
    log.name = s.name
    M.current_service = s.name
    s.run(unpack(s.args, 1, s.args.n or #s.args))
  end
  local function on_message(proc, type, ...)
    if type == MSG.READY then
      if s.proc == proc and s.state == "starting" then
        if s.ready_timer then s.ready_timer:stop(); s.ready_timer = nil end
        s.state = "running"
        say(s, "info", "ready")
        self:_check()
      end
    else
      child.frame(proc, s.name, type, ...)
    end
  end
  local function on_exit(proc, how, code)
    self:_exited(s, proc, how, code)
  end
  s.exit_code, s.signal, s.asked, s.not_ready, s.took_down = nil, nil, false, nil, nil
  local proc = core.spawn(main, on_message, on_exit)
  s.proc, s.pid, s.started_at = proc, proc:pid(), core.now()
  if s.notify then
    s.state = "starting"
    say(s, "info", "started, waiting for it to be ready (%gs at most)", s.ready_timeout)
    s.ready_timer = core.timer(s.ready_timeout, function()
      s.ready_timer = nil
      if s.proc == proc and s.state == "starting" then
        s.not_ready = true
        say(s, "error", "not ready after %gs: killing it", s.ready_timeout)
        proc:kill()
      end
    end)
  else
    s.state = "running"
    say(s, "info", "started")
  end
end

-- A service's stop steps (child.stop): asked now, SIGKILLed after its
-- grace period; a service is never interrupted inside its Lua code.
local function ask_stop(s)
  s.asked = true
  s.state = "stopping"
  local proc = s.proc
  say(s, "info", "stop requested (grace %gs)", s.grace)
  child.stop(proc, 0, s, s.grace, nil, function() return s.proc == proc end, function()
    say(s, "warn", "killed after grace (%gs)", s.grace)
    s.killed = true
  end)
end

local function any_alive(list)
  for _, s in ipairs(list) do
    if alive(s) then return true end
  end
  return false
end

-- A restart waiting out its delay goes no further.
local function cancel_delay(s)
  if s.delay_timer then s.delay_timer:stop(); s.delay_timer = nil end
end

-- s is to be restarted: it waits out the delay of its restart policy.
function Supervisor:_delay_restart(s)
  local delay = self.policy:delay(s, core.now())
  if delay <= 0 then return end
  say(s, "info", "restarting in %gs", delay)
  cancel_delay(s)
  s.delay_timer = core.timer(delay, function()
    s.delay_timer = nil
    self:_check()
  end)
end

-- Moves every service a step towards its wish; repeats until stable.
function Supervisor:_reconcile()
  local changed = true
  while changed do
    changed = false
    if self.cycle then
      local all_down = true
      for s in pairs(self.cycle) do
        if alive(s) then all_down = false end
      end
      if all_down and not self.stopping_all then
        for s in pairs(self.cycle) do s.want = "up" end
        self.cycle = nil
      end
    end
    for _, s in ipairs(self.order) do
      if s.want == "down" then
        if alive(s) and not s.asked and not any_alive(s.dependents) then
          ask_stop(s)
        end
      elseif not alive(s) and not s.delay_timer and deps.ready(s, self.by_name) then
        if s.restarting then
          s.restarting = nil
          s.restarts = s.restarts + 1
          say(s, "info", "restarting (restart %d)", s.restarts)
        end
        spawn(self, s)
        changed = true
      end
    end
  end
end

-- Something may still happen: a service runs or waits to be restarted.
function Supervisor:_any_alive()
  for _, s in ipairs(self.services) do
    if alive(s) or s.delay_timer then return true end
  end
  return false
end

-- Called after every event: reconcile, then notice the end.
function Supervisor:_check()
  if self.finished then return end
  self:_reconcile()
  if not self:_any_alive() then
    self.finished = true
    if self.shutdown_timer then self.shutdown_timer:stop(); self.shutdown_timer = nil end
    party.leave(self)
  end
end

function Supervisor:_cycle(set)
  self.cycle = self.cycle or {}
  for t in pairs(set) do
    self.cycle[t] = true
    t.want = "down"
    t.restarting = true
  end
end

-- s and every service in the list are to stay down.
local function all_down(list)
  for _, s in ipairs(list) do
    s.want = "down"
    s.restarting = nil
    cancel_delay(s)
  end
end

function Supervisor:_exited(s, proc, how, code)
  child.exited(proc)
  if s.proc ~= proc then return end
  s.proc = nil
  child.clear_steps(s)
  if s.ready_timer then s.ready_timer:stop(); s.ready_timer = nil end
  local failed
  if how == "signal" then
    s.exit_code, s.signal = nil, code
    failed = true
    say(s, s.asked and "info" or "warn", "exited by signal %s (%d)", core.signame(code), code)
  else
    s.exit_code, s.signal = code, nil
    failed = code ~= 0
    say(s, failed and not s.asked and "warn" or "info", "exited with code %d", code)
  end
  failed = failed or s.not_ready
  local expected = s.want == "down" or s.asked
  s.state = failed and not expected and "failed" or "stopped"
  if not expected then
    if not restarts.again(s, failed) then
      s.want = "down"
    elseif self.policy:exceeded(core.now()) then
      self.error = self.policy:limit_error(s, failed)
      say(s, "error", "%s", self.error)
      self:_shutdown("restart limit reached")
    else
      self:_delay_restart(s)
      if self.policy.strategy == "one_for_one" then
        s.restarting = true
      else
        self:_cycle(self.policy:set(s, self.order))
      end
    end
  end
  self:_check()
end

-- The whole ordered shutdown, bounded by shutdown_timeout.
function Supervisor:_shutdown(why)
  if self.stopping_all then return end
  self.stopping_all = true
  log.deliver("info", ("supervisor: shutting down (%s)"):format(why), log.name, core.getpid())
  self.cycle = nil
  all_down(self.services)
  self.shutdown_timer = core.timer(self.shutdown_timeout, function()
    self.shutdown_timer = nil
    self:_kill_all(("shutdown_timeout (%gs) passed"):format(self.shutdown_timeout))
  end)
end

function Supervisor:_kill_all(why)
  self.stopping_all = true
  all_down(self.services)
  for _, s in ipairs(self.services) do
    if alive(s) then
      say(s, "warn", "killed: %s", why)
      s.killed = true
      s.proc:kill()
    end
  end
end

-- -------------------------------------------------------------------------
-- the public methods

local function check_self(self, fn)
  check.method(self, Supervisor, fn)
end

local function check_name(self, name, fn)
  local s = self.by_name[name]
  if not s then
    check.fail("orch.supervisor", "%s: unknown service %s (services: %s)", fn,
      type(name) == "string" and ("'%s'"):format(name) or check.show(name), keys(self.by_name))
  end
  return s
end

-- A finished supervisor runs again: its end and its restart history are
-- forgotten.
function Supervisor:_reopen()
  self.finished, self.stopping_all, self.error = false, false, nil
  self.policy:forget()
end

-- Waits until no service of those ready() looks at moves any more, then
-- returns true, or nil, err when the supervisor gave up or is stopping.
function Supervisor:_wait_up(ready)
  self.started = true
  party.join(self)
  self:_check()
  loop.wait(function()
    if self.stopping_all or self.finished then return true end
    return ready()
  end)
  if self.error then return nil, self.error end
  if self.stopping_all then return nil, "stopping" end
  return true
end

--- sup:start(name?): starts every service in `after` order; returns true
-- once all are ready, or nil, err when the supervisor gave up or is
-- stopping. With a name: starts that service unless it runs, with the
-- services its sup:stop(name) took down and those it needs (its `after`,
-- directly or not) that are down, in `after` order; never counts a
-- restart; returns true once they are ready, nil, err when one of them did
-- not stay up ("service 'web' failed").
function Supervisor:start(name)
  check_self(self, "start")
  if name ~= nil then return self:_start_one(check_name(self, name, "start")) end
  if self.stopping_all and not self.finished then return nil, "stopping" end
  if self.finished then
    -- started again after a full stop
    self:_reopen()
    for _, s in ipairs(self.services) do s.want = "up" end
  end
  return self:_wait_up(function()
    for _, s in ipairs(self.services) do
      if s.want == "up" and s.state ~= "running" then return false end
    end
    return true
  end)
end

-- Whether s is up or on its way up (a restart of several that takes it
-- along brings it back).
function Supervisor:_wanted_up(s)
  return s.want == "up" or (self.cycle ~= nil and self.cycle[s] ~= nil)
end

-- s goes no further towards up: it runs, is to stay down, or needs a
-- service that is to stay down.
function Supervisor:_settled(s)
  if self.cycle and self.cycle[s] then return false end
  if s.want ~= "up" or s.state == "running" then return true end
  for _, dep in ipairs(s.after) do
    if not self:_wanted_up(self.by_name[dep]) then return true end
  end
  return false
end

-- sup:stop(name) remembers in s.took_down the services the stop of s
-- brought down besides s (those up until then); a second stop of s while
-- it is down adds to it, an explicit stop of one of them removes it.
-- spawn() forgets it: it describes s's last stop only.
function Supervisor:_note_stop(s, set)
  for _, u in ipairs(self.services) do
    if u.took_down then u.took_down[s] = nil end
  end
  local took = self:_wanted_up(s) and {} or s.took_down or {}
  for t in pairs(set) do
    if t ~= s and self:_wanted_up(t) then took[t] = true end
  end
  s.took_down = took
end

-- sup:start(name): s, what its stop took down and what they need, up.
function Supervisor:_start_one(s)
  if self.stopping_all and not self.finished then return nil, "stopping" end
  if s.want == "up" and s.state == "running" then return true end
  local set = deps.with_needs(s, self.by_name)
  for t in pairs(s.took_down or {}) do deps.with_needs(t, self.by_name, set) end
  if self.finished then self:_reopen() end
  for _, t in ipairs(self.order) do
    if set[t] then
      if not (self.cycle and self.cycle[t]) then t.want = "up" end
    elseif not self.started then
      t.want = "down"  -- the first start: only these
    end
  end
  local ok, err = self:_wait_up(function()
    for t in pairs(set) do
      if not self:_settled(t) then return false end
    end
    return true
  end)
  if not ok then return nil, err end
  for _, t in ipairs(self.order) do
    if set[t] and t.state ~= "running" then return nil, ("service '%s' %s"):format(t.name, t.state) end
  end
  return true
end

--- sup:stop(name?): the ordered stop of every service, or of one service
-- and those that depend on it. Returns true once they have exited.
function Supervisor:stop(name)
  check_self(self, "stop")
  if name == nil then
    if self.finished or not self.started then return true end
    self:_shutdown("stop requested")
    self:_check()
    loop.wait(function() return self.finished end, nil, true)
    return true
  end
  local s = check_name(self, name, "stop")
  local set = deps.with_dependents(s)
  self:_note_stop(s, set)
  for t in pairs(set) do
    all_down({ t })
    if self.cycle then self.cycle[t] = nil end
  end
  self:_check()
  loop.wait(function()
    for t in pairs(set) do
      if alive(t) then return false end
    end
    return true
  end)
  return true
end

--- sup:restart(name): stops the service and those that depend on it, in
-- order, then starts them again; returns once they are ready.
function Supervisor:restart(name)
  check_self(self, "restart")
  local s = check_name(self, name, "restart")
  if self.stopping_all then return nil, "stopping" end
  local set = deps.with_dependents(s)
  self:_cycle(set)
  self:_check()
  loop.wait(function()
    if self.stopping_all or self.finished then return true end
    if self.cycle then return false end
    for t in pairs(set) do
      if t.state ~= "running" then return false end
    end
    return true
  end)
  if self.stopping_all then return nil, self.error or "stopping" end
  return true
end

--- sup:status() -> { {name, pid, state, restarts, exit_code, signal}, ... }
-- state: "pending" | "starting" | "running" | "stopping" | "stopped" | "failed"
function Supervisor:status()
  check_self(self, "status")
  local list = {}
  for i, s in ipairs(self.services) do
    list[i] = {
      name = s.name, pid = alive(s) and s.pid or nil, state = s.state, restarts = s.restarts,
      exit_code = s.exit_code, signal = s.signal and core.signame(s.signal) or nil,
    }
  end
  return list
end

--- sup:run(): start, then run until every service has stopped. Returns
-- true, or nil, err when it gave up after too many restarts.
function Supervisor:run()
  check_self(self, "run")
  if not self.started or self.finished then self:start() end
  loop.wait(function() return self.finished end, nil, true)
  if self.error then return nil, self.error end
  return true
end

function Supervisor:__tostring()
  return ("orch.supervisor (%d services)"):format(#self.services)
end

-- Closing a supervisor stops it (ordered).
function Supervisor:__close()
  if self.started and not self.finished then self:stop() end
end

-- orch.supervisor(spec) -> Supervisor
function M.new(spec)
  local services, by_name, order = services_of(spec)
  local sup = setmetatable({
    services = services, by_name = by_name, order = order,
    policy = restarts.new(spec), shutdown_timeout = spec.shutdown_timeout or 10,
    started = false, finished = false,
  }, Supervisor)
  status.register(sup, "supervisor")
  return sup
end

-- orch.ready(): inside a service, says it is ready. Elsewhere it does
-- nothing and returns false.
function M.ready()
  if not (core.in_child() and M.current_service) then return false end
  core.send_parent(MSG.READY)
  return true
end

return M
