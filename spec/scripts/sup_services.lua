-- A services file for `orch run`: one service that counts until asked to
-- stop, one that finishes by itself (temporary).
local orch = require "orch"
return {
  shutdown_timeout = 5,
  services = {
    { name = "ticker", ready = "notify", run = function()
        orch.ready()
        local n = 0
        while not orch.stopping() do n = n + 1; orch.sleep(0.01) end
        io.stdout:write("ticker stopped after ", n, " ticks\n")
      end },
    { name = "once", restart = "temporary", after = { "ticker" }, run = function()
        io.stdout:write("once ran\n")
      end },
  },
}
