-- map's chunks as a worker runs them (src/chunk.c): the function by its
-- id, the items read one by one from the frame's list, the results
-- encoded as they come. Empty, one, huge and mixed chunks; items that are
-- also the function's upvalues; failures named by item with the user's
-- traceback only; results that cannot cross; chunk tasks whose bytes are
-- bad; quick items in growing chunks.
local orch = require "orch"
local core = require "orch.core"

describe("map's chunks in a worker", function()
  local pool
  setup(function() pool = orch.pool{ workers = 2 } end)
  teardown(function() pool:shutdown() end)

  it("maps empty, one-item and huge chunks", function()
    local inc = function(x) return x + 1 end
    assert.are.same({}, pool:map(inc, {}, { chunk = 10 }))
    assert.are.same({ 8 }, pool:map(inc, { 7 }, { chunk = 10 }))
    local items = {}
    for i = 1, 300000 do items[i] = i * 4099 - 2 ^ 40 // 1 end
    local r = pool:map(inc, items, { chunk = 300000 })
    assert.are.equal(300000, #r)
    for i = 1, 300000, 997 do assert.are.equal(items[i] + 1, r[i]) end
    assert.are.equal(items[300000] + 1, r[300000])
  end)

  it("maps mixed items to mixed results, holes and shared tables kept", function()
    local t = { 1 }
    local items = { 1, 2.5, "s", t, true, 1e300, math.mininteger, t, -0.0, 300, { k = t } }
    local r = pool:map(function(x)
      if x == 300 then return nil end
      if type(x) == "table" and x.k then return { x.k, x.k } end
      return x
    end, items, { chunk = #items })
    assert.are.same({ 1, 2.5, "s", { 1 }, true, 1e300, math.mininteger, { 1 } }, { table.unpack(r, 1, 8) })
    assert.are.equal("float", math.type(r[9]))
    assert.are.equal(r[4], r[8])            -- one table in, one table out
    assert.is_nil(r[10])
    assert.are.equal(r[11][1], r[11][2])
    assert.are.equal(1 / 0, 1 / r[9] * -1)  -- -0.0 stays -0.0
  end)

  it("keeps an item that is also an upvalue of the function the same table", function()
    local special = { 1 }
    local r = pool:map(function(x) return x == special end, { special, { 1 }, special }, { chunk = 3 })
    assert.are.same({ true, false, true }, r)
  end)

  it("maps with a C function and a 'module.name'", function()
    assert.are.same({ 1, 2, 3 }, pool:map(math.abs, { -1, 2, -3 }, { chunk = 2 }))
    assert.are.same({ "A", "B" }, pool:map("string.upper", { "a", "b" }, { chunk = 2 }))
  end)

  it("names the failed item, its traceback the function's own", function()
    local function inner(x) if x == 3 then error("three!") end return x end
    local ok, err = pcall(pool.map, pool, function(x) return inner(x) + 0 end, { 1, 2, 3, 4 }, { chunk = 4 })
    assert.is_false(ok)
    assert.are.same({ "error", 3 }, { err.kind, err.index })
    assert.matches("^item 3: .*three!$", err.message)
    assert.matches("in upvalue 'inner'", err.traceback)
    assert.not_matches("%[C%]: in %?", err.traceback)   -- no chunk.c, no worker loop
    assert.not_matches("dispatch%.lua", err.traceback)  -- nor the parent's stack before fork
    ok, err = pcall(pool.map, pool, function(x)
      if x == 2 then error({ code = 7 }) end
      return x
    end, { 1, 2 }, { chunk = 2 })
    assert.is_false(ok)
    assert.are.same({ 2, 7 }, { err.index, err.value.code })
    assert.matches("^item 2: %(error object is a table value%)", err.message)
  end)

  it("keeps a deep traceback's first levels, without the chunk's", function()
    local function deep(n) if n == 0 then error("bottom") end local r = deep(n - 1) return r end
    for _, depth in ipairs({ 5, 12, 40 }) do
      local ok = pcall(pool.map, pool, function(x) local r = deep(x) return r end, { depth }, { chunk = 1 })
      assert.is_false(ok)
      local err
      ok, err = pcall(pool.map, pool, function(x) local r = deep(x) return r end, { depth, depth }, { chunk = 2 })
      assert.is_false(ok)
      assert.matches("in upvalue 'deep'", err.traceback)
      assert.not_matches("%[C%]: in %?", err.traceback, depth)
      assert.not_matches("dispatch%.lua", err.traceback, depth)
    end
  end)

  it("refuses a result that cannot cross, naming it", function()
    local ok, err = pcall(pool.map, pool, function(x) return x == 5 and coroutine.create(print) or x end,
      { 1, 2, 3, 4, 5, 6 }, { chunk = 6 })
    assert.is_false(ok)
    assert.matches("result%[5%]: cannot send a thread", err.message)
  end)

  it("answers a chunk task whose list is bad with an error, and goes on", function()
    local f = function(x) return x end
    local good = core.task_bytes(core.pack_chunk(f, { 1, 2, 3 }, 1, 3))
    local list = "\6\3\0\x81\x82\x83\0"
    assert.are.equal(list, good:sub(-#list))
    local head = good:sub(1, -#list - 1)
    local bad = {
      [head .. "\6\9\0\x81\x82\x83\0"] = "array size 9 exceeds",
      [head .. "\6\3\0\x81\x82\x83"] = "truncated list",
      [head .. "\6\3\0\x81\x82\x83\0\0"] = "bytes after the list",
      [head .. "\6\3\0\x81\x82\x83\1\0"] = "keys other than 1..n",
      [head .. "\6\3\0\12\4\2\4\6\0"] = "integer run of 4 values",
      [head .. "\5\3\0\x81\x82\x83\0"] = "a list expected",
      [head .. "\6\3\0\x81\x0f"] = "unknown tag 0x0f",
    }
    for bytes, why in pairs(bad) do
      local fut = pool:_enqueue(pool.default_group, bytes)
      local ok, err = pcall(fut.result, fut)
      assert.is_false(ok)
      assert.matches("bad task frame: byte %d+: .*" .. why:gsub("%p", "%%%0"), err.message)
    end
    assert.are.same({ 1, 2, 3 }, pool:map(f, { 1, 2, 3 }, { chunk = 3 }))
  end)

  it("grows the chunks of quick items, not of slow ones #novalgrind", function()
    -- chunks grow as the first results come back while the rest is
    -- packed: a million items give a loaded machine's workers time to
    -- answer before the last chunk is out
    local items = {}
    for i = 1, 1000000 do items[i] = i end
    local before = pool:stats().done
    local r = pool:map(function(x) return -x end, items)
    assert.are.equal(-1000000, r[1000000])
    local quick = pool:stats().done - before
    assert.is_true(quick < 1000, quick .. " chunks") -- 1000 items each would be 1000
    before = pool:stats().done
    r = pool:map(function(x)
      local t = os.clock() + 0.00002
      while os.clock() < t do end
      return x
    end, { table.unpack(items, 1, 20000) })
    assert.are.equal(20000, #r)
    assert.are.equal(20, pool:stats().done - before) -- 20 us each: a chunk takes 20 ms
  end)
end)
