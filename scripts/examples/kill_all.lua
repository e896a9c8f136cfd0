--- Seed 002: killing tasks. multiprocessing.Pool can only terminate() the
-- whole pool; its tutorial answers "No" to killing one task, killing the
-- tasks of one batch, and restarting a killed worker. orch does all four:
--
--   lua5.4 scripts/examples/kill_all.lua
--
-- 1. one task killed (fut:kill()): its worker is SIGKILLed and replaced,
--    the other tasks go on;
-- 2. one batch killed (group:kill()): another batch is not touched;
-- 3. every task killed at once (pool:terminate()), as in the seed: four
--    tasks that would run ten seconds each, killed after a moment.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local core = require "orch.core"

local t0 = core.now()
local function say(fmt, ...)
  io.stdout:write(("[%4.1fs] "):format(core.now() - t0), fmt:format(...), "\n")
  io.stdout:flush()
end

-- The seed's task: announce, then block for a second, ten times over.
local function task(identifier)
  io.stdout:write(("         Task %s running (pid %d)\n"):format(identifier, require("orch.core").getpid()))
  io.stdout:flush()
  for _ = 1, 10 do os.execute("sleep 1") end
  io.stdout:write(("         Task %s Done\n"):format(identifier))
  return identifier
end

local pool = orch.pool { workers = 6 }

-- 1. kill one task --------------------------------------------------------
local futs = {}
for i = 1, 4 do futs[i] = pool:submit(task, "one-" .. i) end
orch.sleep(0.5)
local victim_pid = futs[2].worker.pid
say("killing task one-2 only (worker pid %d)", victim_pid)
futs[2]:kill()
futs[2]:wait()
say("one-2: %s (%s)", futs[2]:state(), futs[2]:error().kind)
orch.sleep(0.1)
local s = pool:stats()
say("workers %d, restarts %d: the killed worker was replaced; one-1, one-3, one-4 still %s",
  s.workers, s.restarts, futs[1]:state())
local new_pid = pool:submit(function() return require("orch.core").getpid() end):result()
say("a new task runs on the fresh worker (pid %d, not %d)", new_pid, victim_pid)

-- 2. kill one batch -------------------------------------------------------
local batch = pool:group()
local other = pool:group()
local osleep = orch.sleep  -- a task's upvalues are copied: take the function, not orch
local o = other:submit(function() osleep(0.5) return "other batch done" end)
for i = 1, 2 do batch:submit(task, "batch-" .. i) end
orch.sleep(0.3)
say("killing the batch of 2 tasks")
batch:kill()
local res = batch:wait()
for i = 1, res.n do say("batch-%d: %s", i, res[i].kind) end
say("the other batch: %s", o:result())

-- 3. kill all tasks (pool:terminate(), as in the seed) --------------------
say("killing all tasks")
local t = core.now()
pool:terminate()
say("terminate took %.3fs", core.now() - t)
local counts = {}
for i = 1, 4 do
  local f = futs[i]
  counts[#counts + 1] = ("one-%d %s"):format(i, f:error() and f:error().kind or f:state())
end
say("%s", table.concat(counts, ", "))
assert(pool:join(1))
say("all workers are gone: %d left", pool:stats().workers)
