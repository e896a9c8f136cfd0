--- orch.cli.remote: the client side of the control socket, for `orch ctl`
-- and `orch top`: which runs are alive, which one a TARGET names, and one
-- request answered.
--
-- A TARGET is a run's name, its pid or a socket path; with one run alive
-- it may be left out. A socket whose run is gone (connect refused) is
-- removed on the way.
local core = require "orch.core"
local cjson = require "cjson"
local control = require "orch.control"

local remote = { NO_RUN = 3, USAGE = 2 }

--- The live runs of this user: { { name, pid, path }, ... } by name, pid.
function remote.runs()
  local dir = control.dir()
  local runs = {}
  for _, file in ipairs(core.ctl_sockets(dir)) do
    local name, pid = control.parse_socket_name(file)
    local path = dir .. "/" .. file
    local probe, _, why = core.ctl_connect(path)
    if probe then
      probe:close()
      if name then runs[#runs + 1] = { name = name, pid = pid, path = path } end
    elseif why == "ECONNREFUSED" then
      os.remove(path)  -- its run was killed before it could remove it
    end
  end
  table.sort(runs, function(a, b)
    if a.name ~= b.name then return a.name < b.name end
    return a.pid < b.pid
  end)
  return runs
end

local function describe(runs)
  local names = {}
  for i, r in ipairs(runs) do names[i] = ("%s (pid %d)"):format(r.name, r.pid) end
  return table.concat(names, ", ")
end

--- resolve(target) -> path | nil, message, exit code (3: no such run
-- alive; 2: the target is ambiguous).
function remote.resolve(target)
  if target and target:find("/", 1, true) then return target end
  local runs, matches = remote.runs(), {}
  for _, r in ipairs(runs) do
    if target == nil or r.name == target or tostring(r.pid) == target then
      matches[#matches + 1] = r
    end
  end
  if #matches == 1 then return matches[1].path end
  if #matches == 0 then
    if target then
      return nil, ("no live orch run named '%s'%s"):format(target,
        #runs > 0 and (" (alive: " .. describe(runs) .. ")") or ""), remote.NO_RUN
    end
    return nil, "no orch run is alive (nothing serves in " .. control.dir() .. ")", remote.NO_RUN
  end
  return nil, ("%d runs match, say which (a name, a pid or a socket path): %s")
    :format(#matches, describe(matches)), remote.USAGE
end

--- One log record as the default handler writes it.
function remote.format_record(r)
  return ("%s %-5s [%s %s] %s"):format(os.date("%H:%M:%S", math.floor(tonumber(r.time) or 0)),
    tostring(r.level):upper(), tostring(r.name), tostring(r.pid), tostring(r.message))
end

-- lua-cjson reads every number as a float: whole ones become integers
-- again (pids, ids, counts), so they print as 123, not 123.0.
local function integers(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  end
  return v
end

local Session = {}
Session.__index = Session

--- open(path) -> session | nil, message, 3
function remote.open(path)
  local client, err = core.ctl_connect(path)
  if not client then return nil, ("cannot reach %s"):format(err), remote.NO_RUN end
  return setmetatable({ client = client, next_id = 0 }, Session)
end

--- session:request(fields, timeout) -> answer, nil, line | nil, message.
-- The answer is the decoded JSON object (ok = true or false), line the
-- JSON text it came as.
function Session:request(fields, timeout)
  self.next_id = self.next_id + 1
  fields.v, fields.id = control.PROTOCOL, self.next_id
  local sent, err = self.client:send(control.encode(fields) .. "\n")
  if not sent then return nil, err end
  return self:read(timeout)
end

--- session:read(timeout) -> the next line as a table, nil, the line as
-- it came | nil, message
function Session:read(timeout)
  local line, err = self.client:read_line(timeout)
  if not line then
    return nil, err == "closed" and "the run closed the connection" or ("no answer: " .. err)
  end
  local ok, answer = pcall(cjson.decode, line)
  if not ok or type(answer) ~= "table" then return nil, "bad answer: " .. line end
  return integers(answer), nil, line
end

function Session:close()
  self.client:close()
end

return remote
