-- The serializer reads and writes the integers of a table's array part in
-- place (src/array.c) when this Lua's tables are laid out as Lua 5.4's.
-- Whatever a table's shape (holes, hash parts, keys that live in the hash
-- part, a length hint left by #, floats that look like integers, the
-- small-integer bounds), the bytes and the values are those of the API's
-- path, which core.set_array_in_place(false) selects.
local core = require "orch.core"

local function both(f)
  core.set_array_in_place(false)
  local ok, slow = pcall(f)
  core.set_array_in_place(true)
  assert(ok, slow)
  return slow, f()
end

-- Tables of many shapes, each with a name.
local function shapes()
  local list = {}
  local function add(name, t) list[#list + 1] = { name, t } end
  add("empty", {})
  local seq = {}
  for i = 1, 1000 do seq[i] = i * 977 - 400000 end
  add("a sequence", seq)
  add("the small-integer bounds", { -33, -32, -31, 126, 127, 128, 0, -1, 1 })
  add("extremes", { math.mininteger, math.maxinteger, -1, math.mininteger + 1, 2 ^ 53 // 1 })
  add("floats among integers", { 1, 2.0, 3, -0.0, 4, -1 / 0, 5, 1 / 0, 6.5, 7 })
  add("mixed values", { 1, "two", 3, { 4 }, true, 600, false, 700, "x" })
  add("holes", { 1, 2, nil, 400, 500, nil, nil, 800 })
  add("a hash part too", { 1, 2, 300, n = 3, [1.5] = "f", x = { 1 } })
  local back = {}
  for i = 300, 1, -1 do back[i] = i * 1000 end -- keys that went to the hash part
  add("filled backwards", back)
  local shrunk = {}
  for i = 1, 64 do shrunk[i] = i * 1000 end
  for i = 64, 41, -1 do shrunk[i] = nil end
  local _ = #shrunk -- leaves a length hint below the array's size
  add("emptied at the end, then measured", shrunk)
  local sparse = {}
  for i = 1, 50 do sparse[i * 3] = i * 1000 end
  add("sparse", sparse)
  local removed = {}
  for i = 1, 100 do removed[i] = i * 1000 end
  removed.key = true
  removed.key = nil -- a hash part, empty again
  add("an emptied hash part", removed)
  local shared = { 1000 }
  add("shared tables", { shared, 2000, shared, { shared }, 3000 })
  local big = {}
  for i = 1, 200000 do big[i] = (i % 3 == 0) and -i or i * 65536 end
  add("200k integers", big)
  return list
end

describe("integers in place", function()
  it("is on for this Lua", function()
    assert.is_true(core.array_in_place())
  end)

  it("encodes every shape to the bytes the API's path makes", function()
    for _, s in ipairs(shapes()) do
      local slow, fast = both(function() return core.encode(s[2]) end)
      assert.are.equal(slow, fast, s[1])
    end
  end)

  it("decodes every shape to the values the API's path makes", function()
    for _, s in ipairs(shapes()) do
      local bytes = core.encode(s[2])
      local slow, fast = both(function() return core.decode(bytes) end)
      assert.are.same(slow, fast, s[1])
      assert.are.same(s[2], fast, s[1])
      for k, v in pairs(fast) do -- integers stay integers, floats floats
        assert.are.equal(math.type(s[2][k]), math.type(v), s[1])
      end
    end
  end)

  it("encodes slices inside, across and outside the array part", function()
    local t = {}
    for i = 1, 100 do t[i] = i * 1000 end
    t[101], t[150], t[-3], t[0] = "x", 15, 7000, 8000 -- in the hash part
    local cases = { { 1, 100 }, { 50, 160 }, { -5, 10 }, { 90, 200 }, { 101, 100 }, { 0, 0 } }
    for _, c in ipairs(cases) do
      local slow, fast = both(function() return core.encode_slice(t, c[1], c[2]) end)
      assert.are.equal(slow, fast, ("%d..%d"):format(c[1], c[2]))
      local want = {}
      for i = c[1], c[2] do want[i - c[1] + 1] = t[i] end
      assert.are.same(want, core.decode(fast))
    end
  end)

  it("decodes a list into tables with and without room for it", function()
    local list = {}
    for i = 1, 3000 do list[i] = i % 5 == 0 and i * 1e6 or i end
    local bytes = core.encode_slice(list, 1, 3000)
    for _, base in ipairs({ 1, 2, 1000, 2999, 100000 }) do
      local outs = { core.array(3000), {}, { 1, 2, 3, x = 1 } }
      for _, out in ipairs(outs) do
        local copy = {}
        for k, v in pairs(out) do copy[k] = v end
        assert.are.equal(3000, core.decode_into(bytes, out, base))
        for i = 1, 3000 do copy[base + i - 1] = list[i] end
        assert.are.same(copy, out)
      end
    end
  end)

  -- (huge pages are asked for, not checked: the kernel may have none free)
  it("makes map's output table with room for every item, a big one too", function()
    local n = 600000 -- an array part of 9.6 MB: asks for huge pages
    local t = core.array(n)
    assert.are.equal(0, #t)
    for i = 1, n do t[i] = i end
    assert.are.equal(n, #t)
    assert.are.equal(n, core.decode_into(core.encode_slice(t, 1, n), t, 1))
    assert.are.equal(n, t[n])
    assert.matches("out of range", select(2, pcall(core.array, 0x80000000)))
  end)

  -- In a process of its own under a 2 GB address space limit, so that the
  -- allocation fails on any machine (the big block's mapping, then the
  -- state's own allocator); the state goes on allocating after it. (ASan
  -- cannot run under such a limit.)
  it("says 'not enough memory' when the table cannot be made, and the state goes on #noasan", function()
    local out, code = orch_spec.run_lua([[
      local core = require "orch.core"
      local ok, err = pcall(core.array, 0x7fffffff) -- 32 GB
      assert(not ok and err:find("not enough memory"), err)
      local s = {}
      for i = 1, 100000 do s[i] = ("x"):rep(i % 100) .. i end
      collectgarbage()
      assert(#core.array(1000) == 0 and #s == 100000)
      print("fine")
    ]], "ulimit -v 2000000;")
    assert.are.equal(0, code, out)
    assert.matches("fine", out)
  end)

  it("refuses what it refused before, saying the same", function()
    for _, s in ipairs({
      "\6\2\0\12\3\xd0\x0f\xa0\x1f\x80\0", -- a run longer than the array part
      "\6\2\0\12\2\xd0\x0f", -- cut short
      "\6\2\0\12\1\xd0\x0f\0", -- a run of one
      "\6\2\0\12\2\xd0\x8f\x8f\x8f\x8f\x8f\x8f\x8f\x8f\x8f\x8f\0", -- over 64 bits
    }) do
      local slow, fast = both(function() return select(2, pcall(core.decode, s)) end)
      assert.are.equal(slow, fast)
      assert.matches("^orch%.core%.decode: byte %d+: ", fast)
      slow, fast = both(function() return select(2, pcall(core.decode_into, s, {}, 1)) end)
      assert.are.equal(slow, fast)
      assert.matches("^orch%.core%.decode_into: byte %d+: ", fast)
    end
  end)
end)
