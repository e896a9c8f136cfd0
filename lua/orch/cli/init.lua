--- orch.cli: the `orch` command. Builds the argparse parser (`orch --help`,
-- `orch --version`, one command per module of COMMANDS), parses the command
-- line and hands the parsed arguments to the command's module.
--
-- A command is a module lua/orch/cli/NAME.lua returning
--   { summary = "one line for orch --help",
--     configure = function(command) ... end,  -- adds options and arguments
--                                            -- to the argparse command object
--     run = function(args) return exit_code end,
--     operands_end_options = true | nil }     -- see end_options below
-- To add one: write the module, add its NAME to COMMANDS, add the file to
-- the rockspecs' module lists (spec/90-install checks that none is missing).
--
-- Exit codes shared by every command: 0 success, 1 the work failed,
-- 2 usage errors (orch.cli.usage: one line saying what, then a hint),
-- 128+n ended by signal n.
local argparse = require "argparse"
local usage = require "orch.cli.usage"

local COMMANDS = { "run", "busted", "ctl", "top" }

local cli = { COMMANDS = COMMANDS }

local function print_version()
  io.write("orch ", require("orch").version, "\n")
  os.exit(0)
end

-- Returns the parser and, by name, each command's module and argparse object.
local function build_parser()
  local parser = argparse("orch", "Process pools and supervised services for Lua 5.4.")
    :epilog("Run 'orch COMMAND --help' for a command's options.\n"
      .. "Exit status: 0 success, 1 failure, 2 usage error, 128+n ended by signal n.")
    :command_target("command")
  parser:flag("--version", "Print orch's version and exit."):action(print_version)
  local modules, commands = {}, {}
  for _, name in ipairs(COMMANDS) do
    local mod = require("orch.cli." .. name)
    local command = parser:command(name):summary(mod.summary)
    mod.configure(command)
    modules[name], commands[name] = mod, command
  end
  return parser, modules, commands
end

-- The option names of an argparse command that take a value (from its
-- option elements: argparse keeps aliases and argument counts there).
local function valued_options(command)
  local set = {}
  for _, option in ipairs(command._options) do
    if option._maxargs > 0 then
      for _, alias in ipairs(option._aliases) do set[alias] = true end
    end
  end
  return set
end

--- For a command like `orch run FILE ARGS...`: everything after the first
-- operand belongs to it (as with `lua FILE ARGS`), options included, so a
-- "--" is put after that operand. argv is changed in place.
local function end_options(command, argv, from)
  local takes_value = valued_options(command)
  local i = from
  while i <= #argv do
    local a = argv[i]
    if a == "--" then return end
    if a:sub(1, 1) ~= "-" or a == "-" then
      table.insert(argv, i + 1, "--")
      return
    end
    i = i + ((takes_value[a] and not a:find("=", 1, true)) and 2 or 1)
  end
end

--- main(argv) -> exit code. argv: the command line after the program name.
function cli.main(argv)
  local args = {}
  for i = 1, #(argv or {}) do args[i] = argv[i] end
  local parser, modules, commands = build_parser()
  local name, at
  for i, a in ipairs(args) do
    if a:sub(1, 1) ~= "-" then name, at = a, i break end
  end
  if name and modules[name] and modules[name].operands_end_options then
    end_options(commands[name], args, at + 1)
  end
  local ok, result = parser:pparse(args)
  if not ok then
    return usage.error(modules[name] and name or nil, result)
  end
  return modules[result.command].run(result)
end

return cli
