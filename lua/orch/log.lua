--- orch.log: logging that works the same in the parent and in children.
-- In a child, a record is forwarded to the parent over the channel; the
-- parent calls `log.handler(record)` with `record = { level, message, name,
-- pid, time }`. The default handler writes one line to stderr; `log.json`
-- writes one JSON object per record. Children inherit the level by fork.
-- When this module loads, `ORCH_LOG=level` and `ORCH_LOG_FORMAT=text|json`
-- in the environment set the level and the handler.
local core = require "orch.core"
local check = require "orch.check"

local log = { level = "info", name = "main" }

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

local function default_handler(r)
  io.stderr:write(("%s %-5s [%s %d] %s\n"):format(
    os.date("%H:%M:%S", math.floor(r.time)), r.level:upper(), r.name, r.pid, r.message))
  io.stderr:flush()
end
log.default_handler = default_handler
log.handler = default_handler

local cjson  -- loaded with the first JSON record: only log.json needs it
local JSON_KEYS = { "time", "level", "name", "pid", "message" }

--- A handler writing one JSON object per record to stderr, keys in a fixed
-- order: `{"time":...,"level":...,"name":...,"pid":...,"message":...}`
-- (time in seconds since the epoch). Set `orch.log.handler = orch.log.json`.
-- @tparam table r the record
function log.json(r)
  cjson = cjson or require "cjson"
  local parts = {}
  for i, key in ipairs(JSON_KEYS) do
    parts[i] = ("%s:%s"):format(cjson.encode(key), cjson.encode(r[key]))
  end
  io.stderr:write("{", table.concat(parts, ","), "}\n")
  io.stderr:flush()
end

local function enabled(level)
  return LEVELS[level] >= (LEVELS[log.level] or 2)
end

-- Delivers a record in the parent (from a child or from the parent itself).
function log.deliver(level, message, name, pid)
  if not enabled(level) then return end
  local ok, err = pcall(log.handler, {
    level = level, message = message, name = name, pid = pid, time = os.time() })
  if not ok then
    io.stderr:write("orch.log: handler failed: ", tostring(err), "\n")
  end
end

-- The record's message: fmt formatted with the arguments, or fmt itself
-- (any value, by tostring) when there are none.
local function message_of(level, fmt, ...)
  if select("#", ...) == 0 then return tostring(fmt) end
  if type(fmt) ~= "string" then
    check.fail("orch.log." .. level, "format must be a string (got %s)", check.show(fmt))
  end
  local ok, message = pcall(string.format, fmt, ...)
  if not ok then
    -- string.format numbers its arguments as orch.log.LEVEL does
    check.fail("orch.log." .. level, "%s", (message:gsub(" to '[%w.]*format'", "", 1)))
  end
  return message
end

local function emit(level, fmt, ...)
  if not enabled(level) then return end
  local message = message_of(level, fmt, ...)
  if core.in_child() then
    core.send_parent(core.msg.LOG, level, message)
  else
    log.deliver(level, message, log.name, core.getpid())
  end
end

for level in pairs(LEVELS) do
  log[level] = function(fmt, ...) return emit(level, fmt, ...) end
end

--- Logs a record at level "debug": fmt formatted with the arguments
-- (string.format), or fmt itself (any value) when there are none.
-- @function debug
-- @param fmt a format string
-- @param ... its arguments

--- Logs a record at level "info" (as debug).
-- @function info
-- @param fmt
-- @param ...

--- Logs a record at level "warn" (as debug).
-- @function warn
-- @param fmt
-- @param ...

--- Logs a record at level "error" (as debug).
-- @function error
-- @param fmt
-- @param ...

-- ORCH_LOG and ORCH_LOG_FORMAT; a value that means nothing is said once
-- on stderr and left aside.
local function from_environment()
  local level, format = os.getenv("ORCH_LOG"), os.getenv("ORCH_LOG_FORMAT")
  if level and level ~= "" then
    if LEVELS[level] then
      log.level = level
    else
      io.stderr:write(("orch.log: ORCH_LOG: unknown level '%s' (valid: debug, info, "
        .. "warn, error); logging at %s\n"):format(level, log.level))
    end
  end
  if format == "json" then
    log.handler = log.json
  elseif format and format ~= "" and format ~= "text" then
    io.stderr:write(("orch.log: ORCH_LOG_FORMAT: unknown format '%s' (valid: text, "
      .. "json); writing text\n"):format(format))
  end
end
from_environment()

return log
