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

-- The loop is the parent's: a child has none to run.
local function parent_only()
  if core.in_child() then
    error("orch: this call runs the parent's loop; it cannot run in a child process", 4)
  end
end

--- Runs the loop until pred() is true (returns true) or timeout seconds
-- have passed (returns false). timeout nil: no limit.
function loop.wait(pred, timeout)
  parent_only()
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
  parent_only()
  check_interrupt()
  core.step(0)
  check_interrupt()
end

--- orch.sleep(seconds): in the parent, runs the loop for that long; in a
-- child, sleeps and returns early once the parent asked it to stop.
function loop.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
    error("orch.sleep: seconds must be a non-negative number", 2)
  end
  if core.in_child() then
    core.child_sleep(seconds)
    return
  end
  local done = false
  local t <close> = core.timer(seconds, function() done = true end)
  loop.wait(function() return done end)
end

return loop
