--- Progress of a long map: how many items have finished, and a reporter
-- that shows it. The run counts with add() (a few arithmetic operations per
-- chunk); the report is made by a timer on the parent's loop, so however
-- fast items finish there are at most a few reports a second, and none at
-- all while nothing runs the loop.
--
-- progress = true: on a terminal, one line on stderr redrawn in place
-- ("\r", then clear to the end of the line) every REDRAW seconds; anywhere
-- else (a log file, CI), a plain line every LINE_EVERY seconds. Both end
-- with a last report when the run ends. progress = function(p): p(snapshot)
-- every REDRAW seconds and at the end, snapshot = { done, failed, total,
-- elapsed, rate, eta } (rate: items a second in this run; eta: seconds
-- left, nil while there is no rate yet).
local core = require "orch.core"

local progress = {
  REDRAW = 0.25,      -- seconds between two redraws, or two calls of a function
  LINE_EVERY = 10,    -- seconds between two plain lines
}

local Progress = {}
Progress.__index = Progress

-- Whether stderr is a terminal.
local function stderr_is_terminal()
  return core.isatty(2)
end

-- 75 -> "1:15", 3725 -> "1:02:05".
local function clock(seconds)
  local s = math.floor(seconds + 0.5)
  if s >= 3600 then
    return ("%d:%02d:%02d"):format(s // 3600, s // 60 % 60, s % 60)
  end
  return ("%d:%02d"):format(s // 60, s % 60)
end

local function per_second(rate)
  if rate >= 100 then return ("%.0f/s"):format(rate) end
  return ("%.1f/s"):format(rate)
end

--- The numbers at this moment: { done, failed, total, elapsed, rate, eta }.
function Progress:snapshot()
  local elapsed = core.now() - self.started
  local finished = self.done + self.failed
  local ran = finished - self.done_before
  local rate = elapsed > 0 and ran / elapsed or 0
  local eta
  if finished >= self.total then
    eta = 0
  elseif rate > 0 then
    eta = (self.total - finished) / rate
  end
  return {
    done = self.done, failed = self.failed, total = self.total,
    elapsed = elapsed, rate = rate, eta = eta,
  }
end

--- One line of text for a snapshot.
function progress.format(p)
  local pct = p.total > 0 and (p.done + p.failed) * 100 // p.total or 100
  return ("%d/%d (%d%%), %d failed, %s, ETA %s, elapsed %s"):format(
    p.done + p.failed, p.total, pct, p.failed, per_second(p.rate),
    p.eta and clock(p.eta) or "?", clock(p.elapsed))
end

function Progress:_report(last)
  local p = self:snapshot()
  if self.fn then return self.fn(p) end
  local text = self.label .. progress.format(p)
  if self.tty then
    io.stderr:write("\r", text, "\27[K", last and "\n" or "")
  else
    io.stderr:write(text, "\n")
  end
  io.stderr:flush()
end

function Progress:_arm()
  self.timer = core.timer(self.every, function()
    self.timer = nil
    self:_arm()
    self:_report(false)
  end)
end

--- n items done and m failed since the last call.
function Progress:add(n, m)
  self.done = self.done + n
  if m then self.failed = self.failed + m end
end

--- The last report; the timer stops. Idempotent.
function Progress:finish()
  if self.finished then return end
  self.finished = true
  if self.timer then self.timer:stop(); self.timer = nil end
  self:_report(true)
end
Progress.__close = Progress.finish

-- What a run without progress gets: the same calls, doing nothing.
local NONE = setmetatable({}, {
  __index = { add = function() end, finish = function() end },
  __close = function() end,
})

--- progress.new(how, total, done_before, label) -> reporter: how is the
-- option (nil/false: a reporter that does nothing, true, or a function),
-- total the number of items, done_before how many of them are already
-- done (a resumed run: they count as done, not in the rate).
function progress.new(how, total, done_before, label)
  if not how then return NONE end
  done_before = done_before or 0
  local self = setmetatable({
    total = total, done = done_before, failed = 0, done_before = done_before,
    started = core.now(), label = label and (label .. ": ") or "",
    fn = type(how) == "function" and how or nil,
  }, Progress)
  self.tty = not self.fn and stderr_is_terminal()
  self.every = (self.fn or self.tty) and progress.REDRAW or progress.LINE_EVERY
  self:_arm()
  return self
end

return progress
