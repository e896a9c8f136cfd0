-- "crasher" (after "base") fails at once, every time: after max_restarts
-- restarts the supervisor gives up, stops "base" and run() returns nil, err.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"

local sup = orch.supervisor{
  strategy = "one_for_one", max_restarts = 2, restart_window = 30,
  services = {
    { name = "base", run = function() while not orch.stopping() do orch.sleep(1) end end },
    { name = "crasher", after = { "base" }, run = function() error("always fails") end },
  },
}
local ok, err = sup:run()
print("run", tostring(ok), err)
for _, s in ipairs(sup:status()) do
  print(s.name, s.state, s.restarts, tostring(s.exit_code))
end
os.exit(ok and 0 or 3)
