--- A pool's backlog: the tasks not yet handed to its dispatcher, oldest
-- first. An orch.deque (so back at index 1 once empty): a retried task
-- goes to the back, a task a dispatcher gives back (its worker died before
-- starting it) to the front, in order. A future settled while it waits
-- here stays in place and is skipped when its turn comes (it is no longer
-- "queued"); `n` counts only the futures still waiting.
local deque = require "orch.deque"

local backlog = {}
local push, push_front, pop = deque.push, deque.push_front, deque.pop

function backlog.new()
  local q = deque.new()
  q.n = 0
  return q
end

function backlog.push(q, fut)
  push(q, fut)
  q.n = q.n + 1
end

function backlog.push_front(q, fut)
  push_front(q, fut)
  q.n = q.n + 1
end

--- The next future still waiting, or nil.
function backlog.pop(q)
  local fut = pop(q)
  while fut and fut.status ~= "queued" do  -- settled while it waited (removed)
    fut = pop(q)
  end
  if fut then q.n = q.n - 1 end
  return fut
end

--- fut, waiting here, is being settled: it no longer counts (pop skips it).
function backlog.removed(q)
  q.n = q.n - 1
end

return backlog
