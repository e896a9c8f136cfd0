-- A pool on a broker (orch.pool{ broker = url }) against a private
-- redis-server and real `orch worker` nodes: the pool's API works through
-- the stream as with local workers (results, errors, map with chunks,
-- groups, fail_fast, retries, timeouts, cancel, kill, terminate), and a
-- broker that cannot be reached is a clear error, never a hang.
local orch = require "orch"
local core = require "orch.core"
local redis = require "orch.broker.redis"
local stream = require "orch.broker.stream"
local redis_server = require "redis_server"
local H = _G.orch_spec

-- A task's trace: one "x" more in the file at path; returns the count.
local function mark(path)
  local f = io.open(path, "a"); f:write("x"); f:close()
  f = io.open(path); local s = f:read("a"); f:close()
  return #s
end

local count = redis_server.marks

-- Runs in a task: marks path, then sleeps until a stop request (or 30 s).
local function block(path)
  mark(path)
  for _ = 1, 600 do
    if require("orch").stopping() then break end
    require("orch").sleep(0.05)
  end
  return "unblocked"
end

describe("orch.pool on a broker", function()
  local srv, pool
  setup(function()
    srv = redis_server.start()
    srv:worker("p", { workers = 2, grace = 1 })
    srv:worker("p", { workers = 2, grace = 1 })
  end)
  teardown(function()
    if srv then srv:stop() end
  end)
  before_each(function()
    pool = orch.pool{ broker = srv.url, queue = "p" }
  end)
  after_each(function()
    if pool then pool:terminate() end
  end)

  it("lets an on_done callback wait for a follow-up task", function()
    local futs, got = {}, {}
    for i = 1, 12 do
      futs[i] = pool:submit(function(x) return x + 1 end, i)
      futs[i]:on_done(function()
        if i % 3 == 0 then
          local g = pool:submit(function(x) return x * 2 end, i)
          got[i] = g:wait(10) and g:result() or "timeout"
        end
      end)
    end
    for i = 1, 12 do assert.equal(i + 1, futs[i]:result()) end
    assert.is_true(H.wait_for(function() return got[12] ~= nil end, 20))
    assert.same({ [3] = 6, [6] = 12, [9] = 18, [12] = 24 }, got)
  end)

  it("runs a task on a node: its values, its error with kind, message, traceback, value", function()
    local f = pool:submit(function(a, b) return a + b, nil, "three" end, 1, 2)
    assert.same({ 3, nil, "three" }, { f:result() })
    local e = pool:submit(function() error({ code = 7 }) end)
    assert.is_false(e:wait(10) == nil)
    assert.equal("failed", e:state())
    assert.equal("error", e:error().kind)
    assert.same({ code = 7 }, e:error().value)
    local b = pool:submit(function() error("boom") end)
    local ok, err = pcall(b.result, b)
    assert.is_false(ok)
    assert.is_true(orch.TaskError.is(err))
    assert.matches("boom", err.message)
    assert.matches("traceback", err.traceback)
    assert.equal(1, err.attempts)
    assert.error_matches(function() pool:submit(function() return io.stdout end):result() end,
      "cannot")
  end)

  it("map and imap, with chunks, give every item's result in order", function()
    local items = {}
    for i = 1, 1000 do items[i] = i end
    local out = pool:map(function(x) return x * x end, items, { chunk = 64 })
    assert.equal(1000, #out)
    for i = 1, 1000 do assert.equal(i * i, out[i]) end
    local seen, n = {}, 0
    for i, v in pool:imap(function(x) return -x end, items, { chunk = 100, ordered = false }) do
      seen[i] = v; n = n + 1
    end
    assert.equal(1000, n)
    assert.equal(-500, seen[500])
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 7 then error("seven") end
      return x
    end, items, { chunk = 5 })
    assert.is_false(ok)
    assert.matches("seven", err.message)
  end)

  it("a group under fail_fast stops its other tasks: those no node took never run", function()
    local g = pool:group{ on_error = "fail_fast", grace = 1 }
    local ran = srv.dir .. "/ff"
    local futs = {}
    for i = 1, 3 do futs[i] = g:submit(block, ran) end
    assert.is_true(H.wait_for(function() return count(ran) == 3 end, 10))
    g:submit(function() require("orch").sleep(0.5); error("first failure") end)
    for i = 4, 7 do futs[i] = g:submit(block, ran) end  -- no free worker: they wait
    local t0 = core.now()
    local res, err = g:wait(10)
    assert.is_nil(res)
    assert.matches("first failure", err.message)
    assert.is_true(core.now() - t0 < 5)
    for i = 1, 7 do assert.equal("cancelled", futs[i]:state()) end
    orch.sleep(0.3)
    -- the queued ones never started, but for the one the failed task's
    -- node may have read as it wrote the failure (it got the stop steps)
    assert.is_true(count(ran) <= 4, count(ran))
    -- other groups and the pool go on
    assert.equal(2, pool:submit(function() return 2 end):result())
  end)

  it("retries kind 'error' on the pool's policy, with attempts counted", function()
    local path = srv.dir .. "/retry"
    local f = pool:group{ retries = 2, retry_on = { "error" } }:submit(function(p)
      local f_ = io.open(p, "a"); f_:write("x"); f_:close()
      f_ = io.open(p); local n = #f_:read("a"); f_:close()
      if n < 3 then error("not yet") end
      return n
    end, path)
    assert.equal(3, f:result())
    local g = pool:group{ retries = 1, retry_on = { "error" } }
    local e = g:submit(function() error("always") end)
    e:wait(10)
    assert.equal(2, e:error().attempts)
  end)

  it("times a task out on its node; kind 'timeout'", function()
    local g = pool:group{ timeout = 0.3, grace = 0.5 }
    local t0 = core.now()
    local f = g:submit(function() while true do end end)
    assert.is_true(f:wait(10))
    assert.equal("timeout", f:error().kind)
    assert.is_true(core.now() - t0 < 5)
    local slow = g:submit(function() require("orch").sleep(0.05); return "quick" end)
    assert.equal("quick", slow:result())
  end)

  it("a task is 'running' once its node has started it, 'queued' until then", function()
    local ran = srv.dir .. "/state"
    local futs = {}
    for i = 1, 4 do futs[i] = pool:submit(block, ran) end
    local queued = pool:submit(mark, ran)  -- the four workers are busy: it waits
    assert.is_true(H.wait_for(function() return count(ran) == 4 end, 10))
    assert.is_true(H.wait_for(function()
      for i = 1, 4 do if futs[i]:state() ~= "running" then return false end end
      return true
    end, 2))
    orch.sleep(0.2)
    assert.equal("queued", queued:state())
    local stats = pool:stats()
    assert.equal(4, stats.running)
    assert.equal(1, stats.queued)
    local states = {}
    for _, p in ipairs(orch.status().pools) do
      for _, t in ipairs(p.tasks) do states[t.id] = t.state .. (t.age and "+age" or "") end
    end
    assert.equal("running+age", states[futs[1].id])
    assert.equal("queued", states[queued.id])
    for i = 1, 4 do futs[i]:cancel() end
    assert.equal(5, queued:result())
    for i = 1, 4 do
      assert.is_true(futs[i]:wait(10))
      assert.equal("cancelled", futs[i]:state())
    end
    assert.equal(0, pool:stats().running)
  end)

  it("cancels a queued task (it never runs) and a running one (its stop steps)", function()
    local ran = srv.dir .. "/cancel"
    local running = {}
    for i = 1, 4 do running[i] = pool:submit(block, ran) end
    assert.is_true(H.wait_for(function() return count(ran) == 4 end, 10))
    local queued = pool:submit(mark, ran)
    orch.sleep(0.1)
    assert.equal("queued", queued:state())
    assert.is_true(queued:cancel())
    assert.is_true(queued:wait(5))
    assert.equal("cancelled", queued:state())
    local t0 = core.now()
    for i = 1, 4 do running[i]:cancel() end
    for i = 1, 4 do
      assert.is_true(running[i]:wait(10))
      assert.equal("cancelled", running[i]:state())
    end
    assert.is_true(core.now() - t0 < 5)
    orch.sleep(0.3)
    assert.equal(4, count(ran))
  end)

  it("kills a running task's worker on its node; the node goes on", function()
    local ran = srv.dir .. "/kill"
    local f = pool:submit(function(p) mark(p); while true do end end, ran)
    assert.is_true(H.wait_for(function() return count(ran) == 1 end, 10))
    assert.is_true(f:kill())
    assert.is_true(f:wait(10))
    assert.equal("killed", f:error().kind)
    assert.equal("again", pool:submit(function() return "again" end):result())
  end)

  it("terminate kills what runs on the nodes and fails every future 'killed'", function()
    local ran = srv.dir .. "/term"
    local futs = {}
    for i = 1, 6 do futs[i] = pool:submit(block, ran) end
    assert.is_true(H.wait_for(function() return count(ran) == 4 end, 10))
    pool:terminate()
    for i = 1, 6 do assert.equal("killed", futs[i]:error().kind) end
    -- the nodes are free again: a new pool's tasks run at once
    local p2 <close> = orch.pool{ broker = srv.url, queue = "p" }
    local t0 = core.now()
    local out = p2:map(function(x) return x end, { 1, 2, 3, 4 })
    assert.same({ 1, 2, 3, 4 }, out)
    local took = core.now() - t0
    if took >= 5 then  -- say what the nodes did meanwhile
      local logs = {}
      for i, w in ipairs(srv.workers) do logs[i] = w:output() end
      error(("the new pool's map took %.2fs; the nodes' logs:\n%s"):format(took,
        table.concat(logs, "\n")))
    end
    assert.equal(4, count(ran))
  end)
end)

describe("orch.pool on a broker: misuse and an unreachable broker", function()
  it("says what is wrong with the options", function()
    assert.error_matches(function() orch.pool{ broker = "http://x" } end,
      "bad Redis URL 'http://x': unknown scheme")
    assert.error_matches(function() orch.pool{ queue = "q" } end, "need option 'broker'")
    assert.error_matches(function() orch.pool{ broker = "redis://127.0.0.1:1", lease = -1 } end,
      "lease")
    assert.error_matches(function() orch.pool{ broker = "redis://127.0.0.1:1", queue = "a b" } end,
      "queue")
  end)

  it("an unreachable broker is a clear error at once", function()
    local t0 = core.now()
    assert.error_matches(function() orch.pool{ broker = "redis://127.0.0.1:1" } end,
      "orch.pool: broker: connect to 127.0.0.1:1: Connection refused")
    assert.error_matches(function() orch.pool{ broker = "unix:///nonexistent/redis.sock" } end,
      "No such file")
    assert.is_true(core.now() - t0 < 2)
  end)

  it("a broker that goes away fails the waiting tasks after `lease` seconds", function()
    local srv = redis_server.start()
    finally(function() srv:stop() end)
    local pool <close> = orch.pool{ broker = srv.url, queue = "gone", lease = 1 }
    local f = pool:submit(function() return 1 end)  -- no node: it waits in the stream
    orch.sleep(0.1)
    srv:kill()
    local g = pool:submit(function() return 2 end)  -- never reaches Redis
    local t0 = core.now()
    assert.is_true(f:wait(5) and g:wait(5))
    assert.is_true(core.now() - t0 < 3)
    assert.matches("unreachable for 1s", f:error().message)
    assert.matches("unreachable", g:error().message)
  end)
end)

-- keep the name of the stream module used (checks on the keys)
describe("orch.pool on a broker: the stream after a run", function()
  it("leaves no task entry behind and its results stream expires", function()
    local srv = redis_server.start()
    finally(function() srv:stop() end)
    srv:worker("clean", { workers = 2 })
    local pool = orch.pool{ broker = srv.url, queue = "clean" }
    local reply = pool.dispatcher.reply
    assert.same({ 1, 2, 3 }, pool:map(function(x) return x end, { 1, 2, 3 }))
    local c = assert(redis.connect(srv.url))
    local keys = stream.keys("clean")
    assert.equal(0, c:call{ "XLEN", keys.tasks })
    assert.is_true(c:call{ "TTL", reply } > 0)
    pool:shutdown()
    c:close()
  end)
end)

describe("orch.pool on a broker with workers of its own", function()
  it("serves its queue in this process too, and its workers go at shutdown", function()
    local srv = redis_server.start()
    local pool
    finally(function()  -- one finally: busted keeps only the last
      if pool then pool:terminate() end
      srv:stop()
    end)
    pool = orch.pool{ broker = srv.url, queue = "own", workers = 2 }
    assert.same({ 2, 4, 6 }, pool:map(function(x) return 2 * x end, { 1, 2, 3 }))
    assert.equal(2, pool:stats().workers)
    assert.is_true(pool:shutdown())
    assert.same({}, H.children(core.getpid()))
  end)
end)

describe("scripts/examples/cluster.lua #slow", function()
  it("a node SIGKILLed mid-map: another takes its task over, the total is right", function()
    local p = io.popen("lua5.4 scripts/examples/cluster.lua 2>&1; echo \"exit=$?\"")
    local out = p:read("a")
    p:close()
    assert.matches("exit=0", out)
    assert.matches("killing node %d+", out)
    assert.matches("took over", out)
    assert.matches("primes below 2000000: 148933 %(expected 148933%)", out)
  end)
end)
