-- A service that never looks at stop requests (grace and shutdown_timeout
-- long): only a second INT/TERM to the parent ends it. Also shows that INT
-- and TERM sent to the service itself do nothing to it.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local core = require "orch.core"

local sup = orch.supervisor{
  shutdown_timeout = 60,
  services = {
    { name = "stubborn", grace = 60, ready = "notify", run = function()
        orch.ready()
        local beats = 0
        while true do        -- ignores orch.stopping()
          core.child_sleep(0.05)
          beats = beats + 1
          if beats % 4 == 0 then io.stdout:write("beat\n"); io.stdout:flush() end
        end
      end },
  },
}
assert(sup:run())
