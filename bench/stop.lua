-- Benchmark of stopping work, orch against Python's stdlib in the same run:
--
--   lua5.4 bench/stop.lua [tasks] [terminate_workers] [rounds]   (after make build)
--
-- fail_fast, cooperative: 100 tasks run at once in a fail_fast group, each
--   sleeping 10 ms a step and checking orch.stopping(); task 0 fails. Time
--   from its failure (its own clock reading, sent as the error value) to
--   group:wait() returning (the group quiet). Python: seed 004's
--   ProcessPoolExecutor + Manager Event + wait(FIRST_EXCEPTION) + cancel +
--   event.set(), until every future is done.
-- fail_fast, busy: the same with CPU loops. orch's never check anything
--   (the interrupt stops them); Python's must poll the Event (every 2000
--   iterations here), as nothing else can stop them.
-- terminate: 32 workers in CPU loops, pool:terminate() (which also reaps
--   them) against Pool.terminate() + join() (seed 002).
-- Each time is the best of `rounds` runs (default 2): these machines are
-- shared and noisy. Prints a table with each time and the ratio python / orch.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local core = require "orch.core"

local NTASKS = tonumber(arg[1]) or 100
local NTERM = tonumber(arg[2]) or 32
local ROUNDS = tonumber(arg[3]) or 2

local function best_of(f, ...)
  local best = math.huge
  for _ = 1, ROUNDS do best = math.min(best, f(...)) end
  return best
end

local stopping, osleep = orch.stopping, orch.sleep
local now = core.now

local function cooperative(name, fail_at)
  while true do
    osleep(0.01)
    if name == 0 and now() >= fail_at then error(now(), 0) end
    if stopping() then return "stopped" end
  end
end

local function busy(name, fail_at)
  local n = 0
  if name ~= 0 then
    while true do n = n + 1 end
  end
  while true do
    n = n + 1
    if n % 2000 == 0 and now() >= fail_at then error(now(), 0) end
  end
end

local function fail_fast(pool, task)
  local g = pool:group { on_error = "fail_fast" }
  local fail_at = now() + 1.0
  for i = 0, NTASKS - 1 do g:submit(task, i, fail_at) end
  local res, err = g:wait(60)
  assert(res == nil and err and err.kind == "error", "the group did not fail fast: " .. tostring(err))
  local quiet = now()
  return quiet - err.value
end

local function spin()
  while true do end
end

local function terminate()
  local pool = orch.pool { workers = NTERM }
  for _ = 1, NTERM do pool:submit(spin) end
  orch.sleep(1.0)
  assert(pool:stats().running == NTERM)
  local t0 = now()
  pool:terminate()
  return now() - t0
end

local results = {}
do
  -- grace long enough that nothing is SIGKILLed: this measures ask + interrupt
  local pool <close> = orch.pool { workers = NTASKS, grace = 30 }
  pool:map(osleep, (function() local t = {} for i = 1, NTASKS do t[i] = 0.2 end return t end)())
  results.fail_fast_cooperative = best_of(fail_fast, pool, cooperative)
  results.fail_fast_busy = best_of(fail_fast, pool, busy)
  if pool:stats().restarts > 0 then
    io.stderr:write(("bench/stop: %d workers were killed after grace (machine overloaded?)\n")
      :format(pool:stats().restarts))
  end
end
results.terminate = best_of(terminate)

local py = {}
local p = io.popen(("python3 bench/stop.py %d %d %d 2>&1"):format(NTASKS, NTERM, ROUNDS))
local py_out = p and p:read("a") or ""
if p then p:close() end
for name, secs in py_out:gmatch("(%S+) ([%d.]+)\n") do py[name] = tonumber(secs) end

local rows = {
  { "fail_fast_cooperative", ("fail_fast, %d cooperative tasks: failure to quiet"):format(NTASKS) },
  { "fail_fast_busy", ("fail_fast, %d busy-loop tasks: failure to quiet"):format(NTASKS) },
  { "terminate", ("terminate %d busy workers"):format(NTERM) },
}
print(("%-52s %10s %10s %8s"):format("stop benchmark", "orch", "python", "ratio"))
for _, row in ipairs(rows) do
  local o, q = results[row[1]], py[row[1]]
  print(("%-52s %8.1fms %10s %8s"):format(row[2], o * 1e3,
    q and ("%8.1fms"):format(q * 1e3) or "n/a",
    q and ("%.1fx"):format(q / o) or "n/a"))
end
if not next(py) then io.stderr:write("python3 bench/stop.py printed:\n", py_out) end
