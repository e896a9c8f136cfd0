--- Redis for the broker: URLs, a connection made ready (AUTH, SELECT),
-- calls that wait in the loop, and reconnection with backoff.
--
-- Built on core.redis_connect (src/redis.c): hiredis on orch's own loop.
-- A client keeps one live connection at a time; when it ends by itself
-- (server restart, network), the client connects again after 0.05 s,
-- doubling up to 5 s, and calls on_reconnect once the new one is ready.
-- While it is down, command() answers nil, "disconnected: <why>" at once:
-- the callers (stream reads, result writes) know what to send again.
-- Replies are core's: strings, integers, nil, arrays (with n), { ok = s }
-- for a status and { err = s } for an error reply.
local core = require "orch.core"
local loop = require "orch.loop"

local M = {}

local BACKOFF_FIRST, BACKOFF_MAX = 0.05, 5

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function url_error(url, why)
  error(("orch.broker: bad Redis URL '%s': %s (expected redis://[user:password@]host[:port][/db]"
    .. " or unix://[user:password@]/path[?db=N])"):format(url, why), 3)
end

local function parse_auth(t, auth)
  local user, password = auth:match("^([^:]*):(.*)$")
  if not user then user, password = "", auth end
  t.user = user ~= "" and unescape(user) or nil
  t.password = password ~= "" and unescape(password) or nil
end

--- parse_url(url) -> { host, port | path, user, password, db }
-- redis://[user:password@]host[:port][/db] or unix://[user:password@]/path[?db=N].
function M.parse_url(url)
  if type(url) ~= "string" then
    error(("orch.broker: the broker URL must be a string, got %s"):format(type(url)), 2)
  end
  local scheme, rest = url:match("^(%a+)://(.*)$")
  if scheme ~= "redis" and scheme ~= "unix" then url_error(url, "unknown scheme") end
  local t, auth = { db = 0 }, rest:match("^(.-)@")
  if auth then
    parse_auth(t, auth)
    rest = rest:sub(#auth + 2)
  end
  if scheme == "unix" then
    local path, query = rest:match("^(/[^?]*)(.*)$")
    if not path or path == "/" then url_error(url, "no socket path") end
    local db = query:match("^%?db=(%d+)$")
    if query ~= "" and not db then url_error(url, "the only query is ?db=N") end
    t.path, t.db = path, tonumber(db) or 0
    return t
  end
  local host, port, db = rest:match("^([^:/]+):?(%d*)/?(%d*)$")
  if not host then
    host, port, db = rest:match("^%[([^%]]+)%]:?(%d*)/?(%d*)$")  -- [::1]:6379
  end
  if not host then url_error(url, "no host") end
  t.host, t.port, t.db = host, tonumber(port) or 6379, tonumber(db) or 0
  if t.port < 1 or t.port > 65535 then url_error(url, "port out of range") end
  return t
end

local Client = {}
Client.__index = Client
Client.__name = "orch.broker.redis"

-- Starts a connection and its hand-shake; self.ready turns true once the
-- last hand-shake reply came back fine, self.failed holds why it did not.
local function open(self)
  local where = self.where
  self.ready, self.failed = false, nil
  local conn, err = core.redis_connect{
    host = where.host, port = where.host and where.port, path = where.path,
    timeout = self.timeout,
    on_disconnect = function(why) self:_lost(why) end,
  }
  if not conn then
    self.failed = err
    self:_lost(err)
    return
  end
  self.conn = conn
  local steps = {}
  if where.password then
    steps[#steps + 1] = where.user and { "AUTH", where.user, where.password }
      or { "AUTH", where.password }
  end
  if where.db ~= 0 then steps[#steps + 1] = { "SELECT", where.db } end
  steps[#steps + 1] = { "PING" }
  for i, argv in ipairs(steps) do
    conn:command(argv, function(reply, why)
      if self.conn ~= conn then return end
      if why or (type(reply) == "table" and reply.err) then
        if not self.failed then
          self.failed = why or ("%s %s: %s"):format(self.url_text, argv[1], reply.err)
          if not why then conn:close(); self:_lost(self.failed) end
        end
      elseif i == #steps then
        self.ready, self.backoff = true, nil
        if self.reconnecting and self.on_reconnect then
          self.reconnecting = false
          self.on_reconnect(self)
        end
      end
    end)
  end
end

-- The connection ended by itself: try again later, unless closed.
function Client:_lost(why)
  self.ready, self.down = false, why
  self.failed = self.failed or why
  if self.closed or not self.reconnect or self.retry_timer or not self.started then return end
  if self.on_disconnect then self.on_disconnect(why) end
  self.reconnecting = true
  local delay = self.backoff or BACKOFF_FIRST
  self.backoff = math.min(delay * 2, BACKOFF_MAX)
  self.retry_timer = core.timer(delay, function()
    self.retry_timer = nil
    if not self.closed then open(self) end
  end)
end

--- client:command(argv, fn) -> true | nil, err: fn(reply) or fn(nil, err)
-- runs in the loop. nil, "disconnected: ..." while the connection is down.
function Client:command(argv, fn)
  if not self.ready then
    return nil, self.closed and "closed" or ("disconnected: " .. tostring(self.down))
  end
  return self.conn:command(argv, fn)
end

--- client:transaction(cmds, fn) -> true | nil, err: MULTI, each argv of
-- cmds (their answers dropped), then EXEC, whose answer (the list of
-- theirs) goes to fn as command's does.
function Client:transaction(cmds, fn)
  local ok, err = self:command{ "MULTI" }
  if not ok then return nil, err end
  for _, argv in ipairs(cmds) do self:command(argv) end
  return self:command({ "EXEC" }, fn)
end

--- client:call(argv [, timeout]) -> reply | nil, err: waits in the loop.
-- An error reply is nil, its message (e.g. "BUSYGROUP ...").
function Client:call(argv, timeout)
  local done, reply, err = false, nil, nil
  local ok, why = self:command(argv, function(r, e)
    done, reply, err = true, r, e
  end)
  if not ok then return nil, why end
  if not loop.wait(function() return done end, timeout) then
    return nil, ("timeout: no answer to %s from %s within %gs"):format(argv[1], self.url_text, timeout)
  end
  if type(reply) == "table" and reply.err then return nil, reply.err end
  return reply, err
end

--- Writes the commands sent so far now, as far as the socket takes them
-- (conn:flush), rather than at the next turn of the loop.
function Client:flush()
  if self.ready then self.conn:flush() end
end

function Client:connected()
  return self.ready
end

--- Ends the connection for good; waiting commands get nil, "closed".
function Client:close()
  if self.closed then return end
  self.closed = true
  if self.retry_timer then self.retry_timer:stop(); self.retry_timer = nil end
  if self.conn then self.conn:close() end
end
Client.__close = Client.close

local OPTIONS = { timeout = "number", reconnect = "boolean", on_reconnect = "function",
                  on_disconnect = "function" }

local function check_options(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("orch.broker.redis.connect: options must be a table", 3) end
  for k, v in pairs(opts) do
    if not OPTIONS[k] then
      error(("orch.broker.redis.connect: unknown option '%s' (valid: on_disconnect, on_reconnect,"
        .. " reconnect, timeout)"):format(tostring(k)), 3)
    elseif type(v) ~= OPTIONS[k] then
      error(("orch.broker.redis.connect: option '%s' must be a %s, got %s")
        :format(k, OPTIONS[k], type(v)), 3)
    end
  end
  return opts
end

--- connect(url, opts) -> client | nil, err
-- Waits (in the loop) until the server answered the hand-shake, at most
-- opts.timeout seconds (default 5). opts.reconnect (default true): the
-- client reconnects by itself after the first connection; on_reconnect(client)
-- once a new connection is ready, on_disconnect(err) when one ends.
function M.connect(url, opts)
  local where = M.parse_url(url)
  opts = check_options(opts)
  local self = setmetatable({
    where = where, url_text = url:gsub("//[^@/]*@", "//"), timeout = opts.timeout or 5,
    reconnect = opts.reconnect ~= false, on_reconnect = opts.on_reconnect,
    on_disconnect = opts.on_disconnect,
  }, Client)
  open(self)
  loop.wait(function() return self.ready or self.failed ~= nil end, self.timeout + 1)
  if not self.ready then
    local why = self.failed or ("connect to %s: no answer within %gs"):format(self.url_text, self.timeout)
    self.closed = true
    if self.conn then self.conn:close() end
    return nil, why
  end
  self.started = true
  return self
end

--- connect_each(url, list) -> clients | nil, err: a client per options
-- table of list (as connect's), all or none: on a failure those made are
-- closed.
function M.connect_each(url, list)
  local clients = {}
  for i, opts in ipairs(list) do
    local c, err = M.connect(url, opts)
    if not c then
      for _, made in ipairs(clients) do made:close() end
      return nil, err
    end
    clients[i] = c
  end
  return clients
end

return M
