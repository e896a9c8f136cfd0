--- `orch busted [-j N] [--timeout S] [--maxfail N] [busted options] [PATHS...]`:
-- busted's spec files run in parallel on an orch pool, reported through
-- busted's own output handlers as one busted run (orch.busted.run).
-- -j/--jobs, --timeout and --maxfail are read here, wherever they stand on
-- the line; everything else is busted's, so the command takes the rest of
-- the line as it is.
local cli = { summary = "Run busted spec files in parallel on an orch pool." }

local OWN = {
  ["-j"] = "jobs", ["--jobs"] = "jobs", ["--timeout"] = "timeout", ["--maxfail"] = "maxfail",
}
local CHECK = {
  jobs = function(v) return math.tointeger(tonumber(v)) and tonumber(v) >= 1, "a positive integer" end,
  timeout = function(v) return tonumber(v) and tonumber(v) > 0, "a positive number of seconds" end,
  maxfail = function(v) return math.tointeger(tonumber(v)) and tonumber(v) >= 1, "a positive integer" end,
}

local HELP = [[
Usage: orch busted [-j N] [--timeout S] [--maxfail N] [busted options] [PATHS...]
  -j, --jobs N     spec files run at once (default: the number of CPUs)
  --timeout S      a spec file running longer than S seconds is an error
  --maxfail N      stop everything once N tests failed or errored
Each spec file runs in a fresh process; the output is busted's (-o ...).
busted's own options follow.

]]

-- busted's own usage, as its option parser words it for --help (which it
-- hands back as an error: "busted: error: Usage: ...; re-run with ...").
local function busted_usage()
  local parser = require("busted.modules.cli")({ standalone = false })
  parser:set_name("busted")
  local _, usage = parser:parse({ "--help" })
  return (tostring(usage):gsub("^busted: error: ", ""):gsub(";%s*re%-run with %-%-help for usage%.%s*$", ""))
end

--- orch busted --help: orch's options, then busted's own usage; exit 0.
function cli.help()
  io.stdout:write(HELP, busted_usage(), "\n")
  return 0
end

--- cli.split(argv) -> opts, busted_args | nil, err: orch's own options out
-- of a command line, checked (jobs defaults to the number of CPUs).
function cli.split(argv)
  local opts, rest, i = {}, {}, 1
  while i <= #argv do
    local a = argv[i]
    local name, value = a:match("^(%-%-?[%a]+)=(.*)$")
    if not name then name, value = a:match("^(%-j)(%d+)$") end
    name = name or a
    local key = OWN[name]
    if key then
      if not value then
        i = i + 1
        value = argv[i]
        if value == nil then return nil, ("option '%s' needs a value"):format(name) end
      end
      local ok, what = CHECK[key](value)
      if not ok then return nil, ("option '%s' must be %s (got '%s')"):format(name, what, value) end
      opts[key] = math.tointeger(tonumber(value)) or tonumber(value)
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  opts.jobs = opts.jobs or require("orch").cpu_count()
  return opts, rest
end

--- Sets up the argparse command: the whole line goes to run().
function cli.configure(cmd)
  cmd:description("Options of orch: -j N (workers, default: CPU count), --timeout S "
    .. "(per spec file), --maxfail N (stop after N failures and errors). "
    .. "Every other option and path is busted's (see busted --help).")
  cmd:handle_options(false)
  cmd:argument("busted_args", "orch's and busted's options, then paths"):args("*")
end

--- Runs it: args.busted_args is the command line after `busted`.
function cli.run(args)
  local opts, rest = cli.split(args.busted_args or {})
  if not opts then
    io.stderr:write("orch busted: ", rest, "\n")
    return 2
  end
  for _, a in ipairs(rest) do
    if a == "--help" or a == "-h" then return cli.help() end
  end
  return require("orch.busted.run").run(rest, opts)
end

--- main(argv): for running without the orch command (a spec, a Makefile).
function cli.main(argv)
  local list = {}
  for i = 1, #argv do list[i] = argv[i] end
  return cli.run({ busted_args = list })
end

return cli
