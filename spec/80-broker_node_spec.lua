-- A broker node (orch.broker.node) serving tasks that a small client adds
-- to the stream, against a private redis-server: results and errors come
-- back, signatures are checked, a node SIGKILLed mid-task has its task
-- taken over by another once the lease ran out, TERM stops a node in order.
local core = require "orch.core"
local redis = require "orch.broker.redis"
local stream = require "orch.broker.stream"
local redis_server = require "redis_server"
local H = _G.orch_spec

local sh = redis_server.sh
local nodes = {}  -- pids of the nodes a spec started (killed after each)

-- Starts a node in its own process; returns its pid and log path.
local function start_node(srv, queue, opts)
  opts = opts or {}
  local log = srv.dir .. "/node-" .. math.random(1e9) .. ".log"
  local pid = tonumber(sh(("%s exec lua5.4 spec/scripts/broker_node.lua %s %s %d %g %g >%s 2>&1 & echo $!")
    :format(opts.env or "", srv.url, queue, opts.workers or 2, opts.lease or 30, opts.grace or 5, log)))
  nodes[#nodes + 1] = pid
  return pid, log
end

local function exit_status(pid)
  -- the node is a child of the shell that started it (gone): poll /proc
  return H.eventually(function() return not H.alive(pid) end, 10)
end

local Client = {}
Client.__index = Client

local function client(srv, queue)
  local c = assert(redis.connect(srv.url))
  return setmetatable({ c = c, keys = stream.keys(queue), after = "0",
                        reply = stream.keys(queue).results_prefix .. "spec", results = {},
                        started = {} }, Client)
end

function Client:submit(id, fn, args, extra)
  local t = { id = id, reply = self.reply, fn = fn, args = table.pack(table.unpack(args or {})) }
  for k, v in pairs(extra or {}) do t[k] = v end
  local fields = stream.task_fields(t)
  if extra and extra.tamper then extra.tamper(fields) end
  assert(self.c:call(stream.add_task(self.keys, fields)))
end

-- A task's trace: one "x" more in the file at path.
local function mark(path)
  local f = io.open(path, "a"); f:write("x"); f:close()
  f = io.open(path); local s = f:read("a"); f:close()
  return #s
end

-- Reads results until `n` have come (or timeout): id -> { status, value, node };
-- the tasks reported started go to self.started (id -> node).
function Client:collect(n, timeout)
  local deadline = core.now() + (timeout or 10)
  local count = 0
  for _ in pairs(self.results) do count = count + 1 end
  while count < n and core.now() < deadline do
    local reply = self.c:call(stream.read_results(self.reply, self.after, 100, 200), 5)
    for _, s in ipairs(reply or {}) do
      for _, e in ipairs(s[2]) do
        self.after = e[1]
        for _, f in ipairs(stream.results(e[2])) do
          if f.status == "started" then
            self.started[f.id] = f.node
          else
            local id, status, v = stream.decode_result(f)
            if not self.results[id] then count = count + 1 end
            self.results[id] = { status = status, value = v, node = f.node }
          end
        end
      end
    end
  end
  return self.results, count
end

describe("orch.broker.node", function()
  local srv
  before_each(function() srv = redis_server.start() end)
  after_each(function()
    for _, pid in ipairs(nodes) do if H.alive(pid) then os.execute("kill -9 " .. pid) end end
    nodes = {}
    srv:stop()
  end)

  it("runs tasks from the stream and writes their results and errors back", function()
    local pid, log = start_node(srv, "q1")
    local cl = client(srv, "q1")
    local base = 100
    for i = 1, 20 do cl:submit("t" .. i, function(x) return x + base, "pid" end, { i }) end
    cl:submit("bad", function() error({ code = 7 }) end)
    cl:submit("boom", function() error("boom") end)
    local results, n = cl:collect(22)
    assert.equal(22, n, H.read_file(log))
    for i = 1, 20 do
      assert.equal("done", results["t" .. i].status)
      assert.same({ 100 + i, "pid", n = 2 }, results["t" .. i].value)
    end
    assert.equal("failed", results.bad.status)
    assert.same({ code = 7 }, results.bad.value.value)
    assert.equal("error", results.boom.value.kind)
    assert.matches("boom", results.boom.value.message)
    assert.matches("traceback", results.boom.value.traceback)
    -- every entry acknowledged and deleted, with its result written
    assert.equal(0, cl.c:call{ "XLEN", cl.keys.tasks })
    assert.equal(0, cl.c:call{ "XPENDING", cl.keys.tasks, stream.GROUP }[1])
    assert.is_true(cl.c:call{ "TTL", cl.reply } > 0)
    os.execute("kill -TERM " .. pid)
    assert.is_true(exit_status(pid), "the node did not stop on TERM")
    assert.matches("node stopped by TERM", H.read_file(log))
  end)

  it("with a secret, refuses unsigned, mis-signed and foreign-bytecode tasks", function()
    local pid, log = start_node(srv, "q2", { env = "ORCH_SECRET=k1" })
    local cl = client(srv, "q2")
    local function f() return "ran" end
    cl:submit("signed", f, {}, { secret = "k1" })
    cl:submit("unsigned", f)
    cl:submit("wrongkey", f, {}, { secret = "k2" })
    cl:submit("foreign", f, {}, { secret = "k1", tamper = function(list)
      list[10] = "Lua 5.4 1b4c756154" -- the lua field, then re-signed below
      local m = stream.fields(list)
      list[16] = core.hmac_sha256("k1", table.concat({ #m.id .. ":" .. m.id, #m.reply .. ":" .. m.reply,
        #m.max .. ":" .. m.max, #m.timeout .. ":" .. m.timeout, #m.lua .. ":" .. m.lua,
        #m.p .. ":" .. m.p, #m.grace .. ":" .. m.grace }, ","))
    end })
    local results, n = cl:collect(4)
    assert.equal(4, n, H.read_file(log))
    assert.same({ "ran", n = 1 }, results.signed.value)
    assert.matches("unsigned task refused", results.unsigned.value.message)
    assert.matches("bad signature", results.wrongkey.value.message)
    assert.matches("another Lua build", results.foreign.value.message)
    assert.equal(3, cl.c:call{ "XLEN", cl.keys.dead })
    os.execute("kill -INT " .. pid)
    assert.is_true(exit_status(pid))
  end)

  it("a task whose node is SIGKILLed runs again on another node after the lease", function()
    local a, alog = start_node(srv, "q3", { lease = 1, workers = 1 })
    local cl = client(srv, "q3")
    local marker = srv.dir .. "/started"
    cl:submit("slow", function(path)
      mark(path)
      require("orch").sleep(1.5)
      return "finished"
    end, { marker })
    assert.is_true(H.eventually(function() return H.read_file(marker) == "x" end, 10), H.read_file(alog))
    os.execute("kill -9 " .. a)
    assert.is_true(exit_status(a))
    local t0 = core.now()
    local b = start_node(srv, "q3", { lease = 1, workers = 1 })
    local results, n = cl:collect(1, 15)
    assert.equal(1, n)
    assert.same({ "finished", n = 1 }, results.slow.value)
    assert.equal("xx", H.read_file(marker))
    assert.not_matches(":" .. a .. "$", results.slow.node)
    assert.is_true(core.now() - t0 < 10)
    os.execute("kill -TERM " .. b)
    assert.is_true(exit_status(b))
  end)

  it("runs an entry delivered to it whose read was lost with the connection, as its first delivery", function()
    local pid, log = start_node(srv, "q5", { workers = 1 })
    assert.is_true(H.eventually(function() return H.read_file(log):find("serving queue") end, 10))
    local cl = client(srv, "q5")
    local host = H.read_file("/proc/sys/kernel/hostname"):gsub("%s+$", "")
    -- delivered to the node's consumer, but the node never sees the read
    local fields = stream.task_fields{ id = "lost-read", reply = cl.reply, max = 1,
                                       fn = function() return "ran once" end }
    cl.c:call{ "MULTI" }
    cl.c:call(stream.add_task(cl.keys, fields))
    cl.c:call{ "XREADGROUP", "GROUP", stream.GROUP, host .. ":" .. pid, "COUNT", 1,
               "STREAMS", cl.keys.tasks, ">" }
    assert.is_table(cl.c:call{ "EXEC" })
    -- the node's connections go; it recovers what the group says it holds
    assert.is_true(cl.c:call{ "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes" } > 0)
    local results, n = cl:collect(1, 10)
    assert.equal(1, n, H.read_file(log))
    assert.equal("done", results["lost-read"].status, H.read_file(log))
    assert.same({ "ran once", n = 1 }, results["lost-read"].value)
    assert.matches("delivered here as the connection went", H.read_file(log))
  end)

  it("on TERM hands back a task it cannot finish within grace", function()
    local a, alog = start_node(srv, "q4", { lease = 30, grace = 0.3, workers = 1 })
    local cl = client(srv, "q4")
    local marker = srv.dir .. "/started"
    cl:submit("long", function(path)
      local core_ = require "orch.core"
      if mark(path) == 1 then
        while true do core_.child_sleep(1) end  -- the first run never ends
      end
      return "second run"
    end, { marker })
    assert.is_true(H.eventually(function() return H.read_file(marker) == "x" end, 10), H.read_file(alog))
    local t0 = core.now()
    os.execute("kill -TERM " .. a)
    assert.is_true(exit_status(a))
    assert.is_true(core.now() - t0 < 5, "the node took too long to stop")
    assert.matches("handing back 1 running task", H.read_file(alog))
    -- handed back: another node takes it at once, not after the 30 s lease
    start_node(srv, "q4", { lease = 30, workers = 1 })
    local results, n = cl:collect(1, 15)
    assert.equal(1, n)
    assert.same({ "second run", n = 1 }, results.long.value)
  end)
end)
