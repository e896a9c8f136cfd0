--- The script `orch busted` runs each spec file with, in a fresh interpreter:
--   LUA spec_process.lua FILE [busted options...]
-- It is busted's own runner (busted.runner: options, .busted, helper,
-- filters, tags, seed) with two changes: only FILE is loaded, whatever
-- paths the options name, and the events go to stdout through the
-- orch.busted.recorder output handler (the caller adds `-o` for it).
-- Plain Lua 5.1 to 5.4: it runs under the interpreter .busted names.
-- The two modules it needs come from next to this script; package.path
-- stays as busted alone would have it.
local here = (arg[0]:match("^(.*)/[^/]*$")) or "."
for _, name in ipairs({ "frame", "recorder" }) do
  package.preload["orch.busted." .. name] = assert(loadfile(here .. "/" .. name .. ".lua"))
end

local file = table.remove(arg, 1)

-- busted.modules.test_file_loader, loading FILE alone. Its own loader still
-- reads the file (so .lua and .moon are told apart the same way).
local busted_loader = require "busted.modules.test_file_loader"
package.loaded["busted.modules.test_file_loader"] = function(busted, loaders)
  local _, load_test_file = busted_loader(busted, loaders)
  return function()
    local test_file, get_trace, rewrite_message = load_test_file(busted, file)
    if test_file then
      busted.executors.file(file, setmetatable(
        { getTrace = get_trace, rewriteMessage = rewrite_message }, { __call = test_file }))
    end
    return { file }
  end
end

-- The worker that started this process dies with orch busted (even when
-- that is SIGKILLed), but this process is not orch's child and would run
-- on: a count hook looks at the parent pid now and then (every few
-- milliseconds of Lua code) and ends the process once the worker is gone.
-- Processes a spec forks have a pid of their own and are left alone.
local function pids()
  local f = io.open("/proc/self/stat")
  if not f then return nil end
  local stat = f:read("*a")
  f:close()
  return stat:match("^(%d+)"), stat:match("^%d+ %(.*%) %S+ (%d+)")
end
local self_pid, worker_pid = pids()
if self_pid then
  debug.sethook(function()
    local pid, ppid = pids()
    if pid == self_pid and ppid ~= worker_pid then os.exit(1, true) end
  end, "", 1000000)
end

require "busted.runner"({ standalone = false })
