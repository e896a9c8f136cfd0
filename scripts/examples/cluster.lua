-- A pool on a broker: the primes below 2,000,000 counted in 20 ranges by
-- two `orch worker` nodes through Redis Streams. Midway one node is
-- SIGKILLed (as a lost host would be); once its lease has run out the
-- other node takes its tasks over, and the total still comes out right.
--
--   lua5.4 scripts/examples/cluster.lua [REDIS_URL]   (after make build; from the repo root)
--
-- Without a URL it starts a private redis-server (in a temporary
-- directory, on a Unix socket) and stops it at the end; the nodes it
-- starts are stopped whatever happens.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"

local LIMIT, RANGES, EXPECTED = 2000000, 20, 148933  -- pi(2e6)
local STEP = LIMIT // RANGES
-- seconds: the pool's tasks carry it; a node that stops renewing them
-- loses them after this
local LEASE = 1

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

-- Runs on a node: the primes in [lo, hi), by trial division.
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

local dir = sh("mktemp -d /tmp/orch-cluster-XXXXXX")
local started = {}  -- pids to stop at the end

local function start_redis()
  local sock = dir .. "/redis.sock"
  started[#started + 1] = tonumber(sh(("redis-server --port 0 --unixsocket %s --save '' --dir %s"
    .. " >%s/redis.log 2>&1 & echo $!"):format(sock, dir, dir)))
  for _ = 1, 250 do
    if os.execute("test -S " .. sock) then return "unix://" .. sock end
    orch.sleep(0.02)
  end
  error("redis-server did not start: " .. sh("cat " .. dir .. "/redis.log"))
end

-- An `orch worker` node in the background, its log in dir; its pid.
local function start_node(url, i)
  return tonumber(sh(("scripts/orch worker %s --queue primes --workers 1"
    .. " >%s/node%d.log 2>&1 & echo $!"):format(url, dir, i)))
end

local function show_log(i)
  for line in io.lines(("%s/node%d.log"):format(dir, i)) do
    if line:find("took over", 1, true) then print(("  node %d: %s"):format(i, line)) end
  end
end

local function main(url)
  url = url or start_redis()
  local a, b = start_node(url, 1), start_node(url, 2)
  started[#started + 1] = a
  started[#started + 1] = b
  print(("broker %s, nodes %d and %d"):format(url, a, b))
  local pool <close> = orch.pool{ broker = url, queue = "primes", retries = 2, lease = LEASE }
  local ranges = {}
  for i = 1, RANGES do ranges[i] = { (i - 1) * STEP, i * STEP } end
  local total, done = 0, 0
  for i, n in pool:imap(function(r) return count_primes(r[1], r[2]) end, ranges, { ordered = false }) do
    total, done = total + n, done + 1
    print(("range %2d: %5d primes"):format(i, n))
    if done == 4 then
      print(("killing node %d (SIGKILL) while it runs a range"):format(a))
      os.execute("kill -KILL " .. a)
    end
  end
  show_log(2)
  print(("primes below %d: %d (expected %d)"):format(LIMIT, total, EXPECTED))
  assert(total == EXPECTED, "wrong total")
end

local function alive(pid)
  local f = io.open(("/proc/%d/stat"):format(pid))
  local stat = f and f:read("a") or ""
  if f then f:close() end
  return stat ~= "" and not stat:find("%) Z ")
end

-- Stops pid (TERM, then KILL after 5 s) and waits for it to be gone.
local function stop(pid)
  os.execute(("kill %d 2>/dev/null"):format(pid))
  for _ = 1, 250 do
    if not alive(pid) then return end
    orch.sleep(0.02)
  end
  os.execute(("kill -KILL %d 2>/dev/null"):format(pid))
end

local ok, err = pcall(main, arg[1])
for i = #started, 1, -1 do stop(started[i]) end  -- the nodes, then Redis
os.execute("rm -rf " .. dir)
if not ok then
  io.stderr:write("cluster.lua: ", tostring(err), "\n")
  os.exit(1)
end
