-- orch.deque: a plain FIFO (a queue's items, a broker node's waiting
-- entries) that starts again at index 1 once empty.
local deque = require "orch.deque"

describe("orch.deque", function()
  it("pops in order, an item pushed to the front first, and nil when empty", function()
    local q = deque.new()
    assert.is_nil(deque.pop(q))
    deque.push(q, "a"); deque.push(q, "b"); deque.push_front(q, "z")
    assert.equal(3, deque.len(q))
    assert.same({ "z", "a", "b" }, { deque.pop(q), deque.pop(q), deque.pop(q) })
    assert.equal(0, deque.len(q))
    assert.is_nil(deque.pop(q))
    assert.equal(0, deque.len(q))  -- a pop of an empty deque leaves it as it was
  end)

  it("starts again at index 1 once empty, with no slot left behind", function()
    local q = deque.new()
    for round = 1, 3 do
      for i = 1, 100 do deque.push(q, i) end
      assert.equal(100, q.tail, "round " .. round)
      for i = 1, 100 do assert.equal(i, deque.pop(q)) end
      assert.same({ 1, 0 }, { q.head, q.tail })
      for k in pairs(q) do assert.equal("string", type(k)) end
    end
    deque.push_front(q, "only")  -- into an empty deque
    assert.equal("only", deque.pop(q))
    assert.same({ 1, 0 }, { q.head, q.tail })
  end)
end)
