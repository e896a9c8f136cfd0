-- A pool that forks all the time: each worker runs one task and is
-- replaced (max_tasks_per_worker = 1). Started by spec/70-chaos_spec.lua,
-- which SIGKILLs this parent at a random moment and then looks for any
-- process left from the run (by a marker in the environment).
--   lua5.4 spec/scripts/chaos_refork.lua [shell]
-- With "shell", two workers first run a task that starts `sleep 30`
-- through os.execute and print "sleeping" once it is on its way.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath
local orch = require "orch"

local pool <close> = orch.pool{ workers = 4, max_tasks_per_worker = 1 }
if arg[1] == "shell" then
  for _ = 1, 2 do
    pool:submit(function()
      io.stdout:write("sleeping\n")
      io.stdout:flush()
      os.execute("sleep 30")
    end)
  end
end
io.stdout:write("ready\n")
io.stdout:flush()
local round = 0
while true do
  round = round + 1
  local futs = {}
  for i = 1, 16 do futs[i] = pool:submit(function(x) return x + 1 end, i) end
  for i = 1, 16 do assert(futs[i]:result() == i + 1) end
  if round % 50 == 0 then
    io.stdout:write("round ", round, "\n")
    io.stdout:flush()
  end
end
