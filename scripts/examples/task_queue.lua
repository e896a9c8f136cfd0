--- Seed 003: a task queue on a pool. The seed wants workers that stop after
-- a number of tasks (maxtasksperchild), counts of what is queued and what
-- was processed, and a terminate(timeout) that waits for the work at most
-- `timeout` seconds -- and, unlike the seed's sleep loop, returns as soon
-- as the workers are gone.
--
--   lua5.4 scripts/examples/task_queue.lua
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local core = require "orch.core"

local t0 = core.now()
local function say(fmt, ...)
  io.stdout:write(("[%4.2fs] "):format(core.now() - t0), fmt:format(...), "\n")
  io.stdout:flush()
end

local TaskQueue = {}
TaskQueue.__index = TaskQueue

function TaskQueue.new(worker_count, requests_per_worker)
  return setmetatable({
    pool = orch.pool { workers = worker_count, max_tasks_per_worker = requests_per_worker },
  }, TaskQueue)
end

-- A task is a function and its arguments; it runs in a worker.
function TaskQueue:add(fn, ...)
  return self.pool:submit(fn, ...)
end

-- Tasks queued or being processed (the seed's length()).
function TaskQueue:length()
  local s = self.pool:stats()
  return s.queued + s.running
end

-- Tasks processed altogether (the seed's processed()).
function TaskQueue:processed()
  local s = self.pool:stats()
  return s.done + s.failed + s.cancelled
end

-- No new tasks; wait for the work at most `timeout` seconds, then kill what
-- is left. Returns true when everything finished in time.
function TaskQueue:terminate(timeout)
  self.pool:close()
  if self.pool:join(timeout or 5) then return true end
  self.pool:terminate()
  return false
end

local function job(n, secs)
  require("orch").sleep(secs)
  return n, require("orch.core").getpid()
end

-- 1. twenty short tasks on 3 workers that each retire after 4 tasks
local q = TaskQueue.new(3, 4)
local futs = {}
for i = 1, 20 do futs[i] = q:add(job, i, 0.02) end
say("added 20 tasks: length %d, processed %d", q:length(), q:processed())
local pids = {}
for i = 1, 20 do
  local _, pid = futs[i]:result()
  pids[pid] = (pids[pid] or 0) + 1
end
local n, most = 0, 0
for _, c in pairs(pids) do n = n + 1; most = math.max(most, c) end
say("done: length %d, processed %d, by %d different workers (at most %d tasks each)",
  q:length(), q:processed(), n, most)
local t = core.now()
say("terminate(5) -> %s after %.2fs: nothing was left to wait for", tostring(q:terminate(5)), core.now() - t)

-- 2. a queue whose last task would take 30 s: terminate(1) waits 1 s, then kills it
q = TaskQueue.new(2)
for i = 1, 4 do q:add(job, i, 0.1) end
local long = q:add(function() os.execute("sleep 30") end)
orch.sleep(0.3)
say("length %d, processed %d", q:length(), q:processed())
t = core.now()
local finished = q:terminate(1)
say("terminate(1) -> %s after %.2fs; the long task: %s (%s)", tostring(finished), core.now() - t,
  long:state(), long:error().kind)
say("processed %d, workers left %d", q:processed(), q.pool:stats().workers)
