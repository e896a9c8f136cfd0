-- Faults inside a task that must not leak into what is reported for it or
-- into the next task on the same worker: memory errors, a signal mask the
-- task changed, a busy loop inside a coroutine when a stop comes.
local orch = require "orch"
local H = orch_spec

describe("a task that runs out of memory", function()
  -- an address-space limit and the sanitizers' shadow memory do not mix
  it("fails with its own cause, not the previous task's message #noasan #novalgrind", function()
    -- the job's address space is capped, so the big string cannot be had
    local out, code = H.run_lua([[
      local orch = require "orch"
      local pool <close> = orch.pool{ workers = 1 }
      local first = pool:submit(function() error("the first task's own error") end)
      assert(first:wait(5) and first:error().message:find("the first task's own error"))
      local fut = pool:submit(function() return #string.rep("x", (1 << 30) + 7) end)
      assert(fut:wait(10))
      local err = fut:error()
      print("kind=" .. err.kind, "message=" .. err.message, "traceback=" .. tostring(err.traceback))
      -- the worker goes on, and a plain error after it is its own again
      local after = pool:submit(function() error("third", 0) end)
      assert(after:wait(5))
      print("after=" .. after:error().message, after:error().traceback:find("third") ~= nil)
    ]], "prlimit --as=400000000")
    assert.are.equal(0, code, out)
    assert.matches("kind=error\tmessage=not enough memory\ttraceback=nil\n", out, 1, true)
    assert.matches("after=third\ttrue\n", out, 1, true)
  end)
end)

describe("a task that changes its worker's signals", function()
  local dir
  setup(function()
    dir = require("scripts.sup_proc").tmpdir()
    assert(os.execute(("cc -shared -fPIC -I/usr/include/lua5.4 -o %s/sigmask.so spec/fixtures/sigmask.c")
      :format(dir)))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("leaves the next task a worker that a stop request still reaches", function()
    local pool <close> = orch.pool{ workers = 1, grace = 5 }
    local lib = dir .. "/sigmask.so"
    local core = require "orch.core"
    assert.is_nil(pool:submit(function(path)
      local m = package.loadlib(path, "luaopen_sigmask")()
      m.block_all()
      m.ignore_rt(4)  -- the stop signal
      m.ignore_rt(5)  -- the parent-death signal
    end, lib):result())
    -- the next task on that worker: nothing blocked, and a timeout interrupts it
    local blocked = pool:submit(function(path)
      local m = package.loadlib(path, "luaopen_sigmask")()
      return m.blocked(require("orch.core").signum("CHLD"))
    end, lib):result()
    assert.is_false(blocked)
    local t0 = core.now()
    local fut = pool:group{ timeout = 0.5 }:submit(function() while true do end end)
    assert.is_true(fut:wait(10))
    assert.are.equal("timeout", fut:error().kind)
    assert.is_true(core.now() - t0 < 3, "interrupted only after the grace period")
  end)
end)

describe("a busy loop inside a coroutine", function()
  local core = require "orch.core"

  local function interrupted_quickly(body)
    local pool <close> = orch.pool{ workers = 1, grace = 5 }
    local t0 = core.now()
    local fut = pool:group{ timeout = 0.3 }:submit(body)
    assert.is_true(fut:wait(10))
    local err = fut:error()
    assert.are.equal("timeout", err.kind)
    assert.is_true(core.now() - t0 < 3, "interrupted only by the SIGKILL after the grace period")
    assert.are.equal(0, pool:stats().restarts)  -- the worker was not killed
    return err
  end

  it("is interrupted by a timeout (coroutine.wrap)", function()
    interrupted_quickly(function() coroutine.wrap(function() while true do end end)() end)
  end)

  it("is interrupted by a timeout (coroutine.resume, started before the stop)", function()
    interrupted_quickly(function()
      local co = coroutine.create(function()
        coroutine.yield()
        while true do end
      end)
      coroutine.resume(co)
      local _, err = coroutine.resume(co)
      error(err, 0)  -- the coroutine's "timeout" is the task's
    end)
  end)

  it("is interrupted inside a coroutine that a coroutine resumed", function()
    interrupted_quickly(function()
      coroutine.wrap(function()
        coroutine.wrap(function() while true do end end)()
      end)()
    end)
  end)
end)
