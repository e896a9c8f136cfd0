-- orch.core lives as long as its process, not as long as the Lua state
-- that loaded it: a program that embeds Lua, closes its state (which
-- unloads C modules) and goes on must not find orch's signal handlers
-- pointing into unmapped code.
local H = orch_spec

describe("a host that closes its Lua state and goes on", function()
  local dir, host
  setup(function()
    dir = require("scripts.sup_proc").tmpdir()
    host = dir .. "/close_host"
    assert(os.execute(("cc -I/usr/include/lua5.4 -o %s spec/fixtures/close_host.c -llua5.4"):format(host)))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local function run(chunk, signum)
    local paths = ('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path; '
      .. 'package.cpath = "%s;" .. package.cpath; '):format(os.getenv("ORCH_CPATH") or "build/?.so")
    return H.sh(("%s '%s' %d 2>&1; echo \"exit=$?\""):format(host, paths .. chunk, signum))
  end

  it("survives a signal orch was handling when the state closed", function()
    local out = run([[
      local orch = require "orch"
      orch.on_signal("USR1", function() end)
      local pool = orch.pool{ workers = 1 }
      assert(pool:submit(function() return 1 end):result() == 1)
      pool:terminate()
    ]], 10)  -- SIGUSR1
    assert.equal("state closed\nthe host goes on\nexit=0\n", out)
  end)

  it("after a pool left running: its default INT/TERM handler does not crash the host", function()
    local out = run([[
      local orch = require "orch"
      local pool = orch.pool{ workers = 1 }
      assert(pool:submit(function() return 1 end):result() == 1)
    ]], 15)  -- SIGTERM
    assert.matches("^state closed\n", out)
    assert.not_matches("exit=139", out)  -- SIGSEGV
  end)
end)
