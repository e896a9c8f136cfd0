--- orch.busted.recorder: the busted output handler of a spec process run by
-- `orch busted` (`-o orch.busted.recorder`). It prints nothing of its own:
-- every event on busted's bus that an output handler would see (file,
-- describe and test start/end, failures, errors, pendings) is written to
-- stdout as one line (orch.busted.frame) and flushed at once, so the parent
-- keeps every test that finished even if this process dies the next moment.
-- Lua 5.1 to 5.4, like busted itself.
--
-- An event line is { ch = {name, sub}, el = element, n = count, args = {...} }.
-- Elements (the tables busted passes around) are sent once as
-- { id = n, parent = id, fields = {...} } in `new` and referred to by id after;
-- each event carries the fields of the elements it names again, since
-- busted updates them (start and end times, duration, the random seed a
-- block's tests were shuffled with). The suite root has id 0.
local frame = require "orch.busted.frame"

-- Fields of an element that are tables worth sending; the others hold
-- busted's own bookkeeping (lists of child blocks, environments).
local TABLE_FIELDS = { trace = true, attributes = true }

local function plain(v, depth)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" or t == "nil" then return v end
  if t ~= "table" or depth > 4 then return tostring(v) end
  local copy = {}
  for k, x in pairs(v) do
    if type(x) ~= "function" and (type(k) == "string" or type(k) == "number") then
      copy[k] = plain(x, depth + 1)
    end
  end
  return copy
end

local function fields(element)
  local out = {}
  for k, v in pairs(element) do
    local t = type(v)
    if k ~= "env" and t ~= "function" and t ~= "userdata" and t ~= "thread"
        and (t ~= "table" or TABLE_FIELDS[k]) then
      out[k] = plain(v, 1)
    end
  end
  return out
end

return function()
  local busted = require "busted"
  local out = io.stdout
  local ids, count = setmetatable({}, { __mode = "k" }), 0
  local handler = {}

  local function emit(event)
    out:write(frame.MARK, frame.encode(event), "\n")
    out:flush()
  end

  -- The id of an element of the suite's tree (sending it and its ancestors
  -- first when new); nil for a table outside the tree.
  local function ref(element)
    if ids[element] then return ids[element] end
    local parent = busted.parent(element)
    if not parent then return element.descriptor == "suite" and 0 or nil end
    local parent_id = ref(parent)
    count = count + 1
    ids[element] = count
    emit({ new = { id = count, parent = parent_id, fields = fields(element) } })
    return count
  end

  local function recorder(ch)
    return function(element, ...)
      local n = select("#", ...)
      local args = { ... }
      for i = 1, n do
        local id = type(args[i]) == "table" and ref(args[i])
        args[i] = id and { ref = id, fields = fields(args[i]) } or plain(args[i], 1)
      end
      local id = ref(element)
      local channel = ch
      if #ch == 1 and type(element) == "table" and element.descriptor then
        channel = { ch[1], element.descriptor }   -- as busted.safe publishes it
      end
      emit({ ch = channel, el = id or fields(element), fields = id and fields(element),
             n = n, args = args })
      return nil, true
    end
  end

  local CHANNELS = {
    { "file", "start" }, { "file", "end" }, { "describe", "start" }, { "describe", "end" },
    { "test", "start" }, { "test", "end" }, { "failure" }, { "error" }, { "pending" },
  }

  function handler.subscribe()
    for _, ch in ipairs(CHANNELS) do
      busted.subscribe(ch, recorder(ch))
    end
    -- (on "exit", which no filter stops as --list stops the suite's events)
    busted.subscribe({ "exit" }, function()
      emit({ done = true })
      return nil, true
    end)
  end

  return handler
end
