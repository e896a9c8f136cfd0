-- Failure policies: on_error = "continue" | "fail_fast" | function(err,
-- task) -> "retry" | "continue" | "fail_fast"; retries with retry_on and
-- backoff; err.attempts counts the runs.
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

local append = procs.append

-- Seed 004's task: reads for a long time, one step at a time; task 0 fails
-- after its first step; the others return once they are asked to stop.
local function work(log, name)
  append(log, ("start %d\n"):format(name))
  for _ = 1, 50 do
    osleep(0.1)
    if name == 0 then error("Something bad happened", 0) end
    if stopping() then
      append(log, ("stopping %d\n"):format(name))
      return "stopped"
    end
  end
  return "finished"
end

local function lines(path, pattern)
  local n = 0
  for _ in (procs.slurp(path) or ""):gmatch(pattern) do n = n + 1 end
  return n
end

describe("on_error = 'continue'", function()
  it("collects every outcome", function()
    with_pool({ workers = 2 }, function(pool)
      local g = pool:group { on_error = "continue" }
      for i = 1, 6 do
        g:submit(function(x) if x % 3 == 0 then error("no " .. x, 0) end return x end, i)
      end
      local res = assert(g:wait(5))
      assert.equal(6, res.n)
      for i = 1, 6 do
        if i % 3 == 0 then
          assert.equal("no " .. i, res[i].value)
        else
          assert.equal(i, res[i])
        end
      end
    end)
  end)
end)

describe("on_error = 'fail_fast' (seed 004)", function()
  it("cancels the queued tasks, stops the running ones, wait returns nil, first_error once quiet", function()
    with_pool({ workers = 4, grace = 5 }, function(pool)
      local log = procs.tmpname()
      local g = pool:group { on_error = "fail_fast" }
      local futs = {}
      for i = 0, 9 do futs[i] = g:submit(work, log, i) end
      local t0 = core.now()
      local res, err = g:wait(10)
      local took = core.now() - t0
      assert.is_nil(res)
      assert.is_true(orch.TaskError.is(err))
      assert.equal("error", err.kind)
      assert.equal("Something bad happened", err.value)
      assert.equal(1, err.attempts)
      assert.is_true(took < 1.5, "took " .. took)
      assert.equal("failed", futs[0]:state())
      -- the four running started; of the six behind them only the one the
      -- failing worker had in its pipe may have begun before the stop
      -- request reached it (it is interrupted at once); none ran to the end
      local started = lines(log, "start %d+")
      assert.is_true(started >= 4 and started <= 5, "started " .. started)
      assert.equal(0, lines(log, "start [89]\n"))
      assert.equal(3, lines(log, "stopping [123]\n"))  -- the three running stopped themselves
      assert.equal(3, lines(log, "stopping %d+"))
      for i = 1, 9 do assert.equal("cancelled", futs[i]:state()) end
      for i = 1, 9 do assert.is_true(futs[i]:done()) end
      local s = pool:stats()
      assert.equal(1, s.failed)
      assert.equal(9, s.cancelled)
      assert.equal(0, s.restarts)
      assert.equal(0, s.running)
    end)
  end)

  it("interrupts busy loops that never check, and keeps their workers", function()
    with_pool({ workers = 4, grace = 5 }, function(pool)
      local g = pool:group { on_error = "fail_fast" }
      for _ = 1, 3 do g:submit(busy) end
      g:submit(function() require("orch").sleep(0.3) error("first", 0) end)
      local t0 = core.now()
      local res, err = g:wait(5)
      assert.is_nil(res)
      assert.equal("first", err.value)
      assert.is_true(core.now() - t0 < 1.5)
      assert.equal(0, pool:stats().restarts)
    end)
  end)

  it("waits for tasks stuck in C until their grace is over, then returns", function()
    with_pool({ workers = 2, grace = 0.5 }, function(pool)
      local g = pool:group { on_error = "fail_fast" }
      local stuck = g:submit(function() os.execute("sleep 30") end)
      g:submit(function() require("orch").sleep(0.2) error("first", 0) end)
      local t0 = core.now()
      local res, err = g:wait(5)
      local took = core.now() - t0
      assert.is_nil(res)
      assert.equal("first", err.value)
      assert.is_true(took > 0.5 and took < 3, "took " .. took)
      assert.equal("cancelled", stuck:state())
    end)
  end)

  it("cancels what is submitted to the group after it failed", function()
    with_pool({ workers = 1 }, function(pool)
      local g = pool:group { on_error = "fail_fast" }
      g:submit(error, "x", 0)
      assert.is_nil((g:wait(5)))
      local late = g:submit(function() return 1 end)
      assert.equal("cancelled", late:state())
      local res, err = g:wait(1)
      assert.is_nil(res)
      assert.equal("x", err.value)
    end)
  end)

  it("in one group leaves another group running", function()
    with_pool({ workers = 3 }, function(pool)
      local other = pool:group()
      local o = other:submit(function() require("orch").sleep(0.5) return "ok" end)
      local g = pool:group { on_error = "fail_fast" }
      g:submit(busy)
      g:submit(error, "boom", 0)
      assert.is_nil((g:wait(5)))
      assert.equal("ok", o:result())
      assert.same({ "ok", n = 1 }, assert(other:wait(1)))
    end)
  end)

  it("on the pool stops the pool's unsettled tasks, and the pool takes new ones after", function()
    with_pool({ workers = 2, on_error = "fail_fast" }, function(pool)
      local a = pool:submit(busy)
      local b = pool:submit(function() require("orch").sleep(0.2) error("pool-level", 0) end)
      local c = pool:submit(busy)
      assert.is_true(a:wait(5) and b:wait(5) and c:wait(5))
      assert.equal("failed", b:state())
      assert.equal("cancelled", a:state())
      assert.equal("cancelled", c:state())
      assert.equal(5, pool:submit(function() return 5 end):result())
    end)
  end)
end)

describe("on_error = function(err, task)", function()
  it("is consulted on every failure and its answer applies", function()
    with_pool({ workers = 2 }, function(pool)
      local seen = {}
      local g = pool:group { on_error = function(err, task)
        seen[#seen + 1] = ("%s:%s:%d"):format(task.args and task.args[1] or "?", err.kind, err.attempts)
        if err.value == "again" and err.attempts < 3 then return "retry" end
        return "continue"
      end }
      local a = g:submit(function(tag) error(tag, 0) end, "again")
      local b = g:submit(function(tag) error(tag, 0) end, "once")
      local res = assert(g:wait(5))
      assert.equal(3, res[1].attempts)
      assert.equal(1, res[2].attempts)
      assert.equal("failed", a:state())
      assert.equal("failed", b:state())
      table.sort(seen)
      assert.same({ "again:error:1", "again:error:2", "again:error:3", "once:error:1" }, seen)
    end)
  end)

  it("may answer 'fail_fast'", function()
    with_pool({ workers = 2 }, function(pool)
      local g = pool:group { on_error = function() return "fail_fast" end }
      local other = g:submit(busy)
      g:submit(error, "stop all", 0)
      local res, err = g:wait(5)
      assert.is_nil(res)
      assert.equal("stop all", err.value)
      assert.equal("cancelled", other:state())
    end)
  end)

  it("that raises or answers nonsense means 'continue' (and is logged)", function()
    with_pool({ workers = 1 }, function(pool)
      local logged = {}
      local saved = orch.log.handler
      orch.log.handler = function(r) logged[#logged + 1] = r.message end
      local ok, err = pcall(function()
        local g1 = pool:group { on_error = function() error("handler bug") end }
        g1:submit(error, "a", 0)
        local g2 = pool:group { on_error = function() return "explode" end }
        g2:submit(error, "b", 0)
        assert.equal("a", assert(g1:wait(5))[1].value)
        assert.equal("b", assert(g2:wait(5))[1].value)
      end)
      orch.log.handler = saved
      assert(ok, err)
      assert.equal(2, #logged)
      assert.matches("handler bug", logged[1])
      assert.matches("explode", logged[2])
    end)
  end)
end)

describe("retries", function()
  it("retry a crashed task by default (retry_on = {'crashed'}); err.attempts counts", function()
    with_pool({ workers = 1, retries = 2 }, function(pool)
      local fut = pool:submit(function() os.exit(3) end)
      fut:wait(5)
      local err = fut:error()
      assert.equal("crashed", err.kind)
      assert.equal(3, err.exit_code)
      assert.equal(3, err.attempts)
      local e = pool:submit(error, "not retried", 0)
      e:wait(5)
      assert.equal(1, e:error().attempts)
    end)
  end)

  it("follow retry_on, and a later success wins", function()
    with_pool({ workers = 1 }, function(pool)
      local g = pool:group { retries = 3, retry_on = { "error" } }
      local log = procs.tmpname()
      local fut = g:submit(function(path)
        append(path, "x")
        local n = #io.open(path):read("a")
        if n < 3 then error("try " .. n, 0) end
        return "third time"
      end, log)
      assert.equal("third time", fut:result())
      assert.equal(3, fut.attempts)
      local crash = g:submit(function() os.exit(1) end)
      crash:wait(5)
      assert.equal("crashed", crash:error().kind)
      assert.equal(1, crash:error().attempts)
    end)
  end)

  it("wait out their backoff, doubling each time", function()
    with_pool({ workers = 1 }, function(pool)
      local g = pool:group { retries = 2, retry_on = { "error" }, backoff = 0.2 }
      local t0 = core.now()
      local fut = g:submit(error, "again", 0)
      fut:wait(5)
      local took = core.now() - t0
      assert.equal(3, fut:error().attempts)
      assert.is_true(took >= 0.55 and took < 2.5, "took " .. took)  -- 0.2 + 0.4
    end)
  end)

  it("a task waiting out its backoff can be cancelled, and stats stay right", function()
    with_pool({ workers = 1 }, function(pool)
      local g = pool:group { retries = 5, retry_on = { "error" }, backoff = 10 }
      local fut = g:submit(error, "again", 0)
      procs.wait_until(function() return fut.attempts == 1 and fut:state() == "queued" end)
      fut:cancel()
      assert.equal("cancelled", fut:state())
      local s = pool:stats()
      assert.equal(0, s.queued)
      assert.equal(0, s.running)
      assert.equal(1, s.cancelled)
    end)
  end)

  it("a closed pool keeps its workers for a retry waiting out its backoff", function()
    local pool = orch.pool { workers = 1, retries = 1, retry_on = { "error" }, backoff = 0.3 }
    local log = procs.tmpname()
    local fut = pool:submit(function(path)
      append(path, "x")
      if #io.open(path):read("a") == 1 then error("first", 0) end
      return "second"
    end, log)
    procs.wait_until(function() return fut.attempts == 1 and fut:state() == "queued" end)
    pool:close()
    assert.is_true(pool:join(5))
    assert.equal("second", fut:result())
    procs.cleanup()
  end)
end)
