-- orch busted against busted alone: each suite run serially by busted and
-- by `orch busted -j 2`, paired (one after the other, round after round,
-- BENCH_ROUNDS rounds, default 1), wall time of the whole command.
-- From the repo root, after make build: lua5.4 bench/busted.lua
local ROOT = io.popen("pwd"):read("l")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "1")

local SUITES = {
  { name = "orch's own suite (spec/, no #slow)", dir = ".", args = "--exclude-tags=slow" },
  { name = "CPU-bound suite (bench/busted_suite)", dir = "bench/busted_suite", args = "" },
  { name = "small fixture suite (4 files)", dir = "spec/fixtures/busted", args = "suite" },
}

local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

-- Runs cmd in dir: seconds, exit status, busted's summary counts.
local function measure(dir, cmd)
  local t0 = now()
  local p = io.popen(("cd %s && %s -o plainTerminal 2>/dev/null"):format(dir, cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  local counts = out:match("(%d+ successe?s? / %d+ failures? / %d+ errors? / %d+ pending)")
  return now() - t0, code, counts or "no summary"
end

local rows = {}
for round = 1, ROUNDS do
  for i, s in ipairs(SUITES) do
    local serial, scode, scounts = measure(s.dir, "busted " .. s.args)
    local parallel, pcode, pcounts = measure(s.dir,
      ("lua5.4 %s/scripts/orch busted -j 2 %s"):format(ROOT, s.args))
    rows[i] = rows[i] or { best_serial = math.huge, best_parallel = math.huge, same = true }
    local r = rows[i]
    r.best_serial, r.best_parallel = math.min(r.best_serial, serial), math.min(r.best_parallel, parallel)
    r.same = r.same and scode == pcode and scounts == pcounts
    r.counts = scounts .. (scounts == pcounts and "" or (" vs " .. pcounts))
    io.stderr:write(("round %d: %s: busted %.2f s (exit %s, %s), orch busted -j 2 %.2f s (exit %s, %s)\n")
      :format(round, s.name, serial, scode, scounts, parallel, pcode, pcounts))
  end
end

print(("%d round(s), best of each; wall time of the whole command\n"):format(ROUNDS))
print(("%-40s %10s %12s %8s  %s"):format("suite", "busted", "orch -j 2", "speedup", "same counts and exit status"))
for i, s in ipairs(SUITES) do
  local r = rows[i]
  print(("%-40s %8.2f s %10.2f s %7.2fx  %s (%s)"):format(s.name, r.best_serial, r.best_parallel,
    r.best_serial / r.best_parallel, r.same and "yes" or "NO", r.counts))
end
