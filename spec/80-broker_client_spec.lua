-- The Redis client on orch's loop (core.redis_connect) and its Lua layer
-- (orch.broker.redis), against a private redis-server.
local core = require "orch.core"
local redis = require "orch.broker.redis"
local redis_server = require "redis_server"
local H = _G.orch_spec

-- Sends argv on conn and runs the loop until the answer: reply, err.
local function ask(conn, argv)
  local done, reply, err
  assert(conn:command(argv, function(r, e) done, reply, err = true, r, e end))
  assert(H.wait_for(function() return done end, 5), "no answer to " .. argv[1])
  return reply, err
end

describe("core.redis_connect", function()
  local srv
  setup(function() srv = redis_server.start() end)
  teardown(function() srv:stop() end)

  it("answers each command with the reply as Lua values, in order", function()
    local c <close> = assert(core.redis_connect{ path = srv.path })
    assert.same({ ok = "PONG" }, ask(c, { "PING" }))
    assert.same({ ok = "OK" }, ask(c, { "SET", "k", "a\0b" }))
    assert.equal("a\0b", ask(c, { "GET", "k" }))
    assert.equal(7, ask(c, { "INCRBY", "n", 7 }))
    local r, err = ask(c, { "GET", "missing" })
    assert.is_nil(r); assert.is_nil(err)
    assert.same({ n = 0 }, ask(c, { "LRANGE", "none", 0, -1 }))
    local e = ask(c, { "NOSUCHCOMMAND" })
    assert.matches("^ERR unknown command", e.err)
    ask(c, { "XADD", "s", "1-1", "f", "v" })
    assert.same({ { "1-1", { "f", "v", n = 2 }, n = 2 }, n = 1 }, ask(c, { "XRANGE", "s", "-", "+" }))
    -- pipelined: many commands in one turn come back in order
    local got = {}
    for i = 1, 200 do
      c:command({ "INCR", "seq" }, function(v) got[#got + 1] = v == i end)
    end
    assert.is_true(H.wait_for(function() return #got == 200 end))
    for i = 1, 200 do assert.is_true(got[i]) end
    assert.equal(0, c:waiting())
    -- without fn: sent, its answer dropped; a MULTI's EXEC answers for all
    assert.is_true(c:command{ "MULTI" })
    for _ = 1, 3 do assert.is_true(c:command{ "INCR", "seq" }) end
    local exec
    c:command({ "EXEC" }, function(v) exec = v end)
    assert.equal(5, c:waiting())
    assert.is_true(H.wait_for(function() return exec ~= nil end))
    assert.same({ 201, 202, 203, n = 3 }, exec)
    assert.equal(0, c:waiting())
  end)

  it("flush writes what was sent at once, before the loop runs", function()
    local c <close> = assert(core.redis_connect{ path = srv.path })
    assert.same({ ok = "PONG" }, ask(c, { "PING" }))  -- connected
    local function get()  -- another client, while this process runs no loop
      return (redis_server.sh(("redis-cli -s %s GET flushed"):format(srv.path)):gsub("%s+$", ""))
    end
    c:command{ "SET", "flushed", "no" }
    assert.equal("", get())  -- still in the output buffer
    c:command{ "SET", "flushed", "yes" }
    c:flush()
    assert.equal("yes", get())
  end)

  it("close: waiting commands get nil, 'closed'; later commands nil, 'closed'; idempotent", function()
    local c = assert(core.redis_connect{ path = srv.path })
    local r, e, called = "x", nil, 0
    c:command({ "BLPOP", "never", 10 }, function(a, b) r, e, called = a, b, called + 1 end)
    c:command{ "BLPOP", "never", 10 }  -- nobody waits for this one
    c:close()
    assert.equal(1, called); assert.is_nil(r); assert.equal("closed", e)
    assert.same({ nil, "closed" }, { c:command({ "PING" }, function() end) })
    c:close()
    assert.equal("closed", c:error())
    assert.is_false(c:connected())
  end)

  it("an unreachable server is an error, never a hang", function()
    local t0 = core.now()
    local c, err = core.redis_connect{ path = srv.dir .. "/nothing.sock" }
    assert.is_nil(c)
    assert.equal("connect to " .. srv.dir .. "/nothing.sock: No such file or directory", err)
    local r, why = redis.connect("redis://127.0.0.1:1/0", { timeout = 2 })
    assert.is_nil(r)
    assert.equal("connect to 127.0.0.1:1: Connection refused", why)
    assert.is_true(core.now() - t0 < 2)
  end)

  it("tells the owner when the server goes away", function()
    local other = redis_server.start()
    finally(function() other:stop() end)
    local lost
    local c <close> = assert(core.redis_connect{ path = other.path,
      on_disconnect = function(e) lost = e end })
    ask(c, { "PING" })
    other:kill()
    assert.is_true(H.wait_for(function() return lost ~= nil end))
    assert.matches("^connection to .* lost", lost)
    assert.matches("lost", c:error())
  end)

  it("a connection made before a fork is closed in the child", function()
    local orch = require "orch"
    local c <close> = assert(core.redis_connect{ path = srv.path })
    assert.same({ ok = "OK" }, ask(c, { "CLIENT", "SETNAME", "forked-test" }))
    local pool <close> = orch.pool{ workers = 1 }
    assert.equal(1, pool:submit(function() return 1 end):result())
    c:close()
    local watcher <close> = assert(core.redis_connect{ path = srv.path })
    assert.is_true(H.wait_for(function()
      return not ask(watcher, { "CLIENT", "LIST" }):find("name=forked-test", 1, true)
    end, 3), "the child kept the parent's connection open")
  end)

  it("checks its arguments", function()
    assert.has_error(function() core.redis_connect() end)
    assert.has_error(function() core.redis_connect{} end,
      "orch.redis_connect: option 'host' or 'path' is required")
    assert.has_error(function() core.redis_connect{ host = "h", path = "/p" } end,
      "orch.redis_connect: give 'host' or 'path', not both")
    assert.has_error(function() core.redis_connect{ host = "h", port = 0 } end,
      "orch.redis_connect: option 'port' must be an integer in 1..65535")
    assert.has_error(function() core.redis_connect{ path = "/p", bogus = 1 } end)
    assert.has_error(function() core.redis_connect{ path = "/p", timeout = -1 } end)
    assert.has_error(function() core.redis_connect{ path = "/p", on_disconnect = 1 } end)
    local c <close> = assert(core.redis_connect{ path = srv.path })
    assert.has_error(function() c:command({}, function() end) end)
    assert.has_error(function() c:command({ "GET", {} }, function() end) end)
    assert.has_error(function() c:command({ "PING" }, "not a function") end)
    assert.has_error(function() c.command({ "PING" }, function() end) end)
  end)
end)

describe("orch.broker.redis", function()
  it("parses URLs and says what is wrong with a bad one", function()
    assert.same({ host = "h", port = 7000, db = 3, password = "pw" },
      redis.parse_url("redis://:pw@h:7000/3"))
    assert.same({ host = "h", port = 6379, db = 0, user = "u", password = "p@ss" },
      redis.parse_url("redis://u:p%40ss@h"))
    assert.same({ path = "/tmp/r.sock", db = 2 }, redis.parse_url("unix:///tmp/r.sock?db=2"))
    assert.has_error(function() redis.parse_url("http://h") end)
    assert.has_error(function() redis.parse_url("redis://h:99999") end)
    assert.has_error(function() redis.parse_url("unix://") end)
    assert.has_error(function() redis.parse_url(42) end)
    assert.has_error(function() redis.connect("redis://h", { bogus = 1 }) end)
  end)

  it("authenticates and selects the database of the URL", function()
    local srv = redis_server.start{ tcp = true, password = "s3cret" }
    finally(function() srv:stop() end)
    local c <close> = assert(redis.connect((srv.url:gsub("/0$", "/5"))))
    assert.same({ ok = "OK" }, c:call{ "SET", "where", "five" })
    local plain <close> = assert(redis.connect("unix://:s3cret@" .. srv.path))
    assert.is_nil(plain:call{ "GET", "where" })
    assert.same({ ok = "OK" }, plain:call{ "SELECT", 5 })
    assert.equal("five", plain:call{ "GET", "where" })
    local bad, err = redis.connect("unix://:wrong@" .. srv.path)
    assert.is_nil(bad)
    assert.matches("AUTH: WRONGPASS", err)
  end)

  it("reconnects by itself after the server restarts", function()
    local srv = redis_server.start()
    finally(function() srv:stop() end)
    local back = 0
    local c <close> = assert(redis.connect(srv.url, { on_reconnect = function() back = back + 1 end }))
    assert.same({ ok = "OK" }, c:call{ "SET", "a", 1 })
    srv:kill()
    assert.is_true(H.wait_for(function() return not c:connected() end))
    local r, err = c:call{ "PING" }
    assert.is_nil(r); assert.matches("^disconnected: ", err)
    srv:restart()
    assert.is_true(H.wait_for(function() return back == 1 end, 10))
    assert.same({ ok = "PONG" }, c:call{ "PING" })
  end)
end)
