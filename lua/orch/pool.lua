--- Pools: tasks run in pre-forked worker processes.
--
-- The parent is the only scheduler. Each worker has a FIFO of tasks sent
-- to it (`inflight`, a ring read from count `ih` to count `it`): the first
-- is running, the others wait in its channel (a short pipeline, so a
-- worker never idles between two small tasks).
-- A worker that dies is noticed once its exit is reaped and everything it
-- wrote has been read; its running task fails ("crashed", or the kind of
-- the stop that killed it), the tasks waiting behind it go back to the
-- queue, and a new worker takes its slot. Workers share no locks, so a
-- worker that dies at any instant cannot wedge the others.
local core = require "orch.core"
local loop = require "orch.loop"
local log = require "orch.log"
local signal = require "orch.signal"
local child = require "orch.child"
local Future = require "orch.future"
local Group = require "orch.group"
local TaskError = require("orch.errors").TaskError
local settle = Future._settle

local MSG = core.msg
local RESULT, ERROR = MSG.RESULT, MSG.ERROR
local pack = table.pack
local pack_task = core.pack_task

local Pool = {}
Pool.__index = Pool
Pool.__name = "orch.pool"

-- Tasks sent ahead to a busy worker when the queue is long: as many as
-- fit in PIPELINE_SECONDS of the pool's mean task time, at most
-- PIPELINE_MAX. Short tasks then cost no round trip each, and long ones
-- are never stuck behind each other on one worker while another idles.
local PIPELINE_MAX = 32
-- Slots in a worker's ring: task number i sits at inflight[i % RING + 1].
-- A worker holds at most PIPELINE_MAX tasks (refill, _pump).
local RING = 64
local PIPELINE_SECONDS = 0.002
-- Workers that fail their init this many times in a row break the pool.
local MAX_INIT_FAILURES = 3

local OPTIONS = {
  workers = "number", max_tasks_per_worker = "number", timeout = "number",
  retries = "number", retry_on = "table", on_error = "string|function",
  grace = "number", init = "function|string", backoff = "number",
}
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
local weak_values = { __mode = "v" }

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
  Group.check_policy(opts, "orch.pool", 4)
  return opts
end

---------------------------------------------------------------------------
-- the queue of tasks not yet sent to a worker (a deque: retried and
-- returned tasks go back to the front)

local function push_back(self, fut)
  local t = self.q_tail + 1
  self.q_tail = t
  self.queue[t] = fut
  self.n_queued = self.n_queued + 1
end

local function push_front(self, fut)
  local h = self.q_head - 1
  self.q_head = h
  self.queue[h] = fut
  self.n_queued = self.n_queued + 1
end

local function pop_front(self)
  while self.q_head <= self.q_tail do
    local h = self.q_head
    local fut = self.queue[h]
    self.queue[h] = nil
    self.q_head = h + 1
    if fut.status == "queued" then  -- else settled while queued (_unqueue)
      self.n_queued = self.n_queued - 1
      return fut
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- workers

local spawn_workers

local function worker_main(name)
  return function()
    log.name = name
    core.serve()
  end
end

-- Forks a worker for each of the given slots, in one core.spawn: the
-- children are forked back to back, so none of them inherits as its own
-- the pages the parent writes while it sets up the next one.
local SPAWN_BATCH = 64  -- core.spawn's limit
spawn_workers = function(self, first, last)
  local ref = setmetatable({ self }, weak_values)
  local workers, args = {}, {}
  for slot = first, last do
    local w = { slot = slot, name = "worker " .. slot, inflight = {}, ih = 1, it = 0, dispatched = 0 }
    workers[#workers + 1] = w
    args[#args + 1] = worker_main(w.name)
    args[#args + 1] = function(_, ...)
      local pool = ref[1]
      if pool then pool:_message(w, ...) end
    end
    args[#args + 1] = function(_, how, code)
      local pool = ref[1]
      if pool then pool:_exited(w, how, code) end
    end
  end
  local init = self.opts.init
  for i = 1, #workers, SPAWN_BATCH do
    local j = math.min(i + SPAWN_BATCH - 1, #workers)
    local procs = { core.spawn(table.unpack(args, 3 * i - 2, 3 * j)) }
    for k = i, j do
      local w = workers[k]
      w.proc = procs[k - i + 1]
      w.pid = w.proc:pid()
      self.slots[w.slot] = w
      self.n_live = self.n_live + 1
      if init ~= nil then
        w.proc:send_task(0, core.pack_task(init))
        w.in_init = true
      end
    end
  end
end

-- The tasks sent to w, the running one first.
local function inflight_list(w)
  local list, ring = {}, w.inflight
  for i = w.ih, w.it do list[#list + 1] = ring[i % RING + 1] end
  return list
end

local function head_of(w)
  return w.inflight[w.ih % RING + 1]
end

-- The three stop steps (child.stop) for the task fut that now runs first
-- on worker w: ask (orch.stopping() turns true), interrupt (a hook raises
-- "cancelled" or "timeout" in its Lua code), SIGKILL of its worker's
-- process group after the grace period. Each step is skipped once w has
-- answered.
local function escalate(fut, w)
  local grace = fut.stop_grace or fut.group.opts.grace or 5
  local level = fut.stop_kind == "timeout" and MSG.STOP_TIMEOUT or MSG.STOP_CANCEL
  child.stop(w.proc, fut.id, fut, grace, level, function()
    return head_of(w) == fut and not w.dead
  end, function()
    log.deliver("warn", ("task %d still running %gs after a stop request: killing %s")
      :format(fut.id, grace, w.name), w.name, w.pid)
    w.retiring, w.killed = true, true  -- no new work for it
  end)
end

-- Starts the clock of the task that now runs first on w (w.started is
-- the task whose start was seen, at w.started_at).
local function start_head(self, w, now)
  local fut = w.inflight[w.ih % RING + 1]
  if not fut or w.started == fut then return end
  w.started, w.started_at = fut, now or core.now()
  if fut.status ~= "queued" then
    -- settled while it waited in the pipeline (see Pool:_stop_task): the
    -- worker answers it without running it, or, if it had just started it,
    -- is interrupted; stuck in C, it is killed after the grace period
    return escalate(fut, w)
  end
  fut.status = "running"
  self.n_running = self.n_running + 1
  local timeout = fut.group.opts.timeout
  if timeout and not fut.stop_kind then
    fut.timer = core.timer(timeout, function()
      fut.timer = nil
      if fut.status == "running" then self:_stop_task(fut, "timeout") end
    end)
  end
  if fut.stop_kind then escalate(fut, w) end
end

local function send_task(self, w, fut)
  if not w.proc:send_task(fut.id, fut.task) then
    -- its channel is closed: the worker is exiting, its exit will tell why
    w.retiring = true
    return push_front(self, fut)
  end
  fut.worker = w
  fut.attempts = fut.attempts + 1
  local t = w.it + 1
  w.it = t
  w.inflight[t % RING + 1] = fut
  w.dispatched = w.dispatched + 1
  if t == w.ih then start_head(self, w) end
  local max = self.opts.max_tasks_per_worker
  if max and w.dispatched >= max then
    w.retiring = true
    w.proc:send(MSG.QUIT)
  end
end

local function usable(w)
  return w and not (w.retiring or w.in_init or w.dead)
end

-- Fills w's pipeline from the queue: one task, and more only while the
-- queue holds more tasks than there are workers.
local function refill(self, w)
  local limit = self.n_queued > self.size and self.pipeline or 1
  while w.it - w.ih + 1 < limit and not w.retiring do
    local fut = pop_front(self)
    if not fut then return end
    send_task(self, w, fut)
  end
end

-- Sends queued tasks to workers: idle ones first, then the pipelines.
function Pool:_pump()
  if self.n_queued == 0 then return end
  local slots, size = self.slots, self.size
  for i = 1, size do
    local w = slots[i]
    if usable(w) and w.it < w.ih then
      local fut = pop_front(self)
      if not fut then return end
      send_task(self, w, fut)
    end
  end
  if self.n_queued > size then
    for i = 1, size do
      local w = slots[i]
      if usable(w) then refill(self, w) end
    end
  end
end

-- The pool is closed and has nothing left to do: workers may go.
function Pool:_maybe_retire()
  if not self.closed or self.n_queued > 0 or self.n_running > 0 then return end
  if next(self.retry_waiting) then return end
  for i = 1, self.size do
    local w = self.slots[i]
    if w and not w.retiring and not w.dead and w.it < w.ih then
      w.retiring = true
      w.proc:send(MSG.QUIT)
    end
  end
end

---------------------------------------------------------------------------
-- outcomes

local function clear_timers(fut)
  if fut.timer then fut.timer:stop(); fut.timer = nil end
  if fut.stop_timer or fut.kill_timer then child.clear_steps(fut) end
end

local function task_error(kind, fields)
  fields.kind = kind
  return TaskError.new(fields)
end

-- Ends a future that has left the queue and the workers for good.
function Pool:_finish(fut, status, values, err)
  clear_timers(fut)
  if fut.status == "running" then self.n_running = self.n_running - 1 end
  fut.worker = nil
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

-- A task failed with err: retry it, or settle it and apply the policy.
function Pool:_failed(fut, err)
  err.attempts = fut.attempts
  if err.kind == "cancelled" then
    return self:_finish(fut, "cancelled", nil, err)
  end
  local group = fut.group
  local action = group:_decide(err, fut)
  if action == "retry" and not (self.terminated or fut.stop_kind or fut.no_retry) then
    clear_timers(fut)
    if fut.status == "running" then self.n_running = self.n_running - 1 end
    fut.status, fut.worker = "queued", nil
    fut.id = new_id()
    local delay = group:_backoff(fut)
    if delay > 0 then
      -- waits out its backoff outside the queue (self.retry_waiting)
      self.retry_waiting[fut] = true
      fut.timer = core.timer(delay, function()
        fut.timer = nil
        self.retry_waiting[fut] = nil
        if fut.status == "queued" then push_back(self, fut); self:_pump() end
      end)
    else
      push_back(self, fut)
    end
    return
  end
  self:_finish(fut, "failed", nil, err)
  if action == "fail_fast" then group:_fail_fast(err) end
end

-- The init task (id 0) has answered; message: its error, if it failed.
function Pool:_init_done(w, failed, message)
  w.in_init = false
  if failed then
    self.init_error = message
    w.retiring = true  -- it exits with code 3; its slot gets a new worker
    log.deliver("error", "init failed: " .. tostring(message), w.name, w.pid)
  else
    self.init_failures = 0
  end
end

-- Takes the task that answered (id) off the head of w's pipeline: nil
-- after a protocol error (the worker is then killed).
local function take_head(w, id)
  local h = w.ih
  local k = h % RING + 1
  local fut = w.inflight[k]
  if fut then
    w.inflight[k] = nil
    w.ih = h + 1
    w.started = nil
  end
  if not fut or fut.id ~= id then
    child.protocol_error(w.proc, w.name, ("result for task %s out of order"):format(id))
    w.proc:kill()
    return nil
  end
  return fut
end

-- Whether the task that answered still waits for its outcome: one settled
-- while it waited in the pipeline has nothing left to tell.
local function awaited(fut)
  local status = fut.status
  if status == "running" or status == "queued" then return true end
  clear_timers(fut)
  return false
end

-- w has answered count tasks: the mean time a task holds a worker (from
-- the start of the first of them) sets the pipeline's depth, the next task
-- starts, and there is more work for w or for the others.
local function answered(self, w, now, count)
  local since = w.started_at
  if since and count > 0 then
    local ran = (now - since) / count
    local mean = self.mean_task
    mean = mean and 0.9 * mean + 0.1 * ran or ran
    self.mean_task = mean
    local depth = mean > 0 and PIPELINE_SECONDS // mean or PIPELINE_MAX
    self.pipeline = depth > PIPELINE_MAX and PIPELINE_MAX or depth < 1 and 1 or depth
  end
  start_head(self, w, now)
  if self.n_queued > 0 then
    if usable(w) then refill(self, w) else self:_pump() end
  end
  self:_maybe_retire()
end

-- RESULT frames, gathered: batch holds id, values ({n = count, ...}) for
-- each, n entries in all. A task that waited in the pipeline may have
-- ended within the batch: it never showed as running.
function Pool:_results(w, batch, n)
  local now, count = core.now(), 0
  for k = 1, n, 2 do
    local id, values = batch[k], batch[k + 1]
    if id == 0 and w.in_init then
      self:_init_done(w, false)
    else
      local fut = take_head(w, id)
      if not fut then return end
      count = count + 1
      if awaited(fut) then
        if fut.stop_kind then
          self:_stopped(fut, w, nil)
        else
          self:_finish(fut, "done", values)
        end
      end
    end
  end
  answered(self, w, now, count)
end

function Pool:_message(w, type, id, ...)
  if type == RESULT then
    self:_results(w, id, ...)
  elseif type == ERROR then
    local kind, message, traceback, value = ...
    if id == 0 and w.in_init then
      self:_init_done(w, true, message)
      return answered(self, w, core.now(), 0)
    end
    local fut = take_head(w, id)
    if not fut then return end
    if awaited(fut) then
      if fut.stop_kind then
        -- stopped: its own error, if it raised one, is the detail
        self:_stopped(fut, w, kind == "error"
          and { message = message, traceback = traceback, value = value } or nil)
      else
        self:_failed(fut, task_error(kind, {
          message = message, traceback = traceback ~= "" and traceback or nil,
          value = value, pid = w.pid }))
      end
    end
    answered(self, w, core.now(), 1)
  elseif not child.frame(w.proc, w.name, type, id, ...) then
    w.proc:kill()  -- its channel cannot be trusted
  end
end

-- A task that was asked to stop has ended (or its worker was killed). A
-- cancelled task is cancelled whatever it did meanwhile; a timeout is a
-- failure like any other (retried when retry_on lists "timeout").
function Pool:_stopped(fut, w, detail)
  local kind = fut.stop_kind
  local err = task_error(kind, {
    message = detail and detail.message or kind, traceback = detail and detail.traceback,
    value = detail and detail.value, pid = w and w.pid })
  if kind ~= "cancelled" then fut.stop_kind = nil end  -- a timeout may run again
  self:_failed(fut, err)
end

-- A running task goes back to the front of the queue, as if never sent.
function Pool:_requeue(fut)
  clear_timers(fut)
  if fut.status == "running" then self.n_running = self.n_running - 1 end
  fut.status, fut.worker = "queued", nil
  fut.attempts = fut.attempts - 1
  push_front(self, fut)
end

function Pool:_exited(w, how, code)
  w.dead = true
  child.exited(w.proc)
  self.n_live = self.n_live - 1
  if self.slots[w.slot] == w then self.slots[w.slot] = nil end
  local inflight = inflight_list(w)
  w.inflight, w.ih, w.it = {}, 1, 0
  local replace = not w.retiring or w.killed or inflight[1] ~= nil
  local head = inflight[1]
  if head and head:done() then
    clear_timers(head)  -- settled while pipelined (see start_head)
  elseif head then
    if head.stop_kind then
      self:_stopped(head, w, nil)
    elseif w.killed_task == head then
      self:_failed(head, task_error("killed", { message = "killed", pid = w.pid }))
    elseif not w.killed_task then
      local fields = { pid = w.pid }
      if how == "signal" then
        fields.signal, fields.signal_name = code, core.signame(code)
      else
        fields.exit_code = code
      end
      self:_failed(head, task_error("crashed", fields))
    end
  end
  -- the others never started: back to the front of the queue, in order
  for i = #inflight, 2, -1 do
    local fut = inflight[i]
    if fut.status == "queued" then
      fut.worker = nil
      fut.attempts = fut.attempts - 1
      if fut.stop_kind then
        self:_finish(fut, "cancelled", nil, task_error("cancelled", { message = "cancelled" }))
      else
        push_front(self, fut)
      end
    end
  end
  if head and head.status == "running" and w.killed_task and w.killed_task ~= head then
    -- killed for a task whose result was on its way: this one had only
    -- just started and is not the one the kill was meant for
    self:_requeue(head)
  end
  if how == "exit" and code == 3 and self.init_error then
    self.init_failures = (self.init_failures or 0) + 1
  end
  if self.terminated then return end
  local broken = (self.init_failures or 0) >= MAX_INIT_FAILURES
  if broken then
    return self:_break(("worker init failed %d times: %s"):format(self.init_failures, self.init_error))
  end
  local needed = not self.closed or self.n_queued > 0 or self.n_running > 0
    or next(self.retry_waiting) ~= nil
  if needed then
    if replace then self.restarts = self.restarts + 1 end
    spawn_workers(self, w.slot, w.slot)
    self:_pump()
  end
  self:_maybe_retire()
end

-- Init keeps failing: nothing can run here. Fail all that waits.
function Pool:_break(message)
  self.closed = true
  local fut = pop_front(self)
  while fut do
    self:_finish(fut, "failed", nil, task_error("error", { message = message }))
    fut = pop_front(self)
  end
  self:_maybe_retire()
end

---------------------------------------------------------------------------
-- stopping running work

-- Settles a task that has not run (or whose run does not count): cancelled,
-- or failed with that kind (the group's policy then applies).
function Pool:_settle_unrun(fut, kind, message)
  if kind ~= "cancelled" then fut.no_retry = true end
  self:_failed(fut, task_error(kind, { message = message or kind }))
end

-- Takes a task that is not on a worker out of the queue (or out of its
-- retry backoff).
function Pool:_unqueue(fut)
  if self.retry_waiting[fut] then
    self.retry_waiting[fut] = nil
  else
    self.n_queued = self.n_queued - 1
  end
  clear_timers(fut)
end

--- Stops one task: kind "cancelled" (fut:cancel, group cancel) or
-- "timeout". grace overrides the group's grace period.
-- A task still in the queue never runs. A task waiting in a worker's
-- pipeline is settled at once: the worker is told (the stop signal's ring,
-- see worker.c) and answers it without running it, so nobody waits for the
-- task ahead of it. A running task gets the three steps (escalate).
function Pool:_stop_task(fut, kind, grace)
  if fut:done() then return end
  if fut.status == "queued" and not fut.worker then
    self:_unqueue(fut)
    return self:_settle_unrun(fut, kind)
  end
  if fut.stop_kind then return end
  fut.stop_kind, fut.stop_grace = kind, grace
  if fut.timer then fut.timer:stop(); fut.timer = nil end
  if fut.status == "running" then
    escalate(fut, fut.worker)
  else
    local level = kind == "timeout" and MSG.STOP_TIMEOUT or MSG.STOP_CANCEL
    fut.worker.proc:stop(fut.id, level)
    self:_settle_unrun(fut, kind)
  end
end

--- fut:kill(): SIGKILL the worker running it (its process group: whatever
-- the task started goes too); a fresh worker takes its place. A task not
-- running yet fails "killed" without running. Retried only when retry_on
-- lists "killed" and the kill came from fut:kill() on a running task.
function Pool:_kill_task(fut)
  if fut:done() then return end
  local w = fut.worker
  if not w then
    self:_unqueue(fut)
    return self:_settle_unrun(fut, "killed")
  end
  if fut.status == "running" then
    fut.stop_kind = nil
    clear_timers(fut)
    w.killed_task, w.killed, w.retiring = fut, true, true
    w.proc:kill()
  else
    fut.stop_kind = "cancelled"  -- the worker must not run it (start_head)
    w.proc:stop(fut.id, MSG.STOP_CANCEL)
    self:_settle_unrun(fut, "killed")
  end
end

---------------------------------------------------------------------------
-- public API

-- Queues a task encoded by core.pack_task or core.pack_chunk.
function Pool:_enqueue(group, task)
  local fut = Future.new(group, new_id(), task)
  group:_add(fut)
  if group.failed_fast then
    -- the group has failed fast: what comes after is cancelled at once
    self:_finish(fut, "cancelled", nil, task_error("cancelled", { message = "group failed fast" }))
    return fut
  end
  push_back(self, fut)
  -- with a queue longer than the pool, every worker is as busy as it may
  -- be: results refill them, so there is nothing to send now
  if self.n_queued <= self.size + 1 then self:_pump() end
  return fut
end

-- pool:submit and group:submit.
local function submit(self, group, fn, ...)
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
Pool._submit = submit

--- pool:submit(fn, ...) -> Future
function Pool:submit(fn, ...)
  return submit(self, self.default_group, fn, ...)
end

--- pool:group(opts) -> Group: a batch with its own options.
function Pool:group(opts)
  return Group.new(self, opts)
end

--- pool:map(fn, items, opts) -> results (see Group:map).
function Pool:map(fn, items, opts)
  return self.default_group:_map(fn, items, opts, "pool:map")
end

--- pool:imap(fn, items, opts) -> iterator yielding i, result.
function Pool:imap(fn, items, opts)
  return self.default_group:_imap(fn, items, opts, "pool:imap")
end

function Pool:stats()
  local idle, live, waiting = 0, 0, 0
  for i = 1, self.size do
    local w = self.slots[i]
    if w and not w.dead then
      live = live + 1
      if w.it < w.ih then idle = idle + 1 end
      for _, fut in ipairs(inflight_list(w)) do
        if fut.status == "queued" then waiting = waiting + 1 end  -- sent ahead, not started
      end
    end
  end
  return {
    workers = live, idle = idle, queued = self.n_queued + waiting, running = self.n_running,
    done = self.n_done, failed = self.n_failed, cancelled = self.n_cancelled,
    restarts = self.restarts,
  }
end

--- No new tasks; what was submitted still runs.
function Pool:close()
  self.closed = true
  self:_maybe_retire()
end

--- Waits (closing the pool) until every task has ended and every worker
-- has exited: true, or nil, "timeout".
function Pool:join(timeout)
  if not self.closed then error("orch.pool: join before close (call pool:close() first)", 2) end
  if loop.wait(function() return self.n_live == 0 end, timeout) then
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
  local fut = pop_front(self)
  while fut do
    self:_finish(fut, "cancelled", nil, task_error("cancelled", { message = "cancelled" }))
    fut = pop_front(self)
  end
  for f in pairs(self.retry_waiting) do self:_stop_task(f, "cancelled", grace) end
  for i = 1, self.size do
    local w = self.slots[i]
    if w then
      -- last first: what waits behind the running task is stopped before
      -- the worker can start it (see group.lua's unfinished)
      local list = inflight_list(w)
      for k = #list, 1, -1 do self:_stop_task(list[k], "cancelled", grace) end
    end
  end
  self:_maybe_retire()
end

--- SIGKILLs every worker now. Running and queued futures fail "killed".
function Pool:terminate()
  if self.terminated then return end
  self.closed, self.terminated = true, true
  local killed = {}
  for i = 1, self.size do
    local w = self.slots[i]
    if w then
      w.dead = true
      w.proc:kill()
      killed[#killed + 1] = w
    end
    self.slots[i] = nil
  end
  for _, w in ipairs(killed) do
    w.proc:close()  -- reaps it now: no zombie outlives terminate()
    child.exited(w.proc)
    self.n_live = self.n_live - 1
    local inflight = inflight_list(w)
    w.inflight, w.ih, w.it = {}, 1, 0
    for _, fut in ipairs(inflight) do
      clear_timers(fut)
      if not fut:done() then
        local err = task_error("killed", { message = "pool terminated", pid = w.pid })
        err.attempts = fut.attempts
        self:_finish(fut, "failed", nil, err)
      end
    end
  end
  local waiting = {}
  for fut in pairs(self.retry_waiting) do waiting[#waiting + 1] = fut end
  self.retry_waiting = {}
  local fut = pop_front(self) or table.remove(waiting)
  while fut do
    clear_timers(fut)
    local err = task_error("killed", { message = "pool terminated" })
    err.attempts = fut.attempts
    self:_finish(fut, "failed", nil, err)
    fut = pop_front(self) or table.remove(waiting)
  end
  self:_release()
end

function Pool:_release()
  pools[self] = nil
end

function Pool:__close()
  if self.terminated or self.n_live == 0 then return self:_release() end
  local ok, err = pcall(self.shutdown, self)
  if not ok then
    self:terminate()
    error(err, 0)
  end
end

-- Collected with live workers: kill and reap them, quietly.
function Pool:__gc()
  for i = 1, self.size do
    local w = self.slots[i]
    if w then w.proc:close() end
  end
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
  if core.in_child() then error("orch.pool: pools are created in the parent process", 2) end
  local size = opts.workers or core.cpu_count()
  local self = setmetatable({
    opts = opts, size = size, slots = {}, queue = {}, q_head = 1, q_tail = 0,
    n_queued = 0, n_running = 0, n_done = 0, n_failed = 0, n_cancelled = 0,
    n_live = 0, restarts = 0, retry_waiting = {}, pipeline = 1, mean_task = nil,
  }, Pool)
  self.default_group = Group.new(self, nil, true)
  local ok, err = pcall(function()
    spawn_workers(self, 1, size)
  end)
  if not ok then
    self:terminate()
    error(err, 2)
  end
  pools[self] = true
  install_defaults()
  return self
end

return { new = new, Pool = Pool }
