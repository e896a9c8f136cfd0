-- The pool's `lease` travels with each task: a node renews a task by that
-- lease and another node takes a task over once the task's own lease has
-- run out, whatever lease the nodes were started with (theirs is only for
-- tasks that carry none). Against a private redis-server and real
-- `orch worker` nodes.
local orch = require "orch"
local core = require "orch.core"
local redis = require "orch.broker.redis"
local stream = require "orch.broker.stream"
local redis_server = require "redis_server"
local H = _G.orch_spec

local count = redis_server.marks

-- Runs in a task: one mark in path, then sleeps `seconds`; its marks.
local function mark_and_sleep(path, seconds)
  local f = io.open(path, "a"); f:write("x"); f:close()
  require("orch").sleep(seconds)
  f = io.open(path); local n = #f:read("a"); f:close()
  return n
end

-- The pid of the orch worker node the marked task ran on: the parent of
-- the worker that wrote pid_path.
local function node_of(pid_path)
  local f = io.open(pid_path); local pid = f and f:read("n"); if f then f:close() end
  if not pid then return nil end
  f = io.open(("/proc/%d/stat"):format(pid)); local stat = f and f:read("a"); if f then f:close() end
  return stat and tonumber(stat:match("%) %a (%d+)"))
end

describe("orch.pool on a broker: the lease travels with each task", function()
  local srv
  after_each(function() if srv then srv:stop() end end)

  it("a node SIGKILLed mid-task: a node with a long --lease takes it over after the pool's", function()
    srv = redis_server.start()
    local a = srv:worker("l1", { workers = 1, lease = 30 })
    local pool = orch.pool{ broker = srv.url, queue = "l1", lease = 1, retries = 1 }
    finally(function() pool:terminate() end)
    local ran, pid_path = srv.dir .. "/ran", srv.dir .. "/pid"
    local f = pool:submit(function(path, pids)
      local h = io.open(pids, "w"); h:write(require("orch.core").getpid()); h:close()
      h = io.open(path, "a"); h:write("x"); h:close()
      h = io.open(path); local n = #h:read("a"); h:close()
      if n == 1 then require("orch").sleep(30) end  -- the first run never ends
      return n
    end, ran, pid_path)
    assert.is_true(H.wait_for(function() return count(ran) == 1 end, 10), a:output())
    assert.equal(a.pid, node_of(pid_path))
    local b = srv:worker("l1", { workers = 1, lease = 30 })
    orch.sleep(0.3)  -- b is up, idle, looking at a's task
    a:kill("KILL")
    local t0 = core.now()
    assert.equal(2, f:result())
    local took = core.now() - t0
    assert.is_true(took < 3, ("taken over after %.2fs"):format(took))
    assert.matches("took over", b:output())
  end)

  it("renewed by its node, a task running three times its lease is not taken over", function()
    srv = redis_server.start()
    srv:worker("l2", { workers = 1, lease = 30 })
    srv:worker("l2", { workers = 1, lease = 30 })
    local pool = orch.pool{ broker = srv.url, queue = "l2", lease = 1 }
    finally(function() pool:terminate() end)
    local ran = srv.dir .. "/ran"
    local f = pool:submit(mark_and_sleep, ran, 3)
    assert.equal(1, f:result())  -- one run: the other node never took it
    assert.equal(1, count(ran))
    -- the entry went with its result, and nothing pends
    local c = assert(redis.connect(srv.url))
    assert.equal(0, c:call{ "XLEN", stream.keys("l2").tasks })
    assert.equal(0, c:call{ "XPENDING", stream.keys("l2").tasks, stream.GROUP }[1])
    c:close()
  end)
end)
