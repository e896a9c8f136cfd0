--- A broker node: a local orch pool fed from a Redis stream.
--
-- require("orch.broker.node").serve{ broker = url, queue = "orch",
--   workers = N, lease = 30, grace = 10, max_tasks_per_worker = nil,
--   secret = env ORCH_SECRET, result_ttl = 3600 } -> true, signal name
-- is what `orch worker BROKER_URL [--queue Q] [--workers N] [--lease S]
-- [--grace S] [--max-tasks-per-worker N] [--log-level L]` runs; the
-- command then exits as orch does for a run ended by a signal (128+n).
--
-- The node reads new tasks with a blocking XREADGROUP on a connection of
-- its own, asking for as many as it has free workers; a second connection
-- writes results, renews each task's lease (every third of that lease:
-- a task carries its pool's; `lease` here is for tasks without one), and,
-- while workers are free, takes over tasks whose node stopped renewing
-- (as soon as the first pending task it knows of may run out of lease).
-- Tasks still running at a check (every 50 ms) are reported started to
-- their clients, in one batch. The results of a loop turn are written,
-- their entries acknowledged and deleted in one transaction (one result
-- entry per client); a write the connection lost is sent again once it
-- is back.
-- On INT or TERM it reads nothing new, lets running tasks finish within
-- `grace`, hands back what is left (and anything delivered to it that it
-- never started) for other nodes, then returns. A second signal hurries
-- the stop: whatever runs is handed back at once.
local core = require "orch.core"
local loop = require "orch.loop"
local log = require "orch.log"
local redis = require "orch.broker.redis"
local stream = require "orch.broker.stream"

local node = {}

local BLOCK_MS = 5000
local OPTIONS = {
  broker = "string", queue = "string", workers = "number", lease = "number", grace = "number",
  max_tasks_per_worker = "number", secret = "string", result_ttl = "number", quiet = "boolean",
}

local function check_options(opts)
  if type(opts) ~= "table" then error("orch.serve: options must be a table", 3) end
  local valid = {}
  for k in pairs(OPTIONS) do valid[#valid + 1] = k end
  table.sort(valid)
  for k, v in pairs(opts) do
    if not OPTIONS[k] then
      error(("orch.serve: unknown option '%s' (valid: %s)"):format(tostring(k),
        table.concat(valid, ", ")), 3)
    elseif type(v) ~= OPTIONS[k] then
      error(("orch.serve: option '%s' must be a %s, got %s"):format(k, OPTIONS[k], type(v)), 3)
    end
  end
  if not opts.broker then error("orch.serve: option 'broker' (a Redis URL) is required", 3) end
  for _, k in ipairs{ "workers", "lease", "grace", "max_tasks_per_worker", "result_ttl" } do
    if opts[k] and (opts[k] ~= opts[k] or opts[k] <= 0) then
      error(("orch.serve: option '%s' must be positive"):format(k), 3)
    end
  end
end

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local name = f and f:read("l")
  if f then f:close() end
  return name or os.getenv("HOSTNAME") or "localhost"
end

local Node = {}
Node.__index = Node


-- Tasks taken ahead of the free workers while tasks are short and the
-- stream has more: per worker, as many as fit in AHEAD_SECONDS of the mean
-- task time, at most AHEAD_MAX; they wait in the local pool (which sends
-- them ahead to busy workers, as it does for its own backlog). A read
-- ahead never waits, and takes nothing unless the stream holds more
-- undelivered entries than it asks for (stream.read_ahead); none once a
-- read found fewer entries than it asked for, nor while a task has run
-- longer than AHEAD_SECONDS (the mean is then stale). So a task never
-- waits here while another node is idle.
local AHEAD_SECONDS, AHEAD_MAX = 0.05, 128

function Node:ahead()
  local mean = self.mean_task
  if not (self.backlogged and mean) or self.long_task then return 0 end
  return self.workers * math.min(AHEAD_MAX, math.floor(AHEAD_SECONDS / math.max(mean, 1e-6)))
end

-- Every AHEAD_SECONDS: is one of the running tasks long? And the tasks
-- its local pool has started since are reported to their clients.
function Node:check_long()
  local old, long, started = core.now() - AHEAD_SECONDS, false, {}
  for _, r in pairs(self.running) do
    if r.since < old then long = true end
    if not r.reported and r.fut.status == "running" then
      r.reported = true
      started[#started + 1] = r.task
    end
  end
  self.long_task = long
  self:report_started(started)
end

--- Tells the clients of these tasks that they have started: one XADD
-- per client, pipelined; a task that has ended by then is never reported
-- (its result says it all). Lost with the connection: not sent again.
function Node:report_started(tasks)
  local by_reply = {}
  for _, t in ipairs(tasks) do
    if t.reply ~= "" then
      local ids = by_reply[t.reply] or {}
      ids[#ids + 1] = t.id
      by_reply[t.reply] = ids
    end
  end
  for reply, ids in pairs(by_reply) do
    self.writer:command(stream.add_started(reply, ids, self.name))
    self.writer:command({ "EXPIRE", reply, self.result_ttl or stream.RESULT_TTL })
  end
end

--- Asks for new tasks, as many as there are free workers (a read that
-- waits for them), or, with none free, some ahead (see above) of those
-- there are now; unless a read is already out or the node is stopping.
function Node:pull()
  if self.stopping or self.reading then return end
  local free = self.workers - self.n_running - self:n_waiting()
  local count = free > 0 and free or free + self:ahead()
  if count <= 0 then return end
  self.reading = true
  if free > 0 then return self:read(stream.read_new(self.keys, self.name, free, BLOCK_MS), count) end
  -- reading ahead: never a read that waits, nor one that leaves others
  -- idle: only while the stream holds more undelivered entries than that
  local ok = self.reader:command(stream.undelivered(self.keys), function(n, err)
    if err or type(n) ~= "number" then
      self.reading = false
      return self:read_failed(err or tostring(type(n) == "table" and n.err or n))
    end
    if n > count then return self:read(stream.read_ahead(self.keys, self.name, count), count) end
    self.reading, self.backlogged = false, false
    self:pull()  -- workers freed meanwhile wait for new entries
  end)
  if not ok then self.reading = false end  -- the reconnect pulls again
end

-- Sends a read of up to count new entries and takes what it brings.
function Node:read(argv, count)
  local ok = self.reader:command(argv, function(reply, err)
    self.reading = false
    if err or (type(reply) == "table" and reply.err) then
      return self:read_failed(err or reply.err)
    end
    local got = 0
    for _, s in ipairs(reply or {}) do
      for _, entry in ipairs(s[2]) do
        got = got + 1
        self:take(entry[1], entry[2], 1)
      end
    end
    self.backlogged = got >= count
    self:pull()
  end)
  if not ok then self.reading = false end  -- the reconnect pulls again
end

function Node:read_failed(err)
  if self.stopping then return end
  if err:find("^NOGROUP") then  -- the stream was deleted under us
    log.warn("node %s: %s; creating the consumer group again", self.name, err)
    self.writer:command(stream.create_group(self.keys), function() self:pull() end)
  elseif err:find("^disconnected") or err:find("lost") then
    log.warn("node %s: %s", self.name, err)  -- pulls again on reconnect
  else
    error(("orch.serve: XREADGROUP failed: %s"):format(err), 0)
  end
end

-- The pool group that runs tasks with this timeout and grace (nil: the
-- pool's).
function Node:group_for(timeout, grace)
  if not timeout and not grace then return self.pool end
  local key = tostring(timeout) .. "/" .. tostring(grace)
  local g = self.groups[key]
  if not g then
    g = self.pool:group{ timeout = timeout, grace = grace }
    self.groups[key] = g
  end
  return g
end

function Node:n_waiting()
  return self.waiting.tail - self.waiting.head + 1
end

--- Runs a delivered entry when a worker is free (or, for short tasks,
-- soon will be), else keeps it, in order, until one is: a task never
-- waits in a worker's pipeline behind a long one.
function Node:take(entry_id, list, deliveries, stop)
  -- held already (a recovered entry whose read came in after all)
  if self.running[entry_id] or self.queued[entry_id] or self.writing[entry_id] then return end
  local f = stream.fields(list)
  local lease_ms = stream.lease_ms(f, self.lease_ms) or self.lease_ms
  self:keep_renewing(lease_ms)
  if self.n_running < self.workers + self:ahead() then
    return self:start(entry_id, f, list, deliveries, stop, lease_ms)
  end
  local q = self.waiting
  q.tail = q.tail + 1
  q[q.tail] = { entry_id, f, list, deliveries, stop, lease_ms }
  self.queued[entry_id] = true
end

function Node:start_waiting()
  local q = self.waiting
  while not self.stopping and self.n_running < self.workers + self:ahead() and q.head <= q.tail do
    local e = q[q.head]
    q[q.head], q.head = nil, q.head + 1
    self.queued[e[1]] = nil
    self:start(e[1], e[2], e[3], e[4], e[5], e[6])
  end
end

-- The entries delivered to this node, running, then waiting: { id,
-- deliveries, lease ms }.
function Node:held_entries()
  local list = {}
  for id, r in pairs(self.running) do list[#list + 1] = { id, r.deliveries, r.lease_ms } end
  local q = self.waiting
  for i = q.head, q.tail do list[#list + 1] = { q[i][1], q[i][4], q[i][6] } end
  return list
end

--- Starts the entry (its fields f, as a list `list`) delivered for the
-- deliveries-th time, or refuses it (dead letter, and a failed result for
-- its client). stop: a stop its client asked for before this node had it
-- (the entry is answered with that outcome and never runs).
function Node:start(entry_id, f, list, deliveries, stop, lease_ms)
  stop = stop or self.early_stops[entry_id]
  if stop then
    self.early_stops[entry_id] = nil
    local result = stream.result_fields(f.id or "?", nil, { kind = stop, message = stop })
    return self:finish(entry_id, f.reply, result)
  end
  local max = tonumber(f.max) or stream.MAX_DELIVERIES
  if deliveries > max then
    return self:refuse(entry_id, f, list, "crashed",
      ("crashed: delivered %d times, its node lost each time"):format(deliveries - 1), deliveries - 1)
  end
  local task, why = stream.decode_task(f, self.secret, self.lease_ms)
  if not task then
    log.warn("node %s: task %s refused: %s", self.name, tostring(f.id), why)
    return self:refuse(entry_id, f, list, "error", why)
  end
  local ok, target = pcall(self.group_for, self, task.timeout, task.grace)
  local fut = target
  if ok then
    ok, fut = pcall(target.submit, target, task.fn, table.unpack(task.args, 1, task.args.n))
  end
  if not ok then
    return self:refuse(entry_id, f, list, "error", tostring(fut))
  end
  self.running[entry_id] = { fut = fut, task = task, deliveries = deliveries, since = core.now(),
                             lease_ms = lease_ms }
  self.n_running = self.n_running + 1
  fut:on_done(function() self:done(entry_id) end)
end

function Node:refuse(entry_id, f, list, kind, why, deliveries)
  self.writer:command(stream.dead_letter(self.keys, list, why, self.name))
  local result = stream.result_fields(f.id or "?", nil,
    { kind = kind, message = why, deliveries = deliveries })
  self:finish(entry_id, f.reply, result)
end

--- A local task ended: its outcome goes back, unless the task is no
-- longer this node's (lease lost, handed back).
function Node:done(entry_id)
  local r = self.running[entry_id]
  self.running[entry_id] = nil
  self.n_running = self.n_running - 1
  if r.gone then
    self:start_waiting()
    return self:pull()
  end
  local took = core.now() - r.since
  self.mean_task = self.mean_task and 0.9 * self.mean_task + 0.1 * took or took
  local fut, result = r.fut
  if fut.status == "done" then
    result = stream.result_fields(r.task.id, fut.values)
  else
    result = stream.result_fields(r.task.id, nil, fut:error())
  end
  self:finish(entry_id, r.task.reply, result)
  self:start_waiting()
  self:pull()
end

--- Writes a result, acknowledges and deletes the entry: one transaction
-- with the others finished in this turn of the loop, sent again after a
-- reconnect until it is through.
function Node:finish(entry_id, reply, result)
  self.writing[entry_id] = { entry_id, reply, result }
  self.n_writing = self.n_writing + 1
  self.to_write[#self.to_write + 1] = entry_id
  if not self.write_timer then
    self.write_timer = core.timer(0, function()
      self.write_timer = nil
      local ids = self.to_write
      self.to_write = {}
      self:send_finish(ids)
    end)
  end
end

-- Results written in one transaction at the most, and their bytes (about).
local WRITE_BATCH, WRITE_BYTES = 512, 8 << 20

-- The results of ids in transactions of at most WRITE_BATCH results or
-- WRITE_BYTES.
function Node:send_finish(ids)
  local batch, bytes = {}, 0
  for _, id in ipairs(ids) do
    local w = self.writing[id]
    batch[#batch + 1] = w
    bytes = bytes + #w[3][6]
    if #batch >= WRITE_BATCH or bytes >= WRITE_BYTES then
      self:write_results(batch)
      batch, bytes = {}, 0
    end
  end
  if #batch > 0 then self:write_results(batch) end
end

function Node:write_results(batch)
  local ids = {}
  for i, w in ipairs(batch) do ids[i] = w[1] end
  local cmds = stream.finish(self.keys, self.name, batch, self.result_ttl)
  self.writer:transaction(cmds, function(reply, err)
    if err or type(reply) ~= "table" or reply.err then
      log.warn("node %s: %d result(s) not written: %s", self.name, #ids,
        tostring(err or (reply and reply.err) or "transaction aborted"))
      return  -- sent again once the connection is back
    end
    for _, id in ipairs(ids) do
      if self.writing[id] then
        self.writing[id] = nil
        self.n_writing = self.n_writing - 1
      end
    end
  end)
end

--- Keeps the leases of the held tasks whose lease is lease_ms; a task
-- another node took over is cancelled here and its outcome dropped.
function Node:renew(lease_ms)
  local ids = {}
  for _, e in ipairs(self:held_entries()) do
    if e[3] == lease_ms then ids[#ids + 1] = e[1] end
  end
  if #ids == 0 then return false end
  self.writer:command(stream.renew(self.keys, self.name, ids), function(lost)
    if type(lost) ~= "table" or lost.err then return end
    for _, id in ipairs(lost) do
      local r = self.running[id]
      if r and not r.gone then
        log.warn("node %s: lease of %s lost to another node; cancelling it here", self.name, id)
        r.gone = true
        r.fut:cancel()
      end
    end
  end)
  return true
end

--- One renewal timer per lease among the held tasks, every third of it;
-- it goes when no held task has that lease any more.
function Node:keep_renewing(lease_ms)
  if self.renewers[lease_ms] or self.stopping then return end
  local function tick()
    if self.stopping or not self:renew(lease_ms) then
      self.renewers[lease_ms] = nil
      return
    end
    self.renewers[lease_ms] = core.timer(lease_ms / 3000, tick)
  end
  self.renewers[lease_ms] = core.timer(lease_ms / 3000, tick)
end

local CLAIM_MIN = 0.05  -- seconds between two looks for stale tasks, at least

-- Seconds between two looks for stale tasks at the most: half the
-- shortest lease in use (its own for tasks without one included).
function Node:claim_period()
  return math.min(self.lease_ms, self.shortest_lease) / 2000
end

function Node:claim_in(seconds)
  if self.claim_timer then self.claim_timer:stop() end
  self.claim_at = core.now() + seconds
  self.claim_timer = core.timer(seconds, function()
    self.claim_timer = nil
    self:claim()
  end)
end

--- Takes over tasks whose node stopped renewing their lease, each judged
-- by its own lease; looks again as soon as the first task it left may
-- run out of lease (a full pending list is looked at in pages, back to
-- back), and at least every half of the shortest lease clients of the
-- queue have used lately (stream.claim_stale) or of its own.
function Node:claim()
  if self.stopping or self.claiming then return end
  local every = self:claim_period()
  local free = self.workers - self.n_running - self:n_waiting()
  if free <= 0 then return self:claim_in(every) end
  self.claiming = true
  local ok = self.writer:command(stream.claim_stale(self.keys, self.name, free, self.claim_after,
    self.lease_ms), function(reply)
    self.claiming = false
    if self.stopping then return end
    if type(reply) ~= "table" or reply.err or type(reply[1]) ~= "table" then
      return self:claim_in(every)
    end
    for _, e in ipairs(reply[1]) do
      log.info("node %s: took over %s (delivery %d)", self.name, e[1], e[3])
      self:take(e[1], e[2], e[3], e[4] or nil)
    end
    local shortest = tonumber(reply[4]) or -1
    self.shortest_lease = shortest > 0 and shortest or math.huge
    local wait = tonumber(reply[2]) or -1
    if wait >= 0 then self.claim_wait = math.min(self.claim_wait or math.huge, wait / 1000) end
    self.claim_after = reply[3]
    if self.claim_after ~= "-" then return self:claim_in(CLAIM_MIN) end  -- the next page
    local soonest = math.min(self.claim_wait or every, every)
    self.claim_wait = nil
    self:claim_in(math.max(soonest, CLAIM_MIN))
  end)
  if not ok then
    self.claiming = false
    self:claim_in(every)
  end
end

local function every(seconds, fn)
  local t
  local function tick()
    fn()
    t.timer = core.timer(seconds, tick)
  end
  t = { timer = core.timer(seconds, tick) }
  function t.stop() t.timer:stop() end
  return t
end

--- Reads the control stream: a stop request for a running task gets its
-- local cancel or kill; one not here yet is remembered for a while (its
-- entry may be on its way to this node). A lease newly in use may bring
-- the next look for stale tasks forward.
function Node:watch()
  if self.stopping or self.watching then return end
  self.watching = true
  local ok = self.control:command(stream.read_control(self.keys, self.control_after, BLOCK_MS),
    function(reply, err)
      self.watching = false
      if err or (type(reply) == "table" and reply.err) then return end
      for _, s in ipairs(reply or {}) do
        for _, entry in ipairs(s[2]) do
          self.control_after = entry[1]
          local f = stream.fields(entry[2])
          if f.lease then
            self:lease_used(tonumber(f.lease))
          else
            self:apply_stop(f.entry, f.stop)
          end
        end
      end
      self:watch()
    end)
  if not ok then self.watching = false end  -- the reconnect watches again
end

function Node:lease_used(lease_ms)
  if not lease_ms or lease_ms <= 0 or lease_ms >= self.shortest_lease then return end
  self.shortest_lease = lease_ms
  local period = self:claim_period()
  if not self.stopping and self.claim_timer and self.claim_at > core.now() + period then
    self:claim_in(period)
  end
end

function Node:apply_stop(entry_id, stop)
  local r = self.running[entry_id]
  if not r then
    self.early_stops[entry_id] = stop
    self.early_at[entry_id] = core.now()
    return
  end
  if r.gone or r.stopped then return end
  r.stopped = stop
  log.info("node %s: %s asked for %s", self.name, stop, entry_id)
  if stop == "killed" then r.fut:kill() else r.fut:cancel() end
end

-- Stops asked for entries this node never got are forgotten after a lease
-- (this node's).
function Node:forget_early_stops()
  local old = core.now() - self.lease_ms / 1000
  for id, at in pairs(self.early_at) do
    if at < old then self.early_at[id], self.early_stops[id] = nil, nil end
  end
end

function Node:reconnected()
  log.info("node %s: connection to the broker back", self.name)
  local ids = {}
  for id in pairs(self.writing) do ids[#ids + 1] = id end
  self.to_write = {}
  self:send_finish(ids)
  self:recover()
  self:pull()
end

--- Takes the entries the group says this node holds but it does not
-- know of: delivered by a read (or a claim) whose answer was lost with
-- the connection. Nobody would renew them; they would be taken over as
-- if this node were lost.
function Node:recover()
  if self.stopping then return end
  self.writer:command(stream.read_own(self.keys, self.name, 10000), function(reply)
    if type(reply) ~= "table" or reply.err or self.stopping then return end
    for _, e in ipairs(reply) do
      if not (self.running[e[1]] or self.queued[e[1]] or self.writing[e[1]]) then
        log.info("node %s: %s was delivered here as the connection went; running it", self.name, e[1])
        self:take(e[1], e[2], e[3])
      end
    end
  end)
end

function Node:hand_back_all()
  local pending = 0
  local function sent() pending = pending - 1 end
  local back = {}
  for _, r in pairs(self.running) do r.gone = true end
  for _, e in ipairs(self:held_entries()) do
    back[e[1]] = true
    pending = pending + 1
    self.writer:command(stream.hand_back(self.keys, self.name, e[1], e[2]), sent)
  end
  -- what was delivered to this node but never taken (a read answered
  -- as it stopped) goes back too
  local held = self.writer:call(stream.held(self.keys, self.name, 10000), 5)
  for _, p in ipairs(type(held) == "table" and held or {}) do
    if not back[p[1]] and not self.writing[p[1]] then
      pending = pending + 1
      self.writer:command(stream.hand_back(self.keys, self.name, p[1], p[4]), sent)
    end
  end
  loop.wait(function() return pending <= 0 end, 5)
end

function Node:stop_timers()
  for lease_ms, t in pairs(self.renewers) do
    t:stop()
    self.renewers[lease_ms] = nil
  end
  if self.claim_timer then self.claim_timer:stop(); self.claim_timer = nil end
  self.forget_timer.stop(); self.long_timer.stop()
end

--- The ordered stop: nothing new, running tasks get `grace` seconds,
-- the rest goes back to the stream, results still unwritten get a moment.
function Node:stop()
  if self.stopped then return end
  self.stopped, self.stopping = true, true
  self:stop_timers()
  self.reader:close()
  self.control:close()
  local deadline = core.now() + self.grace
  loop.wait(function() return self.hurry or self.n_running == 0 end, self.grace)
  if self.n_running > 0 then
    log.info("node %s: handing back %d running task(s)", self.name, self.n_running)
  end
  self:hand_back_all()
  self.pool:terminate()
  loop.wait(function() return self.n_writing == 0 end, math.max(deadline - core.now(), 1))
  self.writer:close()
end

--- Stops without waiting (a pool's own node, stopped from the loop):
-- nothing new, running tasks handed back at once, the workers killed;
-- on_released() once what was sent has been answered.
function Node:release(on_released)
  if self.stopped then return end
  self.stopped, self.stopping = true, true
  self:stop_timers()
  self.reader:close()
  self.control:close()
  local pending = 1
  local function sent()
    pending = pending - 1
    if pending == 0 then
      self.writer:close()
      if on_released then on_released() end
    end
  end
  for _, r in pairs(self.running) do r.gone = true end
  for _, e in ipairs(self:held_entries()) do
    local ok = self.writer:command(stream.hand_back(self.keys, self.name, e[1], e[2]), sent)
    if ok then pending = pending + 1 end
  end
  self.pool:terminate()
  if not self.writer:command({ "PING" }, sent) then sent() end  -- after the writes before it
end

--- ensure_group(client, keys) -> true | nil, err: the queue's consumer
-- group exists (created with its stream when missing).
function node.ensure_group(client, keys)
  local ok, err = client:call(stream.create_group(keys), 5)
  if ok or tostring(err):find("^BUSYGROUP") then return true end
  return nil, "cannot create the consumer group: " .. tostring(err)
end

local function connect_all(self, url)
  local clients, err = redis.connect_each(url, {
    { on_reconnect = function() self:reconnected() end },
    { on_reconnect = function() self:recover(); self:pull() end },
    { on_reconnect = function() self:watch() end },
  })
  if not clients then error("orch.serve: " .. err, 0) end
  self.writer, self.reader, self.control = clients[1], clients[2], clients[3]
  local ok, gerr = node.ensure_group(self.writer, self.keys)
  if not ok then error("orch.serve: " .. gerr, 0) end
  local tail = self.writer:call(stream.control_tail(self.keys), 5)
  self.control_after = type(tail) == "table" and tail[1] and tail[1][1] or "0-0"
end

--- start(opts) -> node: serves the queue from now on, in this process's
-- loop (what serve and a pool's own workers on a broker use). opts as
-- serve's, plus quiet = true (no warning about a missing secret).
function node.start(opts)
  check_options(opts)
  local orch = require "orch"
  local self = setmetatable({
    queue = opts.queue or "orch", workers = opts.workers or core.cpu_count(),
    lease_ms = math.floor((opts.lease or 30) * 1000), grace = opts.grace or 10,
    secret = opts.secret or os.getenv("ORCH_SECRET"), result_ttl = opts.result_ttl,
    name = hostname() .. ":" .. core.getpid(), running = {}, n_running = 0, writing = {},
    n_writing = 0, groups = {}, early_stops = {}, early_at = {}, to_write = {},
    waiting = { head = 1, tail = 0 }, queued = {}, renewers = {}, shortest_lease = math.huge, claim_after = "-",
  }, Node)
  self.keys = stream.keys(self.queue)
  connect_all(self, opts.broker)
  if not self.secret or self.secret == "" then
    self.secret = nil
    if not opts.quiet then
      log.warn("node %s: no secret set (ORCH_SECRET): tasks are not verified; whoever can write"
        .. " to the stream can run code here", self.name)
    end
  end
  self.pool = orch.pool{ workers = self.workers, max_tasks_per_worker = opts.max_tasks_per_worker }
  self.forget_timer = every(self.lease_ms / 3000, function() self:forget_early_stops() end)
  self.long_timer = every(AHEAD_SECONDS, function() self:check_long() end)
  log.info("node %s: serving queue '%s' with %d workers", self.name, self.queue, self.workers)
  self:claim()
  self:pull()
  self:watch()
  return self
end

--- serve(opts) -> true, signal name: runs until INT or TERM, then stops in order.
function node.serve(opts)
  check_options(opts)
  local orch = require "orch"
  local self = node.start(opts)
  local signal_name
  local function on_signal(name)
    if signal_name then self.hurry = true; return end
    signal_name, self.stopping = name, true
  end
  orch.on_signal("INT", on_signal)
  orch.on_signal("TERM", on_signal)
  loop.wait(function() return self.stopping end)
  log.info("node %s: %s: stopping", self.name, signal_name)
  self:stop()
  orch.on_signal("INT", nil)
  orch.on_signal("TERM", nil)
  return true, signal_name
end

return node
