--- The local dispatcher: a pool's tasks run in pre-forked worker processes
-- of this machine.
--
-- A dispatcher is the seam between a pool (its API, lifecycle, retries and
-- failure policies) and where the pool's tasks run. This one forks
-- workers; another (tasks through a broker to other hosts) plugs in the
-- same way.
--
-- What the pool gives a dispatcher, in dispatch.new(side, opts):
--   side.backlog          the futures to run, oldest first (orch.backlog:
--                         pop the next, push_front one given back)
--   side.done(fut, values)  fut's task returned values (in one of the
--                         forms future.lua lists before Future.first)
--   side.failed(fut, err)   fut's task failed (err: a TaskError); the pool
--                         retries it (into the backlog) or settles it
--   side.waiting() -> bool  the pool holds tasks outside the backlog (in a
--                         retry backoff): the workers are still needed
--   side.broken(message)  no task can run here (init keeps failing)
-- A future it runs: fut.id, fut.task (packed at submit), fut.group.opts
-- (timeout, grace). The dispatcher counts fut.attempts (one per send),
-- sets fut.worker while it holds the task and fut.status = "running" once
-- it starts; the pool settles it. The pool may settle a task the
-- dispatcher holds but has not started (stop_task's answer): the
-- dispatcher drops it when it comes back.
--
-- What a dispatcher provides (d = dispatch.new(side, opts)):
--   d:start()             workers up (raises if that fails)
--   d.max_message         the largest packed task it takes, bytes (nil: any);
--                         the pool refuses a larger one at submit
--   d.eager               after queueing a task the pool calls d:pump()
--                         while the backlog holds at most this many (past
--                         that, the dispatcher's own answers keep it busy)
--   d:pump()              takes tasks from the backlog where they can run
--   d:offer(fut) -> sent  fut, with nothing waiting before it, straight to
--                         where it can run now (true), or nowhere (false:
--                         the pool puts it in the backlog)
--   d:stop_task(fut, kind, grace) -> unstarted
--                         the stop steps for a task it holds (kind
--                         "cancelled" or "timeout"); true: fut had not
--                         started and the pool settles it now
--   d:kill_task(fut) -> unstarted   SIGKILL of the task's worker (or, not
--                         started, the worker told not to run it)
--   d:held() -> futures   what it holds, in the order to stop them
--   d:where(fut) -> pid, started   the worker holding fut and when fut
--                         started there (core.now()), for status reports
--   d:close()             no more tasks once the backlog is empty: workers
--                         go when nothing runs or waits
--   d:terminate() -> futures, pids   everything killed and reaped now;
--                         what it held, for the pool to fail
--   d:discard()           the pool was collected: kill quietly
--   d:stats() -> live, idle, running, sent_ahead
--   d:live()              processes still up (join waits for 0)
--
-- Each worker has a FIFO of tasks sent to it (`inflight`, a ring read from
-- count `ih` to count `it`): the first is running, the others wait in its
-- channel (a short pipeline, so a worker never idles between two small
-- tasks). A worker that dies is noticed once its exit is reaped and
-- everything it wrote has been read; its running task fails ("crashed",
-- or the kind of the stop that killed it), the tasks waiting behind it go
-- back to the backlog, and a new worker takes its slot. A running task
-- whose frame never left the parent (`ends`, the ring's frame ends, past
-- what was written: the worker died idle, before it could be told) never
-- ran, and goes back too. The workers'
-- processes, from fork to exit, are orch.workers' (its header says what
-- this file reads of a worker and asks of it).
local core = require "orch.core"
local log = require "orch.log"
local child = require "orch.child"
local backlog = require "orch.backlog"
local workers = require "orch.workers"
local Future = require "orch.future"
local TaskError = require("orch.errors").TaskError

local MSG = core.msg
local RESULT, ERROR, RETIRE = MSG.RESULT, MSG.ERROR, MSG.RETIRE
local pop, push_front = backlog.pop, backlog.push_front
local clear_timers, hold = Future.clear_timers, Future.hold
local retire = workers.retire

-- Tasks sent ahead to a busy worker when the backlog is long: as many as
-- fit in PIPELINE_SECONDS of the mean task time, at most PIPELINE_MAX.
-- Short tasks then cost no round trip each, and long ones are never stuck
-- behind each other on one worker while another idles.
local PIPELINE_MAX = 64
-- Slots in a worker's ring: task number i sits at inflight[i % RING + 1].
-- A worker holds at most PIPELINE_MAX tasks (refill, pump).
local RING = 128
local PIPELINE_SECONDS = 0.002
local CORES = core.cpu_count()  -- cores online

local D = {}
D.__index = D

local function task_error(kind, fields)
  fields.kind = kind
  return TaskError.new(fields)
end

---------------------------------------------------------------------------
-- workers

-- Forks workers into slots first..last, each with an empty ring.
local function spawn(self, first, last)
  local list = {}
  for slot = first, last do
    list[#list + 1] = { slot = slot, inflight = {}, ends = {}, ih = 1, it = 0 }
  end
  local ws = self.workers
  ws:spawn(list)
end

-- The tasks sent to w, the running one first.
local function inflight_list(w)
  local list, ring = {}, w.inflight
  for i = w.ih, w.it do list[#list + 1] = ring[i % RING + 1] end
  return list
end

-- Empties the ring of w, which is gone; returns the tasks it held, the
-- running one first.
local function empty_ring(w)
  local list = inflight_list(w)
  w.inflight, w.ends, w.ih, w.it = {}, {}, 1, 0
  return list
end

-- Whether the task at the head of w's ring never reached w: its frame
-- ends past what was written to w (which is gone, so no more will be).
local function head_unsent(w)
  local e = w.ends[w.ih % RING + 1]
  return e ~= nil and e > w.proc:bytes_sent()
end

local function head_of(w)
  return w.inflight[w.ih % RING + 1]
end

local function usable(w)
  return w and not (w.retiring or w.in_init or w.dead)
end

-- w can take a task and has none: its ring is empty.
local function idle(w)
  return usable(w) and w.it < w.ih
end

-- A task leaves its worker for good (answered, or its worker is gone).
local function leave(self, fut)
  fut.worker = nil
  if fut.status == "running" then self.n_running = self.n_running - 1 end
end

---------------------------------------------------------------------------
-- sending tasks

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
    workers.killing(w)
  end)
end

-- Starts the clock of the task that now runs first on w (w.started is
-- the task whose start was seen, at w.started_at).
local function start_head(self, w, now)
  local fut = w.inflight[w.ih % RING + 1]
  if not fut or w.started == fut then return end
  w.started, w.started_at = fut, now or core.now()
  if fut.status ~= "queued" then
    -- settled while it waited in the pipeline (see stop_task): the worker
    -- answers it without running it, or, if it had just started it, is
    -- interrupted; stuck in C, it is killed after the grace period
    return escalate(fut, w)
  end
  fut.status = "running"
  self.n_running = self.n_running + 1
  local timeout = fut.group.opts.timeout
  if timeout and not fut.stop_kind then
    fut.timer = core.timer(timeout, function()
      fut.timer = nil
      if fut.status == "running" then self:stop_task(fut, "timeout") end
    end)
  end
  if fut.stop_kind then escalate(fut, w) end
end

-- now: w is idle and nothing else waits (an offer): the frame is written
-- at once, so w starts on it while the parent goes on; otherwise it
-- leaves with the turn's others when the loop is about to block.
local function send_task(self, w, fut, now)
  local at = w.proc:send_task(fut.id, fut.task, now)
  if not at then
    -- its channel is closed: the worker is exiting, its exit will tell why
    retire(w)
    return push_front(self.backlog, fut)
  end
  fut.worker = w
  fut.attempts = fut.attempts + 1
  local t = w.it + 1
  w.it = t
  w.inflight[t % RING + 1], w.ends[t % RING + 1] = fut, at
  local left = w.tasks_left - 1
  w.tasks_left = left
  if t == w.ih then start_head(self, w) end
  if left == 0 then retire(w) end
end

-- Fills w's pipeline from the backlog: one task, and more only while the
-- backlog holds more tasks than there are workers.
local function refill(self, w)
  local bl = self.backlog
  local limit = bl.n > self.size and self.pipeline or 1
  while w.it - w.ih + 1 < limit and not w.retiring do
    local fut = pop(bl)
    if not fut then return end
    send_task(self, w, fut)
  end
end

--- fut, with nothing waiting before it, goes at once to an idle worker if
-- there is one (true), without passing through the backlog.
function D:offer(fut)
  local slots = self.slots
  for i = 1, self.size do
    local w = slots[i]
    if idle(w) then
      send_task(self, w, fut, true)
      return true
    end
  end
  return false
end

--- Sends tasks from the backlog to workers: idle ones first, then the
-- pipelines.
function D:pump()
  local bl = self.backlog
  if bl.n == 0 then return end
  local slots, size = self.slots, self.size
  for i = 1, size do
    local w = slots[i]
    if idle(w) then
      local fut = pop(bl)
      if not fut then return end
      send_task(self, w, fut)
    end
  end
  if bl.n > size then
    for i = 1, size do
      local w = slots[i]
      if usable(w) then refill(self, w) end
    end
  end
end

-- The pool takes no new tasks and none is left: idle workers may go.
local function retire_if_done(self)
  if not self.closing or self.backlog.n > 0 or self.n_running > 0 or self.waiting() then return end
  for i = 1, self.size do
    local w = self.slots[i]
    if w and not w.retiring and not w.dead and w.it < w.ih then retire(w) end
  end
end

--- No new tasks will come once the backlog is empty.
function D:close()
  self.closing = true
  retire_if_done(self)
end

---------------------------------------------------------------------------
-- taking results back

-- Takes the task that answered (id) off the head of w's pipeline: nil
-- after a protocol error (the worker is then killed, and the head, left
-- where it is, ends with it).
local function take_head(w, id)
  local h = w.ih
  local k = h % RING + 1
  local fut = w.inflight[k]
  if not fut or fut.id ~= id then
    workers.protocol_error(w, ("result for task %s out of order"):format(id))
    return nil
  end
  w.inflight[k] = nil
  w.ih = h + 1
  w.started = nil
  fut.worker = nil
  return fut
end

-- Whether the task that answered still waits for its outcome: one settled
-- while it waited in the pipeline has nothing left to tell.
local function awaited(self, fut)
  local status = fut.status
  if status == "running" then
    self.n_running = self.n_running - 1
    return true
  end
  if status == "queued" then return true end
  clear_timers(fut)
  return false
end

-- A task that was asked to stop has ended (or its worker was killed). A
-- cancelled task is cancelled whatever it did meanwhile; a timeout is a
-- failure like any other (retried when retry_on lists "timeout").
local function stopped(self, fut, w, detail)
  local kind = fut.stop_kind
  local err = task_error(kind, {
    message = detail and detail.message or kind, traceback = detail and detail.traceback,
    value = detail and detail.value, pid = w and w.pid })
  if kind ~= "cancelled" then fut.stop_kind = nil end  -- a timeout may run again
  self.failed(fut, err)
end

-- w has answered count tasks: the mean time a task holds a worker (from
-- the start of the first of them) sets the pipeline's depth, the next task
-- starts, and there is more work for w or for the others. With more busy
-- workers (and the parent) than cores, a worker has only its share of a
-- core, and the time a task holds it is mostly waiting for that share:
-- the time is scaled by the share, or a pool of 256 workers on 2 cores
-- would see 100 us tasks where there are 1 us ones and send them one by
-- one, a wake-up each.
local function answered(self, w, now, count)
  local since = w.started_at
  if since and count > 0 then
    local share = CORES / (self.n_running + 1)
    local ran = (now - since) / count * (share < 1 and share or 1)
    local mean = self.mean_task
    mean = mean and 0.9 * mean + 0.1 * ran or ran
    self.mean_task = mean
    local depth = mean > 0 and PIPELINE_SECONDS // mean or PIPELINE_MAX
    self.pipeline = depth > PIPELINE_MAX and PIPELINE_MAX or depth < 1 and 1 or depth
  end
  if w.it >= w.ih then start_head(self, w, now) end  -- tasks left in its ring
  if self.backlog.n > 0 then
    if usable(w) then refill(self, w) else self:pump() end
  end
  if self.closing then retire_if_done(self) end
end

-- RESULT frames, gathered: batch holds id, values (see Future.first) for
-- each, n entries in all. A task that waited in the pipeline may have
-- ended within the batch: it never showed as running.
local function results(self, w, batch, n)
  local now, count, done = core.now(), 0, self.done
  for k = 1, n, 2 do
    local id, values = batch[k], batch[k + 1]
    if id == 0 and w.in_init then
      self.workers:init_done(w, false)
    else
      local fut = take_head(w, id)
      if not fut then return end
      count = count + 1
      if awaited(self, fut) then
        if fut.stop_kind then
          stopped(self, fut, w, nil)
        else
          done(fut, values)
        end
      end
    end
  end
  answered(self, w, now, count)
end

local function task_failed(self, w, id, kind, message, traceback, value)
  if id == 0 and w.in_init then
    self.workers:init_done(w, true, message)
    return answered(self, w, core.now(), 0)
  end
  local fut = take_head(w, id)
  if not fut then return end
  if awaited(self, fut) then
    if fut.stop_kind then
      -- stopped: its own error, if it raised one, is the detail
      stopped(self, fut, w, kind == "error"
        and { message = message, traceback = traceback, value = value } or nil)
    else
      self.failed(fut, task_error(kind, {
        message = message, traceback = traceback ~= "" and traceback or nil,
        value = value, pid = w.pid }))
    end
  end
  answered(self, w, core.now(), 1)
end

-- A frame of w that did not decode (why; ftype: the type its header
-- said): w's channel cannot be trusted, so w is killed and replaced. A
-- RESULT or ERROR answered the task running first, which fails now; any
-- other frame leaves it to fail once w is gone. Either way it is
-- "crashed" with message "bad frame from worker: why". Frames read after
-- the bad one are still handled.
local function bad_frame(self, w, why, ftype)
  local message = workers.bad_frame(w, why)  -- logged, w killed
  if ftype ~= RESULT and ftype ~= ERROR then return end
  if w.in_init then
    self.workers:init_done(w, true, message)
    return
  end
  local fut = head_of(w)
  if not fut or not take_head(w, fut.id) then return end
  w.killed_task = fut  -- the task behind it was not what the kill was for
  if awaited(self, fut) then
    if fut.stop_kind then
      stopped(self, fut, w, nil)
    else
      self.failed(fut, task_error("crashed", { message = "crashed: " .. message, pid = w.pid }))
    end
  end
  answered(self, w, core.now(), 1)
end

-- What w said. Callbacks of the futures it settles wait until it is all
-- taken in (Future.hold).
function D:_message(w, type, id, ...)
  local _ <close> = hold()
  if type == RESULT then
    results(self, w, id, ...)
  elseif type == ERROR then
    task_failed(self, w, id, ...)
  elseif type == 0 then
    bad_frame(self, w, id, ...)
  elseif type == RETIRE then
    workers.retired(w, id)
  else
    child.frame(w.proc, w.name, type, id, ...)
  end
end

---------------------------------------------------------------------------
-- exits

-- A task its worker's parent saw start, but that never ran there, goes
-- back to the front of the backlog.
local function unstart(self, fut)
  if not (fut and fut.status == "running") then return end
  clear_timers(fut)
  leave(self, fut)
  fut.status = "queued"
  fut.attempts = fut.attempts - 1
  push_front(self.backlog, fut)
end

-- w's running task (head) has ended with w: its stop, the kill meant for
-- it, or a crash. true: none of these, and it never reached w (unsent):
-- it goes back (unstart, once those behind it are back). A kill meant for
-- another task (whose result was on its way) is not this one's outcome:
-- see give_back.
local function head_ended(self, w, head, how, code, unsent)
  if head:done() then return clear_timers(head) end  -- settled while pipelined
  local killed = w.killed_task
  if head.stop_kind then
    leave(self, head)
    stopped(self, head, w, nil)
  elseif killed == head then
    leave(self, head)
    self.failed(head, task_error("killed", { message = "killed", pid = w.pid }))
  elseif not killed and unsent then
    return true
  elseif not killed then
    leave(self, head)
    self.failed(head, task_error("crashed", self.workers:cause(w, how, code)))
  end
end

-- The tasks of a dead worker that never started go back to the front of
-- the backlog, in order, as if never sent.
local function give_back(self, w, inflight)
  local bl = self.backlog
  for i = #inflight, 2, -1 do
    local fut = inflight[i]
    if fut.status == "queued" then
      fut.worker = nil
      fut.attempts = fut.attempts - 1
      if fut.stop_kind then
        self.failed(fut, task_error("cancelled", { message = "cancelled" }))
      else
        push_front(bl, fut)
      end
    end
  end
  local head = inflight[1]
  if head and head.status == "running" and w.killed_task and w.killed_task ~= head then
    -- killed for a task whose result was on its way: this one had only
    -- just started and is not the one the kill was meant for
    unstart(self, head)
  end
end

-- w has exited (on_exit, see orch.workers) and every frame it wrote was
-- handled: what it held is failed or given back, and its slot gets a new
-- worker while there is work.
function D:_exited(w, how, code)
  local _ <close> = hold()
  local broken = self.workers:exited(w, how, code)
  local unsent = head_unsent(w)
  local inflight = empty_ring(w)
  local head = inflight[1]
  local replace = not w.retiring or w.killed or head ~= nil
  local back = w.retired  -- it left before reading its head
  if head and not back then back = head_ended(self, w, head, how, code, unsent) end
  give_back(self, w, inflight)
  if back then unstart(self, head) end  -- in front of those behind it
  if self.terminated then return end
  if broken then return self.broken(broken) end
  if not self.closing or self.backlog.n > 0 or self.n_running > 0 or self.waiting() then
    if replace then self.restarts = self.restarts + 1 end
    spawn(self, w.slot, w.slot)
    self:pump()
  end
  retire_if_done(self)
end

---------------------------------------------------------------------------
-- stopping tasks

--- The stop steps for fut, which this dispatcher holds: kind "cancelled"
-- or "timeout"; grace overrides the group's. A task waiting in a worker's
-- pipeline is not run: the worker is told (the stop signal's ring, see
-- worker.c) and answers it without running it. Returns true for such a
-- task, which the pool settles at once, so nobody waits for the task
-- ahead of it.
function D.stop_task(_, fut, kind, grace)
  if fut.stop_kind then return false end
  fut.stop_kind, fut.stop_grace = kind, grace
  if fut.timer then fut.timer:stop(); fut.timer = nil end
  if fut.status == "running" then
    escalate(fut, fut.worker)
    return false
  end
  fut.worker.proc:stop(fut.id, kind == "timeout" and MSG.STOP_TIMEOUT or MSG.STOP_CANCEL)
  return true
end

--- SIGKILLs the worker running fut (its process group: whatever the task
-- started goes too); a fresh worker takes its place. A task not started
-- yet is not run (true: the pool settles it at once).
function D.kill_task(_, fut)
  local w = fut.worker
  if fut.status == "running" then
    fut.stop_kind = nil
    clear_timers(fut)
    w.killed_task = fut
    workers.kill(w)
    return false
  end
  fut.stop_kind = "cancelled"  -- the worker must not run it (start_head)
  w.proc:stop(fut.id, MSG.STOP_CANCEL)
  return true
end

--- The tasks held by the workers, in the order to stop them: for each
-- worker, what waits behind the running task first, so that the worker
-- cannot start it once asked to stop the one before.
function D:held()
  local list = {}
  for i = 1, self.size do
    local w = self.slots[i]
    if w then
      local ring = w.inflight
      for k = w.it, w.ih, -1 do list[#list + 1] = ring[k % RING + 1] end
    end
  end
  return list
end

--- The pid of the worker holding fut, and when fut started on it (nil
-- while it waits behind another task).
function D.where(_, fut)
  local w = fut.worker
  if not w then return nil end
  return w.pid, w.started == fut and w.started_at or nil
end

--- SIGKILLs and reaps every worker now. Returns the unsettled tasks they
-- held and, for each, its worker's pid.
function D:terminate()
  self.terminated = true
  local killed = self.workers:terminate()
  local futs, pids = {}, {}
  for _, w in ipairs(killed) do
    for _, fut in ipairs(empty_ring(w)) do
      clear_timers(fut)
      if not fut:done() then
        leave(self, fut)
        futs[#futs + 1], pids[#pids + 1] = fut, w.pid
      end
    end
  end
  return futs, pids
end

--- The pool was collected with live workers: kill and reap them, quietly.
function D:discard()
  self.workers:discard()
end

--- live workers, idle workers, running tasks, tasks sent ahead (not
-- started), workers replaced.
function D:stats()
  local n_idle, live, ahead = 0, 0, 0
  for i = 1, self.size do
    local w = self.slots[i]
    if w and not w.dead then
      live = live + 1
      if w.it < w.ih then n_idle = n_idle + 1 end
      for _, fut in ipairs(inflight_list(w)) do
        if fut.status == "queued" then ahead = ahead + 1 end
      end
    end
  end
  return live, n_idle, self.n_running, ahead, self.restarts
end

function D:start()
  spawn(self, 1, self.size)
end

local dispatch = {}

--- The worker processes still up.
function D:live() return self.workers.n_live end

--- dispatch.new(side, opts) -> d: the local dispatcher of a pool (opts:
-- the pool's workers, init, max_tasks_per_worker, max_message, limits,
-- for orch.workers). d.max_message: the limit, which a packed task must
-- respect too. d.slots are its workers' slots.
function dispatch.new(side, opts)
  local self = setmetatable({
    backlog = side.backlog, done = side.done, failed = side.failed,
    waiting = side.waiting, broken = side.broken,
    n_running = 0, restarts = 0, pipeline = 1, mean_task = nil,
    closing = false, terminated = false,
  }, D)
  local ws = workers.new(opts, self, D._message, D._exited)
  self.workers, self.slots, self.size, self.eager = ws, ws.slots, ws.size, ws.size + 1
  self.max_message = ws.max_message
  return self
end

return dispatch
