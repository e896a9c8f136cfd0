-- orch.core lives as long as its process, not as long as the Lua state
-- that loaded it: a program that embeds Lua, closes its state (which
-- unloads C modules) and goes on must not find orch's signal handlers
-- pointing into unmapped code, nor signals that do nothing: the
-- handlers of a closed state go, and the signals are as they were.
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

  it("meets a signal orch was handling when the state closed with its default action", function()
    local out = run([[
      local orch = require "orch"
      orch.on_signal("USR1", function() end)
      local pool = orch.pool{ workers = 1 }
      assert(pool:submit(function() return 1 end):result() == 1)
      pool:terminate()
    ]], 10)  -- SIGUSR1
    assert.matches("^state closed\n.*exit=138\n$", out)  -- 128 + SIGUSR1: ended by it, not swallowed
  end)

  it("after a pool left running: TERM ends the host as it would without orch", function()
    local out = run([[
      local orch = require "orch"
      local pool = orch.pool{ workers = 1 }
      assert(pool:submit(function() return 1 end):result() == 1)
    ]], 15)  -- SIGTERM
    assert.matches("^state closed\n.*exit=143\n$", out)  -- 128 + SIGTERM (not 139: SIGSEGV)
  end)
end)
