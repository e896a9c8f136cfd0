-- Queues used from pool tasks and services: 3 producer tasks, 2 consumer
-- tasks, a handle passed as an argument and captured as an upvalue.
-- Prints "ok <name>" per check; any failure raises (exit 1).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"

local q = orch.queue{ capacity = 5 }
local results = orch.queue{}
local pool <close> = orch.pool{ workers = 5 }

local producers = {}
for p = 1, 3 do
  producers[p] = pool:submit(function(queue, base)
    for i = 1, 100 do assert(queue:put(base + i)) end
    return true
  end, q, p * 1000)
end
local consumers = {}
for c = 1, 2 do
  consumers[c] = pool:submit(function()   -- q and results are upvalues
    local n = 0
    while true do
      local v, err = q:get(5)
      if v == nil then assert(err == "closed", err); return n end
      assert(results:put(v))
      n = n + 1
    end
  end)
end
for _, f in ipairs(producers) do assert(f:result()) end
q:close()
local total = consumers[1]:result() + consumers[2]:result()
assert(total == 300, total)
local seen, count = {}, 0
while #results > 0 do
  local v = results:get(0)
  assert(not seen[v], "duplicate " .. tostring(v))
  seen[v] = true
  count = count + 1
end
assert(count == 300)
print("ok many producers and consumers")

-- timeouts, full and closed as seen from a task
local small = orch.queue{ capacity = 1 }
local f = pool:submit(function(s)
  local a, ea = s:get(0.05)
  assert(s:put("x"))
  local b, eb = s:put("y", 0.05)
  local n = s:len()
  s:close()
  local c, ec = s:put("z")
  return tostring(a) .. ea, tostring(b) .. eb, n, tostring(c) .. ec, s:get(), select(2, s:get())
end, small)
local r = table.pack(f:result())
assert(r[1] == "niltimeout" and r[2] == "nilfull" and r[3] == 1 and r[4] == "nilclosed"
  and r[5] == "x" and r[6] == "closed", table.concat({ tostring(r[1]), tostring(r[2]), tostring(r[3]), tostring(r[4]), tostring(r[5]), tostring(r[6]) }, " "))
print("ok timeout full closed in a task")

-- a get waiting in a task is answered by a put in the parent
local waiting = orch.queue{}
local g = pool:submit(function(w) return w:get(10) end, waiting)
orch.sleep(0.1)
assert(waiting:put({ nested = { 1, 2, 3 } }))
assert(g:result().nested[3] == 3)
print("ok parked get answered")

-- a put waiting in the parent (full queue) is answered by a get in a task
local one = orch.queue{ capacity = 1 }
assert(one:put(1))
local h = pool:submit(function(o) require("orch").sleep(0.1); return o:get() end, one)
assert(one:put(2, 10))
assert(h:result() == 1 and one:get(0) == 2)
print("ok parked put answered")
