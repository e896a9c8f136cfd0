-- make bench: the same workloads through an orch pool and Python's
-- multiprocessing.Pool (bench/pool.py), interleaved in one run, then two
-- tables of ratios against their targets: orch against Python, and orch
-- against itself (more workers, more pending tasks, inline closures), a
-- raw pipe (big strings) or a fixed number.
--
--   lua5.4 bench/run.lua                  the whole comparison (from the repo root)
--   lua5.4 bench/run.lua WORKLOAD [PARAM] one orch workload, `key value` lines
--
-- Each measurement runs in a fresh process (orch's and Python's alike), so
-- neither side inherits the other's heap or children, and a workload that
-- hangs is cut off by timeout(1) instead of hanging the run. Only the
-- workload is timed: start-up, pool start-up and warm-up are not.
-- BENCH_ROUNDS (default 5) sets the number of rounds. A row's ratio is
-- the median of its rounds' ratios, each round's orch measurement against
-- the same round's reference (taken seconds apart, so both see the same
-- state of the machine); the best round of each side against the other's
-- best is printed beside it. PYTHON overrides python3.

local root = (arg and arg[0] or ""):match("^(.-)[^/]*$"):gsub("bench/$", ""):gsub("^$", "./")
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local WORKERS = 2
local N_SUBMIT = 100000
local N_MAP, CHUNK = 1000000, 1000
local N_ROUNDTRIP = 10000
local N_BUSY = 4000      -- round trips at most while one worker is busy
local HOG_SECONDS = 1.0  -- CPU seconds of the task that keeps that worker busy
local N_TABLE = 100000   -- integers in the table that makes a round trip
local PENDING_TASKS = 1000000  -- tasks of a `pending N` measurement, in batches of N
local SHUTDOWN_WORKERS = 16
local SETTLE = 0.3  -- seconds an idle pool is left alone before it is measured
-- `payload SIZE`: bytes of the string, and how many round trips are timed
-- (the median is kept). Same as bench/pool.py's PAYLOAD.
local PAYLOAD = {
  ["64k"] = { 64 * 1024, 200 }, ["1m"] = { 1024 * 1024, 50 },
  ["16m"] = { 16 * 1024 * 1024, 7 }, ["64m"] = { 64 * 1024 * 1024, 3 },
}

---------------------------------------------------------------------------
-- the orch side: one workload in this process

local function inc(x) return x + 1 end
local function echo(v) return v end
-- Keeps a worker's CPU busy for `seconds` of its own CPU time.
local function hog(seconds)
  local t0 = os.clock()
  while os.clock() - t0 < seconds do end
  return true
end

-- Private_Clean + Private_Dirty of a process, KiB (smaps_rollup).
local function private_kib(pid)
  local f = assert(io.open(("/proc/%d/smaps_rollup"):format(pid)))
  local total = 0
  for line in f:lines() do
    local kib = line:match("^Private_Clean:%s+(%d+)") or line:match("^Private_Dirty:%s+(%d+)")
    if kib then total = total + tonumber(kib) end
  end
  f:close()
  return total
end

-- Resident bytes of this process (/proc/self/statm, 4 KiB pages).
local function rss_bytes()
  local f = assert(io.open("/proc/self/statm"))
  local pages = f:read("a"):match("^%d+%s+(%d+)")
  f:close()
  return tonumber(pages) * 4096
end

-- The workers' pids: from the pool's internals (the public API has no
-- call for them, and needs none).
local function worker_pids(pool)
  local pids = {}
  for i = 1, pool.size do pids[#pids + 1] = assert(pool.slots[i]).pid end
  return pids
end

-- Sorted samples -> mean_us, median_us, p99_us lines with a prefix.
local function print_latency(times, prefix)
  table.sort(times)
  local sum = 0
  for i = 1, #times do sum = sum + times[i] end
  print(prefix .. "mean_us", sum / #times * 1e6)
  print(prefix .. "median_us", times[#times // 2 + 1] * 1e6)
  print(prefix .. "p99_us", times[math.floor(#times * 0.99) + 1] * 1e6)
end

local function orch_workload(name, param)
  local orch = require "orch"
  local now = require("orch.core").now
  local function new_pool(n)
    local pool = orch.pool{ workers = n }
    local warm = {}
    for i = 1, 2 * n do warm[i] = i end
    pool:map(inc, warm, { chunk = 1 })  -- warm: every worker up, code cached
    return pool
  end
  -- After a measurement: what shutdown() does, but bounded, so that a pool
  -- that cannot stop is reported instead of eating the run's time.
  local function teardown(pool)
    io.stdout:flush()
    pool:close()
    if not pool:join(5) then
      print("teardown_hung 1")
      pool:terminate()
    end
  end
  local W = {}

  -- `submit N`: 100k trivial tasks one by one through N workers.
  function W.submit(workers)
    local pool = new_pool(tonumber(workers) or WORKERS)
    local t0 = now()
    local futs = {}
    for i = 1, N_SUBMIT do futs[i] = pool:submit(inc, i) end
    for i = 1, N_SUBMIT do assert(futs[i]:result() == i + 1) end
    print("seconds", now() - t0)
    teardown(pool)
  end

  -- The same with a new closure per task (with an upvalue, as inline
  -- functions usually have), against the hoisted function in the same
  -- pool: batches of each in turn, so that both meet the same moments of
  -- a noisy machine (`seconds`: inline, `hoisted`: the hoisted function,
  -- each for N_SUBMIT tasks).
  function W.inline()
    local pool, one = new_pool(WORKERS), 1
    local inline, hoisted, batch = 0, 0, N_SUBMIT // 10
    local function run(make)
      local t0, futs = now(), {}
      for i = 1, batch do futs[i] = pool:submit(make(), i) end
      for i = 1, batch do assert(futs[i]:result() == i + 1) end
      return now() - t0
    end
    local function fresh() return function(x) return x + one end end
    local function same() return inc end
    for _ = 1, 10 do
      inline = inline + run(fresh)
      hoisted = hoisted + run(same)
    end
    print("seconds", inline)
    print("hoisted", hoisted)
    teardown(pool)
  end

  -- One batch of n tasks on pool, submitted whole before any of its
  -- results is taken; after_submit() runs between the two. Its seconds.
  local function pending_batch(pool, n, after_submit)
    local t0, futs = now(), {}
    for i = 1, n do futs[i] = pool:submit(inc, i) end
    if after_submit then after_submit() end
    for i = 1, n do assert(futs[i]:result() == i + 1) end
    return now() - t0
  end

  local function batch_count(n, what)
    n = math.tointeger(tonumber(n)) or error(what .. ": a count expected")
    return n, math.max(1, PENDING_TASKS // n)
  end

  -- `pending N`: batches of N tasks, PENDING_TASKS tasks in all whatever N
  -- is: the time per task, and the parent's resident bytes per pending
  -- task (in the first batch). Every N times the same number of tasks, so
  -- that a short measurement is not compared, best round against best
  -- round, with one that lasts a hundred times longer on a noisy machine.
  function W.pending(n)
    local batches
    n, batches = batch_count(n, "pending")
    local pool = new_pool(WORKERS)
    collectgarbage()
    local rss0, rss1, seconds = rss_bytes(), nil, 0
    for _ = 1, batches do
      seconds = seconds + pending_batch(pool, n, function() rss1 = rss1 or rss_bytes() end)
    end
    print("task_us", seconds / (batches * n) * 1e6)
    print("pending_bytes", (rss1 - rss0) / n)
    teardown(pool)
  end

  -- `noise N` (default 10000; not part of the comparison): the batches of
  -- `pending N`, each one's microseconds per task, 20 to a line. How much
  -- this machine's speed moves within one process: worth a look before
  -- reading a ratio near its target.
  function W.noise(n)
    local batches
    n, batches = batch_count(n or 10000, "noise")
    local pool, line = new_pool(WORKERS), {}
    for b = 1, batches do
      line[#line + 1] = ("%.1f"):format(pending_batch(pool, n) / n * 1e6)
      if #line == 20 or b == batches then print(table.concat(line, " ")); line = {} end
    end
    teardown(pool)
  end

  -- `kept` (not part of the comparison): the Lua bytes the parent
  -- allocates per task and keeps per finished future, 100,000 tasks
  -- through the pool with the collector stopped while they run.
  function W.kept()
    local n = 100000
    local pool, futs = new_pool(WORKERS), {}
    for i = 1, n do futs[i] = false end
    collectgarbage(); collectgarbage()
    local k0 = collectgarbage("count")
    collectgarbage("stop")
    for i = 1, n do futs[i] = pool:submit(inc, i) end
    for i = 1, n do futs[i]:result() end
    local k1 = collectgarbage("count")
    collectgarbage("restart"); collectgarbage(); collectgarbage()
    print("allocated_bytes", (k1 - k0) * 1024 / n)
    print("kept_bytes", (collectgarbage("count") - k0) * 1024 / n)
    teardown(pool)
  end

  -- `map default|1000|progress|joblog`: 1M integers, map's default
  -- options, 1000 a chunk, or the defaults with a progress line (to a
  -- file: plain lines) or a job log, to show what they cost.
  function W.map(how)
    local items = {}
    for i = 1, N_MAP do items[i] = i end
    local pool = new_pool(WORKERS)
    local opts, joblog = {}, nil
    if how == "progress" then
      opts.progress = true
    elseif how == "joblog" then
      joblog = os.tmpname()
      opts.joblog = joblog
    elseif how ~= "default" then
      opts.chunk = tonumber(how) or CHUNK
    end
    local t0 = now()
    local out = pool:map(inc, items, opts)
    print("seconds", now() - t0)
    if joblog then os.remove(joblog) end
    assert(#out == N_MAP and out[N_MAP] == N_MAP + 1)
    teardown(pool)
  end

  function W.roundtrip()
    local pool = new_pool(WORKERS)
    local times = {}
    for i = 1, N_ROUNDTRIP do
      local t0 = now()
      pool:submit(inc, i):result()
      times[i] = now() - t0
    end
    print_latency(times, "")
    teardown(pool)
  end

  -- Round trips of tiny tasks to one worker while the other runs a
  -- CPU-bound task (the idle worker takes them: see Pool:_pump).
  function W.busy()
    local pool = new_pool(WORKERS)
    local busy = pool:submit(hog, HOG_SECONDS)
    local times = {}
    while #times < N_BUSY and not busy:done() do
      local t0 = now()
      pool:submit(inc, 1):result()
      times[#times + 1] = now() - t0
    end
    busy:result()
    print("samples", #times)
    print_latency(times, "")
    teardown(pool)
  end

  -- The median time of `rounds` round trips of value (of length n).
  local function echo_median(value, rounds, n)
    local pool, times = new_pool(WORKERS), {}
    for i = 1, rounds do
      local t0 = now()
      local back = pool:submit(echo, value):result()
      times[i] = now() - t0
      assert(#back == n)
    end
    table.sort(times)
    teardown(pool)
    return times[#times // 2 + 1]
  end

  -- `payload SIZE`: a string of SIZE (64k, 1m, 16m, 64m) there and back.
  function W.payload(size)
    local p = assert(PAYLOAD[size], "payload: one of 64k, 1m, 16m, 64m")
    print("seconds", echo_median(("x"):rep(p[1]), p[2], p[1]))
  end

  -- A table of 100k integers there and back (the median of 20).
  function W.table()
    local t = {}
    for i = 1, N_TABLE do t[i] = i end
    print("seconds", echo_median(t, 20, N_TABLE))
  end

  function W.memory()
    local pool = new_pool(WORKERS)
    orch.sleep(SETTLE)
    local sum, pids = 0, worker_pids(pool)
    for _, pid in ipairs(pids) do sum = sum + private_kib(pid) end
    print("private_kib", sum / #pids)
    teardown(pool)
  end

  function W.shutdown()
    local pool = new_pool(SHUTDOWN_WORKERS)
    orch.sleep(SETTLE)
    local t0 = now()
    pool:shutdown()
    print("seconds", now() - t0)
  end

  if not W[name] then
    io.stderr:write("usage: lua5.4 bench/run.lua [submit N|inline|pending N|noise [N]|kept|map default|1000|progress|joblog|"
      .. "roundtrip|busy|payload SIZE|table|memory|shutdown]\n")
    os.exit(2)
  end
  W[name](param)
end

if arg[1] then return orch_workload(arg[1], arg[2]) end

---------------------------------------------------------------------------
-- the driver: runs both sides, round after round, and prints the table

local LUA = arg[-1] or "lua5.4"
local PYTHON = os.getenv("PYTHON") or "python3"
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local STOP_LIMIT = 120

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function capture(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p and p:read("a") or ""
  if p then p:close() end
  return (out:gsub("%s+$", ""))
end

-- Runs one measurement; returns its `key value` lines as a table, or nil
-- and what went wrong.
local function measure(cmd, limit)
  local p = io.popen(("timeout -k 2 %d %s 2>&1"):format(limit, cmd))
  local r, other = {}, {}
  for line in p:lines() do
    local k, v = line:match("^(%w[%w_]*)%s+(%S+)$")
    if k and tonumber(v) then r[k] = tonumber(v) else other[#other + 1] = line end
  end
  local ok, _, code = p:close()
  if not ok then
    local timed_out = code == 124 or code == 137  -- timeout(1): TERM, then KILL
    return nil, (timed_out and "hung (stopped after %ds)" or "exit %d"):format(timed_out and limit or code)
      .. (#other > 0 and ": " .. table.concat(other, " | ") or "")
  end
  for _, line in ipairs(other) do io.stderr:write("  ", line, "\n") end
  return r
end

local has_python = os.execute(PYTHON .. " -c 'import multiprocessing' >/dev/null 2>&1")
local commit = capture("git -C " .. sh_quote(root) .. " rev-parse --short HEAD")
if commit ~= "" and capture("git -C " .. sh_quote(root) .. " status --porcelain -- src lua bench") ~= "" then
  commit = commit .. " + uncommitted changes"
end

print(("orch bench: commit %s; %s cores; %s; %s; %s"):format(
  commit ~= "" and commit or "?", capture("nproc"), capture("uname -sr"),
  _VERSION, has_python and capture(PYTHON .. " --version") or "no python3"))
print(("%d rounds, each workload through orch then Python in fresh processes; "
  .. "values: the median round; ratio: the median of the rounds' ratios"):format(ROUNDS))
print()

-- Every measurement of a round: "workload param" and who runs it ("pipe"
-- is bench/pool.py's rawpipe: the same bytes through bare pipes).
local JOBS = {
  { "submit 2" }, { "submit 16" }, { "submit 64" }, { "submit 256", limit = 90 },
  { "inline", sides = { "orch" } },
  { "pending 10000", sides = { "orch" } }, { "pending 100000", sides = { "orch" } },
  { "pending 1000000", sides = { "orch" }, limit = 90 },
  { "map 1000" }, { "map default" }, { "map progress", sides = { "orch" } },
  { "map joblog", sides = { "orch" }, limit = 120 }, { "roundtrip" }, { "busy" },
  { "payload 64k" }, { "payload 1m" }, { "payload 16m" }, { "payload 64m" },
  { "payload 16m", sides = { "pipe" } }, { "payload 64m", sides = { "pipe" } },
  { "table" }, { "memory", limit = 20 }, { "shutdown", limit = 20 },
}
local SIDE_CMD = {
  orch = function(w) return LUA .. " " .. sh_quote(root .. "bench/run.lua") .. " " .. w end,
  python = function(w) return PYTHON .. " " .. sh_quote(root .. "bench/pool.py") .. " " .. w end,
  pipe = function(w) return PYTHON .. " " .. sh_quote(root .. "bench/pool.py") .. " " .. w:gsub("^payload", "rawpipe") end,
}
-- side -> workload -> round -> result table (a round that failed has none)
local results = { orch = {}, python = {}, pipe = {} }
local errors = {}
local hung = {}  -- "side workload" -> true

local function run_job(round, side, w, limit)
  results[side][w] = results[side][w] or {}
  if hung[side .. " " .. w] then return end
  local r, err = measure(SIDE_CMD[side](w), limit)
  if r then
    results[side][w][round] = r
    if r.teardown_hung then
      errors[#errors + 1] = ("%s %s (round %d): measured, but the pool did not stop "
        .. "within 5 s after close() (join timed out; terminate() used)"):format(side, w, round)
    end
  else
    errors[#errors + 1] = ("%s %s (round %d): %s"):format(side, w, round, err)
    if err:find("^hung") then hung[side .. " " .. w] = true end
  end
end

for round = 1, ROUNDS do
  io.stderr:write(("round %d/%d:"):format(round, ROUNDS))
  for _, job in ipairs(JOBS) do
    io.stderr:write(" ", (job[1]:gsub(" ", "-")))
    for _, side in ipairs(job.sides or { "orch", "python" }) do
      if side == "orch" or has_python then run_job(round, side, job[1], job.limit or 60) end
    end
  end
  io.stderr:write("\n")
end
print()

-- The median of a list of numbers (the mean of the middle two for an
-- even count), or nil for none.
local function median_of(vs)
  if #vs == 0 then return nil end
  table.sort(vs)
  local h = #vs // 2
  return #vs % 2 == 1 and vs[h + 1] or (vs[h] + vs[h + 1]) / 2
end

-- What a row compares, in round `round`: spec is {side, workload, key}
-- or a fixed number.
local function of_round(spec, round)
  if type(spec) == "number" then return spec end
  local r = (results[spec[1]][spec[2]] or {})[round]
  return r and r[spec[3]]
end

-- spec's values over the rounds that measured it.
local function values(spec)
  local vs = {}
  for round = 1, ROUNDS do vs[#vs + 1] = of_round(spec, round) end
  return vs
end

local function best(spec)
  local v
  for _, x in ipairs(values(spec)) do if not v or x < v then v = x end end
  return v
end

-- The ratio of each round (ref / o: how many times better orch is; all
-- values are costs), round i of one side against round i of the other;
-- false for a round that lacks either.
local function round_ratios(o, ref)
  local out = {}
  for round = 1, ROUNDS do
    local a, b = of_round(o, round), of_round(ref, round)
    out[round] = a and b and a > 0 and b / a or false
  end
  return out
end

local function rate(n) return function(s) return ("%.0f/s"):format(n / s) end end
local function secs(s) return s >= 0.1 and ("%.2f s"):format(s) or ("%.1f ms"):format(s * 1e3) end
local function us(v) return ("%.1f us"):format(v) end
local function ms(s) return ("%.2f ms"):format(s * 1e3) end

-- One row per measured quantity: label, what orch measured {side,
-- workload, key}, what it is compared with (the same, or a fixed number),
-- how values show, the target ratio, and the target's text. ratio = how
-- many times better orch is: reference / orch (all values are costs).
local PYTHON_ROWS = {
  { "100k tasks one by one, 2 workers", "submit 2", "seconds", rate(N_SUBMIT), 10 },
  { "100k tasks one by one, 16 workers", "submit 16", "seconds", rate(N_SUBMIT), 8 },
  { "100k tasks one by one, 64 workers", "submit 64", "seconds", rate(N_SUBMIT), 8 },
  { "100k tasks one by one, 256 workers", "submit 256", "seconds", rate(N_SUBMIT), 8 },
  { "map 1M integers, chunk 1000", "map 1000", "seconds", secs, 2 },
  { "map 1M integers, default chunks", "map default", "seconds", secs, 5 },
  { "round trip, mean", "roundtrip", "mean_us", us, 4 },
  { "round trip, median", "roundtrip", "median_us", us, 4 },
  { "round trip, p99", "roundtrip", "p99_us", us, 4 },
  { "round trip, other worker busy, median", "busy", "median_us", us, 5 },
  { "round trip, other worker busy, p99", "busy", "p99_us", us, 5 },
  { "64 KB string round trip", "payload 64k", "seconds", ms, 2 },
  { "1 MB string round trip", "payload 1m", "seconds", ms, 2 },
  { "16 MB string round trip", "payload 16m", "seconds", ms, 2 },
  { "64 MB string round trip", "payload 64m", "seconds", ms, 2 },
  { "100k-integer table round trip", "table", "seconds", ms, 2 },
  { "idle worker private memory", "memory", "private_kib",
    function(k) return ("%.0f KiB"):format(k) end, 10, "<= 1/10" },
  { "shutdown of 16 idle workers", "shutdown", "seconds", ms, 3 },
}

-- Rows against orch itself, a raw pipe, or a fixed number. The numbers
-- with a "was" are what the parent measured before this bench had them.
local PENDING_BYTES_BEFORE = 384
local SELF_ROWS = {
  { "one by one: 2 workers / 64 workers", { "orch", "submit 64", "seconds" },
    { "orch", "submit 2", "seconds" }, rate(N_SUBMIT), 0.8, ">= 0.8x" },
  { "one by one: 2 workers / 256 workers", { "orch", "submit 256", "seconds" },
    { "orch", "submit 2", "seconds" }, rate(N_SUBMIT), 0.8, ">= 0.8x" },
  { "idle round trip median (<= 10 us)", { "orch", "roundtrip", "median_us" }, 10, us, 1, ">= 1x" },
  { "inline closure / hoisted function", { "orch", "inline", "seconds" },
    { "orch", "inline", "hoisted" }, rate(N_SUBMIT), 1 / 1.2, "<= 1.2x cost" },
  { "16 MB string round trip / raw pipe", { "orch", "payload 16m", "seconds" },
    { "pipe", "payload 16m", "seconds" }, ms, 1 / 1.5, "<= 1.5x cost" },
  { "64 MB string round trip / raw pipe", { "orch", "payload 64m", "seconds" },
    { "pipe", "payload 64m", "seconds" }, ms, 1 / 1.5, "<= 1.5x cost" },
  { "per task, 1e5 pending / 1e4", { "orch", "pending 100000", "task_us" },
    { "orch", "pending 10000", "task_us" }, us, 1 / 1.2, "<= 1.2x cost" },
  { "per task, 1e6 pending / 1e4", { "orch", "pending 1000000", "task_us" },
    { "orch", "pending 10000", "task_us" }, us, 1 / 1.2, "<= 1.2x cost" },
  { "map default options / with progress = true", { "orch", "map progress", "seconds" },
    { "orch", "map default", "seconds" }, secs },
  { "map default options / with a job log", { "orch", "map joblog", "seconds" },
    { "orch", "map default", "seconds" }, secs },
  { ("bytes per pending task (was %d)"):format(PENDING_BYTES_BEFORE),
    { "orch", "pending 1000000", "pending_bytes" }, PENDING_BYTES_BEFORE,
    function(b) return ("%.0f B"):format(b) end, 1, "<= 1x" },
}

local fmt = "%-40s %12s %12s %9s %9s %13s  %s"
local met_count, rows, missed = 0, 0, {}

-- One row: o and ref as in of_round; show formats a value; a row without
-- a target only informs.
local function print_row(label, o, ref, show, target, target_text)
  local per_round = round_ratios(o, ref)
  local paired = {}
  for _, r in ipairs(per_round) do if r then paired[#paired + 1] = r end end
  local ratio = median_of(paired)
  local ov, rv = median_of(values(o)), median_of(values(ref))
  local bo, br = best(o), best(ref)
  local best_ratio = bo and br and bo > 0 and br / bo
  local function x(r) return r and ("%.2fx"):format(r) or "-" end
  local shown = { label, ov and show(ov) or "-", rv and show(rv) or "-", x(ratio), x(best_ratio) }
  if not target then
    print(fmt:format(shown[1], shown[2], shown[3], shown[4], shown[5], "", ""))
    return
  end
  local met = ratio and ratio >= target * 0.9999
  rows = rows + 1
  if met then met_count = met_count + 1 else
    local text = {}
    for i, r in ipairs(per_round) do text[i] = x(r) end
    missed[#missed + 1] = label .. ": " .. table.concat(text, " ")
  end
  print(fmt:format(shown[1], shown[2], shown[3], shown[4], shown[5],
    target_text or (">= %gx"):format(target), ratio == nil and "?" or met and "yes" or "NO"))
end

print(fmt:format("against Python", "orch", "python", "ratio", "best/best", "target", "met"))
print(("-"):rep(104))
for _, row in ipairs(PYTHON_ROWS) do
  local label, w, key, show, target, target_text = table.unpack(row)
  print_row(label, { "orch", w, key }, { "python", w, key }, show, target, target_text)
end
print()
print(fmt:format("against itself, a raw pipe, a number", "orch", "reference", "ratio", "best/best",
  "target", "met"))
print(("-"):rep(104))
for _, row in ipairs(SELF_ROWS) do print_row(table.unpack(row)) end
print(("-"):rep(104))
print(("%d of %d targets met (ratio: how many times orch is faster, or smaller; "
  .. "the median of the rounds' ratios)"):format(met_count, rows))
if #missed > 0 and ROUNDS > 1 then
  print("the rows not met, round by round (orch's round i against the reference's):")
  for _, m in ipairs(missed) do print("  " .. m) end
end
for _, e in ipairs(errors) do print("error: " .. e) end

local stop = root .. "bench/stop.lua"
local f = io.open(stop)
if f then
  f:close()
  print()
  print("== " .. LUA .. " bench/stop.lua")
  io.stdout:flush()
  os.execute(("cd %s && timeout -k 2 %d %s bench/stop.lua"):format(sh_quote(root), STOP_LIMIT, LUA))
end
