--- A private redis-server for a spec: started in a temporary directory
-- with a Unix socket (or a loopback port), no persistence, never the
-- system's service; stop() ends it and removes the directory, and is safe
-- to call twice (specs call it in a finally).
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
  local args = ("--port %d --unixsocket %s/redis.sock --save '' --appendonly no --dir %s")
    :format(self.port or 0, self.dir, self.dir)
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
                              password = opts.password }, Server)
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

--- Stops the server, then starts it again at the same place (no data kept).
function Server:restart()
  self:kill()
  assert(self:_launch(), "redis_server: redis-server did not start again")
end

function Server:stop()
  self:kill()
  if self.dir and self.dir:match("^/tmp/orch%-redis%-") and exists(self.dir) then
    os.execute("rm -rf " .. self.dir)
  end
end

return { start = start, sh = sh }
