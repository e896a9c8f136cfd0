-- Workers that die at any instant: the running task fails "crashed", a
-- new worker takes the slot, and the pool goes on. No hang, ever.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec
local wait_for = H.wait_for

local function getpid() return require("orch.core").getpid() end

describe("a worker that dies", function()
  local pool
  before_each(function() pool = orch.pool{ workers = 2 } end)
  after_each(function() pool:terminate() end)

  it("by os.exit(7): the task crashes with exit_code 7, the pool goes on", function()
    local fut = pool:submit(function() os.exit(7) end)
    fut:wait()
    local err = fut:error()
    assert.are.equal("crashed", err.kind)
    assert.are.equal(7, err.exit_code)
    assert.is_nil(err.signal)
    assert.are.equal("crashed: worker exited with code 7", err.message)
    assert.matches("^task crashed %(pid %d+%): worker exited with code 7$", tostring(err))
    assert.are.equal(3, pool:submit(function() return 3 end):result())
    local s = pool:stats()
    assert.are.equal(2, s.workers)
    assert.are.equal(1, s.restarts)
  end)

  it("by a segfault: the task crashes with signal 11", function()
    local fut = pool:submit(function()
      os.execute("kill -SEGV " .. require("orch.core").getpid())
      os.execute("sleep 5")
    end)
    fut:wait()
    assert.are.equal("crashed", fut:error().kind)
    assert.are.equal(11, fut:error().signal)
    assert.are.equal("crashed: killed by SIGSEGV", fut:error().message)
    assert.are.equal("ok", pool:submit(function() return "ok" end):result())
  end)

  it("by a SIGKILL from outside, while running", function()
    local pid_fut = pool:submit(getpid)
    local pid = pid_fut:result()
    local futs = {}
    for i = 1, 6 do futs[i] = pool:submit(function() os.execute("sleep 0.3") return i end) end
    local victim
    -- running there: its `sleep` started (a task whose frame has not left
    -- yet never ran, and would run elsewhere). No event of ours tells
    -- that: polled, with the loop running in between.
    assert.is_true(H.eventually(function()
      orch.sleep(0.01)
      for _, f in ipairs(futs) do
        if f:state() == "running" and #H.children(f.worker.pid) > 0 then
          victim = f.worker.pid
          return true
        end
      end
    end, 10))
    assert.is_number(victim)
    os.execute("kill -KILL " .. victim)
    local crashed, done = 0, 0
    for _, f in ipairs(futs) do
      f:wait()
      if f:state() == "done" then done = done + 1 else
        crashed = crashed + 1
        assert.are.equal("crashed", f:error().kind)
        assert.are.equal(9, f:error().signal)
        assert.are.equal("crashed: killed by SIGKILL", f:error().message)
      end
    end
    assert.are.equal(1, crashed)
    assert.are.equal(5, done)
    assert.are.equal(2, pool:stats().workers)
    assert.is_true(pool:stats().restarts >= 1)
    assert.is_number(pid)
  end)

  it("while idle: it is replaced and tasks still run", function()
    local pids = {}
    for _, w in pairs(pool.slots) do pids[#pids + 1] = w.pid end
    os.execute("kill -KILL " .. pids[1])
    -- the worker's exit is an event of the loop: wait on it, no polling
    assert.is_true(wait_for(function()
      return pool:stats().restarts == 1 and pool:stats().workers == 2
    end))
    local r = pool:map(function(x) return x + 1 end, { 1, 2, 3, 4 })
    assert.are.same({ 2, 3, 4, 5 }, r)
  end)

  it("while idle, unheard of: the task sent to it never ran, and runs on its replacement", function()
    local one <close> = orch.pool{ workers = 1 }
    local dead = one:submit(getpid):result()
    os.execute("kill -KILL " .. dead)
    -- dead and not reaped: the pool's loop has not run since, so the
    -- task goes to this worker, and its frame cannot be written there
    assert.is_true(H.eventually(function()
      local st = H.stat(dead)
      return st ~= nil and st.state == "Z"
    end))
    local fut = one:submit(getpid)
    local pid = fut:result()
    assert.are_not.equal(dead, pid)
    assert.are.equal(1, fut.attempts)
    assert.are.equal(1, one:stats().restarts)
  end)

  it("never wedges the pool, whatever instant it dies", function()
    -- workers die at random points of a stream of small tasks
    local futs = {}
    for i = 1, 400 do
      futs[i] = pool:submit(function(n)
        if n % 37 == 0 then os.exit(1) end
        return n
      end, i)
    end
    local crashed = 0
    for i, f in ipairs(futs) do
      assert.is_true(f:wait(20))
      if f:state() == "done" then assert.are.equal(i, f:result()) else crashed = crashed + 1 end
    end
    assert.are.equal(10, crashed)
    assert.are.equal(10, pool:stats().restarts)
  end)

  it("retries a crashed task when asked to", function()
    local p <close> = orch.pool{ workers = 1, retries = 2 }
    local marker = os.tmpname()
    local fut = p:submit(function(path)
      local f = io.open(path, "a") f:write("x") f:close()
      local n = #io.open(path):read("a")
      if n < 3 then os.exit(9) end
      return n
    end, marker)
    assert.are.equal(3, fut:result())
    os.remove(marker)
  end)
end)

describe("max_tasks_per_worker", function()
  it("recycles workers after N tasks", function()
    local pool <close> = orch.pool{ workers = 1, max_tasks_per_worker = 3 }
    local pids = {}
    for i = 1, 9 do pids[i] = pool:submit(function() return require("orch.core").getpid() end):result() end
    local distinct = {}
    for _, p in ipairs(pids) do distinct[p] = (distinct[p] or 0) + 1 end
    local n = 0
    for _, count in pairs(distinct) do n = n + 1; assert.are.equal(3, count) end
    assert.are.equal(3, n)
  end)
end)

describe("no leaks", function()
  local function count_fds() return H.fd_count() end

  it("leaves no process, zombie or fd after shutdown, <close> and gc", function()
    local fds = count_fds()
    local p1 = orch.pool{ workers = 3 }
    p1:map(function(x) return x end, { 1, 2, 3 })
    p1:shutdown()
    do
      local p2 <close> = orch.pool{ workers = 2 }
      p2:submit(function() end):wait()
    end
    local p3 = orch.pool{ workers = 2 }
    p3:submit(function() end):wait()
    p3 = nil  -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local kids, zombies = H.children()
    assert.are.same({}, kids)
    assert.are.equal(0, zombies)
    assert.are.equal(fds, count_fds())
    assert.are.equal(core.getpid(), core.getpid())
  end)

  it("gives each worker its own channel and none of its siblings'", function()
    local function worker_fds(pid)
      local tmp = os.tmpname()
      os.execute(("ls /proc/%d/fd > %s"):format(pid, tmp))
      local n = 0
      for _ in io.lines(tmp) do n = n + 1 end
      os.remove(tmp)
      return n
    end
    local pool <close> = orch.pool{ workers = 3 }
    pool:map(function(x) return x end, { 1, 2, 3 })
    local counts = {}
    for i = 1, 3 do counts[i] = worker_fds(pool.slots[i].pid) end
    assert.are.same({ counts[1], counts[1], counts[1] }, counts)
    -- a replacement, forked on its own, holds as many
    local old = pool.slots[2].pid
    os.execute("kill -9 " .. old)
    assert.is_true(H.wait_for(function()
      return pool.slots[2] and pool.slots[2].pid ~= old and pool.slots[2].proc:alive()
    end))
    -- (counted until it settles: a child just forked still closes what it
    -- inherited of its siblings' channels)
    local new = pool.slots[2].pid
    assert.is_true(H.eventually(function() return worker_fds(new) == counts[1] end, 10),
      ("the replacement holds %d fds, its siblings %d"):format(worker_fds(new), counts[1]))
  end)
end)

-- A worker forked while the parent holds other children has their procs
-- in its copy of the state: they are closed there (core.spawn closes
-- their fds in the child without writing to them, and a method call sees
-- them closed), and nothing done to them there reaches their children.
describe("procs a worker inherits", function()
  it("are closed in the worker, and their children go on", function()
    local first <close> = orch.pool{ workers = 2 }
    local pids = { first.slots[1].pid, first.slots[2].pid }
    rawset(_G, "orch_spec_inherited", first)
    local second <close> = orch.pool{ workers = 1 }
    rawset(_G, "orch_spec_inherited", nil)
    local seen = second:submit(function()
      local msg = require("orch.core").msg
      local got = {}
      for i, slot in ipairs(rawget(_G, "orch_spec_inherited").slots) do
        local p = slot.proc
        got[i] = { p:alive(), p:pid(), p:send(msg.SEND, "x"), p:pending(), tostring(p) }
        p:kill()
        p:close()
        got[i][6] = p:alive()
      end
      return got
    end):result()
    for i = 1, 2 do
      assert.are.same({ false, 0, false, 0, "orch.proc (pid 0)", false }, seen[i])
    end
    assert.are.same(pids, { first.slots[1].pid, first.slots[2].pid })
    assert.are.same({ 1, 2 }, first:map(function(x) return x end, { 1, 2 }))
    assert.are.same({ 0, 0 }, { first:stats().restarts, second:stats().restarts })
  end)
end)

-- A worker takes its small Lua objects from a slab of its own (alloc.c):
-- objects that grow and shrink across its size classes and out of it,
-- kept or collected, stay intact, and freed memory is reused.
describe("a worker's memory", function()
  local function churn(rounds)
    local kept, sum = {}, 0
    for r = 1, rounds do
      local batch = {}
      for i = 1, 2000 do
        local t = {}
        for k = 1, (i * 7 + r) % 80 do t[k] = k end  -- array parts of all sizes
        t.s = ("x"):rep((i * 13) % 700) .. i          -- short and long strings
        t.f = function() return i end
        batch[i] = t
      end
      for i = 1, #batch, 97 do kept[#kept + 1] = batch[i] end
      collectgarbage()
    end
    for _, t in ipairs(kept) do
      for k = 1, #t do assert(t[k] == k) end
      sum = sum + #t + #t.s + t.f()
    end
    return sum
  end

  it("keeps objects intact through allocation and collection", function()
    local pool <close> = orch.pool{ workers = 1 }
    assert.are.equal(churn(5), pool:submit(churn, 5):result())
  end)

  -- (not under ASan, whose quarantine holds freed memory back on purpose)
  it("does not grow when the same work is done again #noasan", function()
    local pool <close> = orch.pool{ workers = 1 }
    local function rss(pid)
      for line in io.lines(("/proc/%d/status"):format(pid)) do
        local kib = line:match("^VmRSS:%s+(%d+)")
        if kib then return tonumber(kib) end
      end
    end
    pool:submit(churn, 5):wait()
    local pid = pool.slots[1].pid
    local before = rss(pid)
    for _ = 1, 5 do pool:submit(churn, 5):wait() end
    assert.is_true(rss(pid) - before < 2048, "a worker grew by more than 2 MiB")
  end)
end)
