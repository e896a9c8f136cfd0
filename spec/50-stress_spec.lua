-- Long runs (make stress; tagged #slow so make test stays fast): many
-- tasks while workers are SIGKILLed at random, and pools made and dropped
-- in a loop, with nothing lost and nothing leaked.
local orch = require "orch"
local H = orch_spec

describe("stress #slow", function()
  it("200,000 tasks while workers are killed from outside: each ends once", function()
    local pool <close> = orch.pool{ workers = 4, retries = 3 }
    local futs, n = {}, 200000
    for i = 1, n do
      futs[i] = pool:submit(function(x) return x * 2 end, i)
      if i % 20000 == 0 then
        local w = pool.slots[(i // 20000) % 4 + 1]
        if w then os.execute("kill -KILL " .. w.pid) end
      end
    end
    local done = 0
    for i = 1, n do
      assert.are.equal(i * 2, futs[i]:result())
      done = done + 1
    end
    assert.are.equal(n, done)
    assert.is_true(pool:stats().restarts >= 1)
  end)

  it("makes and drops 200 pools without leaking a process or an fd", function()
    local fds = H.fd_count()
    for i = 1, 200 do
      local pool = orch.pool{ workers = 2 }
      assert.are.equal(i, pool:submit(function(x) return x end, i):result())
      if i % 3 == 0 then pool:shutdown() elseif i % 3 == 1 then pool:terminate() end
      pool = nil  -- luacheck: ignore
      if i % 10 == 0 then collectgarbage() end
    end
    collectgarbage()
    collectgarbage()
    local kids, zombies = H.children()
    assert.are.same({}, kids)
    assert.are.equal(0, zombies)
    assert.are.equal(fds, H.fd_count())
  end)
end)
