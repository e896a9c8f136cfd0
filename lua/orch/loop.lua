--- The parent's waiting: every blocking call of orch (result, wait, join,
-- map, sleep, queue operations) runs the loop here until its condition
-- holds, so signals, results and timers keep being handled meanwhile.
local core = require "orch.core"
local check = require "orch.check"
local Interrupted = require("orch.errors").Interrupted

local loop = {}

-- An interruption on its way: { signal = "INT", settled = fn | nil }.
local pending = nil

-- The first INT/TERM of a plain script (the pools' default) or the end
-- of a supervisor's ordered shutdown after a signal: the waiting script
-- gets an Interrupted error, so its <close> handlers run. It is raised
-- once settled() holds (nil: at once): until then the wait goes on
-- running the loop whatever it waited for, so the ordered stop completes
-- before the script sees the error.
function loop.interrupt(signal, settled)
  pending = { signal = signal, settled = settled }
end

local function check_interrupt()
  local p = pending
  if not p then return end
  while p.settled and not p.settled() do core.step() end
  if pending == p then pending = nil end
  error(Interrupted.new(p.signal), 0)
end

--- Runs the loop until pred(arg) is true (returns true) or timeout
-- seconds have passed (returns false). timeout nil: no limit. idle: what
-- pred waits for is no quick reply of a child (a timer, services going up
-- or down), so each turn blocks at once rather than polling first (see
-- src/spin.c): a long wait costs no CPU between its events. arg spares a
-- caller that waits often (a future's result) a closure each time.
function loop.wait(pred, timeout, idle, arg)
  if pending then check_interrupt() end
  if pred(arg) then return true end
  local deadline = timeout and core.now() + timeout
  while true do
    if deadline then
      local left = deadline - core.now()
      if left <= 0 then return pred(arg) end
      core.step(left, idle)
    else
      core.step(nil, idle)
    end
    if pending then check_interrupt() end
    if pred(arg) then return true end
  end
end

-- One turn of the loop that does not block: what has arrived is
-- handled and what is queued for the children is written. For long runs of
-- parent work (map packing its chunks) that must not leave workers idle.
function loop.poll()
  check_interrupt()
  core.step(0)
  check_interrupt()
end

--- orch.sleep(seconds): runs the loop for that long (a task or service
-- that runs a pool or supervisor of its own keeps serving it meanwhile);
-- in a child, returns early once the parent asked it to stop.
function loop.sleep(seconds)
  if not check.fits(seconds, "non-negative number") then
    check.fail("orch.sleep", "seconds must be a non-negative number (got %s)", check.show(seconds))
  end
  local done = false
  local t <close> = core.timer(seconds, function() done = true end)
  if core.in_child() then
    loop.wait(function() return done or core.stopping() end, nil, true)
  else
    loop.wait(function() return done end, nil, true)
  end
end

return loop
