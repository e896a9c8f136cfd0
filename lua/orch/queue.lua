--- orch.queue: bounded FIFO queues between the parent and its children.
--
-- The parent is the broker. A queue's items live in the parent only; a
-- child (a service or a pool task) reaches them with a CALL frame,
-- core.call("queue", op, id, ...), and the parent answers with one REPLY.
-- A get on an empty queue or a put on a full one is parked in the parent
-- and answered when an item or a slot comes, when the queue is closed, or
-- when its timeout (a core.timer) expires. The parent's own put/get park
-- the same way and run the loop until they are answered.
--
-- Why nothing is lost in an ordered shutdown: a put is answered only once
-- its item is in the parent's queue, and the parent dispatches every frame
-- a child wrote before it reports the child's exit (proc.c). So when the
-- supervisor asks a consumer to stop (only after its producers exited),
-- every item they put is already in the queue for the consumer's get.
--
-- How a queue crosses into a child: a handle is a plain table
-- { __orch_queue = id, put = ..., get = ..., close = ..., len = ... }
-- whose methods are fields (small functions whose only upvalue is _ENV:
-- they look the module up with require), so a copy without a metatable
-- still works. Its metatable (for #q and tostring) carries __wire = true,
-- which lets the serializer send the handle as that plain table: a handle
-- can be a task argument or a task function's upvalue. A service, being a
-- fork, simply inherits it. In a pool task #q is 0 (no metatable arrived);
-- use q:len() there.
--
-- Once a service is asked to stop (wake), its gets no longer wait: an
-- empty queue answers nil, "timeout" at once, so a consumer blocked in
-- q:get() sees orch.stopping() and drains what is left.
--
-- The module registers itself with orch.child as the answer to "queue"
-- CALLs, and hears there of children's stop steps and exits; pools and
-- supervisors do not know it.
local core = require "orch.core"
local check = require "orch.check"
local loop = require "orch.loop"
local child = require "orch.child"
local deque = require "orch.deque"

local M = {}

local REPLY = core.msg.REPLY

local queues = {}  -- id -> state, in the parent
local next_id = 0
local stopping = setmetatable({}, { __mode = "k" })  -- procs asked to stop

local Handle = { __name = "orch.queue", __wire = true }

-- the methods a handle carries as fields (only upvalue: _ENV)
local function h_put(self, v, timeout) return require("orch.queue").put(self, v, timeout) end
local function h_get(self, timeout) return require("orch.queue").get(self, timeout) end
local function h_close(self) return require("orch.queue").close(self) end
local function h_len(self) return require("orch.queue").len(self) end

function Handle.__len(self) return M.len(self) end
function Handle.__tostring(self) return ("orch.queue (%d)"):format(self.__orch_queue) end

-- -------------------------------------------------------------------------
-- the parent's side: state and the broker

local function count(st) return deque.len(st.items) end

-- A waiter is { reply = fn(ok, x) -> delivered, proc = proc|nil, value,
-- timer }. Waiters wait in an orch.deque each (getters, putters);
-- answered ones are marked done, and dropped once they reach the front.
local function first_waiter(list)
  while deque.len(list) > 0 do
    local w = list[list.head]
    if not w.done then return w end
    deque.pop(list)
  end
  return nil
end

local function finish(w, ok, x)
  w.done = true
  if w.timer then w.timer:stop(); w.timer = nil end
  return w.reply(ok, x)
end

-- reply to a child: false when it can no longer be reached
local function child_reply(proc)
  return function(ok, x)
    if not proc:alive() then return false end
    return (pcall(proc.send, proc, REPLY, ok, x))
  end
end

-- Hands items to waiting getters and slots to waiting putters until
-- neither can move.
local function pump(st)
  local moved = true
  while moved do
    moved = false
    while count(st) > 0 do
      local w = first_waiter(st.getters)
      if not w then break end
      local v = deque.pop(st.items)
      if not finish(w, true, v) then deque.push_front(st.items, v) end  -- gone: keep it
      moved = true
    end
    while count(st) < st.capacity do
      local w = first_waiter(st.putters)
      if not w then break end
      if finish(w, true) then deque.push(st.items, w.value) end  -- a gone putter's item is not in
      moved = true
    end
  end
  if st.closed then
    local w = first_waiter(st.putters)
    while w do finish(w, nil, "closed"); w = first_waiter(st.putters) end
    if count(st) == 0 then
      w = first_waiter(st.getters)
      while w do finish(w, nil, "closed"); w = first_waiter(st.getters) end
    end
  end
end

local function park(list, w, timeout, why)
  deque.push(list, w)
  if timeout then
    w.timer = core.timer(timeout, function()
      if not w.done then finish(w, nil, why) end
    end)
  end
end

-- The broker's put and get: reply(ok, x) is called once, now or later.
local function do_put(st, v, timeout, reply, proc)
  if st.closed then return reply(nil, "closed") end
  if count(st) < st.capacity and not first_waiter(st.putters) then
    deque.push(st.items, v)
    reply(true)
    return pump(st)
  end
  if timeout == 0 then return reply(nil, "full") end
  park(st.putters, { reply = reply, value = v, proc = proc }, timeout, "full")
end

local function do_get(st, timeout, reply, proc)
  if count(st) > 0 then
    local v = deque.pop(st.items)
    if not reply(true, v) then deque.push_front(st.items, v) end
    return pump(st)
  end
  if st.closed then return reply(nil, "closed") end
  if timeout == 0 or (proc and stopping[proc]) then return reply(nil, "timeout") end
  park(st.getters, { reply = reply, proc = proc }, timeout, "timeout")
end

local function do_close(st)
  st.closed = true
  pump(st)
end

-- A handle's id; a copy that crossed into a pool task has no metatable,
-- so a handle is known by its field.
local function state_of(self, fn)
  local id = type(self) == "table" and rawget(self, "__orch_queue")
  if not id then check.dot_call(Handle, fn) end
  return id
end


local function parent_state(id)
  local st = queues[id]
  if not st then check.fail("orch.queue", "queue %d is not known here", id) end
  return st
end

-- The parent's own blocking operation: runs the loop until answered.
local function wait_local(st, op, ...)
  local answered, ok, x = false, nil, nil
  local function reply(a, b)
    answered, ok, x = true, a, b
    return true
  end
  local args = table.pack(...)
  if op == "put" then do_put(st, args[1], args[2], reply) else do_get(st, args[1], reply) end
  if not answered then
    local good, err = pcall(loop.wait, function() return answered end)
    if not good then
      -- interrupted: withdraw the request, and give back an item it got
      for _, list in ipairs({ st.putters, st.getters }) do
        for i = list.head, list.tail do
          local w = list[i]
          if w.reply == reply and not w.done then
            w.done = true
            if w.timer then w.timer:stop() end
          end
        end
      end
      if answered and op == "get" and ok then deque.push_front(st.items, x); pump(st) end
      error(err, 0)
    end
  end
  if ok then
    if op == "get" then return x end
    return true
  end
  return nil, x
end

-- -------------------------------------------------------------------------
-- the public operations (a handle's methods call these)

--- A queue handle's methods: q:put, q:get, q:close, q:len.
-- @section Queue

--- q:put(v, timeout): adds v (any value that crosses processes but nil),
-- waiting at most timeout seconds (nil: no limit) for room.
-- @return true, or nil, "full" | "closed"
function M.put(self, v, timeout)
  local id = state_of(self, "put")
  if v == nil then check.fail("orch.queue", "put: cannot put nil") end
  check.timeout("orch.queue", "put", timeout)
  if core.in_child() then
    local ok, err = core.call("queue", "put", id, v, timeout)
    if ok then return true end
    return nil, err
  end
  local st = parent_state(id)
  local good, err = pcall(core.encode, v)  -- it must be able to reach a child
  if not good then check.fail("orch.queue", "put: %s", tostring(err)) end
  return wait_local(st, "put", v, timeout)
end

--- q:get(timeout): takes the oldest item, waiting at most timeout seconds
-- (nil: no limit) for one.
-- @return the item, or nil, "timeout" | "closed"
function M.get(self, timeout)
  local id = state_of(self, "get")
  check.timeout("orch.queue", "get", timeout)
  if core.in_child() then
    local ok, x = core.call("queue", "get", id, timeout)
    if ok then return x end
    return nil, x
  end
  return wait_local(parent_state(id), "get", timeout)
end

--- q:close(): no more puts; gets take what is left, then answer nil,
-- "closed".
function M.close(self)
  local id = state_of(self, "close")
  if core.in_child() then
    core.call("queue", "close", id)
    return
  end
  do_close(parent_state(id))
end

--- q:len() (or #q in the parent): the number of items in the queue.
-- @treturn integer
function M.len(self)
  local id = state_of(self, "len")
  if core.in_child() then
    local n = core.call("queue", "len", id)
    return n or 0
  end
  return count(parent_state(id))
end

-- Answers one "queue" CALL frame from a child: (op, id, ...).
local function serve_call(proc, op, id, ...)
  local st = queues[id]
  if not st then
    local why = ("orch.queue: queue %s is not known to the parent"):format(tostring(id))
    pcall(proc.send, proc, REPLY, nil, why)
    return
  end
  local reply = child_reply(proc)
  if op == "put" then
    local v, timeout = ...
    do_put(st, v, timeout, reply, proc)
  elseif op == "get" then
    do_get(st, (...), reply, proc)
  elseif op == "close" then
    do_close(st)
    reply(true)
  elseif op == "len" then
    reply(count(st))
  else
    reply(nil, ("orch.queue: unknown operation '%s'"):format(tostring(op)))
  end
end

-- Calls fn(waiter) for each call of proc still parked on a queue; with
-- gets_only, for its gets alone.
local function each_wait(proc, gets_only, fn)
  for _, st in pairs(queues) do
    for _, list in ipairs(gets_only and { st.getters } or { st.getters, st.putters }) do
      for i = list.head, list.tail do
        local w = list[i]
        if not w.done and w.proc == proc then fn(w) end
      end
    end
  end
end

local function time_out(w) finish(w, nil, "timeout") end

local watch = {}

-- A service (run 0) asked to stop: its waiting gets end now (nil,
-- "timeout") and its later gets on an empty queue do not wait. A pool task
-- being interrupted: what it waits for ends now, so the interrupt reaches
-- its Lua code at once.
function watch.stopping(proc, id, step)
  if step == "ask" and id == 0 then
    stopping[proc] = true
    each_wait(proc, true, time_out)
  elseif step == "interrupt" then
    each_wait(proc, false, time_out)
  end
end

-- proc has exited: drop what it still waits for.
function watch.exited(proc)
  stopping[proc] = nil
  each_wait(proc, false, function(w)
    w.done = true
    if w.timer then w.timer:stop(); w.timer = nil end
  end)
end

child.on_call("queue", serve_call, watch)

local OPTIONS = { capacity = "positive integer" }

-- orch.queue{ capacity = N } -> handle. Created in the parent, before the
-- pools and supervisors whose children use it.
function M.new(opts)
  opts = check.options("orch.queue", opts, OPTIONS)
  local cap = opts.capacity
  if core.in_child() then
    check.fail("orch.queue", "queues are created in the parent process, before its children")
  end
  next_id = next_id + 1
  queues[next_id] = {
    capacity = cap or math.huge, items = deque.new(), closed = false,
    getters = deque.new(), putters = deque.new(),
  }
  return setmetatable({
    __orch_queue = next_id, put = h_put, get = h_get, close = h_close, len = h_len,
  }, Handle)
end

M.Handle = Handle

return M
