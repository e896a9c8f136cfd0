--- orch.busted.frame: busted events as one line of text, from a spec process
-- to the parent of `orch busted`.
-- A spec file runs in its own interpreter, which may be any Lua that busted
-- runs on (5.1 to 5.4), so this module is plain Lua 5.1 and needs no C.
-- A line holds plain values only: nil, booleans, numbers, strings (any
-- bytes: control bytes and '%' are written as %XX, so a line never holds a
-- newline) and tables of these (a table met twice is written once, then
-- nil). The parent decodes without loading any code, so a spec process can
-- never run code in the parent; a malformed line is an error naming the
-- byte offset.
local frame = {}

-- Every line of events starts with this; text before it on the same line
-- is the spec's own output.
frame.MARK = "\027orch-busted:"

local function escape(c)
  return ("%%%02X"):format(c:byte())
end

local function is_integer(v)
  return v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

local function put(out, v, seen)
  local t = type(v)
  if t == "nil" then
    out[#out + 1] = "z"
  elseif t == "boolean" then
    out[#out + 1] = v and "t" or "f"
  elseif t == "number" then
    if v ~= v then
      out[#out + 1] = "dnan;"
    elseif is_integer(v) then
      out[#out + 1] = ("i%d;"):format(v)
    else
      out[#out + 1] = ("d%.17g;"):format(v)
    end
  elseif t == "string" then
    local s = v:gsub("[%z\1-\31%%\127]", escape)
    out[#out + 1] = "s" .. #s .. ":" .. s
  elseif t == "table" and not seen[v] then
    seen[v] = true
    out[#out + 1] = "{"
    for k, x in pairs(v) do
      put(out, k, seen)
      put(out, x, seen)
    end
    out[#out + 1] = "}"
  elseif t == "table" then
    out[#out + 1] = "z"
  else
    put(out, tostring(v), seen)
  end
end

--- frame.encode(v) -> one line (without the newline) holding v.
function frame.encode(v)
  local out = {}
  put(out, v, {})
  return table.concat(out)
end

local SPECIAL = { nan = 0 / 0, inf = math.huge, ["-inf"] = -math.huge }

local function bad(pos, what)
  error(("orch.busted.frame: bad event line at byte %d: %s"):format(pos, what), 0)
end

local function get(s, pos, depth)
  local tag = s:sub(pos, pos)
  if tag == "z" then return nil, pos + 1
  elseif tag == "t" then return true, pos + 1
  elseif tag == "f" then return false, pos + 1
  elseif tag == "i" or tag == "d" then
    local num, after = s:match("^([^;]*);()", pos + 1)
    local v = num and (SPECIAL[num] or tonumber(num))
    if not v then bad(pos, "a number expected") end
    if tag == "i" and math.tointeger then v = math.tointeger(v) or v end
    return v, after
  elseif tag == "s" then
    local len, start = s:match("^(%d+):()", pos + 1)
    if not len or start + len - 1 > #s then bad(pos, "a string expected") end
    local raw = s:sub(start, start + len - 1)
    return (raw:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)), start + len
  elseif tag == "{" then
    if depth > 64 then bad(pos, "tables nested too deep") end
    local t = {}
    pos = pos + 1
    while s:sub(pos, pos) ~= "}" do
      if pos > #s then bad(pos, "'}' expected") end
      local k, v
      k, pos = get(s, pos, depth + 1)
      v, pos = get(s, pos, depth + 1)
      if k == nil or k ~= k then bad(pos, "a nil or NaN table key") end
      t[k] = v
    end
    return t, pos + 1
  end
  bad(pos, ("unknown tag '%s'"):format(tag))
end

--- frame.decode(line) -> v; raises on a malformed line.
function frame.decode(line)
  local v, pos = get(line, 1, 0)
  if pos <= #line then bad(pos, "trailing bytes") end
  return v
end

return frame
