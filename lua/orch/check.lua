--- Misuse errors that point at the user's code.
--
-- Every public function of orch checks its arguments and raises through
-- check.fail, whose message starts with the position of the first frame
-- outside orch's own Lua files: the line of the user's code that made the
-- call, however many of orch's functions (or tail calls) lie between.
-- check.options checks an options table against a small vocabulary of
-- kinds ("positive integer", "string or function", ...), check.method
-- catches a method called with a dot instead of a colon.
--
-- This file is also loaded by init.lua before anything else, to check the
-- Lua version: it must parse and run in Lua 5.1 too.
local check = {}

-- orch's Lua files: those under the directory this file was loaded from
-- (cli/, busted/ and broker/ included). nil when loaded from elsewhere.
local ORCH_DIR = debug.getinfo(1, "S").source:match("^@(.*[/\\])[^/\\]*$")

local function from_orch(source)
  return ORCH_DIR ~= nil and source:sub(2, #ORCH_DIR + 1) == ORCH_DIR
end

--- "file:line: " of the first Lua frame outside orch (the user's call),
-- or "" when there is none.
function check.where()
  local level = 2
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return "" end
    if info.what ~= "C" and info.currentline > 0 and not from_orch(info.source) then
      return ("%s:%d: "):format(info.short_src, info.currentline)
    end
    level = level + 1
  end
end

--- Raises "where: who: message" (message: fmt formatted with the rest).
function check.fail(who, fmt, ...)
  error(check.where() .. who .. ": " .. fmt:format(...), 0)
end

--- A value as a message shows it: strings quoted (and cut), numbers,
-- booleans and nil as they are, anything else by its type.
function check.show(v)
  local t = type(v)
  if t == "string" then
    return ("%q"):format(#v > 40 and v:sub(1, 37) .. "..." or v)
  elseif v ~= v then
    return "nan"
  elseif t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  end
  return t
end

local function number(v) return type(v) == "number" and v == v end

-- The kinds an option can be; anything else in a spec is a list of type
-- names joined by " or " ("string or function").
local KINDS = {
  ["positive integer"] = function(v) return math.type(v) == "integer" and v >= 1 end,
  ["non-negative integer"] = function(v) return math.type(v) == "integer" and v >= 0 end,
  ["positive number"] = function(v) return number(v) and v > 0 end,
  ["non-negative number"] = function(v) return number(v) and v >= 0 end,
  ["number"] = number,
}

local function fits(v, kind)
  local test = KINDS[kind]
  if test then return test(v) end
  local t = type(v)
  for name in kind:gmatch("[^ ]+") do
    if name ~= "or" and name == t then return true end
  end
  return false
end

check.fits = fits

--- Checks a timeout argument: nil (no limit) or a non-negative number.
function check.timeout(who, fn, timeout)
  if timeout ~= nil and not KINDS["non-negative number"](timeout) then
    check.fail(who, "%s: timeout must be a non-negative number or nil (got %s)", fn, check.show(timeout))
  end
end

local function article(kind)
  return (kind:find("^[aeiou]") and "an " or "a ") .. kind
end

local function sorted_keys(t)
  local list = {}
  for k in pairs(t) do list[#list + 1] = tostring(k) end
  table.sort(list)
  return table.concat(list, ", ")
end
check.keys = sorted_keys

--- Checks opts against spec ({ name = kind }): a table (nil is {}) whose
-- keys are all in spec and whose values fit their kind. what prefixes the
-- messages ("services[2] (web): "). Returns opts.
function check.options(who, opts, spec, what)
  what = what or ""
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    check.fail(who, "%soptions must be a table (got %s)", what, check.show(opts))
  end
  for k, v in pairs(opts) do
    local kind = spec[k]
    if not kind then
      check.fail(who, "%sunknown option %s (valid: %s)", what,
        type(k) == "string" and ("'%s'"):format(k) or check.show(k), sorted_keys(spec))
    end
    if not fits(v, kind) then
      check.fail(who, "%soption '%s' must be %s (got %s)", what, k, article(kind), check.show(v))
    end
  end
  return opts
end

-- The usual name of a handle of each class, for the dot-call message.
local HANDLE = {
  ["orch.pool"] = "pool", ["orch.group"] = "group", ["orch.future"] = "fut",
  ["orch.supervisor"] = "sup", ["orch.queue"] = "q",
}

--- Raises the message for a method called with a dot: self (the first
-- argument) is not an object of the class mt.
function check.dot_call(mt, method)
  local h = HANDLE[mt.__name] or "obj"
  check.fail(mt.__name, "use %s:%s(...) (a colon), not %s.%s(...)", h, method, h, method)
end

--- Checks that a method was called with a colon on an object of mt.
function check.method(self, mt, method)
  if getmetatable(self) ~= mt then check.dot_call(mt, method) end
end

--- The Lua version orch runs on; raises naming it for any other.
function check.lua_version(version)
  if version ~= "Lua 5.4" then
    error(("%sorch needs Lua 5.4 (this is %s): run it with lua5.4")
      :format(check.where(), tostring(version)), 0)
  end
end

return check
