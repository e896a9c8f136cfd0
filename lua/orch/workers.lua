--- A local dispatcher's worker processes, from fork to exit: their slots,
-- spawning (limits, max_message, the init task), retiring, kills, and
-- what an exit leaves behind (the slot freed, init failures counted).
--
-- The tasks are the owner's (orch.dispatch): it makes each worker record
-- with its own fields (the tasks sent to it) and hands it to ws:spawn,
-- which adds these, the worker's life, for the owner to read:
--   w.slot          its slot: ws.slots[w.slot] == w until it exits
--   w.name, w.pid, w.proc   the worker's process (proc:send_task, proc:stop)
--   w.tasks_left    tasks it may still be sent (max_tasks_per_worker): the
--                   owner counts it down and calls workers.retire at 0
--   w.in_init       its init task (id 0) has not answered (ws:init_done)
--   w.retiring      it takes no new task: it goes, or is killed
--   w.killed        it is SIGKILLed (workers.kill) or is about to be
--   w.retired       it said it goes (RETIRE: above max_memory_per_worker)
--   w.bad_frame     it was killed for a frame that did not decode or broke the protocol (why)
--   w.dead          its exit was seen (ws:exited)
--
-- ws = workers.new(opts, owner, on_message, on_exit): opts are the pool's
-- (workers, init, max_tasks_per_worker, max_message, limits,
-- max_memory_per_worker). A worker's frames go to on_message(owner, w,
-- type, ...) and its exit, once every frame it wrote was handled, to
-- on_exit(owner, w, how, code); owner is held weakly, so that a pool
-- dropped with live workers can be collected. ws.size, ws.slots,
-- ws.n_live (processes up), ws.max_message.
local core = require "orch.core"
local log = require "orch.log"
local child = require "orch.child"

local MSG = core.msg
local QUIT = MSG.QUIT

-- Workers that fail their init this many times in a row break the pool.
local MAX_INIT_FAILURES = 3
local SPAWN_BATCH = 64  -- core.spawn's limit
-- The largest frame a worker may send (max_message): a result that big
-- costs the parent about twice that while it is read and decoded, and a
-- frame's announced length is what the parent reserves for it at once, so
-- the bound is what one worker can make the parent hold. 256 MiB is far
-- more than a result worth moving through a pipe (a quarter second at
-- 1 GB/s); a pool that needs more says so.
local MAX_MESSAGE = 256 * 1024 * 1024

local W = {}
W.__index = W

local workers = {}

local weak_values = { __mode = "v" }

-- A worker's limits (limits.c): the pool's `limits` and its
-- max_memory_per_worker, as core.serve takes them; nil when none.
local function worker_limits(opts)
  local l, max = opts.limits, opts.max_memory_per_worker
  if not (l or max) then return nil end
  l = l or {}
  return { cpu = l.cpu, memory = l.memory, files = l.files, processes = l.processes,
           max_resident = max }
end

local function worker_main(name, max_message, limits)
  return function()
    log.name = name
    core.set_max_message(max_message)
    core.serve(limits)
  end
end

-- w's process is up in its slot: its init task goes first.
local function started(self, w, proc)
  w.proc = proc
  proc:set_max_message(self.max_message)
  w.pid = proc:pid()
  self.slots[w.slot] = w
  self.n_live = self.n_live + 1
  if self.init ~= nil then
    proc:send_task(0, core.pack_task(self.init))
    w.in_init = true
  end
end

--- Forks a worker for each record of list (w.slot: the slot it takes), in
-- one core.spawn: the children are forked back to back, so none of them
-- inherits as its own the pages the parent writes while it sets up the
-- next one.
function W:spawn(list)
  local owner, on_message, on_exit = self.owner, self.on_message, self.on_exit
  local args, n = {}, #list
  for i = 1, n do
    local w = list[i]
    w.name = "worker " .. w.slot
    w.tasks_left = self.max_tasks or math.maxinteger
    args[3 * i - 2] = worker_main(w.name, self.max_message, self.limits)
    args[3 * i - 1] = function(_, ...)
      local d = owner[1]
      if d then on_message(d, w, ...) end
    end
    args[3 * i] = function(_, how, code)
      local d = owner[1]
      if d then on_exit(d, w, how, code) end
    end
  end
  for i = 1, n, SPAWN_BATCH do
    local j = math.min(i + SPAWN_BATCH - 1, n)
    local procs = { core.spawn(table.unpack(args, 3 * i - 2, 3 * j)) }
    for k = i, j do started(self, list[k], procs[k - i + 1]) end
  end
end

--- w's init task (id 0) has answered; message: its error, if it failed.
-- A worker whose init failed exits (code 3) and its slot gets a new one.
function W:init_done(w, failed, message)
  w.in_init = false
  if failed then
    self.init_error = message
    w.retiring = true
    log.deliver("error", "init failed: " .. tostring(message), w.name, w.pid)
  else
    self.init_failures = 0
  end
end

--- w takes no new task and exits before reading another one (QUIT; a
-- worker whose channel is closed is exiting already).
function workers.retire(w)
  w.retiring = true
  w.proc:send(QUIT)
end

--- w said it goes (RETIRE, why): it exits before reading another task.
function workers.retired(w, why)
  w.retired = why
end

--- w is about to be SIGKILLed (a stop's last step): no new task for it,
-- and its slot gets a new worker.
function workers.killing(w)
  w.retiring, w.killed = true, true
end

--- SIGKILLs w's process group.
function workers.kill(w)
  workers.killing(w)
  w.proc:kill()
end

--- w's channel broke its protocol (why: a result out of order): logged,
-- and w is SIGKILLed; its running task fails "crashed: protocol error: why".
function workers.protocol_error(w, why)
  child.protocol_error(w.proc, w.name, why)
  w.bad_frame = "protocol error: " .. tostring(why)
  workers.kill(w)
end

--- A frame of w did not decode (why): w's channel cannot be trusted, so
-- it is logged and w is SIGKILLed. Returns the message its running task
-- fails with ("bad frame from worker: why").
function workers.bad_frame(w, why)
  child.frame(w.proc, w.name, 0, why)  -- logged
  local message = "bad frame from worker: " .. tostring(why)
  w.bad_frame = message
  workers.kill(w)
  return message
end

--- How w died (how, code: its exit), as the fields of a TaskError for
-- the task it was running: pid, exit_code or signal and signal_name, and
-- a message for a bad frame or the cpu limit.
function W:cause(w, how, code)
  local fields = { pid = w.pid, message = w.bad_frame and "crashed: " .. w.bad_frame }
  if how == "signal" then
    fields.signal, fields.signal_name = code, core.signame(code)
    local cpu = self.limits and self.limits.cpu
    if cpu and fields.signal_name == "XCPU" then
      fields.message = ("cpu limit: the task used more than %d s of CPU (limits.cpu)"):format(cpu)
    end
  else
    fields.exit_code = code
  end
  return fields
end

--- w has exited (how, code) and every frame it wrote was handled: its
-- slot is free. Returns a message when workers' init keeps failing (no
-- task can run here), else nil.
function W:exited(w, how, code)
  w.dead = true
  child.exited(w.proc)
  self.n_live = self.n_live - 1
  if self.slots[w.slot] == w then self.slots[w.slot] = nil end
  if how == "exit" and code == 3 and self.init_error then
    self.init_failures = self.init_failures + 1
  end
  if w.retired then
    log.deliver("info", ("%s replaced: resident memory above max_memory_per_worker (%d bytes)")
      :format(w.name, self.limits.max_resident), w.name, w.pid)
  end
  if self.init_failures >= MAX_INIT_FAILURES then
    return ("worker init failed %d times: %s"):format(self.init_failures, self.init_error)
  end
  return nil
end

--- SIGKILLs and reaps every worker now (no zombie outlives it), and frees
-- the slots. Returns the workers it killed.
function W:terminate()
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
    w.proc:close()  -- reaps it now
    child.exited(w.proc)
    self.n_live = self.n_live - 1
  end
  return killed
end

--- The owner was collected with live workers: kill and reap them, quietly.
function W:discard()
  for i = 1, self.size do
    local w = self.slots[i]
    if w then w.proc:close() end
  end
end

--- workers.new(opts, owner, on_message, on_exit) -> ws: no worker is up
-- until ws:spawn.
function workers.new(opts, owner, on_message, on_exit)
  return setmetatable({
    size = opts.workers or core.cpu_count(), slots = {}, n_live = 0,
    init = opts.init, max_tasks = opts.max_tasks_per_worker,
    max_message = opts.max_message or MAX_MESSAGE, limits = worker_limits(opts),
    init_failures = 0, init_error = nil,
    owner = setmetatable({ owner }, weak_values), on_message = on_message, on_exit = on_exit,
  }, W)
end

return workers
