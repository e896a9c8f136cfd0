-- orch.queue: in the parent alone (no fork here), and from pool tasks in a
-- child script (spec/scripts/q_pool.lua).
local orch = require "orch"
local P = require "scripts.sup_proc"
after_each(P.cleanup_all)

describe("orch.queue in the parent", function()
  it("is FIFO and counts with #q", function()
    local q = orch.queue{ capacity = 3 }
    assert.is_true(q:put("a"))
    assert.is_true(q:put({ 1, 2 }))
    assert.is_true(q:put(false))
    assert.equal(3, #q)
    assert.equal(3, q:len())
    assert.equal("a", q:get())
    assert.same({ 1, 2 }, q:get())
    assert.equal(false, q:get())
    assert.equal(0, #q)
  end)

  it("answers nil, 'full' and nil, 'timeout' after the timeout", function()
    local q = orch.queue{ capacity = 1 }
    assert.is_true(q:put(1))
    local ok, err = q:put(2, 0)
    assert.is_nil(ok); assert.equal("full", err)
    ok, err = q:put(2, 0.05)
    assert.is_nil(ok); assert.equal("full", err)
    assert.equal(1, q:get(0))
    local v
    v, err = q:get(0.05)
    assert.is_nil(v); assert.equal("timeout", err)
    v, err = q:get(0)
    assert.is_nil(v); assert.equal("timeout", err)
  end)

  it("after close: puts fail, gets drain then say 'closed'", function()
    local q = orch.queue{}
    q:put(1); q:put(2)
    q:close()
    local ok, err = q:put(3)
    assert.is_nil(ok); assert.equal("closed", err)
    assert.equal(1, q:get())
    assert.equal(2, q:get())
    local v
    v, err = q:get()
    assert.is_nil(v); assert.equal("closed", err)
  end)

  it("refuses bad arguments and options clearly", function()
    assert.has_error(function() orch.queue{ cap = 1 } end,
      "orch.queue: unknown option 'cap' (valid: capacity)")
    assert.has_error(function() orch.queue{ capacity = 0 } end)
    assert.has_error(function() orch.queue("x") end)
    local q = orch.queue{}
    assert.has_error(function() q:put(nil) end)
    assert.has_error(function() q:put(1, -1) end)
    assert.has_error(function() q:get("soon") end)
    assert.has_error(function() q.put({}, 1) end)
    local ok, err = pcall(q.put, q, { conn = io.stdout })
    assert.is_false(ok)
    assert.matches("conn", err)
  end)
end)

describe("orch.queue between processes", function()
  it("works from pool tasks: many producers and consumers, timeouts, parked calls", function()
    local job = P.start("spec/scripts/q_pool.lua")
    local rc = P.wait_exit(job, 30)
    local out = P.stdout(job)
    local err = P.stderr(job)
    P.cleanup(job)
    assert.equal(0, rc, err)
    assert.matches("ok many producers and consumers", out)
    assert.matches("ok timeout full closed in a task", out)
    assert.matches("ok parked get answered", out)
    assert.matches("ok parked put answered", out)
  end)
end)

describe("a pool task waiting on a queue", function()
  it("is cancelled at once, and its worker survives", function()
    -- orch: the module required at the top
    local q = orch.queue{ capacity = 4 }
    local pool <close> = orch.pool{ workers = 1, grace = 5 }
    local fut = pool:submit(function() return q:get() end)
    while fut:state() ~= "running" do orch.sleep(0.01) end
    orch.sleep(0.1)
    fut:cancel()
    assert.is_true(fut:wait(2))
    assert.are.equal("cancelled", fut:state())
    assert.are.equal(0, pool:stats().restarts)
    assert.are.equal(7, pool:submit(function() return 7 end):result())
  end)
end)
