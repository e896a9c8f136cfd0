-- Groups: a batch with its own options. submit, map, imap, wait, cancel and
-- kill; cancelling or killing one group never touches another's tasks.
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

local function nap(x, secs)
  osleep(secs or 0.3)
  return x
end

describe("group", function()
  it("wait returns every outcome in submission order: values and TaskErrors", function()
    with_pool({ workers = 2 }, function(pool)
      local g = pool:group()
      g:submit(nap, "a", 0.1)
      g:submit(function() error("boom", 0) end)
      g:submit(nap, "c", 0.05)
      local res = assert(g:wait(5))
      assert.equal(3, res.n)
      assert.equal("a", res[1])
      assert.is_true(orch.TaskError.is(res[2]))
      assert.equal("error", res[2].kind)
      assert.equal("boom", res[2].value)
      assert.equal("c", res[3])
    end)
  end)

  it("wait(timeout) returns nil, 'timeout' while tasks run", function()
    with_pool({ workers = 1 }, function(pool)
      local g = pool:group()
      g:submit(nap, 1, 0.5)
      local t0 = core.now()
      local res, err = g:wait(0.1)
      assert.is_nil(res)
      assert.equal("timeout", err)
      assert.is_true(core.now() - t0 < 0.4)
      assert.equal(1, assert(g:wait(5))[1])
    end)
  end)

  it("map returns results in order; on the first failure it cancels the rest and raises", function()
    with_pool({ workers = 2 }, function(pool)
      local g = pool:group()
      assert.same({ 1, 4, 9, 16 }, g:map(function(x) return x * x end, { 1, 2, 3, 4 }))
      assert.same({ 2, 4, 6 }, g:map(function(x) return 2 * x end, { 1, 2, 3 }, { chunk = 2 }))
      -- wait lists each task's outcome: a chunk's is the list of its results
      local all = assert(g:wait(5))
      assert.same({ 1, 4, 9, 16, { 2, 4 }, { 6 } }, { table.unpack(all, 1, all.n) })
      local mark = procs.tmpname()
      local ok, err = pcall(g.map, g, function(x)
        if x == 1 then error("bad item", 0) end
        require("orch").sleep(0.2)
        local f = io.open(mark, "a"); f:write(x, ","); f:close()
        return x
      end, { 1, 2, 3, 4, 5, 6, 7, 8 })
      assert.is_false(ok)
      assert.equal("error", err.kind)
      assert.equal("bad item", err.value)
      orch.sleep(0.4)
      -- items behind the failure were cancelled: not all of them ran
      local ran = select(2, (procs.slurp(mark) or ""):gsub(",", ""))
      assert.is_true(ran < 7, "ran " .. ran)
    end)
  end)

  it("imap yields i, result in order, or in completion order", function()
    with_pool({ workers = 3 }, function(pool)
      local g = pool:group()
      local got = {}
      for i, v in g:imap(function(x) return x + 100 end, { 1, 2, 3 }) do got[#got + 1] = { i, v } end
      assert.same({ { 1, 101 }, { 2, 102 }, { 3, 103 } }, got)
      local order = {}
      for i in g:imap(function(s) require("orch").sleep(s) return s end, { 0.4, 0.05, 0.2 }, { ordered = false }) do
        order[#order + 1] = i
      end
      assert.same({ 2, 3, 1 }, order)
    end)
  end)

  it("cancel stops its queued and running tasks and leaves another group alone", function()
    with_pool({ workers = 4, grace = 5 }, function(pool)
      local keep = pool:group()
      local kept = {}
      for i = 1, 3 do kept[i] = keep:submit(nap, i, 0.4) end
      local doomed = pool:group()
      local mark = procs.tmpname()
      local running = doomed:submit(busy)
      for _ = 1, 4 do
        doomed:submit(function(path) local f = io.open(path, "a"); f:write("ran"); f:close() end, mark)
      end
      procs.wait_until(function() return running:state() == "running" end)
      local t0 = core.now()
      doomed:cancel()
      local res = assert(doomed:wait(3))
      assert.is_true(core.now() - t0 < 1.5)
      assert.equal(5, res.n)
      for i = 1, 5 do assert.equal("cancelled", res[i].kind) end
      assert.equal("", procs.slurp(mark))
      for i = 1, 3 do assert.equal(i, kept[i]:result()) end
      assert.same({ 1, 2, 3, n = 3 }, assert(keep:wait(1)))
      assert.equal(0, pool:stats().restarts)
    end)
  end)

  it("kill SIGKILLs its running tasks only; the other group's tasks finish; workers are replaced", function()
    with_pool({ workers = 4 }, function(pool)
      local keep = pool:group()
      local kept = {}
      for i = 1, 2 do kept[i] = keep:submit(nap, i, 0.6) end
      local doomed = pool:group()
      local futs = {}
      for i = 1, 2 do futs[i] = doomed:submit(busy) end
      local queued = doomed:submit(nap, "never", 0)
      procs.wait_until(function() return futs[1]:state() == "running" and futs[2]:state() == "running" end)
      local t0 = core.now()
      doomed:kill()
      local res = assert(doomed:wait(3))
      assert.is_true(core.now() - t0 < 1)
      for i = 1, 3 do assert.equal("killed", res[i].kind) end
      assert.equal("failed", queued:state())
      for i = 1, 2 do assert.equal(i, kept[i]:result()) end
      assert.is_true(procs.wait_until(function() return pool:stats().workers == 4 end, 3))
      assert.equal(2, pool:stats().restarts)
      assert.same({ 1, 2, 3, 4 }, pool:map(function(x) return x end, { 1, 2, 3, 4 }))
    end)
  end)

  it("kill of one group puts another group's tasks that waited on the killed worker back in the queue", function()
    with_pool({ workers = 1 }, function(pool)
      local doomed = pool:group()
      local keep = pool:group()
      local victim = doomed:submit(busy)
      local behind = {}
      for i = 1, 3 do behind[i] = keep:submit(nap, i, 0) end
      procs.wait_until(function() return victim:state() == "running" end)
      doomed:kill()
      for i = 1, 3 do assert.equal(i, behind[i]:result()) end
      for i = 1, 3 do assert.equal(1, behind[i].attempts) end
      assert.equal("killed", victim:error().kind)
    end)
  end)

  it("has its own options: grace for its stops, retries, on_error", function()
    with_pool({ workers = 2, grace = 30 }, function(pool)
      local g = pool:group { grace = 0.3 }
      local fut = g:submit(function() os.execute("sleep 30") end)
      procs.wait_until(function() return fut:state() == "running" end)
      local t0 = core.now()
      g:cancel()
      assert.is_true(fut:wait(3))
      assert.is_true(core.now() - t0 < 2)
    end)
  end)

  it("tostring says what it holds", function()
    with_pool({ workers = 1 }, function(pool)
      local g = pool:group()
      g:submit(nap, 1, 0)
      assert.matches("^orch.group", tostring(g))
      g:wait()
    end)
  end)

  describe("bad arguments", function()
    it("an unknown option lists the valid ones", function()
      with_pool({ workers = 1 }, function(pool)
        local ok, err = pcall(pool.group, pool, { timeuot = 1 })
        assert.is_false(ok)
        assert.matches("unknown option 'timeuot'", err, 1, true)
        assert.matches("valid: backoff, grace, on_error, retries, retry_on, timeout", err, 1, true)
        assert.matches("42%-groups_spec", err)  -- blamed on the caller
      end)
    end)

    it("options of the wrong type or range", function()
      with_pool({ workers = 1 }, function(pool)
        local cases = {
          { "x", "options must be a table" },
          { { timeout = "1" }, "option 'timeout' must be a positive number %(got \"1\"%)" },
          { { timeout = -1 }, "positive number %(got %-1%)" },
          { { timeout = 0 }, "must be a positive number %(got 0%)" },
          { { retries = 1.5 }, "non%-negative integer" },
          { { retries = -1 }, "non%-negative integer" },
          { { retry_on = "error" }, "option 'retry_on' must be a table" },
          { { retry_on = { "oops" } }, "'retry_on'%[1%] must be a failure kind: .* %(got \"oops\"%)" },
          { { on_error = "stop" }, "on_error" },
          { { on_error = 1 }, "option 'on_error' must be a string or function %(got 1%)" },
          { { grace = -1 }, "non%-negative" },
          { { backoff = 0 / 0 }, "non%-negative" },
        }
        for _, c in ipairs(cases) do
          local ok, err = pcall(pool.group, pool, c[1])
          assert.is_false(ok)
          assert.matches(c[2], err)
        end
      end)
    end)

    it("map and submit check their arguments", function()
      with_pool({ workers = 1 }, function(pool)
        local g = pool:group()
        assert.matches("expects a function", select(2, pcall(g.submit, g, 42)))
        assert.matches("items must be a table", select(2, pcall(g.map, g, print, 3)))
        assert.matches("unknown option 'chunks' %(valid: chunk, joblog, ordered, progress, resume, resume_failed%)",
          select(2, pcall(g.map, g, print, {}, { chunks = 2 })))
        assert.matches("option 'chunk' must be a positive integer",
          select(2, pcall(g.map, g, print, {}, { chunk = 0 })))
      end)
    end)
  end)
end)
