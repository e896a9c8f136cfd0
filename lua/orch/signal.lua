--- Signals in the parent: handlers run inside the loop, never in signal
-- context. A script's own handler (orch.on_signal) always wins over the
-- defaults that pools and supervisors install.
local core = require "orch.core"

local signal = {}

local NAMES = { INT = true, TERM = true, HUP = true, QUIT = true, USR1 = true, USR2 = true }
local user = {}      -- name -> true when the script set its own handler
local defaults = {}  -- name -> default handler installed by orch

--- orch.on_signal(name, fn): fn(name) runs in the loop; nil restores the
-- default (orch's, when a pool or supervisor installed one, else the OS's).
function signal.on_signal(name, fn)
  if not NAMES[name] then
    error(("orch.on_signal: unknown signal '%s' (valid: INT, TERM, HUP, QUIT, USR1, USR2)")
      :format(tostring(name)), 2)
  end
  if fn ~= nil and type(fn) ~= "function" then
    error("orch.on_signal: handler must be a function or nil", 2)
  end
  user[name] = fn ~= nil or nil
  core.on_signal(name, fn or defaults[name])
end

--- Installs orch's default handler for name unless the script has its own.
-- Returns a function that removes it again.
function signal.set_default(name, fn)
  defaults[name] = fn
  if not user[name] then core.on_signal(name, fn) end
  return function()
    if defaults[name] == fn then
      defaults[name] = nil
      if not user[name] then core.on_signal(name, nil) end
    end
  end
end

return signal
