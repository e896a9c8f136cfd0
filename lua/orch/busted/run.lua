--- orch.busted.run: one busted run whose spec files run in parallel.
-- busted's own runner (busted.runner) does everything it does alone:
-- options and .busted, the output handler and its options, the counts and
-- the exit status. Four of the modules it loads are replaced for the run:
--   busted.modules.cli              its result is kept (the parsed options);
--   busted.modules.test_file_loader collects the file names instead of
--                                   loading the files here;
--   busted.modules.helper_loader    the helper runs in each spec process,
--                                   not in this one;
--   busted.execute                  the suite: spec files run on an orch pool
--                                   (orch.busted.dispatch) and their events are
--                                   published here (orch.busted.replay).
-- busted.compatibility.exit raises instead of ending the process, so that
-- run() returns the exit status.
local orch = require "orch"
local suite = require "orch.busted.suite"

local run = {}

local REPLACED = { "busted.modules.cli", "busted.modules.test_file_loader",
                   "busted.modules.helper_loader", "busted.execute", "busted.runner" }

local EXIT = {}   -- what the replaced exit raises: { [EXIT] = code }

-- Forgets busted's modules, so that each run starts as busted alone does.
local function forget_busted()
  for name in pairs(package.loaded) do
    if name == "busted" or name:match("^busted%.") then package.loaded[name] = nil end
  end
end

local function install(state)
  local cli = require "busted.modules.cli"
  local file_loader = require "busted.modules.test_file_loader"
  package.loaded["busted.modules.cli"] = function(options)
    local parser = cli(options)
    local parse = parser.parse
    parser.parse = function(self, args)
      local parsed, err = parse(self, args)
      state.cli_args = parsed
      return parsed, err
    end
    return parser
  end
  package.loaded["busted.modules.test_file_loader"] = function(busted, loaders)
    local _, _, get_all = file_loader(busted, loaders)
    return function(roots, patterns, options)
      state.files = suite.collect(busted, get_all, roots, patterns, options)
      return state.files
    end
  end
  package.loaded["busted.modules.helper_loader"] = function()
    return function() return true end
  end
  package.loaded["busted.execute"] = function(busted)
    return function(runs, options) return suite.execute(busted, state, runs, options) end
  end
  require("busted.compatibility").exit = function(code)
    error({ [EXIT] = code ~= 0 and 1 or 0 }, 0)
  end
end

-- Ctrl-C and TERM stop the run in order; the exit status then says which.
local INTERRUPTS = { INT = 130, TERM = 143 }

-- The spec process script, as an absolute path (busted may change the
-- current directory: -C).
local function spec_process_script()
  local script = assert(package.searchpath("orch.busted.spec_process", package.path),
                        "orch busted: orch/busted/spec_process.lua not found in package.path")
  if script:sub(1, 1) ~= "/" then
    script = require("pl.path").currentdir() .. "/" .. script:gsub("^%./", "")
  end
  return script
end

--- run.run(busted_args, opts) -> exit status. busted_args: busted's own
-- command line (options and paths); opts: jobs, timeout, maxfail.
function run.run(busted_args, opts)
  local state = { opts = opts, failed = 0, busted_args = busted_args, script = spec_process_script() }
  forget_busted()
  install(state)
  local saved_arg = _G.arg
  local argv = { [0] = "busted" }
  for i, a in ipairs(busted_args) do argv[i] = a end
  argv[#argv + 1] = "--ignore-lua"   -- this interpreter runs the parent; .busted's `lua` the files
  _G.arg = argv
  -- busted names itself after the file that calls its runner.
  local chunk = load("local status = require('busted.runner')({ standalone = false }) return status",
                     "@busted")
  for name, status in pairs(INTERRUPTS) do
    orch.on_signal(name, function() state.interrupted = state.interrupted or status end)
  end
  local ok, err = pcall(chunk)
  for name in pairs(INTERRUPTS) do orch.on_signal(name, nil) end
  _G.arg = saved_arg
  forget_busted()
  for _, name in ipairs(REPLACED) do package.loaded[name] = nil end
  if state.interrupted then return state.interrupted end
  if ok then return 0 end
  if type(err) == "table" and err[EXIT] then return err[EXIT] end
  io.stderr:write("orch busted: ", tostring(err), "\n")
  return 1
end

return run
