--- The broker dispatcher: a pool's tasks go through Redis Streams to
-- `orch worker` nodes (orch.broker.node) on any number of hosts.
--
-- It plugs into the pool's dispatch seam (the interface is written at the
-- top of orch/dispatch.lua) and keeps the pool's policies where they were:
-- retries, on_error, fail_fast and groups stay with the pool; timeouts and
-- the three stop steps are enforced by the node that runs the task (its
-- local pool), from the timeout and grace the task carries.
--
-- A pool on a broker has a client id and a results stream of its own.
-- Tasks taken from the backlog are XADDed to the queue's stream in
-- batches (one MULTI each; a full batch from submit itself, the rest at
-- the next turn of the loop); a reader on a connection of its own
-- waits in XREAD BLOCK for results and settles each future once: delivery
-- is at least once, so a result for a task no longer held (a late
-- duplicate, an earlier run of a retried task) is dropped. A task is held
-- from its XADD until its result; fut.entry is its stream entry once Redis
-- answered the XADD. Each task carries the pool's `lease`: how long its
-- node may go without renewing it before another node takes it over.
-- A node reports a task started (on the same results stream): the future
-- is then "running" (fut.started: when the report came), as with local
-- workers; timeouts run on the node, so nothing is timed here.
--
-- Stops (fut:cancel, fut:kill, fail_fast, terminate) are batched per loop
-- turn into one stream.stop script: an entry no node has read is deleted
-- and its future settled here (it never runs); a delivered one is stopped
-- by its node, whose answer settles it. A cancelled task is cancelled
-- whatever its answer says, as with local workers.
--
-- While Redis is unreachable, tasks wait in the backlog and stops wait
-- here; an XADD whose answer was lost with the connection is sent again
-- (at least once). Past `lease` seconds without a connection, every task
-- not settled fails with kind "error" (broker unreachable): by then the
-- nodes could not renew their leases either. With
-- `workers` > 0, a node in this process serves the same queue too.
local core = require "orch.core"
local loop = require "orch.loop"
local log = require "orch.log"
local backlog = require "orch.backlog"
local redis = require "orch.broker.redis"
local node = require "orch.broker.node"
local stream = require "orch.broker.stream"
local TaskError = require("orch.errors").TaskError
local hold_callbacks = require("orch.future").hold

local pop, push_front = backlog.pop, backlog.push_front

local BLOCK_MS = 2000      -- a results read waits this long, then is sent again
local READ_COUNT = 1000    -- results taken per read
local KINDS = { error = true, timeout = true, crashed = true, killed = true, cancelled = true }

local B = {}
B.__index = B

local HELD = setmetatable({}, { __tostring = function() return "the broker" end })

local function task_error(kind, fields)
  fields.kind = kind
  return TaskError.new(fields)
end


---------------------------------------------------------------------------
-- sending tasks

-- The task's stream fields, or nil, why (what cannot cross to a node).
local function fields_of(self, fut)
  local opts, t = fut.group.opts, self.task
  t.id, t.fn, t.args = fut.id, fut.fn, fut.args
  t.max, t.timeout, t.grace = (opts.retries or 0) + 1, opts.timeout, opts.grace
  return pcall(stream.task_fields, t)
end

local function hold(self, fut)
  fut.worker, fut.entry, fut.stop_wanted = HELD, nil, nil
  fut.attempts = fut.attempts + 1
  self.by_id[tostring(fut.id)] = fut
  self.n_held = self.n_held + 1
end

-- fut leaves the broker's hands (settled, or back in the backlog).
local function release(self, fut)
  local key = tostring(fut.id)
  if self.by_id[key] == fut then
    self.by_id[key] = nil
    self.n_held = self.n_held - 1
    if fut.started then self.n_started = self.n_started - 1 end
  end
  fut.worker, fut.started = nil, nil
end

-- Back in the backlog, as if never sent (its XADD was lost).
local function unsend(self, fut)
  release(self, fut)
  fut.attempts = fut.attempts - 1
  push_front(self.backlog, fut)
end

-- Tasks sent in one command at the most.
local SEND_BATCH = 512

-- The answer to a batch of XADDs (EXEC's): each task's entry id, or why none.
local function sent(self, futs, ids, reply, err)
  local list = type(reply) == "table" and not reply.err and reply or {}
  for i, fut in ipairs(futs) do
    if fut.id == ids[i] and fut.worker == HELD then  -- else settled meanwhile
      local entry = list[i]
      if type(entry) == "string" then
        fut.entry = entry
        if fut.stop_wanted then self:_queue_stop(fut, fut.stop_wanted) end
      elseif err then
        unsend(self, fut)  -- the connection went with the answer: sent again once back
      else
        release(self, fut)
        fut.no_retry = true
        local why = type(entry) == "table" and entry.err or type(reply) == "table" and reply.err
        self.failed(fut, task_error("error", { message = "the broker refused the task: "
          .. tostring(why or reply) }))
      end
    end
  end
end


-- A task that cannot cross fails at the next turn of the loop (never
-- inside the submit that sent its batch).
local function refuse(self, fut, why)
  fut.no_retry = true
  core.timer(0, function()
    self.failed(fut, task_error("error", { message = "cannot send to the broker: " .. why }))
  end)
end

-- Sends the first tasks of the backlog, up to SEND_BATCH and `most`;
-- false when the connection is down (they are back in the backlog).
local function send_batch(self, most)
  local futs, ids, lists = {}, {}, {}
  for _ = 1, math.min(most, SEND_BATCH) do
    local fut = pop(self.backlog)
    if not fut then break end
    local ok, fields = fields_of(self, fut)
    if ok then
      hold(self, fut)
      futs[#futs + 1], ids[#futs + 1], lists[#futs + 1] = fut, fut.id, fields
    else
      refuse(self, fut, tostring(fields))
    end
  end
  if #futs == 0 then return true end
  local ok = self.writer:transaction(stream.add_tasks(self.keys, lists, self.lease_ms),
    function(reply, err)
      self.sending = self.sending - 1
      sent(self, futs, ids, reply, err)
    end)
  if ok then
    self.sending = self.sending + 1
  else
    for i = #futs, 1, -1 do unsend(self, futs[i]) end
  end
  return ok
end

--- A task goes to the broker's stream in batches (B:pump), never past them.
function B.offer()
  return false
end

--- Sends every task of the backlog to the stream, at the next turn of
-- the loop: the pool asks right after queueing a task, before it has kept
-- the task's function and arguments on the future; and the tasks of one
-- turn go out together. A full batch queued before the task just queued
-- goes at once (written out now): the nodes run it while more are
-- submitted.
function B:pump()
  -- the task just queued: its group keeps each task's function and
  -- arguments on the future (pool.lua and map.lua do, right after this)
  local bl = self.backlog
  local last = bl[bl.tail]
  if last then last.group.keeps_args = true end
  if self.backlog.n == 0 or self.terminated then return end
  if bl.n > SEND_BATCH and self.writer:connected() and not self.released then
    send_batch(self, bl.n - 1)
    self.writer:flush()
    self:_read()
  end
  if self.pump_timer then return end
  self.pump_timer = core.timer(0, function()
    self.pump_timer = nil
    self:_send_backlog()
  end)
end

function B:_send_backlog()
  local bl = self.backlog
  if bl.n == 0 or self.terminated then return end
  if not self.writer:connected() then return end  -- sent once reconnected
  -- one batch a turn: it goes out while the next is made
  if send_batch(self, bl.n) and bl.n > 0 then self:pump() end
  self:_read()
end

---------------------------------------------------------------------------
-- taking results back

-- A failed result's fields as the TaskError the pool gets.
local function error_of(fut, fields)
  if type(fields) ~= "table" or not KINDS[fields.kind] then
    return task_error("error", { message = "bad error from a node: " .. tostring(fields) })
  end
  if fields.kind == "crashed" and fields.deliveries then
    fut.no_retry = true  -- its deliveries were its retries
  end
  return TaskError.new(fields)
end

local function settle(self, fut, status, values)
  release(self, fut)
  if fut:done() then return end
  if fut.stop_kind == "cancelled" then
    return self.failed(fut, task_error("cancelled", { message = "cancelled" }))
  end
  if status == "done" then
    if type(values) ~= "table" then values = { n = 0 } end
    return self.done(fut, values)
  end
  self.failed(fut, error_of(fut, values))
end

-- A node has started the task: it runs, as a local worker's would.
local function started(self, fut)
  if fut.started or fut.status ~= "queued" then return end
  fut.status, fut.started = "running", core.now()
  self.n_started = self.n_started + 1
end

function B:_result(f)
  local fut = self.by_id[f.id]
  if not fut then return end  -- a late duplicate, or a run given up
  if f.status == "started" then return started(self, fut) end
  local _, status, values = stream.decode_result(f)
  settle(self, fut, status, values)
end

-- Reads results while tasks are held: one XREAD BLOCK at a time, on the
-- reader's own connection.
function B:_read()
  if self.reading or self.n_held == 0 or self.released then return end
  self.reading = true
  local ok = self.reader:command(stream.read_results(self.reply, self.after, READ_COUNT, BLOCK_MS),
    function(reply, err)
      self.reading = false
      local _ <close> = hold_callbacks()  -- callbacks once the batch is settled
      if err or (type(reply) == "table" and reply.err) then
        if not err then log.warn("orch.pool: reading results: %s", reply.err) end
        return  -- read again once reconnected
      end
      for _, s in ipairs(reply or {}) do
        for _, e in ipairs(s[2]) do
          self.after = e[1]
          for _, r in ipairs(stream.results(e[2])) do self:_result(r) end
        end
      end
      if reply then  -- what was read is not needed any more
        self.writer:command({ "XTRIM", self.reply, "MINID", self.after })
      end
      self:pump()  -- retries
      self:_read()
      self:_check_idle()
    end)
  if not ok then self.reading = false end
end

---------------------------------------------------------------------------
-- stopping tasks

-- A stop (stop: "cancelled" | "killed") for a held task whose entry is
-- known, sent with the others of this loop turn.
function B:_queue_stop(fut, stop)
  fut.stop_wanted = stop
  if not fut.entry then return end  -- sent once the XADD is answered
  self.stops[#self.stops + 1] = fut
  if not self.stop_timer then
    self.stop_timer = core.timer(0, function()
      self.stop_timer = nil
      self:_send_stops()
    end)
  end
end

-- The answer for each stopped entry: "removed" (never ran: settled here),
-- else the node's answer will settle it.
local function stops_answered(self, futs, kind, reply)
  for i, fut in ipairs(futs) do
    if reply[i] == "removed" and fut.worker == HELD and not fut:done() then
      release(self, fut)
      if kind ~= "cancelled" then fut.no_retry = true end
      self.failed(fut, task_error(kind, { message = kind }))
    end
  end
  self:pump()
  self:_check_idle()
end

function B:_send_stops()
  local list = self.stops
  self.stops = {}
  local by_kind = { cancelled = {}, killed = {} }
  for _, fut in ipairs(list) do
    if fut.worker == HELD and not fut:done() then
      local futs = by_kind[fut.stop_wanted]
      futs[#futs + 1] = fut
    end
  end
  for kind, futs in pairs(by_kind) do
    if #futs > 0 then
      local entries = {}
      for i, fut in ipairs(futs) do entries[i] = fut.entry end
      local ok = self.writer:command(stream.stop(self.keys, kind, entries), function(reply)
        if type(reply) == "table" and not reply.err then
          stops_answered(self, futs, kind, reply)
        else  -- sent again once reconnected
          table.move(futs, 1, #futs, #self.stops + 1, self.stops)
        end
      end)
      if not ok then table.move(futs, 1, #futs, #self.stops + 1, self.stops) end
    end
  end
end

--- cancel (kind "cancelled"; "timeout" does not come here: the node times
-- its tasks out). Settled when Redis or the node has answered.
function B:stop_task(fut, kind)
  if fut.stop_kind then return false end
  fut.stop_kind = kind
  self:_queue_stop(fut, "cancelled")
  return false
end

--- fut:kill(): the node SIGKILLs the worker running it; a task no node
-- has read yet fails "killed" without running.
function B:kill_task(fut)
  if fut.stop_wanted == "killed" then return false end
  fut.stop_kind = nil  -- its outcome is the kill's
  self:_queue_stop(fut, "killed")
  return false
end

function B:held()
  local list = {}
  for _, fut in pairs(self.by_id) do list[#list + 1] = fut end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

--- No pid (the task runs on another host); when its node started it.
function B.where(_, fut)
  return nil, fut.started
end

---------------------------------------------------------------------------
-- the connection

-- Past `lease` seconds without Redis, what is not settled fails.
function B:_disconnected(why)
  if self.down_timer or self.released then return end
  log.warn("orch.pool: broker %s unreachable: %s", self.url_text, tostring(why))
  self.down_timer = core.timer(self.lease, function()
    self.down_timer = nil
    if self.writer:connected() then return end
    self:_give_up(("broker %s unreachable for %gs: %s"):format(self.url_text, self.lease,
      tostring(why)))
  end)
end

function B:_give_up(message)
  local function fail(fut)
    release(self, fut)
    fut.no_retry = true
    self.failed(fut, task_error("error", { message = message }))
  end
  for _, fut in ipairs(self:held()) do fail(fut) end
  local fut = pop(self.backlog)
  while fut do fail(fut); fut = pop(self.backlog) end
  self:_check_idle()
end

function B:_reconnected()
  if self.down_timer then self.down_timer:stop(); self.down_timer = nil end
  log.info("orch.pool: broker %s reachable again", self.url_text)
  -- stops whose entries were written before the connection went
  local list = {}
  for _, fut in pairs(self.by_id) do
    if fut.stop_wanted and fut.entry then list[#list + 1] = fut end
  end
  for _, fut in ipairs(list) do self:_queue_stop(fut, fut.stop_wanted) end
  self:pump()
end

local function connect(self, url)
  local clients, err = redis.connect_each(url, {
    { on_disconnect = function(why) self:_disconnected(why) end,
      on_reconnect = function() self:_reconnected() end },
    { on_reconnect = function() self:_read() end },
  })
  if not clients then error("orch.pool: broker: " .. err, 0) end
  self.writer, self.reader = clients[1], clients[2]
  local ok, gerr = node.ensure_group(self.writer, self.keys)
  if not ok then error("orch.pool: broker: " .. gerr, 0) end
end

local client_seq = 0

local function client_id()
  client_seq = client_seq + 1
  local f = io.open("/proc/sys/kernel/hostname")
  local host = f and f:read("l") or "localhost"
  if f then f:close() end
  return ("%s:%d:%d:%s"):format(host, core.getpid(), client_seq,
    core.sha256(tostring(core.now()) .. tostring({})):sub(1, 8))
end

function B:start()
  connect(self, self.url)
  if self.size > 0 then
    self.node = node.start{
      broker = self.url, queue = self.queue, workers = self.size, lease = self.lease,
      secret = self.secret, max_tasks_per_worker = self.max_tasks, quiet = true,
    }
  end
end

---------------------------------------------------------------------------
-- lifecycle

--- 1 while its connections (and its own node) are up, 0 once they went.
function B:live() return self.n_live end

-- Closing and nothing left: connections and the node go.
function B:_check_idle()
  if not self.closing or self.released or self.n_held > 0 or self.backlog.n > 0
    or self.waiting() then return end
  self.released = true
  if self.down_timer then self.down_timer:stop(); self.down_timer = nil end
  self.reader:close()
  local function gone()
    self.writer:close()
    self.n_live = 0
  end
  if self.node then
    self.node:release(gone)
  elseif not self.writer:command({ "PING" }, gone) then  -- after what was sent
    gone()
  end
end

function B:close()
  self.closing = true
  self:_check_idle()
end

--- Every held task is stopped on its node ("killed"); what it held is
-- returned for the pool to fail.
function B:terminate()
  self.terminated = true
  -- a node may run a task before this process has read its XADD's answer
  -- (its entry): those answers first
  if self.writer and self.writer:connected() then
    loop.wait(function() return self.sending == 0 end, 1)
  end
  local list = self:held()
  local entries = {}
  for _, fut in ipairs(list) do
    release(self, fut)
    if fut.entry then entries[#entries + 1] = fut.entry end
  end
  if #entries > 0 and self.writer and self.writer:connected() then
    local answered = false
    self.writer:command(stream.stop(self.keys, "killed", entries), function() answered = true end)
    loop.wait(function() return answered end, 1)
  end
  self:discard()
  return list, {}
end

function B:discard()
  self.released = true
  if self.down_timer then self.down_timer:stop(); self.down_timer = nil end
  if self.stop_timer then self.stop_timer:stop(); self.stop_timer = nil end
  if self.pump_timer then self.pump_timer:stop(); self.pump_timer = nil end
  if self.node then self.node:release() end
  if self.reader then self.reader:close() end
  if self.writer then self.writer:close() end
  self.n_live = 0
end

--- live (this process's node's workers), idle, running (tasks a node has
-- started), sent ahead (tasks sent, not started yet), restarts.
function B:stats()
  local live, idle = 0, 0
  if self.node and not self.released then
    local s = self.node.pool:stats()
    live, idle = s.workers, s.idle
  end
  return live, idle, self.n_started, self.n_held - self.n_started, 0
end

local broker = {}

local function check(opts)
  local function bad(fmt, ...) error("orch.pool: " .. fmt:format(...), 4) end
  redis.parse_url(opts.broker)
  if opts.queue and not opts.queue:match("^[%w_.%-]+$") then
    bad("option 'queue' must be letters, digits, '_', '.' or '-' (got %q)", opts.queue)
  end
  if opts.lease and (opts.lease ~= opts.lease or opts.lease <= 0) then bad("option 'lease' must be positive") end
  if opts.init ~= nil then bad("option 'init' does not apply to a pool on a broker") end
end

--- broker.new(side, opts) -> d: the dispatcher of a pool with opts.broker
-- (opts: broker, queue, lease, secret, workers, max_tasks_per_worker).
function broker.new(side, opts)
  check(opts)
  local secret = opts.secret or os.getenv("ORCH_SECRET")
  local self = setmetatable({
    backlog = side.backlog, done = side.done, failed = side.failed, waiting = side.waiting,
    url = opts.broker, url_text = opts.broker:gsub("//[^@/]*@", "//"),
    queue = opts.queue or "orch", lease = opts.lease or 30,
    lease_ms = math.max(1, math.floor((opts.lease or 30) * 1000)),
    secret = secret ~= "" and secret or nil, size = opts.workers or 0,
    max_tasks = opts.max_tasks_per_worker, eager = math.huge,
    slots = {}, by_id = {}, n_held = 0, n_started = 0, n_live = 1, stops = {}, after = "0",
    sending = 0,  -- batches of XADDs not answered yet
  }, B)
  self.keys = stream.keys(self.queue)
  self.reply = self.keys.results_prefix .. client_id()
  -- the fields of the task being sent (fields_of)
  self.task = { reply = self.reply, lease = self.lease, secret = self.secret }
  return self
end

return broker
