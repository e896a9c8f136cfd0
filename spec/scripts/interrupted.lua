-- Run by spec/17-interrupted_spec.lua, which sends INT or TERM once it
-- printed "ready". arg[1]: "pool" (a plain script waiting on a pool's
-- task) or "supervisor" (sup:run()); arg[2] = "catch": the script catches
-- the error with orch.Interrupted.is and ends on its own (exit 0).
-- stdout tells what ran: the <close> handlers, the caught error.
-- luacheck: no unused (the <close> variables act by going out of scope)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath
local orch = require "orch"

local what, catch = arg[1], arg[2] == "catch"

local function say(...)
  io.write(...)
  io.write("\n")
end

local function main()
  local outer <close> = setmetatable({}, { __close = function(_, err)
    say("outer closed: ", tostring(err))
  end })
  if what == "pool" then
    local pool <close> = orch.pool{ workers = 2, grace = 1 }
    local inner <close> = setmetatable({}, { __close = function(_, err)
      -- closed before the pool: the ordered stop is done already
      say("inner closed: ", tostring(err), " running=", pool:stats().running)
    end })
    local fut = pool:submit(function()
      while not orch.stopping() do orch.sleep(0.01) end
      orch.sleep(0.2)  -- takes its time to stop: the error waits for it
      return "stopped"
    end)
    pool:submit(function() return 1 end):wait()
    for _, w in pairs(pool.slots) do say("worker ", w.pid) end
    say("ready")
    io.flush()
    fut:wait()
  else
    orch.log.handler = function() end
    local sup = orch.supervisor{ services = {
      { name = "a", run = function() while not orch.stopping() do orch.sleep(0.01) end end },
      { name = "b", after = { "a" }, run = function()
        while not orch.stopping() do orch.sleep(0.01) end
        orch.sleep(0.2)
      end },
    } }
    local inner <close> = setmetatable({}, { __close = function(_, err)
      local states = {}
      for i, s in ipairs(sup:status()) do states[i] = s.name .. "=" .. s.state end
      say("inner closed: ", tostring(err), " ", table.concat(states, " "))
    end })
    sup:start()
    for _, s in ipairs(sup:status()) do say("service ", s.pid) end
    say("ready")
    io.flush()
    sup:run()
  end
  say("not reached")
end

if catch then
  local ok, err = pcall(main)
  say("caught: ", tostring(ok), " ", tostring(orch.Interrupted.is(err)), " ", tostring(err and err.signal))
  os.exit(0)
end
main()
