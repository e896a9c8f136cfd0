-- Stopping one task: fut:cancel() (queued: never runs; running: ask,
-- interrupt, SIGKILL after grace) and fut:kill() (SIGKILL now, a fresh
-- worker takes the slot). Real processes throughout; timings are loose.
local orch = require "orch"
-- what its tests provoke on purpose (kills after a grace period, failing
-- inits) is logged: collected, not written into busted's output
setup(orch_spec.quiet_logs)
teardown(orch_spec.restore_logs)
local core = require "orch.core"
local procs = require "helper.procs"
local with_pool = procs.with_pool

local stopping, osleep = orch.stopping, orch.sleep

local busy = procs.busy  -- runs until stopped, with no stop checks

local write = procs.append

-- Blocks in C (os.execute) for 30 s; its shell writes the pid of the
-- sleep it runs to pidfile first.
local function stuck(pidfile)
  os.execute(("sh -c 'echo $$ > %s; exec sleep 30'"):format(pidfile))
  return "woke up"
end

local function pid_in(path)
  local pid
  procs.wait_until(function()
    pid = tonumber(procs.slurp(path) or "")
    return pid
  end, 5)
  return pid
end

local function elapsed_since(t0) return core.now() - t0 end

describe("fut:cancel()", function()
  it("keeps a queued task from ever running", function()
    with_pool({ workers = 1 }, function(pool)
      local mark = procs.tmpname()
      local blocker = pool:submit(function() osleep(0.3) return "first" end)
      local fut = pool:submit(write, mark, "ran")
      assert.is_true(fut:cancel())
      assert.equal("cancelled", fut:state())
      assert.equal("first", blocker:result())
      local err = fut:error()
      assert.is_true(orch.TaskError.is(err))
      assert.equal("cancelled", err.kind)
      local ok, raised = pcall(fut.result, fut)
      assert.is_false(ok)
      assert.equal("cancelled", raised.kind)
      orch.sleep(0.1)
      assert.equal("", procs.slurp(mark))
      assert.is_false(fut:cancel())
      assert.equal(1, pool:stats().cancelled)
    end)
  end)

  it("settles a task waiting behind a long one on its worker at once, and it never runs", function()
    with_pool({ workers = 1 }, function(pool)
      local mark = procs.tmpname()
      local long = pool:submit(function() osleep(1) return "long" end)
      local futs = {}
      for i = 1, 4 do futs[i] = pool:submit(write, mark, "ran" .. i) end
      orch.sleep(0.1)
      local t0 = core.now()
      for i = 1, 4 do futs[i]:cancel() end
      for i = 1, 4 do
        assert.is_true(futs[i]:wait(0.5))
        assert.equal("cancelled", futs[i]:state())
      end
      assert.is_true(elapsed_since(t0) < 0.5)
      assert.equal("running", long:state())
      assert.equal("long", long:result())
      assert.equal("", procs.slurp(mark))
      local s = pool:stats()
      assert.equal(4, s.cancelled)
      assert.equal(0, s.restarts)
    end)
  end)

  it("stops a whole pipeline at once: the running task and every task sent behind it #novalgrind", function()
    with_pool({ workers = 1, grace = 5 }, function(pool)
      -- The pipeline's depth follows the tasks' times: on a loaded machine
      -- the warm-up can read slow and leave it shallow; then again.
      for attempt = 1, 5 do
        local mark = procs.tmpname()
        local warm = {}
        for i = 1, 300 do warm[i] = pool:submit(function(x) return x end, i) end
        for i = 1, 300 do warm[i]:result() end  -- tiny tasks: the deepest pipelines
        local group = pool:group()
        local long = group:submit(busy)
        assert.is_true(procs.wait_until(function() return long:state() == "running" end, 5))
        local futs = {}
        for i = 1, 100 do futs[i] = group:submit(write, mark, "ran" .. i .. ";") end
        local sent = select(4, pool.dispatcher:stats())
        assert.is_true(sent >= 16 or attempt < 5, "tasks sent ahead of the running one: " .. sent)  -- 64 when unloaded
        group:cancel()
        assert.is_true(long:wait(5))
        for i = 1, 100 do
          assert.is_true(futs[i]:wait(5))
          assert.equal("cancelled", futs[i]:state())
        end
        assert.equal("", procs.slurp(mark) or "")
        if sent >= 16 then break end
      end
    end)
  end)

  it("interrupts a busy Lua loop: <close> and pcall cleanup run, the worker survives", function()
    with_pool({ workers = 1, grace = 5 }, function(pool)
      local log = procs.tmpname()
      local fut = pool:submit(function(path)
        local _ <close> = setmetatable({}, { __close = function(_, e)
          write(path, "close:" .. tostring(e) .. ";")
        end })
        local ok, e = pcall(busy)
        write(path, "pcall:" .. tostring(ok) .. ":" .. tostring(e) .. ";")
        error(e, 0)
      end, log)
      local pid
      procs.wait_until(function() return fut:state() == "running" end)
      orch.sleep(0.2)
      local t0 = core.now()
      fut:cancel()
      assert.is_true(fut:wait(3))
      assert.is_true(elapsed_since(t0) < 2)  -- well before grace: interrupted
      assert.equal("cancelled", fut:state())
      assert.equal("cancelled", fut:error().kind)
      pid = fut:error().pid
      assert.equal("pcall:false:cancelled;close:cancelled;", procs.slurp(log))
      -- the same worker takes the next task
      local nxt = pool:submit(function() return require("orch.core").getpid() end)
      assert.equal(pid, nxt:result())
      assert.equal(0, pool:stats().restarts)
    end)
  end)

  it("asks a cooperative task first: orch.stopping() turns true and it returns early", function()
    with_pool({ workers = 2 }, function(pool)
      local log = procs.tmpname()
      local fut = pool:submit(function(path)
        local n = 0
        while not stopping() do n = n + 1; osleep(0.02) end
        write(path, "stopped after " .. n)
        return n
      end, log)
      procs.wait_until(function() return fut:state() == "running" end)
      orch.sleep(0.2)
      local t0 = core.now()
      fut:cancel()
      assert.is_true(fut:wait(3))
      assert.is_true(elapsed_since(t0) < 1)
      assert.equal("cancelled", fut:state())
      assert.matches("^stopped after %d+$", procs.slurp(log))
      assert.equal(0, pool:stats().restarts)
    end)
  end)

  it("kills a task stuck in C after grace, with the process it started, and replaces its worker", function()
    with_pool({ workers = 2, grace = 0.5 }, function(pool)
      local pidfile = procs.tmpname()
      local fut = pool:submit(stuck, pidfile)
      local sleep_pid = pid_in(pidfile)
      assert.truthy(sleep_pid)
      assert.is_false(procs.dead(sleep_pid))
      local t0 = core.now()
      fut:cancel()
      assert.is_true(fut:wait(5))
      local took = elapsed_since(t0)
      assert.is_true(took >= 0.4 and took < 3, "took " .. took)
      assert.equal("cancelled", fut:state())
      assert.truthy(procs.wait_until(function() return procs.dead(sleep_pid) end, 3))
      assert.is_true(procs.wait_until(function() return pool:stats().workers == 2 end, 3))
      assert.equal(1, pool:stats().restarts)
      assert.same({ 1, 4, 9 }, pool:map(function(x) return x * x end, { 1, 2, 3 }))
    end)
  end)

  it("a task that swallows the interrupt in pcall is still cancelled, then killed after grace", function()
    with_pool({ workers = 1, grace = 0.5 }, function(pool)
      local fut = pool:submit(function()
        while true do pcall(busy) end
      end)
      procs.wait_until(function() return fut:state() == "running" end)
      fut:cancel()
      assert.is_true(fut:wait(5))
      assert.equal("cancelled", fut:state())
      assert.is_true(procs.wait_until(function() return pool:stats().workers == 1 end, 3))
      assert.equal(2, pool:submit(function() return 2 end):result())
    end)
  end)

  it("leaves the other tasks of the pool alone", function()
    with_pool({ workers = 3 }, function(pool)
      local a = pool:submit(busy)
      local b = pool:submit(function() osleep(0.5) return "b" end)
      local c = pool:submit(function() osleep(0.5) return "c" end)
      procs.wait_until(function() return a:state() == "running" end)
      a:cancel()
      assert.equal("b", b:result())
      assert.equal("c", c:result())
      assert.equal("cancelled", a:state())
    end)
  end)
end)

describe("fut:kill()", function()
  it("SIGKILLs the worker now: kind 'killed', a fresh worker replaces it, the pool goes on", function()
    with_pool({ workers = 2, grace = 30 }, function(pool)
      local fut = pool:submit(busy)
      local other = pool:submit(function() osleep(0.6) return "other" end)
      procs.wait_until(function() return fut:state() == "running" end)
      local victim = fut.worker.pid
      local t0 = core.now()
      assert.is_true(fut:kill())
      assert.is_true(fut:wait(3))
      assert.is_true(elapsed_since(t0) < 1)
      assert.equal("failed", fut:state())
      local err = fut:error()
      assert.equal("killed", err.kind)
      assert.equal(victim, err.pid)
      assert.equal(1, err.attempts)
      assert.is_true(procs.dead(victim))
      assert.equal("other", other:result())
      assert.is_true(procs.wait_until(function() return pool:stats().workers == 2 end, 3))
      local s = pool:stats()
      assert.equal(1, s.restarts)
      assert.equal(1, s.failed)
      local pids = {}
      for _, p in ipairs(pool:map(function() osleep(0.05) return require("orch.core").getpid() end,
        { 1, 2, 3, 4, 5, 6 })) do pids[p] = true end
      assert.is_nil(pids[victim])
      assert.is_false(fut:kill())
    end)
  end)

  it("takes the processes the task started with it", function()
    with_pool({ workers = 1 }, function(pool)
      local pidfile = procs.tmpname()
      local fut = pool:submit(stuck, pidfile)
      local sleep_pid = pid_in(pidfile)
      fut:kill()
      assert.is_true(fut:wait(3))
      assert.equal("killed", fut:error().kind)
      assert.truthy(procs.wait_until(function() return procs.dead(sleep_pid) end, 3))
    end)
  end)

  it("fails a queued task 'killed' without running it", function()
    with_pool({ workers = 1 }, function(pool)
      local mark = procs.tmpname()
      local first = pool:submit(function() osleep(0.3) return 1 end)
      local fut = pool:submit(write, mark, "ran")
      fut:kill()
      assert.equal("failed", fut:state())
      assert.equal("killed", fut:error().kind)
      assert.equal(1, first:result())
      assert.equal("", procs.slurp(mark))
      assert.equal(0, pool:stats().restarts)
    end)
  end)

  it("kills a batch one by one and the pool keeps its size", function()
    with_pool({ workers = 2 }, function(pool)
      for _ = 1, 3 do
        local futs = {}
        for i = 1, 2 do futs[i] = pool:submit(busy) end
        procs.wait_until(function() return futs[1]:state() == "running" and futs[2]:state() == "running" end)
        for _, f in ipairs(futs) do f:kill() end
        for _, f in ipairs(futs) do
          assert.is_true(f:wait(3))
          assert.equal("killed", f:error().kind)
        end
      end
      assert.is_true(procs.wait_until(function() return pool:stats().workers == 2 end, 3))
      assert.equal(6, pool:stats().restarts)
      assert.same({ 2, 4 }, pool:map(function(x) return 2 * x end, { 1, 2 }))
    end)
  end)

  it("does not retry a killed task unless retry_on lists 'killed'", function()
    with_pool({ workers = 1, retries = 1 }, function(pool)
      local f = pool:submit(busy)
      procs.wait_until(function() return f:state() == "running" end)
      f:kill()
      f:wait(3)
      assert.equal("killed", f:error().kind)
      assert.equal(1, f:error().attempts)
      local g = pool:group { retries = 1, retry_on = { "killed" } }
      local log = procs.tmpname()
      local h = g:submit(function(path)
        write(path, "x")
        if #io.open(path):read("a") == 1 then busy() end
        return "second attempt"
      end, log)
      procs.wait_until(function() return h:state() == "running" end)
      orch.sleep(0.1)
      h:kill()
      assert.equal("second attempt", h:result())
      assert.equal(2, h.attempts)
    end)
  end)
end)
