--- Seed 001: safe use of Unix signals with child processes.
--
--   lua5.4 scripts/examples/signals.lua       then Ctrl-C (or kill -TERM -PGID)
--
-- The parent feeds 100 jobs into a queue; a lazy worker service takes one,
-- naps, takes the next, until it is asked to stop; then it cleans up.
-- Ctrl-C reaches the whole foreground job, the worker included, but the
-- worker is deaf to it: only the parent decides, and it asks the worker to
-- stop. So "Doing cleanup before leaving ..." is always printed, and the
-- shell then sees the exit status of a job ended by that signal (130/143).
-- A second Ctrl-C kills what is left at once. SIGHUP prints the status.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"

local nap = tonumber(os.getenv("ORCH_EXAMPLE_NAP") or "1")

local function say(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

local function lazy_worker(work)
  orch.ready()
  while not orch.stopping() do
    local job = work:get(1)
    if job then
      say("I did job %d already! :)", job)
      say("A small nap won't hurt anyone!")
      orch.sleep(nap)          -- returns early once the parent asks us to stop
    end
  end
  say("Doing cleanup before leaving ...")
end

local work = orch.queue{}
for x = 0, 99 do work:put(x) end

local sup = orch.supervisor{
  services = { { name = "lazy", run = lazy_worker, args = { work }, ready = "notify", grace = 3 } },
}

orch.on_signal("HUP", function()
  for _, s in ipairs(sup:status()) do
    say("%s: pid %s, %s, %d jobs left", s.name, tostring(s.pid), s.state, #work)
  end
end)

say("pid %d: press Ctrl-C to stop", require("orch.core").getpid())
assert(sup:run())
