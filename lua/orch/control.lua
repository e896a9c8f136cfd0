--- orch.control: the control socket of a running orch (docs/control.md).
--
-- `control.serve{ name =, path = }` opens a Unix socket in the per-user
-- directory (`$XDG_RUNTIME_DIR/orch/`, else `/tmp/orch-UID/`; mode 0700,
-- socket 0600) named NAME.PID.sock, and answers requests there while the
-- loop runs (any wait of orch: sup:run(), fut:result(), orch.sleep...).
-- Only the same user gets in (core.ctl_listen checks the peer's uid).
-- Requests and answers are one JSON object per line; requests are
-- commands from a fixed list, never code. A socket left by a run that was
-- SIGKILLed is found dead (connect refused) and replaced.
--
-- The control module keeps the last log records of the process (it taps
-- orch.log.deliver, so it sees every record whatever the handler is) for
-- `logs`, and sends new ones to the clients that follow them.
local core = require "orch.core"
local check = require "orch.check"
local Interrupted = require("orch.errors").Interrupted
local cjson = require "cjson"
local log = require "orch.log"
local status = require "orch.status"

local control = { PROTOCOL = 1 }

local MAX_LINE = 64 * 1024   -- bytes in one request line
local LOG_KEEP = 500         -- records kept for `logs`
local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

---------------------------------------------------------------------------
-- where sockets live

--- The per-user directory of control sockets (not created here).
function control.dir()
  local xdg = os.getenv("XDG_RUNTIME_DIR")
  if xdg and xdg ~= "" then return xdg .. "/orch" end
  return ("/tmp/orch-%d"):format(core.geteuid())
end

--- The socket path of a run called name in this process.
function control.path_for(name)
  return ("%s/%s.%d.sock"):format(control.dir(), name, core.getpid())
end

--- Splits a socket's file name into run name and pid (nil if not ours).
function control.parse_socket_name(file)
  local name, pid = file:match("^(.+)%.(%d+)%.sock$")
  return name, tonumber(pid)
end

---------------------------------------------------------------------------
-- JSON with arrays that stay arrays: a table made by array() is always
-- written [...], even empty (lua-cjson writes an empty table as {}).

local ARRAY = {}
local function array(t) return setmetatable(t or {}, ARRAY) end
control.array = array

local function encode(v)
  if type(v) ~= "table" then return cjson.encode(v) end
  local parts = {}
  if getmetatable(v) == ARRAY or v[1] ~= nil then
    for i = 1, #v do parts[i] = encode(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for i, k in ipairs(keys) do
    parts[i] = cjson.encode(k) .. ":" .. encode(v[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end
control.encode = encode

---------------------------------------------------------------------------
-- the log ring

local records, first, last = {}, 1, 0
local followers = {}  -- conn -> true
local tapped = false

local function tap_log()
  if tapped then return end
  tapped = true
  local deliver = log.deliver
  log.deliver = function(level, message, name, pid)
    deliver(level, message, name, pid)
    if (LEVELS[level] or 0) < (LEVELS[log.level] or 2) then return end
    local r = { time = os.time(), level = level, message = message, name = name, pid = pid }
    last = last + 1
    records[last] = r
    if last - first >= LOG_KEEP then records[first] = nil; first = first + 1 end
    if next(followers) then
      local line = encode({ v = control.PROTOCOL, record = r }) .. "\n"
      for conn in pairs(followers) do
        if not conn:send(line) then followers[conn] = nil end
      end
    end
  end
end

local function recent_records(n)
  local out = array()
  for i = math.max(first, last - (n or LOG_KEEP) + 1), last do out[#out + 1] = records[i] end
  return out
end

---------------------------------------------------------------------------
-- requests

local server  -- { listener, name, started } while serving

-- The report with its lists as JSON arrays.
local function status_answer()
  local report = status.report()
  array(report.supervisors)
  array(report.pools)
  for _, sup in ipairs(report.supervisors) do array(sup.services) end
  for _, p in ipairs(report.pools) do array(p.tasks) end
  report.name, report.version = server.name, core.version
  report.uptime = core.now() - server.started
  return report
end

-- Status answers asked for within STATUS_FRESH seconds of each other share
-- one report, encoded once: many clients polling a busy run cost it one
-- report an interval, not one a request. The cached text is the report's
-- fields; each answer puts its own envelope (ok, id, cmd, v) in front.
-- Any other command forgets it, so a status asked after an action sees it.
local STATUS_FRESH = 0.05
local status_cache = { at = -math.huge, fields = nil }

local function status_line(id)
  local now = core.now()
  if now - status_cache.at >= STATUS_FRESH then
    status_cache.fields = encode(status_answer()):sub(2)  -- without its "{"
    status_cache.at = now
  end
  local envelope = ('{"cmd":"status",%s"ok":true,"v":%d,'):format(
    id ~= nil and ('"id":%s,'):format(cjson.encode(id)) or "", control.PROTOCOL)
  return envelope .. status_cache.fields
end

local function check_name(req)
  if type(req.name) ~= "string" or req.name == "" then
    return nil, "field 'name' must be a service name (a string)", "bad_request"
  end
  return req.name
end

local function check_task(req)
  local id = math.tointeger(req.task)
  if not id then return nil, "field 'task' must be a task id (an integer)", "bad_request" end
  return id
end

-- A command that checks its operand, then acts on it through orch.status.
local function acting(check_operand, act, action)
  return function(req)
    local operand, err, code = check_operand(req)
    if not operand then return nil, err, code end
    local done, detail, why = act(action, operand)
    if not done then return nil, detail, why end
    return { detail = detail }
  end
end

-- cmd -> function(req, conn) -> answer fields | nil, error, code
local COMMANDS = {
  hello = function()
    return { name = server.name, pid = core.getpid(), version = core.version,
             uptime = core.now() - server.started }
  end,
  status = status_answer,  -- answered through status_line, cached (see request)
  stop = acting(check_name, status.service, "stop"),
  start = acting(check_name, status.service, "start"),
  restart = acting(check_name, status.service, "restart"),
  cancel = acting(check_task, status.task, "cancel"),
  kill = acting(check_task, status.task, "kill"),
  logs = function(req, conn)
    local n = req.lines ~= nil and math.tointeger(req.lines)
    if req.lines ~= nil and not (n and n >= 0) then
      return nil, "field 'lines' must be a non-negative integer", "bad_request"
    end
    local answer = { records = recent_records(n or nil), following = req.follow == true }
    if req.follow == true then followers[conn] = true end
    return answer
  end,
}
local COMMAND_NAMES = {}
for k in pairs(COMMANDS) do COMMAND_NAMES[#COMMAND_NAMES + 1] = k end
table.sort(COMMAND_NAMES)

local function send(conn, fields)
  fields.v = control.PROTOCOL
  conn:send(encode(fields) .. "\n")
end

local function refuse(conn, id, code, message)
  send(conn, { ok = false, id = id, code = code, error = message })
end

-- One request line: parsed, checked, run; one answer line.
local function request(conn, line)
  local ok, req = pcall(cjson.decode, line)
  if not ok or type(req) ~= "table" or req[1] ~= nil then
    return refuse(conn, nil, "bad_request", "a request is one JSON object per line")
  end
  local id = req.id
  if type(id) ~= "string" and type(id) ~= "number" then id = nil end
  if req.v ~= nil and req.v ~= control.PROTOCOL then
    return refuse(conn, id, "unsupported_version",
      ("protocol version %s is not served (this orch speaks %d)"):format(tostring(req.v), control.PROTOCOL))
  end
  local command = type(req.cmd) == "string" and COMMANDS[req.cmd]
  if not command then
    return refuse(conn, id, "unknown_command", ("unknown command %s (commands: %s)")
      :format(cjson.encode(req.cmd), table.concat(COMMAND_NAMES, ", ")))
  end
  if req.cmd == "status" then
    local made, answer = xpcall(status_line, debug.traceback, id)
    if not made then return refuse(conn, id, "internal", tostring(answer)) end
    return conn:send(answer .. "\n")
  end
  status_cache.at = -math.huge  -- what this command does shows in the next status
  local res = table.pack(xpcall(command, debug.traceback, req, conn))
  if not res[1] then
    if Interrupted.is(res[2]) then error(res[2], 0) end  -- the script's, not ours
    return refuse(conn, id, "internal", tostring(res[2]))
  end
  local answer, err, code = res[2], res[3], res[4]
  if not answer then return refuse(conn, id, code or "failed", err) end
  answer.ok, answer.id, answer.cmd = true, id, req.cmd
  send(conn, answer)
end

local function on_line(conn, line, why)
  if line then return request(conn, line) end
  if why == "too long" then
    refuse(conn, nil, "too_long", ("request line over %d bytes: closing"):format(MAX_LINE))
  elseif why == "eof" and not followers[conn] then
    conn:close()
  end
end

---------------------------------------------------------------------------
-- serving

-- Listens at path; a socket left there by a dead run is replaced.
local function listen(path)
  local listener, err, code = core.ctl_listen(path, on_line, MAX_LINE)
  if listener or code ~= "EADDRINUSE" then return listener, err end
  local probe, _, why = core.ctl_connect(path)
  if probe then
    probe:close()
    return nil, ("%s: another orch answers there"):format(path)
  end
  if why ~= "ECONNREFUSED" then return nil, err end
  os.remove(path)  -- stale: its run is gone
  return core.ctl_listen(path, on_line, MAX_LINE)
end

local function default_name()
  local script = _G.arg and _G.arg[0]
  local base = script and script:match("([^/]+)$")
  return base and base:gsub("%.lua$", "") or "orch"
end

--- control.serve{ name = run name (default: the script's base name),
-- path = socket path (default: in control.dir()) } -> path.
-- Serving twice in one process returns the first socket's path.
function control.serve(opts)
  opts = check.options("orch.control", opts, { name = "string", path = "string" })
  local name = opts.name or default_name()
  if not name:match("^[%w_.%-]+$") then
    check.fail("orch.control", "option 'name' must be letters, digits, '_', '.' or '-' (got %s)",
      check.show(name))
  end
  if core.in_child() then check.fail("orch.control", "serves from the parent process only") end
  if server then return server.listener:path() end
  local path = opts.path
  if not path then
    local ok, err = core.ctl_dir(control.dir())
    if not ok then check.fail("orch.control", "%s", err) end
    path = control.path_for(name)
  end
  local listener, err = listen(path)
  if not listener then check.fail("orch.control", "%s", err) end
  tap_log()
  server = { listener = listener, name = name, started = core.now() }
  return path
end

--- Stops serving: the socket is closed and removed.
function control.close()
  if not server then return end
  server.listener:close()
  server, followers = nil, {}
end

--- The path served, or nil.
function control.path()
  return server and server.listener:path()
end

return control
