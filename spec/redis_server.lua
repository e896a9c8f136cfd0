--- A private redis-server for a spec: started in a temporary directory
-- with a Unix socket (or a loopback port), no persistence, never the
-- system's service; stop() ends it and removes the directory, and is safe
-- to call twice (specs call it in a finally). start{ aof = true } keeps an
-- append-only file (fsync always) that restart() loads again.
-- srv:worker(queue, opts) starts an `orch worker` node on it (stopped
-- with the server).
--   local srv = require("redis_server").start()   -- srv.url, srv.path
--   finally(function() srv:stop() end)
local Server = {}
Server.__index = Server

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function alive(pid)
  local f = io.open(("/proc/%d/stat"):format(pid))
  if not f then return false end
  local s = f:read("a")
  f:close()
  return not s:match("%) Z ")
end

local function poll(pred, timeout)
  for _ = 1, math.floor(timeout / 0.02) do
    if pred() then return true end
    os.execute("sleep 0.02")
  end
  return pred()
end

-- Starts redis-server in self.dir; true once it accepts connections.
function Server:_launch()
  local args = ("--port %d --unixsocket %s/redis.sock --save '' --appendonly %s --dir %s")
    :format(self.port or 0, self.dir, self.aof and "yes --appendfsync always" or "no", self.dir)
  if self.password then args = args .. " --requirepass " .. self.password end
  os.remove(self.dir .. "/redis.sock")
  self.pid = tonumber(sh(("redis-server %s >>%s/redis.log 2>&1 & echo $!"):format(args, self.dir)))
  return poll(function()
    local log = io.open(self.dir .. "/redis.log")
    local text = log and log:read("a") or ""
    if log then log:close() end
    return text:lower():find("ready to accept connections", 1, true) or not alive(self.pid)
  end, 5) and alive(self.pid)
end

--- start{ tcp = false, password = nil } -> server (url, path, port, dir, pid)
local function start(opts)
  opts = opts or {}
  local self = setmetatable({ dir = sh("mktemp -d /tmp/orch-redis-XXXXXX"):gsub("%s+$", ""),
                              password = opts.password, aof = opts.aof, workers = {} }, Server)
  self.path = self.dir .. "/redis.sock"
  for _ = 1, opts.tcp and 5 or 1 do
    if opts.tcp then self.port = math.random(20000, 60000) end
    if self:_launch() then
      local auth = self.password and (":" .. self.password .. "@") or ""
      self.url = opts.tcp and ("redis://%s127.0.0.1:%d/0"):format(auth, self.port)
        or ("unix://%s%s"):format(auth, self.path)
      return self
    end
  end
  local log = sh("cat " .. self.dir .. "/redis.log")
  self:stop()
  error("redis_server: redis-server did not start:\n" .. log)
end

--- Ends the server (TERM, then KILL after 5 s), keeping the directory.
function Server:kill()
  if self.pid and alive(self.pid) then
    os.execute("kill " .. self.pid)
    if not poll(function() return not alive(self.pid) end, 5) then
      os.execute("kill -9 " .. self.pid)
      poll(function() return not alive(self.pid) end, 5)
    end
  end
  self.pid = nil
end

--- Stops the server, then starts it again at the same place (its data
-- kept only with aof).
function Server:restart()
  self:kill()
  assert(self:_launch(), "redis_server: redis-server did not start again")
end

local Worker = {}
Worker.__index = Worker

--- srv:worker(queue, { workers = 2, lease = 30, grace = 5, env = "" })
-- -> worker (pid, log; worker:status() -> exit status once it ended)
function Server:worker(queue, opts)
  opts = opts or {}
  local base = ("%s/worker-%d"):format(self.dir, #self.workers + 1)
  local cmd = ("scripts/orch worker %s --queue %s --workers %d --lease %g --grace %g")
    :format(self.url, queue, opts.workers or 2, opts.lease or 30, opts.grace or 5)
  -- a shell that waits for the node and writes its exit status
  os.execute(("%s sh -c '%s & echo $! >%s.pid; wait $!; echo $? >%s.status' >%s.log 2>&1 &")
    :format(opts.env or "", cmd, base, base, base, base))
  local w = setmetatable({ log = base .. ".log", base = base }, Worker)
  poll(function()
    local f = io.open(base .. ".pid")
    w.pid = f and tonumber(f:read("a"))
    if f then f:close() end
    return w.pid ~= nil
  end, 5)
  assert(w.pid, "redis_server: orch worker did not start")
  self.workers[#self.workers + 1] = w
  return w
end

--- Waits until the node's log holds `text` (true) or timeout passes.
function Worker:wait_log(text, timeout)
  return poll(function() return self:output():find(text, 1, true) ~= nil end, timeout or 10)
end

function Worker:output()
  local f = io.open(self.log)
  local s = f and f:read("a") or ""
  if f then f:close() end
  return s
end

--- The node's exit status once it has ended (nil if still running after timeout).
function Worker:status(timeout)
  local status
  poll(function()
    local f = io.open(self.base .. ".status")
    status = f and tonumber(f:read("a"))
    if f then f:close() end
    return status ~= nil
  end, timeout or 10)
  return status
end

function Worker:kill(sig)
  if self.pid and alive(self.pid) then os.execute(("kill -%s %d"):format(sig or "KILL", self.pid)) end
end

function Server:stop()
  for _, w in ipairs(self.workers or {}) do w:kill() end
  self:kill()
  if self.dir and self.dir:match("^/tmp/orch%-redis%-") and exists(self.dir) then
    os.execute("rm -rf " .. self.dir)
  end
end

--- The marks a task left in the file at path (one "x" per run).
local function marks(path)
  local f = io.open(path)
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return #s
end

return { start = start, sh = sh, poll = poll, marks = marks }
