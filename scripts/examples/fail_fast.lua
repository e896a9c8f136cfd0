--- Seed 004: stop all tasks if one fails. With ProcessPoolExecutor this
-- takes a Manager, a shared Event passed to every task, wait(FIRST_EXCEPTION),
-- a loop of future.cancel() and event.set(). In orch it is a group option:
--
--   lua5.4 scripts/examples/fail_fast.lua
--
-- Ten tasks on four workers; task 0 fails after its first step. The group
-- cancels the six tasks that have not started, asks the three running ones
-- to stop (orch.stopping() turns true: they return early, after cleaning
-- up), and wait returns nil and the first error as soon as the group is
-- quiet. A second group of busy loops that never check orch.stopping() is
-- stopped too: the interrupt raises "cancelled" inside their Lua code.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local core = require "orch.core"

local stopping, osleep = orch.stopping, orch.sleep  -- upvalues of the tasks

local t0 = core.now()
local function say(fmt, ...)
  io.stdout:write(("[%4.2fs] "):format(core.now() - t0), fmt:format(...), "\n")
  io.stdout:flush()
end

-- The seed's task: "read data" for a long time, one step at a time.
local function work(name)
  local function out(fmt, ...)
    io.stdout:write(("        " .. fmt .. "\n"):format(...))
    io.stdout:flush()
  end
  for _ = 1, 10 do
    osleep(0.2)                      -- pretend to read some data
    if name == 0 then
      out("Task has failed, name=%d", name)
      error("Something bad happened", 0)
    end
    if stopping() then
      out("Stopping, name=%d", name)
      return "stopped"
    end
  end
  return "done"
end

local pool <close> = orch.pool { workers = 4 }

local group = pool:group { on_error = "fail_fast" }
local futures = {}
for i = 0, 9 do futures[i] = group:submit(work, i) end
say("Waiting for tasks to complete, or fail...")
local results, err = group:wait()
if not results then
  say("One task failed with: %s, shut down", err.value)
end
local count = {}
for i = 0, 9 do
  local st = futures[i]:state()
  count[st] = (count[st] or 0) + 1
end
say("states: %d failed, %d cancelled (3 stopped themselves, 6 never started)",
  count.failed or 0, count.cancelled or 0)

-- Busy loops that never check: interrupted where they are; <close> runs.
local busy = pool:group { on_error = "fail_fast" }
for i = 1, 3 do
  busy:submit(function(n)
    local _ <close> = setmetatable({}, { __close = function(_, e)
      io.stdout:write(("        busy %d cleans up after: %s\n"):format(n, tostring(e)))
      io.stdout:flush()
    end })
    while true do end
  end, i)
end
busy:submit(function() osleep(0.3) error("the busy batch fails", 0) end)
local t = core.now()
local _, err2 = busy:wait()
say("busy batch: %s; quiet %.2fs after the start, workers restarted: %d",
  err2.value, core.now() - t, pool:stats().restarts)
say("All done.")
