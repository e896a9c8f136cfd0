-- Resource limits of a pool's workers, hit for real: limits = { cpu =,
-- memory =, files =, processes = } (setrlimit in each worker; cpu per
-- task) and max_memory_per_worker (a worker above it after a task is
-- replaced before its next one).
local orch = require "orch"
local P = require "scripts.sup_proc"

local MB = 1 << 20

describe("limits", function()
  it("cpu: a runaway task crashes by SIGXCPU, named; the others each get their own budget", function()
    local pool <close> = orch.pool{ workers = 1, limits = { cpu = 1 } }
    -- two tasks of 0.6 s of CPU each on one worker: 1.2 s in all, fine
    local function spin(seconds)
      local t = os.clock() + seconds
      while os.clock() < t do end
      return true
    end
    assert.is_true(pool:submit(spin, 0.6):result())
    assert.is_true(pool:submit(spin, 0.6):result())
    local fut = pool:submit(function() while true do end end)
    assert.is_true(fut:wait(20))
    local err = fut:error()
    assert.are.equal("crashed", err.kind)
    assert.are.equal("XCPU", err.signal_name)
    assert.matches("cpu limit", err.message)
    assert.are.equal(7, pool:submit(function() return 7 end):result())
  end)

  -- an address-space limit and the sanitizers' shadow memory do not mix
  it("memory: an allocation past it fails the task with a memory error; the worker goes on "
    .. "#noasan #novalgrind", function()
    local pool <close> = orch.pool{ workers = 1, limits = { memory = 64 * MB } }
    local fut = pool:submit(function(n) return #string.rep("x", n) end, 128 * MB)
    assert.is_true(fut:wait(10))
    assert.are.equal("error", fut:error().kind)
    assert.are.equal("not enough memory (limits.memory)", fut:error().message)
    assert.are.equal(16 * MB, pool:submit(function(n) return #string.rep("x", n) end, 16 * MB):result())
  end)

  -- valgrind keeps fds of its own and refuses to change RLIMIT_NOFILE
  it("files: io.open fails with EMFILE past it #novalgrind", function()
    local pool <close> = orch.pool{ workers = 1, limits = { files = 24 } }
    local opened, why = pool:submit(function()
      local files = {}
      while true do
        local f, err = io.open("/dev/null")
        if not f then
          for _, g in ipairs(files) do g:close() end
          return #files, err
        end
        files[#files + 1] = f
      end
    end):result()
    assert.is_true(opened > 0 and opened < 24, tostring(opened))
    assert.matches("Too many open files", why)
  end)

  it("processes: a fork past it fails (run as an unprivileged user: root is exempt)", function()
    local dir = P.tmpdir()
    local script = orch_spec.lua_script([[
      local orch = require "orch"
      local pool <close> = orch.pool{ workers = 1, limits = { processes = 1 } }
      print("spawn=" .. tostring(pool:submit(function()
        local p, err = io.popen("echo forked")
        if not p then return err end
        local out = p:read("a")
        p:close()
        return out == "" and "no output" or out
      end):result()))
    ]], dir .. "/procs.lua")
    os.execute("chmod -R a+rX " .. P.quote(dir))
    local id = io.popen("id -u")
    local user = tonumber(id:read("l"))
    id:close()
    local prefix = user == 0 and "setpriv --reuid=65534 --regid=65534 --clear-groups " or ""
    local p = io.popen(prefix .. "lua5.4 " .. P.quote(script) .. " 2>&1")
    local out = p:read("a")
    p:close()
    os.execute("rm -rf " .. P.quote(dir))
    -- fork's EAGAIN; glibc's popen (posix_spawn) may report it as ENOMEM
    local why = out:match("spawn=echo forked: ([^\n]*)")
    assert.is_truthy(why == "Resource temporarily unavailable" or why == "Cannot allocate memory", out)
  end)

  -- a sanitizer's shadow memory alone puts a worker above the figure
  it("max_memory_per_worker: a worker above it after a task is replaced before its next "
    .. "#noasan #novalgrind", function()
    local pool <close> = orch.pool{ workers = 1, max_memory_per_worker = 96 * MB }
    local pid1 = pool:submit(function() return require("orch.core").getpid() end):result()
    assert.are.equal(pid1, pool:submit(function() return require("orch.core").getpid() end):result())
    local big = pool:submit(function(n)
      _G.kept = string.rep("y", n)  -- stays resident after the task
      return require("orch.core").getpid()
    end, 160 * MB):result()
    assert.are.equal(pid1, big)
    local pid2 = pool:submit(function() return require("orch.core").getpid() end):result()
    assert.are_not.equal(pid1, pid2)
    assert.are.equal(1, pool:stats().restarts)
  end)
end)

describe("limits options", function()
  it("are checked", function()
    local function fails(opts, message)
      local ok, err = pcall(orch.pool, opts)
      assert.is_false(ok)
      assert.matches(message, err, 1, true)
    end
    fails({ limits = { cpus = 1 } },
      "orch.pool: limits: unknown option 'cpus' (valid: cpu, files, memory, processes)")
    fails({ limits = { cpu = 0 } }, "orch.pool: limits: option 'cpu' must be a positive integer (got 0)")
    fails({ limits = { memory = 1.5 } }, "orch.pool: limits: option 'memory' must be a positive integer (got 1.5)")
    fails({ limits = 3 }, "orch.pool: option 'limits' must be a table (got 3)")
    fails({ max_memory_per_worker = -1 },
      "orch.pool: option 'max_memory_per_worker' must be a positive integer (got -1)")
  end)
end)
