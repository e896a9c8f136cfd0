-- orch.core lives as long as its process, not as long as the Lua state
-- that loaded it: a program that embeds Lua, closes its state (which
-- unloads C modules) and goes on must not find orch's signal handlers
-- pointing into unmapped code, nor signals that do nothing: the
-- handlers of a closed state go, and the signals are as they were. What
-- orch kept of that state (armed timers, its tables) goes with it, so a
-- new state can open orch again.
local H = orch_spec

describe("a host that closes its Lua state and goes on", function()
  local dir, host
  setup(function()
    dir = require("scripts.sup_proc").tmpdir()
    host = dir .. "/close_host"
    assert(os.execute(("cc -I/usr/include/lua5.4 -o %s spec/fixtures/close_host.c -llua5.4"):format(host)))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local paths = ('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path; '
    .. 'package.cpath = "%s;" .. package.cpath; '):format(os.getenv("ORCH_CPATH") or "build/?.so")

  -- chunks: one or a list, each run in a state of its own, one after the
  -- other; then the signal (0: none). prefix: a command to run the host under.
  local function run(chunks, signum, prefix)
    if type(chunks) == "string" then chunks = { chunks } end
    local args = {}
    for i, chunk in ipairs(chunks) do args[i] = "'" .. paths .. chunk .. "'" end
    return H.sh(("%s%s %s %d 2>&1; echo \"exit=$?\""):format(prefix or "", host,
      table.concat(args, " "), signum))
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

  it("opens orch again in a new state: pools, timers and signals work there, nothing of the "
    .. "old one is touched #novalgrind", function()
    -- the first state leaves a pool, an armed timer, a signal handler and
    -- known functions behind; the second state has all of them anew
    local first = [[
      local orch = require "orch"
      orch.on_signal("USR1", function() end)
      local pool = orch.pool{ workers = 2 }
      assert(pool:submit(function(x) return x + 1 end, 1):result() == 2)
      require("orch.core").timer(30, function() end)
    ]]
    local second = [[
      local orch = require "orch"
      local pool <close> = orch.pool{ workers = 1 }
      print("task", pool:submit(function(x) return x * 2 end, 21):result())
      local wait = require("orch.loop").wait
      local fired, got = false, false
      require("orch.core").timer(0.01, function() fired = true end)
      print("timer", wait(function() return fired end, 5))
      orch.on_signal("USR2", function() got = true end)
      os.execute("kill -USR2 " .. require("orch.core").getpid())
      print("signal", wait(function() return got end, 5))
    ]]
    local expected = "^state closed\ntask\t42\ntimer\ttrue\nsignal\ttrue\nstate closed\n"
      .. "the host goes on\nexit=0\n$"
    assert.matches(expected, run({ first, second }, 0))
    -- (not where a sanitizer's runtime is preloaded: valgrind cannot run it)
    if H.sh("command -v valgrind"):find("valgrind") and (os.getenv("LD_PRELOAD") or "") == "" then
      -- a watcher or a registry reference of the closed state would be
      -- read here after its memory went
      local out = run({ first, second }, 0, "valgrind -q --error-exitcode=9 ")
      assert.matches("the host goes on\nexit=0\n$", out)
    end
  end)
end)
