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
-- its own, asking for as many as it has free workers, and writes their
-- results on a second one (orch.broker.feed); that one also renews each
-- task's lease (every third of that lease: a task carries its pool's;
-- `lease` here is for tasks without one) and, while workers are free,
-- takes over tasks whose node stopped renewing (orch.broker.leases). A
-- third connection reads the control stream: stop requests for the tasks
-- it runs, leases newly in use (here).
-- On INT or TERM it reads nothing new, lets running tasks finish within
-- `grace`, hands back what is left (and anything delivered to it that it
-- never started) for other nodes, then returns. A second signal hurries
-- the stop: whatever runs is handed back at once.
local core = require "orch.core"
local loop = require "orch.loop"
local log = require "orch.log"
local deque = require "orch.deque"
local redis = require "orch.broker.redis"
local stream = require "orch.broker.stream"
local feed = require "orch.broker.feed"
local leases = require "orch.broker.leases"

local node = {}

local BLOCK_MS = 5000  -- a read of the control stream waits this long, then is sent again
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

-- A node's methods: its lifecycle and stop requests here, its task
-- feeding (orch.broker.feed) and its leases (orch.broker.leases).
local Node = {}
Node.__index = Node
for _, part in ipairs{ feed, leases } do
  for name, fn in pairs(part) do
    if type(fn) == "function" then Node[name] = fn end
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
  local _, n = self:hand_back_held(sent)
  pending = pending + n
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
    waiting = deque.new(), queued = {}, renewers = {}, shortest_lease = math.huge, claim_after = "-",
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
  self.long_timer = every(feed.CHECK_SECONDS, function() self:check_long() end)
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
