-- bench/control.lua: what answering the control socket costs a busy run.
--
--   lua5.4 bench/control.lua             the rounds (from the repo root)
--   lua5.4 bench/control.lua job DIR     one run (the driver starts it)
--
-- A run serves its control socket while its pool runs tiny tasks one by
-- one (`pool:submit(inc, i):result()`, 2 workers), in SEGMENTS segments of
-- TASKS tasks. CLIENTS clients are connected all along; they ask `status`
-- only while the file DIR/talk exists, which the run creates before each
-- loud segment and removes before each quiet one (in the order quiet,
-- loud, loud, quiet, quiet, loud, ...: a drift of the machine's speed
-- weighs on both alike). A round is one run in a fresh process; its ratio
-- is the loud segments' throughput over the quiet ones'. Comparing
-- segments of one process, rather than two processes, keeps out what
-- differs between two runs on a shared machine (where their processes
-- land, whether a core was free for spinning), which here was larger than
-- the effect measured. Every request of every client must be answered.
--
-- While the tasks have not started, the run also measures its own CPU
-- time for a second with the clients talking and a second without: the
-- difference per request is what serving one cost it.
--
-- Environment: BENCH_ROUNDS (5), BENCH_TASKS (tasks a segment: 20000),
-- BENCH_SEGMENTS (12), BENCH_CLIENTS (50), BENCH_PAUSE (seconds a client
-- waits between requests: 0.1), BENCH_CLIENT = mux (every client's
-- connection in one process, bench/control_clients.py: the clients' own
-- CPU is kept small) | socat (a shell loop and a socat process each) |
-- ctl (each request a real `scripts/orch ctl PATH status --json`
-- process: ~9 ms of CPU each, more than 2 cores can give 50 clients at
-- 0.1 s).

local root = (arg and arg[0] or ""):match("^(.-)[^/]*$"):gsub("bench/$", ""):gsub("^$", "./")
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or 5)
local TASKS = tonumber(os.getenv("BENCH_TASKS") or 20000)
local SEGMENTS = tonumber(os.getenv("BENCH_SEGMENTS") or 12)
local CLIENTS = tonumber(os.getenv("BENCH_CLIENTS") or 50)
local CLIENT = os.getenv("BENCH_CLIENT") or "mux"
local PAUSE = tonumber(os.getenv("BENCH_PAUSE") or 0.1)
local SETTLE = 0.05  -- seconds for the clients to see DIR/talk come or go

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function touch(path) assert(io.open(path, "w")):close() end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

---------------------------------------------------------------------------
-- the run: serves DIR/run.sock; DIR/go starts the tasks; it writes
-- DIR/result and DIR/done, and DIR/quit ends it

local function inc(x) return x + 1 end

-- Segment s (1-based) is loud in the order q l l q q l l q ...
local function loud_segment(s) return (s // 2) % 2 == 1 end

local function job(dir)
  local orch = require "orch"
  local core = require "orch.core"
  local control = require "orch.control"
  control.serve{ name = "bench", path = dir .. "/run.sock" }
  local talk = dir .. "/talk"
  local function set_talk(on)
    if on then touch(talk) else os.remove(talk) end
    orch.sleep(SETTLE)
  end
  local pool <close> = orch.pool{ workers = 2 }
  pool:map(inc, { 1, 2, 3, 4, 5, 6, 7, 8 })  -- warm: workers up, code cached
  touch(dir .. "/ready")
  while not exists(dir .. "/go") do orch.sleep(0.01) end
  local out = {}
  for _, on in ipairs{ true, false } do  -- the run's CPU a second, idle
    set_talk(on)
    local c0, t0 = os.clock(), core.now()
    orch.sleep(1)
    out[#out + 1] = ("idle%s %.6f\n"):format(on and "loud" or "quiet", (os.clock() - c0) / (core.now() - t0))
  end
  local i = 0
  for s = 1, SEGMENTS do
    set_talk(loud_segment(s))
    local t0 = core.now()
    for _ = 1, TASKS do
      i = i + 1
      assert(pool:submit(inc, i):result() == i + 1)
    end
    out[#out + 1] = ("seg%d %.3f\n"):format(s, TASKS / (core.now() - t0))
  end
  os.remove(talk)
  local f = assert(io.open(dir .. "/result", "w"))
  f:write(table.concat(out))
  f:close()
  touch(dir .. "/done")
  while not exists(dir .. "/quit") do orch.sleep(0.01) end
end

---------------------------------------------------------------------------
-- the clients: each stops once DIR/done exists and writes "answered
-- failed" to DIR/client.I (mux: "answered failed silent" to DIR/clients)

local function ctl_client(dir, i)
  return ([[n=0; f=0; while [ ! -e %s ]; do
  if [ -e %s ]; then
  if lua5.4 %s ctl %s status --json >/dev/null 2>&1; then n=$((n+1)); else f=$((f+1)); fi; fi
  sleep %s; done; echo "$n $f" >%s]]):format(q(dir .. "/done"), q(dir .. "/talk"), q(root .. "scripts/orch"),
    q(dir .. "/run.sock"), PAUSE, q(dir .. "/client." .. i))
end

-- One connection: requests go out every PAUSE; answers are counted (ok
-- and not ok) against the requests sent.
local function socat_client(dir, i)
  local out = dir .. "/client." .. i
  return ([[(n=0; while [ ! -e %s ]; do if [ -e %s ]; then echo '{"cmd":"status"}'; n=$((n+1)); fi;
  sleep %s; done; echo "$n" >%s.sent) | socat -t 10 - UNIX-CONNECT:%s |
  awk '/"ok":true/ {n++} !/"ok":true/ {f++} END {print n+0, f+0}' >%s.got
  read s <%s.sent; read n f <%s.got; echo "$n $((f + s - n))" >%s]]):format(q(dir .. "/done"),
    q(dir .. "/talk"), PAUSE, q(out), q(dir .. "/run.sock"), q(out), q(out), q(out), q(out))
end

local function start_clients(dir)
  if CLIENT == "mux" then
    assert(os.execute(("python3 %s %s %d %s %s %s %s >%s 2>&1 &"):format(q(root .. "bench/control_clients.py"),
      q(dir .. "/run.sock"), CLIENTS, PAUSE, q(dir .. "/talk"), q(dir .. "/done"), q(dir .. "/clients"),
      q(dir .. "/clients.log"))))
    return
  end
  for i = 1, CLIENTS do
    local script = CLIENT == "socat" and socat_client(dir, i) or ctl_client(dir, i)
    assert(os.execute(("sh -c %s >/dev/null 2>&1 &"):format(q(script))))
  end
end

local function wait_line(path, what)
  for _ = 1, 3000 do
    local line = read(path)
    if line and line:find("\n") then return line end
    os.execute("sleep 0.01")
  end
  error(what .. " never ended")
end

-- { answered, failed, silent } over every client, once all have written.
local function client_totals(dir)
  if CLIENT == "mux" then
    local n, f, s = wait_line(dir .. "/clients", "the clients (" .. (read(dir .. "/clients.log") or "") .. ")")
      :match("(%d+) (%d+) (%d+)")
    return { answered = tonumber(n), failed = tonumber(f), silent = tonumber(s) }
  end
  local totals = { answered = 0, failed = 0, silent = 0 }
  for i = 1, CLIENTS do
    local n, f = wait_line(dir .. "/client." .. i, "client " .. i):match("(%d+) (%d+)")
    n, f = tonumber(n), tonumber(f)
    totals.answered, totals.failed = totals.answered + n, totals.failed + f
    if n == 0 then totals.silent = totals.silent + 1 end
  end
  return totals
end

---------------------------------------------------------------------------
-- the driver

local function wait_file(path, seconds)
  for _ = 1, seconds * 100 do
    if exists(path) then return true end
    os.execute("sleep 0.01")
  end
  error("timed out waiting for " .. path)
end

-- One run in a fresh process, with its clients. Returns its result.
local function one_run()
  local dir = assert(io.popen("mktemp -d")):read("l")
  assert(os.execute(("lua5.4 %s job %s >%s 2>&1 &"):format(q(arg[0]), q(dir), q(dir .. "/log"))))
  wait_file(dir .. "/ready", 20)
  start_clients(dir)
  os.execute("sleep 0.5")  -- the clients connect
  touch(dir .. "/go")
  wait_file(dir .. "/done", 600)
  local res = {}
  for k, v in read(dir .. "/result"):gmatch("(%w+) (%S+)") do res[k] = tonumber(v) end
  res.clients = client_totals(dir)
  touch(dir .. "/quit")
  os.execute("sleep 0.2; rm -rf " .. q(dir))
  return res
end

local function median(t)
  local s = { table.unpack(t) }
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local function loadavg()
  return (read("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)")
end

-- A run's segments: throughput quiet and loud (tasks over time, summed).
local function segment_rates(res)
  local time, n = { [true] = 0, [false] = 0 }, { [true] = 0, [false] = 0 }
  for s = 1, SEGMENTS do
    local loud = loud_segment(s)
    time[loud], n[loud] = time[loud] + TASKS / res["seg" .. s], n[loud] + TASKS
  end
  return n[false] / time[false], n[true] / time[true]
end

local function driver()
  assert(CLIENT == "ctl" or CLIENT == "socat" or CLIENT == "mux", "BENCH_CLIENT must be mux, socat or ctl")
  assert(SEGMENTS >= 2, "BENCH_SEGMENTS must be at least 2")
  print(("%d rounds of %d segments of %d tasks one by one (2 workers); %d %s clients asking status "
    .. "every %.2f s in the loud segments; load average %s"):format(ROUNDS, SEGMENTS, TASKS, CLIENTS, CLIENT,
    PAUSE, loadavg()))
  print(("%-6s %10s %10s %7s %9s %7s %14s"):format("round", "quiet/s", "loud/s", "ratio", "answered",
    "failed", "us CPU/request"))
  local ratios, costs, all_answered = {}, {}, true
  for r = 1, ROUNDS do
    local res = one_run()
    local quiet, loud = segment_rates(res)
    local c = res.clients
    ratios[r] = loud / quiet
    -- CPU seconds a second, idle: the difference is what the requests cost
    costs[r] = (res.idleloud - res.idlequiet) / (CLIENTS / PAUSE)
    if c.failed > 0 or c.silent > 0 then all_answered = false end
    print(("%-6d %10.0f %10.0f %7.3f %9d %7d %14.1f"):format(r, quiet, loud, ratios[r], c.answered,
      c.failed + c.silent, costs[r] * 1e6))
  end
  local m, cost = median(ratios), median(costs)
  print(("CPU the run spends on a request (idle): median %.1f us, %.1f%% of a core at %d requests/s")
    :format(cost * 1e6, cost * CLIENTS / PAUSE * 100, CLIENTS / PAUSE))
  print(("median ratio loud/quiet %.3f (target >= 0.90: %s); every client answered: %s; "
    .. "load average %s"):format(m, m >= 0.9 and "met" or "NOT met",
    all_answered and "yes" or "NO", loadavg()))
  return all_answered
end

if arg[1] == "job" then
  job(assert(arg[2], "job needs DIR"))
else
  os.exit(driver() and 0 or 1)
end
