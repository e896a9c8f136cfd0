--- The parent's waiting: every blocking call of orch (result, wait, join,
-- map, sleep, queue operations) runs the loop here until its condition
-- holds, so signals, results and timers keep being handled meanwhile.
local core = require "orch.core"

local loop = {}

--- Set by the default INT/TERM handler of a plain script: the next wait
-- raises "interrupted" so the script's <close> handlers run.
loop.interrupted = nil

local function check_interrupt()
  local sig = loop.interrupted
  if sig then
    loop.interrupted = nil
    error(("interrupted (SIG%s)"):format(sig), 0)
  end
end

--- Runs the loop until pred() is true (returns true) or timeout seconds
-- have passed (returns false). timeout nil: no limit.
function loop.wait(pred, timeout)
  check_interrupt()
  if pred() then return true end
  local deadline = timeout and core.now() + timeout
  while true do
    if deadline then
      local left = deadline - core.now()
      if left <= 0 then return pred() end
      core.step(left)
    else
      core.step()
    end
    check_interrupt()
    if pred() then return true end
  end
end

--- One turn of the loop that does not block: what has arrived is
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
  if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
    error("orch.sleep: seconds must be a non-negative number", 2)
  end
  local done = false
  local t <close> = core.timer(seconds, function() done = true end)
  if core.in_child() then
    loop.wait(function() return done or core.stopping() end)
  else
    loop.wait(function() return done end)
  end
end

return loop
