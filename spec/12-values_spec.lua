-- Values that cross processes through a pool: exact, large, shared, and
-- clear refusals that name the place of the offending value.
local orch = require "orch"
local core = require "orch.core"

describe("values through a pool", function()
  local pool
  setup(function() pool = orch.pool{ workers = 2 } end)
  teardown(function() pool:terminate() end)

  local function echo(...) return ... end

  it("keeps numbers bit-exact and strings binary-safe", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local s = table.concat(bytes)
    local r = table.pack(pool:submit(echo, math.mininteger, math.maxinteger, -0.0, 1 / 0,
      -1 / 0, 0 / 0, 0.1, s, true, false):result())
    assert.are.equal(math.mininteger, r[1])
    assert.are.equal(math.maxinteger, r[2])
    assert.are.equal(string.pack("<d", -0.0), string.pack("<d", r[3]))
    assert.are.equal(1 / 0, r[4])
    assert.are.equal(-1 / 0, r[5])
    assert.is_true(r[6] ~= r[6])
    assert.are.equal(0.1, r[7])
    assert.are.equal(s, r[8])
    assert.are.same({ true, false }, { r[9], r[10] })
    assert.are.equal("integer", math.type(r[1]))
  end)

  it("keeps shared references and cycles", function()
    local shared = { "x" }
    local t = { a = shared, b = shared }
    t.self = t
    local back = pool:submit(function(v) v.added = true return v end, t):result()
    assert.are.equal(back, back.self)
    assert.are.equal(back.a, back.b)
    assert.is_true(back.added)
  end)

  it("keeps a task function that refers to itself", function()
    local function fact(k)
      if k <= 1 then return 1 end
      return k * fact(k - 1)
    end
    assert.are.equal(3628800, pool:submit(fact, 10):result())
    -- itself among its arguments, and in a table among them
    local function me(f, t) return f == me and t[1] == me and t[2] ~= me end
    assert.is_true(pool:submit(me, me, { me, fact }):result())
  end)

  it("streams a 64 MiB value each way without blocking the loop #novalgrind", function()
    local big = string.rep("0123456789abcdef", 4 * 1024 * 1024)  -- 64 MiB
    local ticks = 0
    local timer
    local function tick() ticks = ticks + 1; timer = core.timer(0.01, tick) end
    timer = core.timer(0.01, tick)
    local fut = pool:submit(function(s) return #s, s:sub(1, 16) .. s:sub(-16), s end, big)
    local n, ends, back = fut:result()
    timer:stop()
    assert.are.equal(#big, n)
    assert.are.equal("0123456789abcdef0123456789abcdef", ends)
    assert.are.equal(big, back)
    assert.is_true(ticks > 0)  -- timers fired while the value was moving
  end)

  it("queues frames behind a big value that is still being written #novalgrind", function()
    -- one worker, so every frame goes down one channel: small tasks and a
    -- second big one are queued while the first is only partly written
    local one <close> = orch.pool{ workers = 1 }
    local big = string.rep("abcdefgh", 2 * 1024 * 1024)  -- 16 MiB
    local futs = { one:submit(echo, big) }
    for _ = 1, 3 do core.step(0) end
    for i = 1, 50 do futs[#futs + 1] = one:submit(echo, i) end
    futs[#futs + 1] = one:submit(echo, big:upper())
    for _ = 1, 3 do core.step(0) end
    for i = 51, 100 do futs[#futs + 1] = one:submit(echo, i) end
    assert.are.equal(big, futs[1]:result())
    for i = 1, 50 do assert.are.equal(i, futs[1 + i]:result()) end
    assert.are.equal(big:upper(), futs[52]:result())
    for i = 51, 100 do assert.are.equal(i, futs[2 + i]:result()) end
  end)

  it("refuses an argument that cannot cross, naming its place, at submit", function()
    assert.has_error(function()
      pool:submit(echo, 1, { conn = io.stdout })
    end, "orch.pool: submit: args[2].conn: cannot send userdata")
    assert.has_error(function()
      pool:submit(echo, coroutine.create(function() end))
    end, "orch.pool: submit: args[1]: cannot send a thread (coroutine)")
    assert.has_error(function()
      pool:submit(echo, setmetatable({}, {}))
    end, "orch.pool: submit: args[1]: cannot send a table with a metatable")
  end)

  it("refuses an upvalue that cannot cross, naming it", function()
    local handle = io.stdout
    local ok, err = pcall(pool.submit, pool, function() return handle end)
    assert.is_false(ok)
    assert.matches("upvalue 'handle'", err)
    assert.matches("userdata", err)
    -- the pool is unharmed
    assert.are.equal(1, pool:submit(echo, 1):result())
  end)

  it("fails a task whose result cannot cross", function()
    local fut = pool:submit(function() return io.stdout end)
    fut:wait()
    assert.are.equal("error", fut:error().kind)
    assert.matches("result%[1%]: cannot send userdata", fut:error().message)
    local fut2 = pool:submit(function() return function() end end)
    fut2:wait()
    assert.matches("result%[1%]", fut2:error().message)
    assert.matches("function", fut2:error().message)
  end)

  it("sends a loaded module in an upvalue by name: the worker's own", function()
    local fut = pool:submit(function()
      return orch.stopping(), core.getpid(), package.loaded.orch == orch
    end)
    local stopping, pid, same = fut:result()
    assert.is_false(stopping)
    assert.are_not.equal(core.getpid(), pid)
    assert.is_true(same)
  end)

  it("sends functions inside arguments and caches code per worker", function()
    local add = function(a, b) return a + b end
    local r = pool:submit(function(f, x) return f(x, 1) end, add, 41):result()
    assert.are.equal(42, r)
    for i = 1, 50 do
      local k = i
      assert.are.equal(k * 2, pool:submit(function() return k * 2 end):result())
    end
  end)
end)
