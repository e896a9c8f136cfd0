-- make bench: the same workloads through an orch pool and Python's
-- multiprocessing.Pool (bench/pool.py), 2 workers each, interleaved in one
-- run, then a table of ratios against the targets of issue 2.
--
--   lua5.4 bench/run.lua              the whole comparison (from the repo root)
--   lua5.4 bench/run.lua WORKLOAD     one orch workload, `key value` lines
--
-- Each measurement runs in a fresh process (orch's and Python's alike), so
-- neither side inherits the other's heap or children, and a workload that
-- hangs is cut off by timeout(1) instead of hanging the run. Only the
-- workload is timed: start-up, pool start-up and warm-up are not.
-- BENCH_ROUNDS (default 3) sets the number of rounds; times are the best
-- round of each side, memory the median. PYTHON overrides python3.

local root = (arg and arg[0] or ""):match("^(.-)[^/]*$"):gsub("bench/$", ""):gsub("^$", "./")
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local WORKERS = 2
local N_SUBMIT = 100000
local N_MAP, CHUNK = 1000000, 1000
local N_ROUNDTRIP = 10000
local SHUTDOWN_WORKERS = 16
local SETTLE = 0.3  -- seconds an idle pool is left alone before it is measured

---------------------------------------------------------------------------
-- the orch side: one workload in this process

local function inc(x) return x + 1 end

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

-- The workers' pids: from the pool's internals (the public API has no
-- call for them, and needs none).
local function worker_pids(pool)
  local pids = {}
  for i = 1, pool.size do pids[#pids + 1] = assert(pool.slots[i]).pid end
  return pids
end

local function orch_workload(name)
  local orch = require "orch"
  local core = require "orch.core"
  local now = core.now
  local function new_pool(n)
    local pool = orch.pool{ workers = n }
    pool:map(inc, { 1, 2, 3, 4, 5, 6, 7, 8 })  -- warm: workers up, code cached
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

  if name == "submit" then
    local pool = new_pool(WORKERS)
    local t0 = now()
    local futs = {}
    for i = 1, N_SUBMIT do futs[i] = pool:submit(inc, i) end
    for i = 1, N_SUBMIT do assert(futs[i]:result() == i + 1) end
    print("seconds", now() - t0)
    teardown(pool)

  elseif name == "map" then
    local items = {}
    for i = 1, N_MAP do items[i] = i end
    local pool = new_pool(WORKERS)
    local t0 = now()
    local out = pool:map(inc, items, { chunk = CHUNK })
    print("seconds", now() - t0)
    assert(#out == N_MAP and out[N_MAP] == N_MAP + 1)
    teardown(pool)

  elseif name == "map_default" or name == "map_progress" or name == "map_joblog" then
    -- map's default options (chunk "auto"), then the same with a progress
    -- line (to a file: plain lines) or a job log, to show what they cost
    local items = {}
    for i = 1, N_MAP do items[i] = i end
    local pool = new_pool(WORKERS)
    local opts, joblog = {}, nil
    if name == "map_progress" then
      opts.progress = true
    elseif name == "map_joblog" then
      joblog = os.tmpname()
      opts.joblog = joblog
    end
    local t0 = now()
    local out = pool:map(inc, items, opts)
    print("seconds", now() - t0)
    if joblog then os.remove(joblog) end
    assert(#out == N_MAP and out[N_MAP] == N_MAP + 1)
    teardown(pool)

  elseif name == "roundtrip" then
    local pool = new_pool(WORKERS)
    local times = {}
    for i = 1, N_ROUNDTRIP do
      local t0 = now()
      pool:submit(inc, i):result()
      times[i] = now() - t0
    end
    table.sort(times)
    local sum = 0
    for i = 1, #times do sum = sum + times[i] end
    print("mean_us", sum / #times * 1e6)
    print("median_us", times[#times // 2 + 1] * 1e6)
    print("p99_us", times[math.floor(#times * 0.99) + 1] * 1e6)
    teardown(pool)

  elseif name == "memory" then
    local pool = new_pool(WORKERS)
    orch.sleep(SETTLE)
    local sum, pids = 0, worker_pids(pool)
    for _, pid in ipairs(pids) do sum = sum + private_kib(pid) end
    print("private_kib", sum / #pids)
    teardown(pool)

  elseif name == "shutdown" then
    local pool = new_pool(SHUTDOWN_WORKERS)
    orch.sleep(SETTLE)
    local t0 = now()
    pool:shutdown()
    print("seconds", now() - t0)

  else
    io.stderr:write("usage: lua5.4 bench/run.lua "
      .. "[submit|map|map_default|map_progress|map_joblog|roundtrip|memory|shutdown]\n")
    os.exit(2)
  end
end

if arg[1] then return orch_workload(arg[1]) end

---------------------------------------------------------------------------
-- the driver: runs both sides, round after round, and prints the table

local LUA = arg[-1] or "lua5.4"
local PYTHON = os.getenv("PYTHON") or "python3"
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 3
-- Seconds one measurement may take before it counts as hung; a side that
-- hung once is not run again for that workload.
local LIMIT = { submit = 60, map = 60, map_default = 60, map_progress = 60, map_joblog = 120,
  roundtrip = 60, memory = 20, shutdown = 20 }
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
  .. "times: best round, memory: median"):format(ROUNDS))
print()

local WORKLOADS = { "submit", "map", "map_default", "map_progress", "map_joblog", "roundtrip",
  "memory", "shutdown" }
-- the workloads only one side runs (the other has no such option)
local ORCH_ONLY = { map_progress = true, map_joblog = true }
local results = { orch = {}, python = {} }  -- side -> workload -> list of result tables
local errors = {}
local hung = {}  -- "side workload" -> true

for round = 1, ROUNDS do
  io.stderr:write(("round %d/%d:"):format(round, ROUNDS))
  for _, w in ipairs(WORKLOADS) do
    io.stderr:write(" ", w)
    local sides = { { "orch", LUA .. " " .. sh_quote(root .. "bench/run.lua") .. " " .. w } }
    if has_python and not ORCH_ONLY[w] then
      sides[2] = { "python", PYTHON .. " " .. sh_quote(root .. "bench/pool.py") .. " " .. w }
    end
    for _, s in ipairs(sides) do
      local side, cmd = s[1], s[2]
      results[side][w] = results[side][w] or {}
      if not hung[side .. " " .. w] then
        local r, err = measure(cmd, LIMIT[w])
        if r then
          table.insert(results[side][w], r)
          if r.teardown_hung then
            errors[#errors + 1] = ("%s %s (round %d): measured, but the pool did not stop "
              .. "within 5 s after close() (join timed out; terminate() used)"):format(side, w, round)
          end
        else
          errors[#errors + 1] = ("%s %s (round %d): %s"):format(side, w, round, err)
          if err:find("^hung") then hung[side .. " " .. w] = true end
        end
      end
    end
  end
  io.stderr:write("\n")
end
print()

local function best(side, w, key)
  local v
  for _, r in ipairs(results[side][w] or {}) do
    if r[key] and (not v or r[key] < v) then v = r[key] end
  end
  return v
end

local function median(side, w, key)
  local vs = {}
  for _, r in ipairs(results[side][w] or {}) do vs[#vs + 1] = r[key] end
  if #vs == 0 then return nil end
  table.sort(vs)
  return vs[(#vs + 1) // 2]
end

-- One row per measured quantity. ratio = how many times better orch is
-- (python / orch for times and memory; orch / python for throughput).
local ROWS = {
  { "100k tasks submitted one by one", "submit", "seconds", best,
    function(s) return ("%.0f/s"):format(N_SUBMIT / s) end, 10 },
  { "map 1M integers, chunk 1000", "map", "seconds", best,
    function(s) return ("%.3f s"):format(s) end, 2 },
  { "map 1M integers, default options", "map_default", "seconds", best,
    function(s) return ("%.3f s"):format(s) end, 1 },
  { "  the same with progress = true", "map_progress", "seconds", best,
    function(s) return ("%.3f s"):format(s) end },
  { "  the same with a joblog", "map_joblog", "seconds", best,
    function(s) return ("%.3f s"):format(s) end },
  { "round trip, mean", "roundtrip", "mean_us", best,
    function(us) return ("%.1f us"):format(us) end, 4 },
  { "round trip, median", "roundtrip", "median_us", best,
    function(us) return ("%.1f us"):format(us) end, 4 },
  { "round trip, p99", "roundtrip", "p99_us", best,
    function(us) return ("%.1f us"):format(us) end, 4 },
  { "idle worker private memory", "memory", "private_kib", median,
    function(k) return ("%.0f KiB"):format(k) end, 10, "<= 1/%d" },
  { "shutdown of 16 idle workers", "shutdown", "seconds", best,
    function(s) return ("%.1f ms"):format(s * 1e3) end, 3 },
}

local fmt = "%-34s %12s %12s %9s %8s  %s"
print(fmt:format("workload", "orch", "python", "ratio", "target", "met"))
print(("-"):rep(86))
local met_count, rows = 0, 0
for _, row in ipairs(ROWS) do
  local label, w, key, pick, show, target, target_fmt = table.unpack(row)
  local o, p = pick("orch", w, key), pick("python", w, key)
  if not target then
    -- an orch-only row: its cost over map's default options
    local base = best("orch", "map_default", "seconds")
    print(fmt:format(label, o and show(o) or "-", "", o and base and ("+%.0f%%"):format((o / base - 1) * 100)
      or "-", "", ""))
  else
    local ratio = o and p and o > 0 and p / o
    local met = ratio and ratio >= target
    rows = rows + 1
    if met then met_count = met_count + 1 end
    print(fmt:format(label, o and show(o) or "-", p and show(p) or "-",
      ratio and ("%.2fx"):format(ratio) or "-", (target_fmt or ">= %dx"):format(target),
      ratio == nil and "?" or met and "yes" or "NO"))
  end
end
print(("-"):rep(86))
print(("%d of %d targets met (ratio: how many times orch is faster, or smaller)"):format(met_count, rows))
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
