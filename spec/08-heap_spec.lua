-- The C heap's growth faulted in at once (src/heap.c): when a state grows
-- the heap (tens of megabytes of small objects), the pages it grew by are
-- resident at once, up to its new top, whether or not anything touched
-- them yet, instead of faulting one by one as they are handed out. Seen in
-- a fresh lua5.4 through /proc/self/maps (the heap's top) and
-- /proc/self/pagemap (which of its pages are present).
local H = orch_spec

local PAGES = [[
  local function heap_top()
    for line in io.lines("/proc/self/maps") do
      local to = line:match("^%x+%-(%x+) .*%[heap%]")
      if to then return tonumber(to, 16) end
    end
  end
  -- pages [from, to) present in memory: how many, of how many
  local function present(from, to)
    local f = assert(io.open("/proc/self/pagemap", "rb"))
    f:seek("set", from // 4096 * 8)
    local bytes = f:read((to - from) // 4096 * 8)
    f:close()
    local n = 0
    for i = 1, #bytes, 8 do
      if string.unpack("<I8", bytes, i) >> 63 == 1 then n = n + 1 end
    end
    return n, #bytes // 8
  end
  local t = {}
  for i = 1, 400000 do t[i] = false end -- the list itself first (a big block)
  t[1] = { 0 }
  local from = heap_top()
  for i = 1, 400000 do t[i] = { i } end -- 72 bytes each, from the heap's top
  print(present(from, heap_top()))
  -- one growth, looked at as soon as it happened: what it added is
  -- present before anything is put there
  local top, more = heap_top(), {}
  repeat more[#more + 1] = { 0 } until heap_top() ~= top
  print(present(top, heap_top()))
]]

local function counts(out)
  local n1, of1, n2, of2 = out:match("^(%d+)%s+(%d+)%s+(%d+)%s+(%d+)")
  return tonumber(n1), tonumber(of1), tonumber(n2), tonumber(of2)
end

describe("the heap's growth", function()
  -- (not under ASan or valgrind, whose allocators do not grow the heap)
  it("is resident up to the heap's top as soon as it grows #noasan #novalgrind", function()
    local out, code = H.run_lua('require "orch.core"\n' .. PAGES)
    assert.are.equal(0, code, out)
    local n, of, n_one, of_one = counts(out)
    assert.is_true(of > 6000 and of_one > 8, out)
    assert.are.equal(of, n)
    assert.are.equal(of_one, n_one)
  end)

  it("without orch.core, is touched page by page as it is handed out #noasan #novalgrind", function()
    local out, code = H.run_lua(PAGES)
    assert.are.equal(0, code, out)
    local _, _, n_one, of_one = counts(out)
    assert.is_true(of_one > 8 and n_one < of_one / 2, out)
  end)
end)
