--- Signals in the parent: handlers run inside the loop, never in signal
-- context. A script's own handler (orch.on_signal) always wins over the
-- defaults that pools and supervisors install. Their INT/TERM default is
-- one, two_stage: the first signal asks for the ordered stop of what runs,
-- the second kills it.
local core = require "orch.core"
local check = require "orch.check"

local signal = {}

local NAMES = { INT = true, TERM = true, HUP = true, QUIT = true, USR1 = true, USR2 = true }
local user = {}      -- name -> true when the script set its own handler
local defaults = {}  -- name -> stack of orch's default handlers, newest last

local function current_default(name)
  local stack = defaults[name]
  return stack and stack[#stack]
end

--- orch.on_signal(name, fn): fn(name) runs in the loop; nil restores the
-- default (orch's, when a pool or supervisor installed one, else the OS's).
function signal.on_signal(name, fn)
  if not NAMES[name] then
    check.fail("orch.on_signal", "unknown signal %s (valid: INT, TERM, HUP, QUIT, USR1, USR2)",
      type(name) == "string" and ("'%s'"):format(name) or check.show(name))
  end
  if fn ~= nil and type(fn) ~= "function" then
    check.fail("orch.on_signal", "handler must be a function or nil (got %s)", check.show(fn))
  end
  user[name] = fn ~= nil or nil
  core.on_signal(name, fn or current_default(name))
end

-- Installs orch's default handler for name unless the script has its own.
-- Defaults stack: a supervisor's, installed while it runs, hides the
-- pools' one until it is removed. Returns the function that removes it.
-- In a child (a task or service running a pool or supervisor of its
-- own) the defaults are not installed: job-wide signals stay no-ops there,
-- and its parent's stop requests are what stops it.
function signal.set_default(name, fn)
  local stack = defaults[name] or {}
  defaults[name] = stack
  stack[#stack + 1] = fn
  local installs = not core.in_child()
  if installs and not user[name] then core.on_signal(name, fn) end
  return function()
    for i = #stack, 1, -1 do
      if stack[i] == fn then table.remove(stack, i) break end
    end
    if installs and not user[name] then core.on_signal(name, current_default(name)) end
  end
end

-- orch's INT/TERM default for a party that runs children (the pools, the
-- running supervisors): the first INT or TERM calls party.stop(name) (the
-- ordered stop of what it runs), every later one party.kill(name). Parties
-- stack like set_default: the newest hides the others until it is
-- removed, and its count of signals starts with it. Returns the function
-- that removes it.
function signal.two_stage(party)
  local count = 0
  local function handler(name)
    count = count + 1
    if count == 1 then party.stop(name) else party.kill(name) end
  end
  local remove_int = signal.set_default("INT", handler)
  local remove_term = signal.set_default("TERM", handler)
  return function()
    remove_int()
    remove_term()
  end
end

return signal
