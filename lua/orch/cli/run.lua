--- orch run: runs FILE, a Lua script that returns an orch.supervisor spec
-- (the services are run until they stop) or a function (called with ARGS).
-- ARGS reach FILE as `...` and as the global `arg` (arg[0] is FILE), as
-- with `lua FILE ARGS`. Exit: 0 done, 1 a service failed or FILE raised,
-- 2 bad spec or usage, 128+n when ended by signal n.
local orch = require "orch"
local core = require "orch.core"
local usage = require "orch.cli.usage"

local run = {
  summary = "Run the services (or the function) a Lua file returns.",
  operands_end_options = true,  -- `orch run FILE -x` passes -x to FILE
}

function run.configure(command)
  command:description([[
Run FILE, a Lua script that returns a table in the orch.supervisor format
(its services run until they stop) or a function (called with ARGS).
ARGS reach FILE as `...` and as `arg`. The first INT or TERM stops the
services in reverse `after` order, a second one kills what is left; orch then
ends by that signal (exit status 130 / 143).

  local orch = require "orch"
  return {
    services = {
      { name = "results", run = function() ... end },
      { name = "worker", run = function() ... end, after = { "results" } },
    },
  }]])
  command:option("--log-level", "Lowest level logged (default: $ORCH_LOG, else info).")
    :choices({ "debug", "info", "warn", "error" })
  command:option("--log-format", "One line of text or one JSON object per record\n"
      .. "(default: $ORCH_LOG_FORMAT, else text).")
    :choices({ "text", "json" })
  command:option("--name", "The run's name for orch ctl and orch top (default: FILE's base name).")
  command:flag("--check", "Load FILE and check the spec it returns, then exit (0 or 2).")
  command:argument("file", "The Lua file to run.")
  command:argument("args", "Arguments for FILE."):args("*")
end

local function fail(message)
  io.stderr:write("orch: run: ", message, "\n")
end

-- An uncaught interruption (orch.Interrupted) ends the process by its
-- signal, with one line and no traceback.
local function die_if_interrupted(err)
  if orch.Interrupted.is(err) then
    io.stderr:write("orch: ", tostring(err), "\n")
    core.die_by(err.signal)
  end
end

-- Calls fn(...); an interruption ends the process by its signal, any
-- other error is written with its traceback.
local function call(what, fn, ...)
  local res = table.pack(xpcall(fn, function(e)
    if orch.Interrupted.is(e) then return e end
    -- the user's frames only: orch's own start at this xpcall
    return (debug.traceback(tostring(e), 2):gsub("\n\t%[C%]: in function 'xpcall'.*$", ""))
  end, ...))
  if res[1] then return true, table.unpack(res, 2, res.n) end
  die_if_interrupted(res[2])
  fail(("%s failed:\n%s"):format(what, tostring(res[2])))
  return false
end

local function set_logging(args)
  if args.log_level then orch.log.level = args.log_level end
  if args.log_format then
    orch.log.handler = args.log_format == "json" and orch.log.json or orch.log.default_handler
  end
end

-- Loads FILE and runs its main chunk: exit code, or nil and what it returned.
local function load(args)
  local fh = io.open(args.file, "r")
  if not fh then
    return usage.error("run", ("run: cannot open '%s': no such file or not readable")
      :format(args.file))
  end
  fh:close()
  local chunk, err = loadfile(args.file)
  if not chunk then return usage.error("run", "run: " .. err) end
  _G.arg = table.move(args.args, 1, #args.args, 1, { [0] = args.file })
  local ok, spec = call(args.file, chunk, table.unpack(args.args))
  if not ok then return 1 end
  return nil, spec
end

-- The name of a service whose last run failed (an error, an exit code
-- other than 0, a signal), once every service has stopped; else nil.
local function failed_service(sup)
  for _, s in ipairs(sup:status()) do
    if s.state == "failed" or (s.exit_code or 0) ~= 0 or s.signal then return s.name end
  end
end

local function run_services(args, spec)
  local good, sup = pcall(orch.supervisor, spec)
  if not good then
    return usage.error("run", ("run: %s: %s"):format(args.file,
      (tostring(sup):gsub("^[^:]*:%d+: ", ""))))
  end
  if args.check then
    io.write(("%s: %d services, spec ok\n"):format(args.file, #spec.services))
    return 0
  end
  local ok, done, why = pcall(sup.run, sup)
  if not ok then
    die_if_interrupted(done)
    error(done, 0)
  end
  if not done then
    fail(tostring(why))
    return 1
  end
  return failed_service(sup) and 1 or 0
end

-- The control socket (orch ctl, orch top); a run goes on without it when
-- it cannot be opened (say so, once).
local function serve_control(args)
  local name = args.name or args.file:match("([^/]+)$"):gsub("%.lua$", "")
  local ok, err = pcall(orch.control, { name = (name:gsub("[^%w_.%-]", "_")) })
  if not ok then fail(("no control socket: %s"):format(err)) end
end

function run.run(args)
  set_logging(args)
  if not args.check then serve_control(args) end
  local code, spec = load(args)
  if code then return code end
  if type(spec) == "function" then
    if args.check then
      io.write(args.file, ": a function, ok\n")
      return 0
    end
    return call(args.file .. "'s function", spec, table.unpack(args.args)) and 0 or 1
  elseif type(spec) == "table" then
    return run_services(args, spec)
  end
  return usage.error("run", ("run: %s must return a table of services (the "
    .. "orch.supervisor format) or a function, got %s"):format(args.file, type(spec)))
end

return run
