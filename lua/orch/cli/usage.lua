--- orch.cli.usage: how every orch command reports a usage error: one line
-- saying what was wrong, then where to look, and exit status 2.
local usage = { EXIT = 2 }

--- Writes the error for `orch COMMAND` (nil: orch itself); returns 2.
function usage.error(command, message)
  local help = command and ("orch " .. command .. " --help") or "orch --help"
  io.stderr:write("orch: ", message, "\n", "Try '", help, "' for more information.\n")
  return usage.EXIT
end

return usage
