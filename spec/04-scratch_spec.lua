-- The scratch buffers that encode, pack_task and pack_chunk fill: a call
-- that raises halfway, or a call made from a finalizer while another one
-- is filling its buffer, never spoils what a later or outer call makes.
local core = require "orch.core"
local function packed(...) return core.task_bytes(core.pack_task(...)) end

describe("scratch buffers", function()
  local function add(a, b) return a + b end

  it("a refused value leaves the next pack_task and encode whole", function()
    local task, bytes = packed(add, 1, { 2, 3 }), core.encode({ 1, "x" }, 2)
    for _ = 1, 3 do
      assert.is_false(pcall(core.pack_task, add, 1, { io.stdout }))
      assert.is_false(pcall(core.encode, { 1, "x" }, io.stdout))
      assert.are.equal(task, packed(add, 1, { 2, 3 }))
      assert.are.equal(bytes, core.encode({ 1, "x" }, 2))
    end
  end)

  it("a finalizer that encodes while another call encodes spoils neither", function()
    local items = {}
    for i = 1, 200 do items[i] = { i, tostring(i) } end
    local outer, inner = core.encode(items), core.encode({ 1, "x" }, 2)
    local outer_task = packed(add, items)
    local bad, ran = 0, 0
    collectgarbage("incremental", 1, 1000, 0) -- a collection step at every chance
    for _ = 1, 20 do
      for _ = 1, 20 do
        setmetatable({}, { __gc = function()
          ran = ran + 1
          if core.encode({ 1, "x" }, 2) ~= inner then bad = bad + 1 end
          if packed(add, 1, { 2, 3 }) ~= packed(add, 1, { 2, 3 }) then bad = bad + 1 end
        end })
      end
      if core.encode(items) ~= outer then bad = bad + 1 end
      if packed(add, items) ~= outer_task then bad = bad + 1 end
    end
    collectgarbage("incremental", 200, 100, 13) -- Lua's defaults
    collectgarbage()
    assert.is_true(ran > 0)
    assert.are.equal(0, bad)
  end)
end)
