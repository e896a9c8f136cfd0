--- TaskError: what a failed future holds.
-- A table with `kind` ("error" | "timeout" | "crashed" | "killed" |
-- "cancelled"), `message`, `traceback` (the worker's, for "error"), `value`
-- (the original error value, when it could cross), `pid`, `signal` /
-- `exit_code` (for "crashed"), `attempts` and `index` (the item of a map or
-- imap that failed).
local TaskError = {}
TaskError.__index = TaskError
TaskError.__name = "orch.TaskError"

local KINDS = { error = true, timeout = true, crashed = true, killed = true, cancelled = true }

function TaskError.new(fields)
  assert(KINDS[fields.kind], "unknown TaskError kind")
  return setmetatable(fields, TaskError)
end

--- Tells a TaskError apart from any other value.
function TaskError.is(x)
  return getmetatable(x) == TaskError
end

function TaskError.__tostring(e)
  local where = e.pid and (" (pid %d)"):format(e.pid) or ""
  if e.kind == "error" then
    return ("task failed%s: %s"):format(where, e.traceback or e.message or "?")
  elseif e.kind == "crashed" and e.message then
    return ("task crashed%s: %s"):format(where, e.message)
  elseif e.kind == "crashed" then
    local how = e.signal and ("signal %s"):format(e.signal_name or e.signal)
      or ("exit code %s"):format(e.exit_code)
    return ("task crashed%s: worker died by %s"):format(where, how)
  end
  return ("task %s%s%s"):format(e.kind, where, e.message and (": " .. e.message) or "")
end

return { TaskError = TaskError }
