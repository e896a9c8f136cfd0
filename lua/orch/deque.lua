--- A plain FIFO in a table: items at q[q.head .. q.tail], taken from the
-- front, added at either end. Emptied, it starts again at index 1, so
-- its items stay in the table's array part: a deque whose indices only
-- grow leaves the array part at its first rehash and runs in the hash
-- part from then on. (orch.backlog is one of these that also counts and
-- skips the futures settled while they wait.)
local deque = {}

function deque.new()
  return { head = 1, tail = 0 }
end

function deque.len(q)
  return q.tail - q.head + 1
end

function deque.push(q, v)
  local t = q.tail + 1
  q.tail = t
  q[t] = v
end

function deque.push_front(q, v)
  local h = q.head - 1
  q.head = h
  q[h] = v
end

--- The first item, or nil when it is empty.
function deque.pop(q)
  local h = q.head
  if h > q.tail then return nil end
  local v = q[h]
  q[h] = nil
  if h == q.tail then q.head, q.tail = 1, 0 else q.head = h + 1 end
  return v
end

return deque
