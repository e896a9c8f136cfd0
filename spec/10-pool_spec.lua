-- The pool and its futures: submit, result, map, imap, states, stats,
-- close/join/shutdown/terminate, init, to-be-closed.
local orch = require "orch"
-- what its tests provoke on purpose (kills after a grace period, failing
-- inits) is logged: collected, not written into busted's output
setup(orch_spec.quiet_logs)
teardown(orch_spec.restore_logs)
local core = require "orch.core"
local H = orch_spec
local wait_for = H.wait_for

describe("orch.pool", function()
  local pool
  before_each(function() pool = orch.pool{ workers = 2 } end)
  after_each(function() pool:terminate() end)

  it("runs a function in another process and returns all its values", function()
    local fut = pool:submit(function(a, b) return a + b, "sum", nil, core.getpid() end, 40, 2)
    local sum, word, none, pid = fut:result()
    assert.are.equal(42, sum)
    assert.are.equal("sum", word)
    assert.is_nil(none)
    assert.are_not.equal(core.getpid(), pid)
    assert.are.equal("done", fut:state())
    assert.is_true(fut:done())
    assert.is_nil(fut:error())
  end)

  it("returns each shape of values as the task returned them", function()
    -- one value that is neither nil nor a table is kept as it is
    -- (src/dispatch.c); the rest in a list: one table, nil, none, several
    local function returns(...)
      local fut = pool:submit(function(...) return ... end, ...)
      return table.pack(fut:result())
    end
    assert.are.same({ n = 1, 7 }, returns(7))
    assert.are.same({ n = 1, 2.5 }, returns(2.5))
    assert.are.same({ n = 1, "word" }, returns("word"))
    assert.are.same({ n = 1, { 1, x = 2 } }, returns({ 1, x = 2 }))
    assert.are.same({ n = 1, false }, returns(false))
    assert.are.same({ n = 1 }, returns(nil))
    assert.are.same({ n = 0 }, returns())
    assert.are.same({ n = 3, nil, 2, nil }, returns(nil, 2, nil))
    assert.are.same({ n = 2, "a", "b" }, returns("a", "b"))
    -- a group's results and map with chunks of one take the first value
    local g = pool:group()
    g:submit(function() return "one", "two" end)
    g:submit(function() return 5 end)
    g:submit(function() return { 5 } end)
    assert.are.same({ n = 3, "one", 5, { 5 } }, g:wait(10))
    assert.are.same({ "a!", "b!" }, pool:map(function(s) return s .. "!" end, { "a", "b" }, { chunk = 1 }))
  end)

  it("copies upvalues by value and sees the worker's globals", function()
    local base, t = 10, { 1, 2, 3 }
    local fut = pool:submit(function(x)
      t[1] = 99                       -- a copy: the parent's t is unchanged
      return base + x + #t, type(string.format)
    end, 5)
    assert.are.same({ 18, "function" }, { fut:result() })
    assert.are.equal(1, t[1])
  end)

  it("runs each new closure with its own upvalues and its own code", function()
    -- closures of one prototype share its code, each with its upvalues;
    -- two functions on one line, and chunks loaded under one name, differ
    local futs = {}
    for i = 1, 100 do
      local k = i
      local f, g = function(x) return x + k end, function(x) return x * k end
      local h = load("return function(x) return x - " .. i .. " end", "=same")()
      futs[#futs + 1] = { pool:submit(f, 1), 1 + k }
      futs[#futs + 1] = { pool:submit(g, 2), 2 * k }
      futs[#futs + 1] = { pool:submit(h, 0), -i }
      if i % 25 == 0 then collectgarbage() end  -- closures seen before go
    end
    for _, p in ipairs(futs) do assert.are.equal(p[2], p[1]:result()) end
  end)

  it("runs a 'module.name' string and a C function", function()
    assert.are.equal("ab", pool:submit("string.rep", "a", 1):result() .. "b")
    assert.are.equal("x-x-x", pool:submit(string.rep, "x", 3, "-"):result())
    assert.are.equal("number", type(pool:submit(os.time):result()))
  end)

  it("raises a TaskError with the worker's traceback", function()
    local function inner() error("bad thing") end
    local fut = pool:submit(function() inner() end)
    local ok, err = pcall(fut.result, fut)
    assert.is_false(ok)
    assert.is_true(orch.TaskError.is(err))
    assert.are.equal("error", err.kind)
    assert.matches("bad thing", err.message)
    assert.matches("in upvalue 'inner'", err.traceback)
    assert.are.equal(1, err.attempts)
    assert.is_number(err.pid)
    assert.matches("task failed", tostring(err))
    assert.are.equal("failed", fut:state())
    assert.are.equal(err, fut:error())
  end)

  it("keeps a table error value when it can cross", function()
    local fut = pool:submit(function() error({ code = 7 }) end)
    fut:wait()
    assert.are.same({ code = 7 }, fut:error().value)
  end)

  it("waits with a timeout", function()
    local fut = pool:submit(function() os.execute("sleep 0.5") return 1 end)
    assert.are.same({ nil, "timeout" }, { fut:wait(0.05) })
    assert.is_false(fut:done())
    assert.is_true(fut:wait(5))
  end)

  it("calls on_done in the parent, and at once for an ended future", function()
    local seen = {}
    local fut = pool:submit(function() return 5 end)
    fut:on_done(function(f) seen[#seen + 1] = f:state() end)
    fut:wait()
    fut:on_done(function(f) seen[#seen + 1] = "late " .. f:state() end)
    assert.are.same({ "done", "late done" }, seen)
  end)

  it("lets an on_done callback wait for other tasks, however the answers come in", function()
    -- every 7th callback submits a task and waits for it, inside the
    -- parent's loop: the pool must go on feeding its workers meanwhile
    -- (a hang is the failure: the script runs in a process of its own
    -- under a time limit)
    local out, code = orch_spec.run_lua([[
      local orch = require "orch"
      local pool <close> = orch.pool{ workers = 2 }
      local futs, inner = {}, 0
      for i = 1, 300 do
        futs[i] = pool:submit(function(x) return x + 1 end, i)
        futs[i]:on_done(function()
          if i % 7 == 0 then
            local v = pool:submit(function(x) return x * 2 end, i):result()
            inner = inner + v
          end
        end)
      end
      local sum = 0
      for i = 1, 300 do sum = sum + futs[i]:result() end
      print("sum", sum, "inner", inner)
    ]], "timeout -k 5 30")
    assert.are.equal(0, code, out)
    local want = 0
    for i = 7, 300, 7 do want = want + 2 * i end
    assert.matches("sum 45450 inner " .. want, out:gsub("\t", " "), 1, true)
  end)

  it("hands a task to an idle worker at once: it runs while the script goes on computing", function()
    local one <close> = orch.pool{ workers = 1 }
    one:submit(function() end):result()  -- the worker is up and idle
    local t0 = core.now()
    local fut = one:submit(function() return require("orch.core").now() end)
    local spin = core.now()
    while core.now() - spin < 0.3 do end  -- no turn of the loop meanwhile
    local started = fut:result()
    assert.is_true(started - t0 < 0.2, "the task started " .. (started - t0) .. " s after its submit")
  end)

  it("sends a task straight to an idle worker, and the rest in the order they came", function()
    local one <close> = orch.pool{ workers = 1 }
    local function started(pause) local t = core.now(); orch.sleep(pause); return t end
    local first = one:submit(started, 0.2)  -- to the idle worker at once
    assert.is_true(wait_for(function() return first:state() == "running" end, 5))
    local later = {}
    for i = 1, 5 do later[i] = one:submit(started, 0) end  -- the worker is busy: they wait
    assert.are.equal("queued", later[5]:state())
    local at = first:result()
    for i = 1, 5 do
      local t = later[i]:result()
      assert.is_true(t > at, ("task %d started before the one submitted before it"):format(i))
      at = t
    end
  end)

  it("takes a reply from any worker while it waits, not only from the one it last gave a task", function()
    pool:map(function() end, { 1, 2, 3, 4 }, { chunk = 1 })  -- both workers up and idle
    local function pause(s) orch.sleep(s); return require("orch.core").getpid() end
    local quick = pool:submit(pause, 0.005)
    local slow = pool:submit(pause, 1)  -- the other worker: the last one handed a task
    local t0 = core.now()
    local pid = quick:result()
    assert.is_true(core.now() - t0 < 0.5, "the quick reply came " .. (core.now() - t0) .. " s late")
    assert.are_not.equal(pid, slow:result())
    -- and the worker that stays silent can die: its end is seen the same
    local dying = pool:submit(function() os.exit(3) end)
    local ok, err = pcall(dying.result, dying)
    assert.is_false(ok)
    assert.are.equal("crashed", err.kind)
    assert.are.equal(5, pool:submit(function(x) return x end, 5):result())
  end)

  it("cancels a queued task, which never runs", function()
    local tmp = os.tmpname()
    local blockers = {}
    for i = 1, 2 do blockers[i] = pool:submit(function() os.execute("sleep 0.3") end) end
    local fut = pool:submit(function(path) local f = io.open(path, "w") f:write("ran") f:close() end, tmp)
    assert.are.equal("queued", fut:state())
    assert.is_true(fut:cancel())
    assert.are.equal("cancelled", fut:state())
    for _, b in ipairs(blockers) do b:wait() end
    pool:submit(function() end):wait()
    assert.are.equal("", H.read_file(tmp))
    os.remove(tmp)
    assert.are.equal("cancelled", fut:error().kind)
    assert.is_false(fut:cancel())
  end)

  it("maps in order, with and without chunks", function()
    local items = {}
    for i = 1, 1000 do items[i] = i end
    local sq = function(x) return x * x end
    local r1 = pool:map(sq, items)
    local r2 = pool:map(sq, items, { chunk = 64 })
    for i = 1, 1000 do
      assert.are.equal(i * i, r1[i])
      assert.are.equal(i * i, r2[i])
    end
    assert.are.same({}, pool:map(sq, {}))
  end)

  it("maps in chunks sized from the items and the workers unless told", function()
    local items = {}
    for i = 1, 1000 do items[i] = i end
    local inc = function(x) return x + 1 end
    local function tasks_of(opts)
      local before = pool:stats().done
      local r = pool:map(inc, items, opts)
      assert.are.equal(1001, r[1000])
      return pool:stats().done - before
    end
    assert.are.equal(8, tasks_of(nil))  -- 4 chunks for each of 2 workers
    assert.are.equal(8, tasks_of({ chunk = "auto" }))
    assert.are.equal(1000, tasks_of({ chunk = 1 }))
    assert.are.same({ 2, 3 }, pool:map(inc, { 1, 2 }))  -- fewer items than chunks: 1 each
    local n = 0
    for _ in pool:imap(inc, items) do n = n + 1 end
    assert.are.equal(1000, n)
  end)

  it("maps chunks of tables, keeping shared items shared within a chunk", function()
    local shared = { n = 1 }
    local items = { shared, shared, { n = 3 }, { n = 4 }, { n = 5 } }
    local r = pool:map(function(t) return t end, items, { chunk = 2 })
    assert.are.equal(r[1], r[2])
    assert.are.same({ 1, 1, 3, 4, 5 }, { r[1].n, r[2].n, r[3].n, r[4].n, r[5].n })
    assert.has_error(function()
      pool:map(function(x) return x end, { 1, io.stdout }, { chunk = 2 })
    end, "items[2]: cannot send userdata")
  end)

  it("maps chunks whose results have holes, or cannot cross", function()
    local r = pool:map(function(x) if x % 2 == 0 then return x end end, { 1, 2, 3, 4, 5, 6, 7 }, { chunk = 3 })
    assert.are.same({ nil, 2, nil, 4, nil, 6, nil }, { table.unpack(r, 1, 7) })
    local ok, err = pcall(pool.map, pool, function(x)
      return x == 5 and io.stdout or x
    end, { 1, 2, 3, 4, 5, 6 }, { chunk = 4 })
    assert.is_false(ok)
    assert.is_true(orch.TaskError.is(err))
    assert.matches("result%[1%]: cannot send userdata", err.message)
    assert.are.same({ 10, 20, 30 }, pool:map(function(x) return 10 * x end, { 1, 2, 3 }, { chunk = 2 }))
  end)

  it("raises the first failure of a map", function()
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 3 then error("three") end
      return x
    end, { 1, 2, 3, 4 }, { chunk = 1 })
    assert.is_false(ok)
    assert.is_true(orch.TaskError.is(err))
    assert.matches("three", err.message)
  end)

  it("imaps in order and in completion order", function()
    local got = {}
    for i, v in pool:imap(function(x) return x * 2 end, { 1, 2, 3, 4, 5 }, { chunk = 2 }) do
      got[#got + 1] = { i, v }
    end
    assert.are.same({ { 1, 2 }, { 2, 4 }, { 3, 6 }, { 4, 8 }, { 5, 10 } }, got)
    local order = {}
    local delays = { 0.4, 0 }
    for i, v in pool:imap(function(d) os.execute("sleep " .. d) return d end, delays, { ordered = false }) do
      order[#order + 1] = i
      assert.are.equal(delays[i], v)
    end
    assert.are.same({ 2, 1 }, order)
  end)

  it("sends short tasks ahead even to more workers than cores #novalgrind", function()
    -- a task's time as the parent sees it is mostly waiting for a core
    -- when 64 workers share a few: scaled by the share, the pipeline
    -- stays deep instead of one task (and one wake-up) at a time
    local many <close> = orch.pool{ workers = 64 }
    local futs = {}
    for i = 1, 20000 do futs[i] = many:submit(function(x) return x end, i) end
    local depth = 0  -- the deepest seen while every worker is busy (the tail drains)
    for i = 1, 20000 do
      assert.are.equal(i, futs[i]:result())
      if i % 500 == 0 and i <= 15000 then depth = math.max(depth, many.dispatcher.pipeline) end
    end
    assert.is_true(depth >= 8, "pipeline " .. depth)
  end)

  it("counts in stats", function()
    local s = pool:stats()
    assert.are.same({ workers = 2, idle = 2, queued = 0, running = 0, done = 0,
      failed = 0, cancelled = 0, restarts = 0 }, s)
    pool:submit(function() end):wait()
    pool:submit(function() error("x") end):wait()
    s = pool:stats()
    assert.are.equal(1, s.done)
    assert.are.equal(1, s.failed)
  end)

  it("runs init once in each worker", function()
    local p <close> = orch.pool{ workers = 2, init = function() _G.initialised = (_G.initialised or 0) + 1 end }
    local r = p:map(function() return _G.initialised end, { 1, 2, 3, 4, 5, 6 })
    for _, v in ipairs(r) do assert.are.equal(1, v) end
  end)

  it("fails the queued work when init keeps failing", function()
    local p <close> = orch.pool{ workers = 1, init = function() error("no database") end }
    local fut = p:submit(function() return 1 end)
    fut:wait(10)
    assert.are.equal("failed", fut:state())
    assert.matches("no database", fut:error().message)
  end)
end)

describe("closing a pool", function()
  it("close stops new tasks; join waits for the work and the workers", function()
    local pool = orch.pool{ workers = 2 }
    local futs = {}
    for i = 1, 10 do futs[i] = pool:submit(function(x) return x end, i) end
    pool:close()
    assert.has_error(function() pool:submit(function() end) end, "orch.pool: submit on a closed pool")
    assert.is_true(pool:join(10))
    for i = 1, 10 do assert.are.equal(i, futs[i]:result()) end
    local kids = H.children()
    assert.are.equal(0, #kids)
  end)

  it("join before close is an error; join can time out", function()
    local pool = orch.pool{ workers = 1 }
    assert.has_error(function() pool:join() end)
    pool:submit(function() os.execute("sleep 1") end)
    pool:close()
    assert.are.same({ nil, "timeout" }, { pool:join(0.05) })
    pool:terminate()
  end)

  it("shutdown waits for everything by default", function()
    local pool = orch.pool{ workers = 2 }
    local fut = pool:submit(function() os.execute("sleep 0.2") return "ok" end)
    assert.is_true(pool:shutdown())
    assert.are.equal("ok", fut:result())
    assert.are.equal(0, #H.children())
  end)

  it("shutdown{cancel_pending} cancels what is queued", function()
    local pool = orch.pool{ workers = 1 }
    local running = pool:submit(function() os.execute("sleep 0.3") return 1 end)
    local queued = pool:submit(function() return 2 end)
    assert.is_true(wait_for(function() return running:state() == "running" end))
    pool:shutdown{ cancel_pending = true, grace = 2 }
    assert.are.equal("cancelled", queued:state())
    assert.is_true(running:done())
    assert.are.equal(0, #H.children())
  end)

  it("terminate kills at once and fails what ran and waited", function()
    local pool = orch.pool{ workers = 2 }
    local futs = {}
    for i = 1, 5 do futs[i] = pool:submit(function() os.execute("sleep 5") end) end
    orch.sleep(0.1)
    local t0 = core.now()
    pool:terminate()
    assert.is_true(core.now() - t0 < 1)
    for i = 1, 5 do
      assert.are.equal("failed", futs[i]:state())
      assert.are.equal("killed", futs[i]:error().kind)
    end
    local kids, zombies = H.children()
    assert.are.equal(0, #kids)
    assert.are.equal(0, zombies)
  end)

  it("shuts down when it goes out of scope", function()
    local pid
    do
      local pool <close> = orch.pool{ workers = 1 }
      pid = pool:submit(function() return require("orch.core").getpid() end):result()
      assert.is_true(H.alive(pid))
    end
    assert.is_false(H.alive(pid))
    assert.are.equal(0, #H.children())
  end)
end)
