-- The broker benchmark: a pool on a broker (Redis Streams, two `orch worker`
-- nodes of one worker each, all on this machine) next to a local orch pool
-- of 2 workers and Python's multiprocessing.Pool (bench/pool.py), and
-- redis-benchmark's own XADD rate on the same server.
--
--   lua5.4 bench/broker.lua          (from the repo root, after make build)
--
-- BROKER_N (default 20000) tasks one by one, BROKER_RT (default 2000)
-- sequential round trips, a map of 100,000 items in chunks of 1000. Only
-- the workload is timed (servers, nodes, pools and warm-up are not). The
-- throughput is measured BROKER_ROUNDS times (default 3), the broker's and
-- Python's in turn, and their medians compared (the machine is shared:
-- paired rounds see the same load).
local root = (arg and arg[0] or ""):match("^(.-)[^/]*$"):gsub("bench/$", ""):gsub("^$", "./")
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. root .. "spec/?.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local orch = require "orch"
local core = require "orch.core"
local redis_server = require "redis_server"

local N = tonumber(os.getenv("BROKER_N")) or 20000
local N_RT = tonumber(os.getenv("BROKER_RT")) or 2000
local ROUNDS = tonumber(os.getenv("BROKER_ROUNDS")) or 3
local N_MAP, CHUNK = 100000, 1000

orch.log.level = "warn"

local function inc(x) return x + 1 end

local function submit_rate(pool, n)
  local futs = {}
  local t0 = core.now()
  for i = 1, n do futs[i] = pool:submit(inc, i) end
  for i = 1, n do assert(futs[i]:result() == i + 1) end
  return n / (core.now() - t0)
end

local function round_trips(pool, n)
  local times = {}
  for i = 1, n do
    local t0 = core.now()
    assert(pool:submit(inc, i):result() == i + 1)
    times[i] = (core.now() - t0) * 1e6
  end
  table.sort(times)
  local sum = 0
  for _, t in ipairs(times) do sum = sum + t end
  return sum / n, times[n // 2 + 1], times[math.ceil(n * 0.99)]
end

local function map_seconds(pool)
  local items = {}
  for i = 1, N_MAP do items[i] = i end
  local t0 = core.now()
  local out = pool:map(inc, items, { chunk = CHUNK })
  local secs = core.now() - t0
  assert(out[N_MAP] == N_MAP + 1)
  return secs
end

local sh = redis_server.sh

local function python_rate()
  local secs = tonumber(sh("python3 " .. root .. "bench/pool.py submit 2>&1"):match("seconds%s+(%S+)"))
  return secs and 100000 / secs
end

local function median(list)
  local t = table.move(list, 1, #list, 1, {})
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- The submit rate of pool, and Python's, in ROUNDS paired rounds: medians
-- and the rounds' figures.
local function paired_rates(pool)
  local mine, py = {}, {}
  for i = 1, ROUNDS do
    mine[i] = submit_rate(pool, N)
    py[i] = python_rate() or 0
  end
  return median(mine), median(py), mine, py
end

local function measure(pool, rounds)
  pool:map(inc, { 1, 2, 3, 4, 5, 6, 7, 8 })  -- warm: nodes' and workers' code caches
  local r = {}
  if rounds then
    r.rate, r.py_rate, r.rates, r.py_rates = paired_rates(pool)
  else
    r.rate = submit_rate(pool, N)
  end
  r.mean, r.median, r.p99 = round_trips(pool, N_RT)
  r.map = map_seconds(pool)
  return r
end

local function python_median_rt()
  return tonumber(sh("python3 " .. root .. "bench/pool.py roundtrip 2>&1"):match("median_us%s+(%S+)"))
end

local function rounds_text(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = ("%.0f"):format(v) end
  return table.concat(out, " / ")
end

local function xadd_rate(srv, pipeline)
  local out = sh(("redis-benchmark -s %s -n %d -P %d -q XADD orch:bench:xadd '*' id 1 p 0123456789 2>&1")
    :format(srv.path, N, pipeline))
  return tonumber(out:match("([%d.]+) requests per second"))
end

local srv = redis_server.start()
local ok, err = pcall(function()
  local w1 = srv:worker("bench", { workers = 1 })
  local w2 = srv:worker("bench", { workers = 1 })
  assert(w1:wait_log("serving queue") and w2:wait_log("serving queue"), "the nodes did not start")
  local broker = orch.pool{ broker = srv.url, queue = "bench" }
  local b = measure(broker, true)
  broker:shutdown()
  local pool = orch.pool{ workers = 2 }
  local l = measure(pool)
  pool:shutdown()
  local py_rate, py_median = b.py_rate, python_median_rt()
  local x1, x16 = xadd_rate(srv, 1), xadd_rate(srv, 16)
  local load = sh("cat /proc/loadavg"):match("^(%S+ %S+ %S+)")
  print(("broker benchmark: %d cores, load average %s"):format(core.cpu_count(), load))
  print(("%-44s %12s %12s %12s"):format("", "broker", "local pool", "Python"))
  print(("%-44s %12.0f %12.0f %12s"):format(("tasks/s, %d submitted one by one"):format(N),
    b.rate, l.rate, py_rate and ("%.0f"):format(py_rate) or "?"))
  print(("%-44s %12.0f %12.0f %12s"):format(("round trip, median us (%d sequential)"):format(N_RT),
    b.median, l.median, py_median and ("%.0f"):format(py_median) or "?"))
  print(("%-44s %12.0f %12.0f"):format("round trip, mean us", b.mean, l.mean))
  print(("%-44s %12.0f %12.0f"):format("round trip, p99 us", b.p99, l.p99))
  print(("%-44s %12.3f %12.3f"):format(("map of %d items, chunks of %d, s"):format(N_MAP, CHUNK),
    b.map, l.map))
  print(("broker %s tasks/s, Python %s (rounds in turn); ratio of medians %.2f")
    :format(rounds_text(b.rates), rounds_text(b.py_rates), py_rate and b.rate / py_rate or 0))
  print(("redis-benchmark XADD, %d commands: %.0f/s (50 clients), %.0f/s (pipelined by 16)")
    :format(N, x1 or 0, x16 or 0))
  print(("targets: broker throughput >= half of Python's apply_async (%s); round trip median < 1 ms (%s)")
    :format(py_rate and (b.rate >= py_rate / 2 and "met" or "not met") or "?",
      b.median < 1000 and "met" or "not met"))
end)
srv:stop()
if not ok then
  io.stderr:write("bench/broker.lua: ", tostring(err), "\n")
  os.exit(1)
end
