--- The error values orch raises: TaskError (what a failed future holds)
-- and Interrupted (the script was interrupted by INT or TERM).
-- @module orch.errors
local core = require "orch.core"
local check = require "orch.check"

--- What a failed future holds: `kind` ("error" | "timeout" | "crashed" |
-- "killed" | "cancelled"), `message` (one line, for every kind),
-- `traceback` (the worker's, for "error"), `value` (the original error
-- value, when it could cross), `pid`, `signal` / `signal_name` /
-- `exit_code` (for "crashed"), `attempts` and `index` (a map item's).
-- @type TaskError
local TaskError = {}
TaskError.__index = TaskError
TaskError.__name = "orch.TaskError"

local KINDS = { error = true, timeout = true, crashed = true, killed = true, cancelled = true }

-- A crash's one line: how the worker ended.
local function crash_message(e)
  if e.signal then
    return ("crashed: killed by SIG%s"):format(e.signal_name or core.signame(e.signal))
  elseif e.exit_code then
    return ("crashed: worker exited with code %d"):format(e.exit_code)
  end
  return "crashed"
end

--- Makes a TaskError of fields (a table, which becomes the error). A
-- missing `message` is made from the kind (and, for "crashed", from
-- `signal` or `exit_code`).
-- @tparam table fields at least `kind`
-- @treturn TaskError
function TaskError.new(fields)
  if type(fields) ~= "table" or not KINDS[fields.kind] then
    check.fail("orch.TaskError.new", "fields.kind must be one of error, timeout, crashed, "
      .. "killed, cancelled (got %s)", check.show(type(fields) == "table" and fields.kind or fields))
  end
  if fields.message == nil then
    fields.message = fields.kind == "crashed" and crash_message(fields) or fields.kind
  end
  return setmetatable(fields, TaskError)
end

--- Tells a TaskError apart from any other value.
-- @param x any value
-- @treturn boolean
function TaskError.is(x)
  return getmetatable(x) == TaskError
end

function TaskError.__tostring(e)
  local where = e.pid and (" (pid %d)"):format(e.pid) or ""
  if e.kind == "error" then
    return ("task failed%s: %s"):format(where, e.traceback or e.message or "?")
  end
  local message = tostring(e.message or e.kind)
  -- "crashed: killed by SIGKILL" reads "task crashed (pid 7): killed by SIGKILL"
  local rest = message:sub(1, #e.kind + 2) == e.kind .. ": " and message:sub(#e.kind + 3) or message
  if rest == e.kind then return ("task %s%s"):format(e.kind, where) end
  return ("task %s%s: %s"):format(e.kind, where, rest)
end

--- The error a waiting script gets once the first INT or TERM has stopped
-- what it ran: `signal` ("INT" | "TERM"), `message` ("interrupted
-- (SIGINT)"). Left uncaught, it ends the process by that signal once the
-- script's `<close>` handlers ran, with one line on stderr.
-- @type Interrupted
local Interrupted = {}
Interrupted.__index = Interrupted
Interrupted.__name = "orch.Interrupted"

-- The signal an Interrupted that reached the top of the script carries:
-- the process ends by it when the interpreter closes the state.
local escaped = nil

--- Tells an Interrupted apart from any other value.
-- @param x any value
-- @treturn boolean
function Interrupted.is(x)
  return getmetatable(x) == Interrupted
end

--- Makes the error for an interruption by signal name ("INT", "TERM").
-- @treturn Interrupted
function Interrupted.new(signal)
  return setmetatable({ signal = signal, message = ("interrupted (SIG%s)"):format(signal) },
    Interrupted)
end

local error_fn, pcall_fn, xpcall_fn = error, pcall, xpcall

-- True when the caller of __tostring is the stand-alone interpreter's
-- message handler (lua.c's msghandler): called by `error` itself, with no
-- pcall or xpcall below it. Only an error nobody caught gets there.
local function reported_uncaught()
  local info = debug.getinfo(4, "f")  -- 1 this, 2 __tostring, 3 the handler
  if not (info and info.func == error_fn) then return false end
  local level = 5
  while true do
    info = debug.getinfo(level, "f")
    if not info then return true end
    if info.func == pcall_fn or info.func == xpcall_fn then return false end
    level = level + 1
  end
end

function Interrupted.__tostring(e)
  if not escaped and reported_uncaught() then escaped = e.signal end
  return e.message
end

-- At the end of the interpreter (lua_close: after the script's <close>
-- handlers ran and the one line was written), an Interrupted that was not
-- caught ends the process by its signal, as Unix expects of an
-- interrupted job (130 / 143). Made when this module loads, so it is
-- finalized after the pools and their workers.
Interrupted._at_exit = setmetatable({}, { __gc = function()
  if escaped and not core.in_child() then core.die_by(escaped) end
end })

return { TaskError = TaskError, Interrupted = Interrupted }
