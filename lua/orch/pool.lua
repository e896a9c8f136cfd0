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
local pack_task = core.pack_task

local Pool = {}
Pool.__index = Pool
Pool.__name = "orch.pool"

local OPTIONS = {
  workers = "number", max_tasks_per_worker = "number", timeout = "number",
  retries = "number", retry_on = "table", on_error = "string|function",
  grace = "number", init = "function|string", backoff = "number",
  max_memory_per_worker = "number", limits = "table",
}
local LIMITS = { cpu = true, memory = true, files = true, processes = true }
local VALID = {}
for k in pairs(OPTIONS) do VALID[#VALID + 1] = k end
table.sort(VALID)

local pools = setmetatable({}, { __mode = "k" })  -- live pools, for signals

-- Task ids: one per run. A retry runs under a new id, because a worker
-- remembers the stop requests it got for an id (worker.c's ring) and would
-- answer a second run of a stopped id without running it.
local last_id = 0
local function new_id()
  last_id = last_id + 1
  return last_id
end

local function fail_option(fmt, ...)
  error("orch.pool: " .. fmt:format(...), 3)
end

local function check_options(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail_option("options must be a table, got %s", type(opts)) end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then
      fail_option("unknown option '%s' (valid: %s)", tostring(k), table.concat(VALID, ", "))
    end
    if not want:find(type(v), 1, true) then
      fail_option("option '%s' must be a %s, got %s", k, want:gsub("|", " or "), type(v))
    end
  end
  local n = opts.workers
  if n ~= nil and (math.type(n) ~= "integer" or n < 1) then
    fail_option("option 'workers' must be a positive integer, got %s", tostring(n))
  end
  local m = opts.max_tasks_per_worker
  if m ~= nil and (math.type(m) ~= "integer" or m < 1) then
    fail_option("option 'max_tasks_per_worker' must be a positive integer, got %s", tostring(m))
  end
  local r = opts.max_memory_per_worker
  if r ~= nil and (math.type(r) ~= "integer" or r < 1) then
    fail_option("option 'max_memory_per_worker' must be a positive integer (bytes), got %s", tostring(r))
  end
  for k, v in pairs(opts.limits or {}) do
    if not LIMITS[k] then
      fail_option("option 'limits' has no '%s' (valid: cpu, files, memory, processes)", tostring(k))
    end
    if math.type(v) ~= "integer" or v < 1 then
      fail_option("option 'limits.%s' must be a positive integer, got %s", k, tostring(v))
    end
  end
  Group.check_policy(opts, "orch.pool", 4)
  return opts
end

---------------------------------------------------------------------------
-- outcomes

local function task_error(kind, fields)
  fields.kind = kind
  return TaskError.new(fields)
end

-- Ends a future that has left the backlog and the dispatcher for good.
local function finish(self, fut, status, values, err)
  clear_timers(fut)
  if status == "done" then
    self.n_done = self.n_done + 1
  elseif status == "cancelled" then
    self.n_cancelled = self.n_cancelled + 1
  else
    self.n_failed = self.n_failed + 1
  end
  settle(fut, status, values, err)
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

---------------------------------------------------------------------------
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

--- Stops one task: kind "cancelled" (fut:cancel, group cancel) or
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

--- fut:kill(): SIGKILL the worker running it; a fresh worker takes its
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

---------------------------------------------------------------------------
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
  push(bl, fut)
  if bl.n <= self.eager then self.dispatcher:pump() end
  return fut
end

-- pool:submit and group:submit.
function Pool:_submit(group, fn, ...)
  local t = type(fn)
  if self.closed or (t ~= "function" and t ~= "string") then
    if self.closed then error("orch.pool: submit on a closed pool", 3) end
    error(("orch.pool: submit expects a function or a 'module.name' string, got %s"):format(t), 3)
  end
  -- encoded once, here: what cannot cross is refused at submit
  local fut = self:_enqueue(group, pack_task(fn, ...))
  if group.keeps_args then
    fut.fn, fut.args = fn, pack(...)  -- what a policy function may look at
  end
  return fut
end

--- pool:submit(fn, ...) -> Future
function Pool:submit(fn, ...)
  return self:_submit(self.default_group, fn, ...)
end

--- pool:group(opts) -> Group: a batch with its own options.
function Pool:group(opts)
  return Group.new(self, opts)
end

--- pool:map(fn, items, opts) -> results (see orch.map).
function Pool:map(fn, items, opts)
  return map.map(self.default_group, fn, items, opts, "pool:map")
end

--- pool:imap(fn, items, opts) -> iterator yielding i, result.
function Pool:imap(fn, items, opts)
  return map.imap(self.default_group, fn, items, opts, "pool:imap")
end

function Pool:stats()
  local live, idle, running, ahead, restarts = self.dispatcher:stats()
  return {
    workers = live, idle = idle, queued = self.backlog.n + ahead, running = running,
    done = self.n_done, failed = self.n_failed, cancelled = self.n_cancelled,
    restarts = restarts,
  }
end

--- No new tasks; what was submitted still runs.
function Pool:close()
  self.closed = true
  self.dispatcher:close()
end

--- Waits (closing the pool) until every task has ended and every worker
-- has exited: true, or nil, "timeout".
function Pool:join(timeout)
  if not self.closed then error("orch.pool: join before close (call pool:close() first)", 2) end
  local d = self.dispatcher
  if loop.wait(function() return d.n_live == 0 end, timeout) then
    self:_release()
    return true
  end
  return nil, "timeout"
end

--- Closes the pool and waits for it. With cancel_pending, queued tasks are
-- cancelled and running ones get stop requests (then SIGKILL after grace).
function Pool:shutdown(opts)
  opts = opts or {}
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

--- SIGKILLs every worker now. Running and queued futures fail "killed".
function Pool:terminate()
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

--- pool:status_tasks() -> the tasks not settled yet, for orch.status: those
-- its workers hold, then those queued ({ id, state, pid, started, fn, future }).
function Pool:status_tasks()
  local list, d = {}, self.dispatcher
  local function add(fut)
    local pid, started = d:where(fut)
    list[#list + 1] = { id = fut.id, state = fut.status, pid = pid, started = started,
                        fn = fut.fn, future = fut }
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
  if self.terminated or self.dispatcher.n_live == 0 then return self:_release() end
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

---------------------------------------------------------------------------
-- default signal behaviour of a plain script with pools (signal.two_stage):
-- the first INT or TERM cancels the pools' work and raises "interrupted" in
-- the waiting script; a second one kills every worker and ends the process
-- by it.

local party = {}

function party.stop(name)
  for p in pairs(pools) do
    if not p.terminated then p.closed = true; p:_cancel_all() end
  end
  loop.interrupted = name
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

--- orch.pool(opts) -> Pool
local function new(opts)
  opts = check_options(opts)
  local self = setmetatable({
    opts = opts, backlog = backlog.new(), retry_waiting = {},
    n_done = 0, n_failed = 0, n_cancelled = 0,
  }, Pool)
  local d = dispatch.new(side_of(self), opts)
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
