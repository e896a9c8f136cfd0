--- Futures: the parent's handle on one task.
-- States: "queued" -> "running" -> "done" | "failed" | "cancelled"
-- (a queued task can go straight to "cancelled" or "failed").
--
-- Internal interface, for the pool and its dispatcher: Future.new(group,
-- id, task), fut:_settle(status, values, err) (the pool alone settles),
-- Future.clear_timers(fut), Future.hold() (a dispatcher taking in a batch
-- of answers). A future's cancel and kill go to its pool's
-- _stop_task and _kill_task (pool.lua's header).
local check = require "orch.check"
local loop = require "orch.loop"
local child = require "orch.child"
local deque = require "orch.deque"
local TaskError = require("orch.errors").TaskError
local clear_steps = child.clear_steps
local push, pop = deque.push, deque.pop

--- The parent's handle on one task, made by pool:submit and group:submit.
-- @type Future
local Future = {}
Future.__index = Future
Future.__name = "orch.future"

local FINAL = { done = true, failed = true, cancelled = true }

local function ended(fut) return FINAL[fut.status] end

-- task: the task as core.pack_task encoded it at submit.
function Future.new(group, id, task)
  -- the fields a task comes to hold, so the table is sized once (timers,
  -- callbacks and stop state are rarer and may grow it)
  return setmetatable({
    group = group, id = id, task = task, status = "queued", attempts = 0,
    worker = nil, values = nil, err = nil,
  }, Future)
end

--- Whether the task has ended (done, failed or cancelled).
-- @treturn boolean
function Future:done()
  check.method(self, Future, "done")
  return FINAL[self.status] == true
end

--- The task's state.
-- @treturn string "queued" | "running" | "done" | "failed" | "cancelled"
function Future:state()
  check.method(self, Future, "state")
  return self.status
end

--- The TaskError of a task that failed or was cancelled, else nil.
-- @treturn TaskError|nil
function Future:error()
  check.method(self, Future, "error")
  return self.err
end

--- Waits at most timeout seconds (nil: no limit) for the task to end.
-- @tparam[opt] number timeout
-- @return true, or nil, "timeout"
function Future:wait(timeout)
  check.method(self, Future, "wait")
  check.timeout("orch.future", "wait", timeout)
  if loop.wait(ended, timeout, false, self) then
    return true
  end
  return nil, "timeout"
end

--- Waits, then returns the task's values or raises its TaskError.
-- @return the task's values
function Future:result()
  if getmetatable(self) ~= Future then check.dot_call(Future, "result") end  -- the hot path
  if not FINAL[self.status] then
    loop.wait(ended, nil, false, self)
  end
  if self.status == "done" then
    local v = self.values
    if type(v) ~= "table" then return v end
    return table.unpack(v, 1, v.n or 1)
  end
  error(self.err, 0)
end

-- A done task's values (fut.values) come in one of three forms, as
-- src/dispatch.c's gather_result makes them: one value that is neither nil
-- nor a table as it is (most results: nothing to allocate), {v} for one
-- table, else {n = count, ...}. For the pool's internals: the first
-- value, and the values as {n = count, ...}.
function Future.first(fut)
  local v = fut.values
  if type(v) == "table" then return v[1] end
  return v
end

function Future.list(fut)
  local v = fut.values
  if type(v) ~= "table" then return { n = 1, v } end
  if v.n == nil then return { n = 1, v[1] } end
  return v
end

--- fn(fut) runs in the parent's loop once the task has ended (at once if
-- it already has). An error in fn is logged, never lost and never fatal.
-- @tparam function fn
function Future:on_done(fn)
  check.method(self, Future, "on_done")
  if type(fn) ~= "function" then
    check.fail("orch.future", "on_done expects a function (got %s)", check.show(fn))
  end
  if FINAL[self.status] then
    self:_call(fn)
  else
    local cbs = self.callbacks
    if not cbs then cbs = {}; self.callbacks = cbs end
    cbs[#cbs + 1] = fn
  end
end

function Future:_call(fn)
  local ok, err = xpcall(fn, debug.traceback, self)
  if not ok then
    require("orch.log").error("on_done callback failed: %s", tostring(err))
  end
end

-- Callbacks held back while a dispatcher takes in what its workers said
-- (Future.hold): every future of a batch of answers is settled, and the
-- workers are given more work, before any callback runs. A callback that
-- blocks (fut:result() on another task) then finds the others of its
-- batch settled and the pool still feeding its workers; run at once, it
-- would wait in the middle of the batch for tasks that no worker is given.
-- Held callbacks run in the order their futures settled.
local holds = 0
local due = deque.new()  -- each future settled under a hold, then its callbacks

local function run_due()
  local fut = pop(due)
  while fut do
    local cbs = pop(due)
    for i = 1, #cbs do fut:_call(cbs[i]) end
    fut = pop(due)
  end
end

local HOLD = setmetatable({}, { __close = function(_, err)
  holds = holds - 1
  if holds == 0 and err == nil then run_due() end
end })

--- Holds callbacks back until the value it returns is closed (a
-- to-be-closed variable): `local _ <close> = Future.hold()`. Holds nest;
-- the last one closed runs what was held (after an error, the next one
-- does). For the dispatchers.
function Future.hold()
  holds = holds + 1
  return HOLD
end

-- Settles the future (called by the pool). status: done | failed | cancelled.
function Future:_settle(status, values, err)
  self.status = status
  self.values = values
  self.err = err
  self.task = nil
  local cbs = self.callbacks
  if cbs then
    self.callbacks = nil
    if holds > 0 then
      push(due, self)
      push(due, cbs)
    else
      for i = 1, #cbs do self:_call(cbs[i]) end
    end
  end
end

-- Stops the timers a future may hold: `timer` (its time limit, or its
-- retry backoff) and those of its stop steps (child.stop). For the pool
-- and its dispatcher.
function Future.clear_timers(fut)
  if fut.timer then fut.timer:stop(); fut.timer = nil end
  if fut.stop_timer or fut.kill_timer then clear_steps(fut) end
end

--- A queued task never runs; a running task is asked to stop, interrupted,
-- then killed after the grace period.
-- @treturn boolean true unless it had ended
function Future:cancel()
  check.method(self, Future, "cancel")
  if FINAL[self.status] then return false end
  self.group.pool:_stop_task(self, "cancelled")
  return true
end

--- SIGKILLs the task's worker now (a queued task fails without running).
-- @treturn boolean true unless it had ended
function Future:kill()
  check.method(self, Future, "kill")
  if FINAL[self.status] then return false end
  self.group.pool:_kill_task(self)
  return true
end

function Future:__tostring()
  return ("orch.future #%d (%s)"):format(self.id, self.status)
end

Future.TaskError = TaskError
return Future
