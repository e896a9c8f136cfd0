-- sup:start(name) against real services: db (ready by notify), web after
-- db, api after web, cache on its own, bad (temporary, fails before it
-- is ready).
-- Each step prints "step<TAB>name<TAB>state<TAB>restarts<TAB>pid" for
-- every service; misuse prints "misuse<TAB>message". A second supervisor
-- (a, b after a, c) is started by name only.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath
local orch = require "orch"

local function idle()
  while not orch.stopping() do orch.sleep(0.05) end
end

local sup = orch.supervisor{
  shutdown_timeout = 5,
  services = {
    { name = "db", ready = "notify", run = function()
        orch.sleep(0.1)
        orch.ready()
        idle()
      end },
    { name = "web", after = { "db" }, run = idle },
    { name = "api", after = { "web" }, run = idle },
    { name = "cache", run = idle },
    { name = "bad", restart = "temporary", ready = "notify", run = function()
        error("bad fails on purpose")
      end },
  },
}

local function show(step, s)
  for _, st in ipairs(s:status()) do
    print(step, st.name, st.state, st.restarts, tostring(st.pid))
  end
end

local function step(name, ...)
  print(name .. "-result", ...)
  show(name, sup)
end

step("start", sup:start())
step("stop-web", sup:stop("web"))
step("start-web", sup:start("web"))
step("start-cache", sup:start("cache"))  -- runs: nothing happens
step("stop-db", sup:stop("db"))
step("stop-api", sup:stop("api"))         -- already down: db's stop no longer brings it back
step("start-db", sup:start("db"))
step("start-api", sup:start("api"))
step("start-bad", sup:start("bad"))
-- every service down by name: the supervisor is over, start(name) runs it again
sup:stop("db")
step("stop-cache", sup:stop("cache"))
step("start-again", sup:start("web"))

for _, call in ipairs({
  function() sup.start("db") end,
  function() sup:start("nosuch") end,
  function() sup:start(42) end,
}) do
  local ok, err = pcall(call)
  print("misuse", tostring(ok), err)
end
sup:stop()

-- started by name before any start: only b and what it needs
local sup2 = orch.supervisor{
  services = {
    { name = "a", run = idle },
    { name = "b", after = { "a" }, run = idle },
    { name = "c", run = idle },
  },
}
print("first-result", sup2:start("b"))
show("first", sup2)
sup2:stop()
