-- A pool on a broker when things fail: a node SIGKILLed mid-task (its
-- tasks taken over after the lease, each future settled once), a task that
-- loses its node more often than its retries allow ("crashed", dead
-- letter), nodes stopped by INT/TERM (hand back, exit 128+n), Redis
-- restarted with its append-only file while tasks are queued and running,
-- signed tasks and refused ones, and a client that goes away.
local orch = require "orch"
local redis = require "orch.broker.redis"
local stream = require "orch.broker.stream"
local redis_server = require "redis_server"
local H = _G.orch_spec

local count = redis_server.marks

-- Runs in a task: SIGKILLs the node running it (its worker's parent).
local function kill_my_node(path)
  local f = io.open(path, "a"); f:write("x"); f:close()
  f = io.open("/proc/self/stat"); local stat = f:read("a"); f:close()
  os.execute("kill -9 " .. stat:match("%) %a (%d+)"))
  require("orch").sleep(10)
end

local function dead_letters(srv, queue)
  local c = assert(redis.connect(srv.url))
  local list = c:call{ "XRANGE", stream.keys(queue).dead, "-", "+" }
  c:close()
  local out = {}
  for i, e in ipairs(list or {}) do out[i] = stream.fields(e[2]) end
  return out
end

-- Pools terminated after the test whatever happens (a test that fails
-- while its tasks have no node left must not wait for them), before its
-- server stops. One finally per test: busted keeps only the last.
local pools = {}
local function broker_pool(opts)
  local pool = orch.pool(opts)
  pools[#pools + 1] = pool
  return pool
end

describe("orch.pool on a broker, when things fail", function()
  local srv
  after_each(function()
    for _, pool in ipairs(pools) do pool:terminate() end
    pools = {}
    if srv then srv:stop() end
  end)

  it("a node SIGKILLed mid-task: its tasks run again elsewhere, each future settles once", function()
    srv = redis_server.start()
    local a = srv:worker("k", { workers = 2, lease = 1 })
    local pool = broker_pool{ broker = srv.url, queue = "k", retries = 1, lease = 1 }
    local started, killed = srv.dir .. "/started", srv.dir .. "/killed"
    local futs, settled = {}, {}
    for i = 1, 4 do
      -- runs until node a is gone: those a took never end there
      futs[i] = pool:submit(function(x, path, flag)
        local f = io.open(path, "a"); f:write("x"); f:close()
        while not io.open(flag) do require("orch").sleep(0.02) end
        return x * 10
      end, i, started, killed)
      futs[i]:on_done(function() settled[i] = (settled[i] or 0) + 1 end)
    end
    assert.is_true(H.wait_for(function() return count(started) >= 2 end, 10), a:output())
    a:kill("KILL")
    io.open(killed, "w"):close()
    srv:worker("k", { workers = 2, lease = 1 })
    for i = 1, 4 do assert.equal(i * 10, futs[i]:result()) end
    orch.sleep(0.3)  -- room for a late duplicate
    for i = 1, 4 do assert.equal(1, settled[i]) end
    assert.is_true(count(started) >= 6)  -- the two that ran on a ran again
  end)

  it("a task that lost its node more than `retries` times fails 'crashed', dead-lettered", function()
    srv = redis_server.start()
    for _ = 1, 3 do srv:worker("c", { workers = 1, lease = 1 }) end
    local pool = broker_pool{ broker = srv.url, queue = "c", retries = 1, lease = 1 }
    local ran = srv.dir .. "/ran"
    local f = pool:submit(kill_my_node, ran)
    assert.is_true(f:wait(20))
    local err = f:error()
    assert.equal("crashed", err.kind)
    assert.matches("delivered 2 times, its node lost each time", err.message)
    assert.equal(1, err.attempts)  -- the pool did not retry it again
    assert.equal(2, count(ran))
    local dead = dead_letters(srv, "c")
    assert.equal(1, #dead)
    assert.matches("crashed", dead[1].reason)
  end)

  it("INT and TERM stop a node in order: it hands back, then ends by the signal", function()
    srv = redis_server.start()
    local a = srv:worker("s", { workers = 1, grace = 0.3 })
    local pool = broker_pool{ broker = srv.url, queue = "s" }
    local ran = srv.dir .. "/ran"
    local f = pool:submit(function(path)
      local h = io.open(path, "a"); h:write("x"); h:close()
      h = io.open(path); local n = #h:read("a"); h:close()
      if n == 1 then while true do end end  -- the first run never ends
      return "second run"
    end, ran)
    assert.is_true(H.wait_for(function() return count(ran) == 1 end, 10), a:output())
    a:kill("TERM")
    assert.equal(143, a:status(10))
    assert.matches("handing back 1 running task", a:output())
    local b = srv:worker("s", { workers = 1 })
    assert.equal("second run", f:result())
    b:kill("INT")
    assert.equal(130, b:status(10))
  end)

  it("Redis restarted (append-only file) while tasks are queued and running: all complete", function()
    srv = redis_server.start{ aof = true }
    srv:worker("r", { workers = 2 })
    srv:worker("r", { workers = 2 })
    local pool = broker_pool{ broker = srv.url, queue = "r", lease = 20 }
    local futs = {}
    for i = 1, 24 do
      futs[i] = pool:submit(function(x) require("orch").sleep(0.1); return x end, i)
    end
    orch.sleep(0.15)
    srv:restart()
    for i = 25, 30 do futs[i] = pool:submit(function(x) return x end, i) end
    for i = 1, 30 do assert.equal(i, futs[i]:result()) end
  end)

  it("with a secret, signed tasks run; unsigned and mis-signed ones are refused and dead-lettered", function()
    srv = redis_server.start()
    srv:worker("h", { workers = 1, env = "ORCH_SECRET=s3cret" })
    local signed = broker_pool{ broker = srv.url, queue = "h", secret = "s3cret" }
    assert.equal("ran", signed:submit(function() return "ran" end):result())
    local unsigned = broker_pool{ broker = srv.url, queue = "h", secret = "" }
    local u = unsigned:submit(function() return "ran" end)
    assert.is_true(u:wait(10))
    assert.matches("unsigned task refused", u:error().message)
    local wrong = broker_pool{ broker = srv.url, queue = "h", secret = "other" }
    local w = wrong:submit(function() return "ran" end)
    assert.is_true(w:wait(10))
    assert.matches("bad signature", w:error().message)
    assert.equal(2, #dead_letters(srv, "h"))
  end)

  it("a client that goes away: its queued tasks still run, its results expire", function()
    srv = redis_server.start()
    local ran = srv.dir .. "/ran"
    local out = H.run_lua(([[
      local orch = require "orch"
      local pool = orch.pool{ broker = %q, queue = "gone" }
      for i = 1, 5 do pool:submit(function(p) local f = io.open(p, "a"); f:write("x"); f:close() end, %q) end
      orch.sleep(0.2)
      print(pool.dispatcher.reply)
      os.exit(0)
    ]]):format(srv.url, ran))
    local reply = out:match("(orch:gone:results:%S+)")
    assert.is_string(reply, out)
    srv:worker("gone", { workers = 2 })
    assert.is_true(H.eventually(function() return count(ran) == 5 end, 10))
    local c = assert(redis.connect(srv.url))
    local function results()
      local n = 0
      for _, e in ipairs(c:call{ "XRANGE", reply, "-", "+" }) do
        for _, r in ipairs(stream.results(e[2])) do
          if r.status == "done" then n = n + 1 end
        end
      end
      return n
    end
    assert.is_true(H.eventually(function() return results() == 5 end, 5))
    local ttl = c:call{ "TTL", reply }
    assert.is_true(ttl > 0 and ttl <= stream.RESULT_TTL, tostring(ttl))
    c:close()
  end)
end)
