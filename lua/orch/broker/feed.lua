--- A broker node's task feeding: new entries read from the stream (as
-- many as there are free workers, or, for short tasks, some ahead), run
-- in the node's local pool, their start reported and their results
-- written back. Methods of the node (orch.broker.node installs them);
-- orch.broker.leases keeps the leases of what it holds.
--
-- A delivered entry runs when a worker is free (or, for short tasks, soon
-- will be), else waits here in order. When its local task ends, its
-- result goes into the next write: the results of a loop turn are
-- written, their entries acknowledged and deleted in one transaction
-- (one result entry per client), sent again after a reconnect until it
-- is through. Tasks still running at a check (every CHECK_SECONDS) are
-- reported started to their clients, in one batch.
local core = require "orch.core"
local log = require "orch.log"
local deque = require "orch.deque"
local stream = require "orch.broker.stream"
local Future = require "orch.future"

local Node = {}

local BLOCK_MS = 5000  -- a read for free workers waits this long, then is sent again

-- Tasks taken ahead of the free workers while tasks are short and the
-- stream has more: per worker, as many as fit in AHEAD_SECONDS of the mean
-- task time, at most AHEAD_MAX; they wait in the local pool (which sends
-- them ahead to busy workers, as it does for its own backlog). A read
-- ahead never waits, and takes nothing unless the stream holds more
-- undelivered entries than it asks for (stream.undelivered, asked just
-- before stream.read_ahead); none once a
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
  return deque.len(self.waiting)
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
  deque.push(self.waiting, { entry_id, f, list, deliveries, stop, lease_ms })
  self.queued[entry_id] = true
end

function Node:start_waiting()
  local q = self.waiting
  while not self.stopping and self.n_running < self.workers + self:ahead() and deque.len(q) > 0 do
    local e = deque.pop(q)
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
    result = stream.result_fields(r.task.id, Future.list(fut))
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

-- Seconds between two checks for long tasks and started ones (check_long).
Node.CHECK_SECONDS = AHEAD_SECONDS

return Node
