-- Ending a whole pool: terminate (SIGKILL every worker now: running and
-- queued futures fail "killed", nothing left running, what the tasks
-- started included), shutdown with cancel_pending, close + join(timeout),
-- recycling workers (seed 003) and the interrupt of a plain script.
local orch = require "orch"
-- what its tests provoke on purpose (kills after a grace period, failing
-- inits) is logged: collected, not written into busted's output
setup(orch_spec.quiet_logs)
teardown(orch_spec.restore_logs)
local core = require "orch.core"
local procs = require "helper.procs"

local osleep = orch.sleep

local function busy()
  local n = 0
  while true do n = n + 1 end
end

local function stuck(pidfile)
  os.execute(("sh -c 'echo $$ > %s; exec sleep 30'"):format(pidfile))
end

local function popen_child(pidfile)
  local p = io.popen(("sh -c 'echo $$ > %s; exec sleep 30'"):format(pidfile))
  p:read("a")
end

describe("pool:terminate()", function()
  it("kills every worker and what they started, fails running and queued tasks 'killed', and returns fast", function()
    local before = procs.descendants()
    local pool = orch.pool { workers = 4, grace = 30 }
    local files = { procs.tmpname(), procs.tmpname() }
    local futs = {
      pool:submit(busy),
      pool:submit(stuck, files[1]),
      pool:submit(popen_child, files[2]),
      pool:submit(function() osleep(30) end),
    }
    local queued = {}
    for i = 1, 6 do queued[i] = pool:submit(function() return i end) end
    local pids = {}
    for i, f in ipairs(files) do
      procs.wait_until(function() pids[i] = tonumber(procs.slurp(f) or ""); return pids[i] end, 5)
      assert.truthy(pids[i])
    end
    procs.wait_until(function() return futs[1]:state() == "running" end)
    local called
    futs[1]:on_done(function(f) called = f:error().kind end)
    local t0 = core.now()
    pool:terminate()
    local took = core.now() - t0
    assert.is_true(took < 1, "took " .. took)
    for _, f in ipairs(futs) do
      assert.equal("failed", f:state())
      assert.equal("killed", f:error().kind)
      assert.equal(1, f:error().attempts)
    end
    for _, f in ipairs(queued) do
      assert.equal("failed", f:state())
      assert.equal("killed", f:error().kind)
    end
    assert.equal("killed", called)
    -- no worker left, not even a zombie: terminate reaped them
    local alive, zombies = procs.count(before)
    assert.equal(0, alive)
    assert.equal(0, zombies)
    -- what the tasks started is gone too (their zombies belong to init now)
    for _, pid in ipairs(pids) do
      assert.truthy(procs.wait_until(function() return procs.dead(pid) end, 2), "pid " .. pid)
    end
    local s = pool:stats()
    assert.equal(0, s.workers)
    assert.equal(0, s.running)
    assert.equal(0, s.queued)
    assert.equal(10, s.failed)
    assert.matches("closed pool", select(2, pcall(pool.submit, pool, print)))
    pool:terminate()  -- again: nothing to do
    assert.is_true(pool:join(1))
    procs.cleanup()
  end)

  it("terminates 16 busy workers at once", function()
    local before = procs.descendants()
    local pool = orch.pool { workers = 16 }
    local futs = {}
    for i = 1, 16 do futs[i] = pool:submit(busy) end
    procs.wait_until(function() return pool:stats().running == 16 end, 5)
    local t0 = core.now()
    pool:terminate()
    assert.is_true(core.now() - t0 < 1)
    assert.same({ 0, 0 }, { procs.count(before) })
    for i = 1, 16 do assert.equal("killed", futs[i]:error().kind) end
  end)

  it("fails a retry waiting out its backoff 'killed'", function()
    local pool = orch.pool { workers = 1, retries = 3, retry_on = { "error" }, backoff = 10 }
    local fut = pool:submit(error, "again", 0)
    procs.wait_until(function() return fut.attempts == 1 and fut:state() == "queued" end)
    pool:terminate()
    assert.equal("killed", fut:error().kind)
  end)

  it("of a pool leaving its scope after a kill leaves nothing behind", function()
    local before = procs.descendants()
    do
      local pool <close> = orch.pool { workers = 2 }
      local f = pool:submit(busy)
      procs.wait_until(function() return f:state() == "running" end)
      f:kill()
      assert.equal(3, pool:submit(function() return 3 end):result())
    end
    assert.same({ 0, 0 }, { procs.count(before) })
  end)
end)

describe("pool:shutdown{ cancel_pending = true }", function()
  it("cancels the queue, stops running tasks, kills the stuck ones after grace", function()
    local before = procs.descendants()
    local pool = orch.pool { workers = 2, grace = 30 }
    local mark = procs.tmpname()
    local a = pool:submit(busy)
    local b = pool:submit(function() os.execute("sleep 30") end)
    local c = pool:submit(function(p) local f = io.open(p, "w"); f:write("ran"); f:close() end, mark)
    procs.wait_until(function() return a:state() == "running" and b:state() == "running" end)
    local t0 = core.now()
    assert.is_true(pool:shutdown { cancel_pending = true, grace = 0.5 })
    local took = core.now() - t0
    assert.is_true(took >= 0.4 and took < 3, "took " .. took)
    for _, f in ipairs({ a, b, c }) do assert.equal("cancelled", f:state()) end
    assert.equal("", procs.slurp(mark))
    assert.same({ 0, 0 }, { procs.count(before) })
    procs.cleanup()
  end)

  it("without cancel_pending lets the work finish", function()
    local pool = orch.pool { workers = 2 }
    local futs = {}
    for i = 1, 4 do futs[i] = pool:submit(function(x) osleep(0.1) return x end, i) end
    assert.is_true(pool:shutdown())
    for i = 1, 4 do assert.equal(i, futs[i]:result()) end
  end)
end)

describe("a task queue (seed 003)", function()
  it("recycles workers after max_tasks_per_worker and counts what it did", function()
    procs.with_pool({ workers = 2, max_tasks_per_worker = 3 }, function(pool)
      local futs = {}
      for i = 1, 12 do futs[i] = pool:submit(function() return require("orch.core").getpid() end) end
      local per_pid = {}
      for i = 1, 12 do
        local pid = futs[i]:result()
        per_pid[pid] = (per_pid[pid] or 0) + 1
      end
      local n = 0
      for _, count in pairs(per_pid) do
        n = n + 1
        assert.is_true(count <= 3)
      end
      assert.is_true(n >= 4)
      local s = pool:stats()
      assert.equal(12, s.done)
      assert.equal(0, s.failed)
      assert.equal(0, s.restarts)  -- a recycled worker is not a restart
    end)
  end)

  it("close + join(timeout) returns as soon as the workers are gone, or nil, 'timeout'; then terminate #novalgrind", function()
    local before = procs.descendants()
    local pool = orch.pool { workers = 2 }
    for i = 1, 4 do pool:submit(function() osleep(0.1) return i end) end
    pool:close()
    local t0 = core.now()
    assert.is_true(pool:join(5))
    assert.is_true(core.now() - t0 < 1)
    assert.same({ 0, 0 }, { procs.count(before) })

    pool = orch.pool { workers = 2 }
    local long = pool:submit(function() os.execute("sleep 30") end)
    pool:close()
    local ok, err = pool:join(0.3)
    assert.is_nil(ok)
    assert.equal("timeout", err)
    pool:terminate()
    assert.is_true(pool:join(1))
    assert.equal("killed", long:error().kind)
    assert.same({ 0, 0 }, { procs.count(before) })
  end)
end)

describe("the first SIGINT in a plain script with a pool", function()
  it("cancels the pool's work and raises 'interrupted' in the waiting script", function()
    local out = procs.tmpname()
    local cmd = ("%s spec/scripts/stop_interrupt.lua > %s 2>&1 & echo $!"):format("lua5.4", out)
    local p = io.popen(cmd)
    local _ = tonumber(p:read("l"))
    p:close()
    local pid
    assert.truthy(procs.wait_until(function()
      pid = tonumber((procs.slurp(out) or ""):match("ready (%d+)"))
      return pid
    end, 5))
    orch.sleep(0.2)
    local t0 = core.now()
    os.execute("kill -INT " .. pid)
    assert.truthy(procs.wait_until(function() return procs.dead(pid) end, 5))
    assert.is_true(core.now() - t0 < 3)
    local text = procs.slurp(out)
    assert.matches("ok=false err=interrupted %(SIGINT%)", text)
    assert.matches("1=cancelled:cancelled", text)
    assert.matches("2=cancelled:cancelled", text)
    assert.matches("3=cancelled:cancelled", text)
    procs.cleanup()
  end)
end)
