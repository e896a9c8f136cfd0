-- A pool that cannot get the fds it needs (spec/18-parent_faults_spec.lua):
-- run under `ulimit -n`; prints the error, the fds open before and after,
-- and what a small pool then returns. Usage: lua5.4 spawn_emfile.lua [cpath]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (arg[1] or "build/?.so") .. ";" .. package.cpath
local orch = require "orch"
local core = require "orch.core"

-- Listed by a shell that writes to a file: a pipe (io.popen) would show
-- both its ends in the listing until this process closes the one it gave.
local function fds()
  local tmp = os.tmpname()
  os.execute(("ls /proc/%d/fd > %s"):format(core.getpid(), tmp))
  local n = 0
  for _ in io.lines(tmp) do n = n + 1 end
  os.remove(tmp)
  return n
end

local warm = orch.pool { workers = 1 }  -- libev's own fds, opened once
warm:shutdown()
local before = fds()
local ok, err = pcall(orch.pool, { workers = 40 })
print("error", tostring(ok), tostring(err))
print("fds", before, fds())
local pool = orch.pool { workers = 2 }
print("small", tostring(pool:map(function(x) return x * 2 end, { 1, 2, 3 })[3]))
pool:shutdown()
print("fds", before, fds())
