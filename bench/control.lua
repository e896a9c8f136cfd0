-- bench/control.lua: what answering the control socket costs a busy run.
--
--   lua5.4 bench/control.lua             the paired rounds (from the repo root)
--   lua5.4 bench/control.lua job DIR     one run (the driver starts it)
--
-- A run serves its control socket while its pool runs N tiny tasks one by
-- one (`pool:submit(inc, i):result()`, 2 workers). In a loud round,
-- CLIENTS clients ask it `status` over and over, from before the tasks
-- start until after they end; in a quiet round nobody asks. Each round
-- is one quiet and one loud run (the order alternates) in fresh
-- processes; the ratio is the loud run's throughput over the quiet one's.
-- Every client must have every request answered.
--
-- Environment: BENCH_ROUNDS (5), BENCH_TASKS (100000), BENCH_CLIENTS (50),
-- BENCH_CLIENT = ctl (each request a real `scripts/orch ctl PATH status
-- --json` process) | socat (one connection per client, a request line
-- each pause, from a shell loop) | mux (every client's connection in one
-- process, bench/control_clients.py: the clients' own cost is kept off
-- the cores the run needs), BENCH_PAUSE (seconds a client waits between
-- requests: 0.1).

local root = (arg and arg[0] or ""):match("^(.-)[^/]*$"):gsub("bench/$", ""):gsub("^$", "./")
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or 5)
local TASKS = tonumber(os.getenv("BENCH_TASKS") or 100000)
local CLIENTS = tonumber(os.getenv("BENCH_CLIENTS") or 50)
local CLIENT = os.getenv("BENCH_CLIENT") or "ctl"
local PAUSE = tonumber(os.getenv("BENCH_PAUSE") or 0.1)
local WARMUP = 2.0  -- seconds the clients ask before the tasks start

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
-- the run: serves DIR/run.sock; DIR/go starts the tasks, DIR/quit ends it

local function inc(x) return x + 1 end

local function job(dir)
  local orch = require "orch"
  local core = require "orch.core"
  local status = require "orch.status"
  local control = require "orch.control"
  control.serve{ name = "bench", path = dir .. "/run.sock" }
  local answered, measuring = 0, false
  -- counts the status reports made while the tasks run
  local counter = { status_report = function()
    if measuring then answered = answered + 1 end
    return { services = {} }
  end }
  status.register(counter, "supervisor")
  local pool <close> = orch.pool{ workers = 2 }
  pool:map(inc, { 1, 2, 3, 4, 5, 6, 7, 8 })  -- warm: workers up, code cached
  touch(dir .. "/ready")
  -- the warm-up: the clients ask (in a loud run) while no task runs
  local w0, wc0 = core.now(), os.clock()
  while not exists(dir .. "/go") do orch.sleep(0.01) end
  local idle, idle_cpu = core.now() - w0, os.clock() - wc0
  measuring = true
  local t0, c0 = core.now(), os.clock()
  for i = 1, TASKS do assert(pool:submit(inc, i):result() == i + 1) end
  local elapsed, cpu = core.now() - t0, os.clock() - c0
  measuring = false
  local f = assert(io.open(dir .. "/result", "w"))
  f:write(("rate %.1f\nelapsed %.4f\ncpu %.4f\nanswered %d\nidle %.4f\nidlecpu %.4f\n"):format(
    TASKS / elapsed, elapsed, cpu, answered, idle, idle_cpu))
  f:close()
  touch(dir .. "/done")
  while not exists(dir .. "/quit") do orch.sleep(0.01) end
end

---------------------------------------------------------------------------
-- the clients: shell loops that stop once DIR/done exists and write
-- "answered failed" to DIR/client.I

local function ctl_client(dir, i)
  return ([[n=0; f=0; while [ ! -e %s ]; do
  if lua5.4 %s ctl %s status --json >/dev/null 2>&1; then n=$((n+1)); else f=$((f+1)); fi
  sleep %s; done; echo "$n $f" >%s]]):format(q(dir .. "/done"), q(root .. "scripts/orch"),
    q(dir .. "/run.sock"), PAUSE, q(dir .. "/client." .. i))
end

-- One connection: requests go out every PAUSE; answers are counted (ok
-- and not ok) against the requests sent.
local function socat_client(dir, i)
  local out = dir .. "/client." .. i
  return ([[(n=0; while [ ! -e %s ]; do echo '{"cmd":"status"}'; n=$((n+1)); sleep %s; done;
  echo "$n" >%s.sent) | socat -t 10 - UNIX-CONNECT:%s |
  awk '/"ok":true/ {n++} !/"ok":true/ {f++} END {print n+0, f+0}' >%s.got
  read s <%s.sent; read n f <%s.got; echo "$n $((f + s - n))" >%s]]):format(q(dir .. "/done"), PAUSE,
    q(out), q(dir .. "/run.sock"), q(out), q(out), q(out), q(out))
end

local function start_clients(dir)
  if CLIENT == "mux" then
    assert(os.execute(("python3 %s %s %d %s %s %s >%s 2>&1 &"):format(q(root .. "bench/control_clients.py"),
      q(dir .. "/run.sock"), CLIENTS, PAUSE, q(dir .. "/done"), q(dir .. "/clients"), q(dir .. "/clients.log"))))
    return
  end
  for i = 1, CLIENTS do
    local script = CLIENT == "socat" and socat_client(dir, i) or ctl_client(dir, i)
    assert(os.execute(("sh -c %s >/dev/null 2>&1 &"):format(q(script))))
  end
end

-- { answered, failed, silent } over every client, once all have written.
local function client_totals(dir)
  if CLIENT == "mux" then
    local line
    for _ = 1, 3000 do
      line = read(dir .. "/clients")
      if line then break end
      os.execute("sleep 0.01")
    end
    local n, f, s = assert(line, "the clients never ended: " .. (read(dir .. "/clients.log") or "")):match("(%d+) (%d+) (%d+)")
    return { answered = tonumber(n), failed = tonumber(f), silent = tonumber(s) }
  end
  local totals = { answered = 0, failed = 0, silent = 0 }
  for i = 1, CLIENTS do
    local path, line = dir .. "/client." .. i, nil
    for _ = 1, 3000 do
      line = read(path)
      if line and line:find("\n") then break end
      os.execute("sleep 0.01")
    end
    local n, f = assert(line, "client " .. i .. " never ended"):match("(%d+) (%d+)")
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

-- One run in a fresh process; loud: with the clients. Returns its result.
local function one_run(loud)
  local dir = assert(io.popen("mktemp -d")):read("l")
  assert(os.execute(("lua5.4 %s job %s >%s 2>&1 &"):format(q(arg[0]), q(dir), q(dir .. "/log"))))
  wait_file(dir .. "/ready", 20)
  if loud then start_clients(dir) end
  os.execute("sleep " .. WARMUP)
  touch(dir .. "/go")
  wait_file(dir .. "/done", 300)
  local res = {}
  for k, v in read(dir .. "/result"):gmatch("(%a+) (%S+)") do res[k] = tonumber(v) end
  if loud then res.clients = client_totals(dir) end
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

local function driver()
  assert(CLIENT == "ctl" or CLIENT == "socat" or CLIENT == "mux", "BENCH_CLIENT must be ctl, socat or mux")
  print(("%d rounds; %d tasks one by one (2 workers); %d %s clients asking status, "
    .. "%.2f s pause; load average %s"):format(ROUNDS, TASKS, CLIENTS, CLIENT, PAUSE, loadavg()))
  print(("%-6s %12s %12s %8s %10s %8s %7s %12s %12s"):format("round", "quiet/s", "loud/s", "ratio",
    "answered", "in run", "failed", "quiet cpu/s", "loud cpu/s"))
  local ratios, cpu_ratios, costs, all_answered = {}, {}, {}, true
  for r = 1, ROUNDS do
    local quiet, loud
    if r % 2 == 1 then quiet = one_run(false); loud = one_run(true)
    else loud = one_run(true); quiet = one_run(false) end
    local c = loud.clients
    ratios[r] = loud.rate / quiet.rate
    -- tasks per CPU-second of the run's own process: what serving the
    -- clients cost it, whatever else the machine was doing
    local qcpu, lcpu = TASKS / quiet.cpu, TASKS / loud.cpu
    cpu_ratios[r] = lcpu / qcpu
    -- the warm-up: what the run spent answering, while no task ran
    costs[r] = (loud.idlecpu - quiet.idlecpu * loud.idle / quiet.idle) / (loud.idle * CLIENTS / PAUSE)
    if c.failed > 0 or c.silent > 0 then all_answered = false end
    print(("%-6d %12.0f %12.0f %8.3f %10d %8d %7d %12.0f %12.0f"):format(r, quiet.rate, loud.rate, ratios[r],
      c.answered, loud.answered, c.failed + c.silent, qcpu, lcpu))
  end
  print(("median ratio of tasks per CPU-second of the run, loud/quiet %.3f"):format(median(cpu_ratios)))
  local m_cost = median(costs)
  print(("CPU the run spends per request while idle: median %.1f us; at %d requests/s that is %.1f%% of "
    .. "one core"):format(m_cost * 1e6, CLIENTS / PAUSE, m_cost * CLIENTS / PAUSE * 100))
  local m = median(ratios)
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
