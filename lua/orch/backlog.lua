--- A pool's backlog: the tasks not yet handed to its dispatcher, oldest
-- first. A deque: a retried task goes to the back, a task a dispatcher
-- gives back (its worker died before starting it) to the front, in order.
-- A future settled while it waits here stays in place and is skipped when
-- its turn comes (it is no longer "queued"); `n` counts only the futures
-- still waiting. Once empty it starts again at index 1: a deque whose
-- indices only grow leaves Lua's array part at its first rehash and runs
-- in the hash part from then on (about 1.7x the cost of a push and pop).
local backlog = {}

function backlog.new()
  return { head = 1, tail = 0, n = 0 }
end

function backlog.push(q, fut)
  local t = q.tail + 1
  q.tail = t
  q[t] = fut
  q.n = q.n + 1
end

function backlog.push_front(q, fut)
  local h = q.head - 1
  q.head = h
  q[h] = fut
  q.n = q.n + 1
end

--- The next future still waiting, or nil.
function backlog.pop(q)
  while q.head <= q.tail do
    local h = q.head
    local fut = q[h]
    q[h] = nil
    q.head = h + 1
    if fut.status == "queued" then  -- else settled while it waited (removed)
      q.n = q.n - 1
      if h == q.tail then q.head, q.tail = 1, 0 end  -- empty: start again at 1
      return fut
    end
  end
  q.head, q.tail = 1, 0
  return nil
end

--- fut, waiting here, is being settled: it no longer counts (pop skips it).
function backlog.removed(q)
  q.n = q.n - 1
end

return backlog
