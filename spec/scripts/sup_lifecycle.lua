-- Restart kinds, readiness and run() returning once nothing is left.
-- "slow" becomes ready (orch.ready) after 0.3 s; "late" lists it in after.
-- "done" (transient) returns: not restarted. "oops" (temporary) fails: not
-- restarted. "flaky" (transient) fails once: restarted, then returns.
-- "mute" (notify) never says it is ready: failed after ready_timeout.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"

local mark = assert(os.getenv("MARK"))

local sup = orch.supervisor{
  services = {
    { name = "slow", ready = "notify", restart = "transient",
      run = function() orch.sleep(0.3); orch.ready(); orch.sleep(0.5) end },
    { name = "late", after = { "slow" }, restart = "transient", run = function() end },
    { name = "done", restart = "transient", run = function(x, y) assert(x == 1 and y == "two") end,
      args = { 1, "two" } },
    { name = "oops", restart = "temporary", run = function() error("temporary failure") end },
    { name = "flaky", restart = "transient", run = function()
        local f = io.open(mark, "r")
        if not f then assert(io.open(mark, "w")):close(); os.exit(7) end
        f:close()
      end },
    { name = "mute", ready = "notify", ready_timeout = 0.3, restart = "temporary",
      run = function() while true do orch.sleep(1) end end },
  },
}
local ok, err = sup:run()
print("run", tostring(ok), tostring(err))
for _, s in ipairs(sup:status()) do
  print(s.name, s.state, s.restarts, tostring(s.exit_code), tostring(s.signal))
end
