-- The pool's backlog (orch.backlog): a deque of futures, oldest first, that
-- skips the ones settled while they waited.
local backlog = require "orch.backlog"

local function fut(name) return { name = name, status = "queued" } end

describe("orch.backlog", function()
  it("pops in order, a future given back first, and skips settled ones", function()
    local q = backlog.new()
    local a, b, c, d = fut "a", fut "b", fut "c", fut "d"
    backlog.push(q, a); backlog.push(q, b); backlog.push(q, c)
    backlog.push_front(q, d)
    b.status = "cancelled"; backlog.removed(q)
    assert.equal(3, q.n)
    local out = {}
    for f in function() return backlog.pop(q) end do out[#out + 1] = f.name end
    assert.same({ "d", "a", "c" }, out)
    assert.equal(0, q.n)
  end)

  it("starts again at index 1 once empty, whether the last one was taken or skipped", function()
    local q = backlog.new()
    for round = 1, 3 do
      for i = 1, 100 do backlog.push(q, fut(i)) end
      assert.equal(100, q.tail, "round " .. round)
      for _ = 1, 99 do assert.truthy(backlog.pop(q)) end
      if round == 2 then
        q[q.tail].status = "done"; backlog.removed(q)  -- the last one is skipped
        assert.is_nil(backlog.pop(q))
      else
        assert.truthy(backlog.pop(q))
      end
      assert.same({ 1, 0, 0 }, { q.head, q.tail, q.n })
      for k in pairs(q) do assert.equal("string", type(k)) end  -- no slot left behind
    end
    local first = fut "first"
    backlog.push_front(q, first)  -- into an empty backlog
    assert.equal(first, backlog.pop(q))
    assert.same({ 1, 0, 0 }, { q.head, q.tail, q.n })
  end)
end)
