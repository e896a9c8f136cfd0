--- orch.log: logging that works the same in the parent and in children.
-- In a child, a record is forwarded to the parent over the channel; the
-- parent calls log.handler(record) with record = { level, message, name,
-- pid, time }. The default handler writes one line to stderr.
local core = require "orch.core"

local log = { level = "info", name = "main" }

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

local function default_handler(r)
  io.stderr:write(("%s %-5s [%s %d] %s\n"):format(
    os.date("%H:%M:%S", math.floor(r.time)), r.level:upper(), r.name, r.pid, r.message))
  io.stderr:flush()
end
log.default_handler = default_handler
log.handler = default_handler

local function enabled(level)
  return LEVELS[level] >= (LEVELS[log.level] or 2)
end

--- Delivers a record in the parent (from a child or from the parent itself).
function log.deliver(level, message, name, pid)
  if not enabled(level) then return end
  local ok, err = pcall(log.handler, {
    level = level, message = message, name = name, pid = pid, time = os.time() })
  if not ok then
    io.stderr:write("orch.log: handler failed: ", tostring(err), "\n")
  end
end

local function emit(level, fmt, ...)
  if not enabled(level) then return end
  local message = select("#", ...) > 0 and fmt:format(...) or tostring(fmt)
  if core.in_child() then
    core.send_parent(core.msg.LOG, level, message)
  else
    log.deliver(level, message, log.name, core.getpid())
  end
end

for level in pairs(LEVELS) do
  log[level] = function(fmt, ...) return emit(level, fmt, ...) end
end

return log
