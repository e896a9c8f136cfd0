-- make demo: a pool counts the primes below 2,000,000 in 20 ranges; midway
-- one worker is SIGKILLed from outside (kill -KILL, as the OOM killer or an
-- operator would), its task is retried on the fresh worker that replaces
-- it, and the total still comes out right.
--
--   lua5.4 scripts/examples/pool.lua   (after make build; run from the repo root)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"

local LIMIT, RANGES, EXPECTED = 2000000, 20, 148933  -- pi(2e6)
local STEP = LIMIT // RANGES

-- Runs in a worker: the primes in [lo, hi), by trial division.
local function count_primes(lo, hi)
  local n = 0
  for x = math.max(lo, 2), hi - 1 do
    local prime = x == 2 or x % 2 == 1
    local d = 3
    while prime and d * d <= x do
      if x % d == 0 then prime = false end
      d = d + 2
    end
    if prime then n = n + 1 end
  end
  return n
end

local pool <close> = orch.pool{ workers = 2, retries = 1 }  -- a crashed task runs once more

local futures = {}
for i = 1, RANGES do
  local lo = (i - 1) * STEP
  futures[i] = pool:submit(count_primes, lo, lo + STEP)
end

-- Once a few ranges are done, kill a worker in the middle of its task.
-- (The worker's pid comes from the pool's internals: the public API needs
-- none.)
futures[4]:wait()
local which
for i, f in ipairs(futures) do
  if f:state() == "running" then which = i break end
end
assert(which, "no task was running")
local victim = futures[which].worker
print(("killing %s (pid %d) while it counts range %d"):format(victim.name, victim.pid, which))
os.execute("kill -KILL " .. victim.pid)

local total = 0
for i, f in ipairs(futures) do
  local n = f:result()
  total = total + n
  print(("  [%7d, %7d)  %5d primes%s"):format((i - 1) * STEP, i * STEP, n,
    i == which and ("   <- ran %d times: its first worker was killed"):format(f.attempts) or ""))
end
print(("primes below %d: %d (expected %d)"):format(LIMIT, total, EXPECTED))
assert(total == EXPECTED)

local s = pool:stats()
print(("pool:stats(): workers=%d idle=%d queued=%d running=%d done=%d failed=%d cancelled=%d restarts=%d")
  :format(s.workers, s.idle, s.queued, s.running, s.done, s.failed, s.cancelled, s.restarts))
assert(s.restarts >= 1, "the killed worker was not replaced")
