-- Per-task time limits (timeout on the pool or on a group): kind
-- "timeout". A task in Lua code is interrupted by the hook and its worker
-- survives; a task stuck in C is killed after grace and its worker replaced.
local orch = require "orch"
-- what its tests provoke on purpose (kills after a grace period, failing
-- inits) is logged: collected, not written into busted's output
setup(orch_spec.quiet_logs)
teardown(orch_spec.restore_logs)
local core = require "orch.core"
local procs = require "helper.procs"
local with_pool = procs.with_pool

local osleep = orch.sleep

local busy = procs.busy  -- runs until stopped, with no stop checks

local write = procs.append

local function getpid() return require("orch.core").getpid() end

describe("timeout", function()
  it("on the pool interrupts a busy loop: kind 'timeout', cleanup runs, the worker survives", function()
    with_pool({ workers = 1, timeout = 0.3, grace = 5 }, function(pool)
      local log = procs.tmpname()
      local t0 = core.now()
      local fut = pool:submit(function(path)
        local _ <close> = setmetatable({}, { __close = function(_, e) write(path, "closed:" .. tostring(e)) end })
        busy()
      end, log)
      assert.is_true(fut:wait(3))
      local took = core.now() - t0
      assert.is_true(took >= 0.25 and took < 2, "took " .. took)
      assert.equal("failed", fut:state())
      local err = fut:error()
      assert.equal("timeout", err.kind)
      assert.equal(1, err.attempts)
      assert.equal("closed:timeout", procs.slurp(log))
      local ok, raised = pcall(fut.result, fut)
      assert.is_false(ok)
      assert.equal("timeout", raised.kind)
      assert.equal(err.pid, pool:submit(getpid):result())
      local s = pool:stats()
      assert.equal(0, s.restarts)
      assert.equal(1, s.failed)
    end)
  end)

  it("on a group overrides the pool's, and tasks within their limit finish", function()
    with_pool({ workers = 2, timeout = 30 }, function(pool)
      local g = pool:group { timeout = 0.3 }
      local slow = g:submit(busy)
      local quick = g:submit(function() osleep(0.05) return "quick" end)
      local outside = pool:submit(function() osleep(0.6) return "outside" end)
      local res = g:wait(5)
      assert.equal(2, res.n)
      assert.equal("timeout", res[1].kind)
      assert.equal("quick", res[2])
      assert.equal("quick", quick:result())
      assert.equal("timeout", slow:error().kind)
      assert.equal("outside", outside:result())
    end)
  end)

  it("counts from the start of the task, not from submit", function()
    with_pool({ workers = 1, timeout = 0.6 }, function(pool)
      local futs = {}
      for i = 1, 3 do futs[i] = pool:submit(function(x) osleep(0.3) return x end, i) end
      for i = 1, 3 do assert.equal(i, futs[i]:result()) end
    end)
  end)

  it("kills a task stuck in C after grace, with its child, and replaces the worker", function()
    with_pool({ workers = 1, timeout = 0.3, grace = 0.5 }, function(pool)
      local pidfile = procs.tmpname()
      local t0 = core.now()
      local fut = pool:submit(function(path)
        os.execute(("sh -c 'echo $$ > %s; exec sleep 30'"):format(path))
      end, pidfile)
      assert.is_true(fut:wait(5))
      local took = core.now() - t0
      assert.is_true(took >= 0.7 and took < 3, "took " .. took)
      assert.equal("timeout", fut:error().kind)
      local sleep_pid = tonumber(procs.slurp(pidfile))
      assert.truthy(sleep_pid)
      assert.truthy(procs.wait_until(function() return procs.dead(sleep_pid) end, 3))
      assert.equal(7, pool:submit(function() return 7 end):result())
      assert.equal(1, pool:stats().restarts)
    end)
  end)

  it("is retried when retry_on lists 'timeout'; err.attempts counts the runs", function()
    with_pool({ workers = 1 }, function(pool)
      local g = pool:group { timeout = 0.2, retries = 2, retry_on = { "timeout" } }
      local fut = g:submit(busy)
      assert.is_true(fut:wait(5))
      assert.equal("timeout", fut:error().kind)
      assert.equal(3, fut:error().attempts)
      local log = procs.tmpname()
      local second = g:submit(function(path)
        write(path, "x")
        if #io.open(path):read("a") == 1 then busy() end
        return "made it"
      end, log)
      assert.equal("made it", second:result())
      assert.equal(2, second.attempts)
    end)
  end)

  it("is not retried by default", function()
    with_pool({ workers = 1, timeout = 0.2, retries = 3 }, function(pool)
      local fut = pool:submit(busy)
      fut:wait(5)
      assert.equal("timeout", fut:error().kind)
      assert.equal(1, fut:error().attempts)
    end)
  end)

  it("is a timeout even when the task catches the interrupt and returns", function()
    with_pool({ workers = 1, timeout = 0.2 }, function(pool)
      local fut = pool:submit(function()
        local ok, e = pcall(busy)
        return "caught " .. tostring(ok) .. " " .. tostring(e)
      end)
      fut:wait(5)
      assert.equal("failed", fut:state())
      assert.equal("timeout", fut:error().kind)
    end)
  end)
end)
