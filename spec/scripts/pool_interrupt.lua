-- A plain script with a pool: started by spec/16-interrupt_spec.lua, which
-- sends it INT or TERM once it printed "ready".
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath
local orch = require "orch"

local pool <close> = orch.pool{ workers = 2, grace = 1 }
local cleanup <close> = setmetatable({}, { __close = function(_, err)
  io.write("cleanup ran: ", tostring(err), "\n")
  io.flush()
end })
local futs = {}
for i = 1, 4 do
  futs[i] = pool:submit(function()
    while not orch.stopping() do orch.sleep(0.01) end
    return "stopped"
  end)
end
for _, w in pairs(pool.slots) do io.write("worker ", w.pid, "\n") end
io.write("ready\n")
io.flush()
for _, f in ipairs(futs) do f:wait() end
io.write("not reached\n")
