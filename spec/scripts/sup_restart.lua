-- Three services a <- b <- c (c after b, b after a); b crashes once, 0.2 s
-- after its first start. Prints each service's restart count once b is
-- running again, then stops everything and prints the stop order.
-- env: STRATEGY, MARK (a file that exists once b has crashed)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local loop = require "orch.loop"

local mark = assert(os.getenv("MARK"))

local function idle()
  while not orch.stopping() do orch.sleep(1) end
end

local function crash_once()
  local f = io.open(mark, "r")
  if not f then
    orch.sleep(0.2)
    assert(io.open(mark, "w")):close()
    error("b fails on purpose")
  end
  f:close()
  idle()
end

local sup = orch.supervisor{
  strategy = os.getenv("STRATEGY"),
  services = {
    { name = "a", run = idle },
    { name = "b", run = crash_once, after = { "a" } },
    { name = "c", run = idle, after = { "b" } },
  },
}
assert(sup:start())
local function restarts()
  local r = {}
  for _, s in ipairs(sup:status()) do r[s.name] = s end
  return r
end
assert(loop.wait(function()
  local r = restarts()
  return r.b.restarts == 1 and r.a.state == "running" and r.b.state == "running" and r.c.state == "running"
end, 10), "b was not restarted")
local r = restarts()
print(("restarts a=%d b=%d c=%d"):format(r.a.restarts, r.b.restarts, r.c.restarts))
assert(sup:stop())
for _, s in ipairs(sup:status()) do assert(s.state == "stopped", s.name .. " " .. s.state) end
print("stopped")
