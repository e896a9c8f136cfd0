-- The parent's cache of function code is bounded: a long-lived parent that
-- submits ever new code (generated closures) hands out at most a fixed
-- number of function ids, and past that each task of new code carries its
-- code itself; results stay right either way, and the code's source is
-- still known.
local orch = require "orch"
local core = require "orch.core"

local function generated(k)
  return assert(load(("return function(x) return x * %d + %d end"):format(k, k), "=gen" .. k))()
end

describe("the function cache", function()
  it("stops growing at its bound; tasks of new code then carry their code", function()
    local pool <close> = orch.pool{ workers = 2 }
    local known, max = core.functions_known()
    local n = max - known + 150  -- past the bound
    local futs = {}
    for k = 1, n do futs[k] = pool:submit(generated(k), 3) end
    for k = 1, n do assert.equal(3 * k + k, futs[k]:result()) end
    known = core.functions_known()
    assert.equal(max, known)
    -- past the bound, a function travels inline: still right, the cache still full
    local f = generated(n + 1)
    local task = core.pack_task(f, 5)
    assert.equal("gen" .. (n + 1) .. ":1", core.task_source(task))
    assert.equal(5 * (n + 1) + n + 1, pool:submit(f, 5):result())
    assert.equal(5 * (n + 1) + n + 1, pool:submit(f, 5):result())  -- twice: not cached
    assert.equal(max, (core.functions_known()))
    -- new code with upvalues travels inline with them
    local base = 10
    local g = function(x) return x + base end
    assert.equal(11, pool:submit(g, 1):result())
    -- code cached before the bound keeps its id (the same code, a new closure)
    assert.same({ 4 * 2 + 2 }, pool:map(generated(2), { 4 }))
    assert.equal(max, (core.functions_known()))
  end)
end)
