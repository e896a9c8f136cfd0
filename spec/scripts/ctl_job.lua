-- A job served on a control socket (spec/85-control): a supervisor with
-- db and web (web after db) and a pool of 2 workers running 3 tasks that
-- spin until stopped. Prints the socket path on stdout once serving.
-- CTL_PATH: serve at that path instead of the per-user directory.
-- CTL_SPIN: how many spinning tasks (default 3; with 0 a TERM ends the job).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath
local orch = require "orch"
local status = require "orch.status"
local control = require "orch.control"

local path = control.serve{ name = os.getenv("CTL_NAME") or "ctljob", path = os.getenv("CTL_PATH") }

local function service()
  while not orch.stopping() do orch.sleep(0.02) end
end

local sup = orch.supervisor{
  shutdown_timeout = 5,
  services = {
    { name = "db", run = service },
    { name = "web", after = { "db" }, run = service },
    { name = "cache", run = service },
  },
}
status.register(sup, "supervisor")
-- on_error "continue": a killed task leaves the other tasks running
local pool <close> = orch.pool{ workers = 2, grace = 1, on_error = function() return "continue" end }
status.register(pool, "pool")
local function spin()
  while true do end
end
for _ = 1, tonumber(os.getenv("CTL_SPIN") or 3) do pool:submit(spin) end

io.stdout:write(path, "\n")
io.stdout:flush()
sup:run()
