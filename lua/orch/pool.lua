--- Pools: a pool's API, its lifecycle and its tasks' outcomes.
--
-- A pool owns its futures and their policies: the backlog of tasks not yet
-- handed over (orch.backlog), retries with their backoff, counts, groups'
-- failure policies (orch.group), close/join/shutdown/terminate and the
-- default INT/TERM behaviour of a script with pools. Where tasks run is
-- its dispatcher's business (orch.dispatch: pre-forked local workers; the
-- interface is written at the top of dispatch.lua). map and imap are in
-- orch.map.
--
-- Internal interface, for the handles of the pool's state (Future, Group)
-- and for orch.map; nothing else calls a Pool method that starts with _:
--   pool:_submit(group, fn, ...) -> fut      a task of that group
--   pool:_enqueue(group, packed_task) -> fut  a task already packed
--   pool:_stop_task(fut, kind, grace)         cancel ("cancelled") or
--                                             time out ("timeout") a task
--   pool:_kill_task(fut)                      fut:kill()
local core = require "orch.core"
local check = require "orch.check"
local loop = require "orch.loop"
local signal = require "orch.signal"
local backlog = require "orch.backlog"
local dispatch = require "orch.dispatch"
local Future = require "orch.future"
local Group = require "orch.group"
local map = require "orch.map"
local registry = require "orch.status"
local TaskError = require("orch.errors").TaskError
local settle = Future._settle
local clear_timers = Future.clear_timers
local push, pop = backlog.push, backlog.pop

local pack = table.pack
local pack_task, task_info = core.pack_task, core.task_info

--- A pool of worker processes, made by orch.pool(opts); a to-be-closed
-- value (leaving its scope shuts it down).
-- @type Pool
local Pool = {}
Pool.__index = Pool
Pool.__name = "orch.pool"

-- Each option's kind (orch.check's vocabulary).
local OPTIONS = {
  workers = "positive integer", max_tasks_per_worker = "positive integer",
  timeout = "positive number", retries = "non-negative integer", retry_on = "table",
  on_error = "string or function", grace = "non-negative number",
  init = "function or string", backoff = "non-negative number",
  broker = "string", queue = "string", lease = "positive number", secret = "string",
  max_message = "positive integer", max_memory_per_worker = "positive integer", limits = "table",
}
local LIMITS = { cpu = "positive integer", memory = "positive integer", files = "positive integer",
                 processes = "positive integer" }
-- With a broker, a pool may have no workers of its own: nodes run its tasks.
local BROKER_OPTIONS = {}
for k, v in pairs(OPTIONS) do BROKER_OPTIONS[k] = v end
BROKER_OPTIONS.workers = "non-negative integer"

local pools = setmetatable({}, { __mode = "k" })  -- live pools, for signals

-- Task ids: one per run. A retry runs under a new id, because a worker
-- remembers the stop requests it got for an id (worker.c's ring) and would
-- answer a second run of a stopped id without running it.
local last_id = 0
local function new_id()
  last_id = last_id + 1
  return last_id
end

local function check_options(opts)
  local spec = type(opts) == "table" and opts.broker ~= nil and BROKER_OPTIONS or OPTIONS
  opts = check.options("orch.pool", opts, spec)
  if not opts.broker and (opts.queue or opts.lease or opts.secret) then
    check.fail("orch.pool", "options 'queue', 'lease' and 'secret' need option 'broker'")
  end
  local m = opts.max_message
  if m ~= nil and m > 0x7fffffff then
    check.fail("orch.pool", "option 'max_message' must be at most 2^31 - 1 bytes (got %s)", check.show(m))
  end
  check.options("orch.pool", opts.limits, LIMITS, "limits: ")
  Group.check_policy(opts, "orch.pool")
  return opts
end

-- -------------------------------------------------------------------------
-- outcomes

local function task_error(kind, fields)
  fields.kind = kind
  return TaskError.new(fields)
end

-- Ends a future that has left the backlog and the dispatcher for good.
local function finish(self, fut, outcome, values, err)
  clear_timers(fut)
  if outcome == "done" then
    self.n_done = self.n_done + 1
  elseif outcome == "cancelled" then
    self.n_cancelled = self.n_cancelled + 1
  else
    self.n_failed = self.n_failed + 1
  end
  settle(fut, outcome, values, err)
  fut.group:_settled(fut)
end

-- Puts a task that failed back in the backlog, as a new run, after the
-- group's backoff (waiting it out in self.retry_waiting).
local function retry(self, fut)
  clear_timers(fut)
  fut.status = "queued"
  fut.id = new_id()
  local delay = fut.group:_backoff(fut)
  if delay <= 0 then return push(self.backlog, fut) end
  self.retry_waiting[fut] = true
  fut.timer = core.timer(delay, function()
    fut.timer = nil
    self.retry_waiting[fut] = nil
    if fut.status == "queued" then
      push(self.backlog, fut)
      self.dispatcher:pump()
    end
  end)
end

-- A task failed with err: retry it, or settle it and apply the policy.
local function failed(self, fut, err)
  err.attempts = fut.attempts
  if err.kind == "cancelled" then
    return finish(self, fut, "cancelled", nil, err)
  end
  local group = fut.group
  local action = group:_decide(err, fut)
  if action == "retry" and not (self.terminated or fut.stop_kind or fut.no_retry) then
    return retry(self, fut)
  end
  finish(self, fut, "failed", nil, err)
  if action == "fail_fast" then group:_fail_fast(err) end
end

-- Workers' init keeps failing: nothing can run here. Fail all that waits.
local function break_pool(self, message)
  self.closed = true
  local fut = pop(self.backlog)
  while fut do
    finish(self, fut, "failed", nil, task_error("error", { message = message }))
    fut = pop(self.backlog)
  end
  self.dispatcher:close()
end

-- What the dispatcher is given (see dispatch.lua). done is the hot path:
-- one call per task, straight to the counts and the future.
local function side_of(self)
  return {
    backlog = self.backlog,
    done = function(fut, values)
      clear_timers(fut)
      self.n_done = self.n_done + 1
      settle(fut, "done", values)
      fut.group:_settled(fut)
    end,
    failed = function(fut, err) return failed(self, fut, err) end,
    waiting = function() return next(self.retry_waiting) ~= nil end,
    broken = function(message) return break_pool(self, message) end,
  }
end

-- -------------------------------------------------------------------------
-- stopping tasks

-- Settles a task that has not run (or whose run does not count): cancelled,
-- or failed with that kind (the group's policy then applies).
local function settle_unrun(self, fut, kind)
  if kind ~= "cancelled" then fut.no_retry = true end
  failed(self, fut, task_error(kind, { message = kind }))
end

-- Takes a task that is not with the dispatcher out of the backlog (or out
-- of its retry backoff).
local function unqueue(self, fut)
  if self.retry_waiting[fut] then
    self.retry_waiting[fut] = nil
  else
    backlog.removed(self.backlog)
  end
  clear_timers(fut)
end

-- Stops one task: kind "cancelled" (fut:cancel, group cancel) or
-- "timeout". grace overrides the group's grace period. A task in the
-- backlog never runs; one the dispatcher holds gets the stop steps, or,
-- not started yet, is settled at once (dispatch.lua's stop_task).
function Pool:_stop_task(fut, kind, grace)
  if fut:done() then return end
  if fut.status == "queued" and not fut.worker then
    unqueue(self, fut)
    return settle_unrun(self, fut, kind)
  end
  if self.dispatcher:stop_task(fut, kind, grace) then settle_unrun(self, fut, kind) end
end

-- fut:kill(): SIGKILL the worker running it; a fresh worker takes its
-- place. A task not running yet fails "killed" without running. Retried
-- only when retry_on lists "killed" and the kill came from fut:kill() on
-- a running task.
function Pool:_kill_task(fut)
  if fut:done() then return end
  if not fut.worker then
    unqueue(self, fut)
    return settle_unrun(self, fut, "killed")
  end
  if self.dispatcher:kill_task(fut) then settle_unrun(self, fut, "killed") end
end

-- -------------------------------------------------------------------------
-- public API

-- Queues a task encoded by core.pack_task or core.pack_chunk.
function Pool:_enqueue(group, task)
  local fut = Future.new(group, new_id(), task)
  group:_add(fut)
  if group.failed_fast then
    -- the group has failed fast: what comes after is cancelled at once
    finish(self, fut, "cancelled", nil, task_error("cancelled", { message = "group failed fast" }))
    return fut
  end
  local bl = self.backlog
  if bl.n == 0 and self.dispatcher:offer(fut) then return fut end
  push(bl, fut)
  if bl.n <= self.eager then self.dispatcher:pump() end
  return fut
end

-- pool:submit and group:submit.
function Pool:_submit(group, fn, ...)
  local t = type(fn)
  if self.closed or (t ~= "function" and t ~= "string") then
    if self.closed then check.fail("orch.pool", "submit on a closed pool") end
    check.fail("orch.pool", "submit expects a function or a 'module.name' string (got %s)",
      check.show(fn))
  end
  -- encoded once, here: what cannot cross is refused at submit
  local ok, task = pcall(pack_task, fn, ...)
  if not ok then check.fail("orch.pool", "submit: %s", tostring(task)) end
  local max = self.dispatcher.max_message
  if max and task_info(task) > max then
    check.fail("orch.pool", "submit: the task takes %d bytes packed (its function and arguments), "
      .. "over the limit of %d (max_message)", (task_info(task)), max)
  end
  local fut = self:_enqueue(group, task)
  if group.keeps_args then
    fut.fn, fut.args = fn, pack(...)  -- what a policy function may look at
  end
  return fut
end

--- Runs fn(...) in a worker.
-- @param fn a function, or a string "module.name" resolved in the worker
-- @param ... its arguments (values that cross processes)
-- @treturn Future
function Pool:submit(fn, ...)
  if getmetatable(self) ~= Pool then check.dot_call(Pool, "submit") end
  return self:_submit(self.default_group, fn, ...)
end

--- A batch of tasks with its own options (timeout, retries, retry_on,
-- on_error, grace, backoff).
-- @tparam[opt] table opts
-- @treturn Group
function Pool:group(opts)
  check.method(self, Pool, "group")
  return Group.new(self, opts)
end

--- The ordered results of fn over items (see orch.map for the options).
-- @param fn a function or "module.name"
-- @tparam table items an array
-- @tparam[opt] table opts chunk, and the long-run options
-- @treturn table results
function Pool:map(fn, items, opts)
  check.method(self, Pool, "map")
  return map.map(self.default_group, fn, items, opts, "pool:map")
end

--- An iterator yielding i, result of fn over items: in order, or in
-- completion order with opts.ordered = false.
-- @param fn a function or "module.name"
-- @tparam table items an array
-- @tparam[opt] table opts
-- @treturn function iterator
function Pool:imap(fn, items, opts)
  check.method(self, Pool, "imap")
  return map.imap(self.default_group, fn, items, opts, "pool:imap")
end

--- The pool's counts.
-- @treturn table { workers, idle, queued, running, done, failed,
-- cancelled, restarts }
function Pool:stats()
  check.method(self, Pool, "stats")
  local live, idle, running, ahead, restarts = self.dispatcher:stats()
  return {
    workers = live, idle = idle, queued = self.backlog.n + ahead, running = running,
    done = self.n_done, failed = self.n_failed, cancelled = self.n_cancelled,
    restarts = restarts,
  }
end

--- No new tasks; what was submitted still runs.
function Pool:close()
  check.method(self, Pool, "close")
  self.closed = true
  self.dispatcher:close()
end

--- Waits (closing the pool) until every task has ended and every worker
-- has exited.
-- @tparam[opt] number timeout seconds (nil: no limit)
-- @return true, or nil, "timeout"
function Pool:join(timeout)
  check.method(self, Pool, "join")
  check.timeout("orch.pool", "join", timeout)
  if not self.closed then check.fail("orch.pool", "join before close (call pool:close() first)") end
  local d = self.dispatcher
  if loop.wait(function() return d:live() == 0 end, timeout) then
    self:_release()
    return true
  end
  return nil, "timeout"
end

local SHUTDOWN_OPTIONS = { cancel_pending = "boolean", grace = "non-negative number" }

--- Closes the pool and waits for it. With cancel_pending, queued tasks are
-- cancelled and running ones get stop requests (then SIGKILL after grace).
-- @tparam[opt] table opts { cancel_pending = false, grace = seconds }
-- @return true
function Pool:shutdown(opts)
  check.method(self, Pool, "shutdown")
  opts = check.options("orch.pool", opts, SHUTDOWN_OPTIONS, "shutdown: ")
  self:close()
  if opts.cancel_pending then
    self:_cancel_all(opts.grace)
  end
  return self:join()
end

function Pool:_cancel_all(grace)
  local fut = pop(self.backlog)
  while fut do
    finish(self, fut, "cancelled", nil, task_error("cancelled", { message = "cancelled" }))
    fut = pop(self.backlog)
  end
  for f in pairs(self.retry_waiting) do self:_stop_task(f, "cancelled", grace) end
  for _, f in ipairs(self.dispatcher:held()) do self:_stop_task(f, "cancelled", grace) end
  self.dispatcher:close()
end

local function killed_error(fut, pid)
  local err = task_error("killed", { message = "pool terminated", pid = pid })
  err.attempts = fut.attempts
  return err
end

--- SIGKILLs every worker now. Running and queued futures fail "killed";
-- the pool is closed.
function Pool:terminate()
  check.method(self, Pool, "terminate")
  if self.terminated then return end
  self.closed, self.terminated = true, true
  local held, pids = self.dispatcher:terminate()
  for i, fut in ipairs(held) do finish(self, fut, "failed", nil, killed_error(fut, pids[i])) end
  local waiting = {}
  for fut in pairs(self.retry_waiting) do waiting[#waiting + 1] = fut end
  self.retry_waiting = {}
  local fut = pop(self.backlog) or table.remove(waiting)
  while fut do
    clear_timers(fut)
    finish(self, fut, "failed", nil, killed_error(fut))
    fut = pop(self.backlog) or table.remove(waiting)
  end
  self:_release()
end

function Pool:_release()
  pools[self] = nil
  registry.unregister(self)
end

-- pool:status_tasks() -> the tasks not settled yet, for orch.status: those
-- its workers hold, then those queued ({ id, state, pid, started, task, future }).
function Pool:status_tasks()
  local list, d = {}, self.dispatcher
  local function add(fut)
    local pid, started = d:where(fut)
    list[#list + 1] = { id = fut.id, state = fut.status, pid = pid, started = started,
                        task = fut.task, future = fut }
  end
  for _, fut in ipairs(d:held()) do
    if not fut:done() then add(fut) end
  end
  local bl = self.backlog
  for k = bl.head, bl.tail do
    if bl[k].status == "queued" then add(bl[k]) end
  end
  return list
end

function Pool:__close()
  if self.terminated or self.dispatcher:live() == 0 then return self:_release() end
  -- a pool of a task being stopped passes the stop steps on to its tasks
  local ok, err = pcall(self.shutdown, self, core.stopping() and { cancel_pending = true } or nil)
  if not ok then
    self:terminate()
    error(err, 0)
  end
end

-- Collected with live workers: kill and reap them, quietly.
function Pool:__gc()
  self.dispatcher:discard()
end

function Pool:__tostring()
  return ("orch.pool (%d workers%s)"):format(self.size, self.closed and ", closed" or "")
end

-- -------------------------------------------------------------------------
-- default signal behaviour of a plain script with pools (signal.two_stage):
-- the first INT or TERM cancels the pools' work and raises "interrupted" in
-- the waiting script; a second one kills every worker and ends the process
-- by it.

local party = {}

-- Every pool's workers have exited.
local function all_stopped()
  for p in pairs(pools) do
    if p.dispatcher:live() > 0 then return false end
  end
  return true
end

function party.stop(name)
  for p in pairs(pools) do
    if not p.terminated then p.closed = true; p:_cancel_all() end
  end
  loop.interrupt(name, all_stopped)
end

function party.kill(name)
  for p in pairs(pools) do p:terminate() end
  core.die_by(name)
end

local defaults_installed = false

local function install_defaults()
  if defaults_installed then return end
  defaults_installed = true
  signal.two_stage(party)
end

-- orch.pool(opts) -> Pool
local function new(opts)
  opts = check_options(opts)
  local self = setmetatable({
    opts = opts, backlog = backlog.new(), retry_waiting = {},
    n_done = 0, n_failed = 0, n_cancelled = 0,
  }, Pool)
  -- local workers, or tasks through a broker to other hosts
  local d = (opts.broker and require("orch.broker.dispatch") or dispatch).new(side_of(self), opts)
  -- size and slots: the workers, for tests and benchmarks that look at them
  self.dispatcher, self.eager, self.size, self.slots = d, d.eager, d.size, d.slots
  self.default_group = Group.new(self, nil, true)
  local ok, err = pcall(d.start, d)
  if not ok then
    self:terminate()
    error(err, 2)
  end
  pools[self] = true
  registry.register(self, "pool")
  install_defaults()
  return self
end

return { new = new, Pool = Pool }
