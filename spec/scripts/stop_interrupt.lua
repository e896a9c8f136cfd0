-- Run by spec/44-terminate: a plain script with a pool gets SIGINT from the
-- spec. The first INT cancels the pool's work and raises "interrupted" in
-- the waiting script, whose <close> handlers run. Prints what happened.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath
local orch = require "orch"
local core = require "orch.core"

local futs = {}
local ok, err = pcall(function()
  local pool <close> = orch.pool { workers = 2, grace = 0.5 }
  futs[1] = pool:submit(function() while true do end end)
  futs[2] = pool:submit(function() os.execute("sleep 30") end)
  futs[3] = pool:submit(function() return "queued" end)
  io.write("ready ", core.getpid(), "\n")
  io.flush()
  for _, f in ipairs(futs) do f:wait() end
end)
io.write("ok=", tostring(ok), " err=", tostring(err), "\n")
for i, f in ipairs(futs) do
  io.write(i, "=", f:state(), ":", f:error() and f:error().kind or "-", "\n")
end
io.flush()
