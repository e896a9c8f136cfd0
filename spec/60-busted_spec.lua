-- orch busted: the fixture suites under spec/fixtures/busted run by busted
-- alone and by orch busted (scripts/orch busted) as separate processes, and
-- their outputs, counts and exit statuses compared.
local json = require "dkjson"

local DIR = "spec/fixtures/busted"
local ORCH_BUSTED = "lua5.4 ../../../scripts/orch busted"

-- Runs a command line in the fixture directory; returns its exit status,
-- its stdout, its stderr.
local function run(cmd)
  local err = os.tmpname()
  local p = io.popen(("cd %s && %s 2>%s"):format(DIR, cmd, err))
  local out = p:read("a")
  local _, _, code = p:close()
  local errors = orch_spec.read_file(err)
  os.remove(err)
  return code, out, errors
end

local function busted(args) return run("busted " .. args) end
local function orch_busted(args) return run(ORCH_BUSTED .. " " .. args) end

-- What may differ between two runs of the same suite: times, addresses,
-- the spec's own output (printed as it comes, not where busted puts it),
-- the order of XML attributes and of JSON keys.
local function normalize(text)
  text = text:gsub("0x%x+", "ADDR"):gsub("%d+%.%d+e?[-+]?%d*", "N")
    :gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", "TIME"):gsub("output of a spec\n", "")
    :gsub("%(%d+ ms", "(N ms")
  return (text:gsub("<(%w+)( [^>]-)(/?)>", function(tag, attrs, close)
    local list = {}
    for a in attrs:gmatch("%S+='[^']*'") do list[#list + 1] = a end
    table.sort(list)
    return "<" .. tag .. " " .. table.concat(list, " ") .. close .. ">"
  end))
end

-- A decoded JSON value with its strings normalized.
local function canonical(v)
  if type(v) == "string" then return normalize(v) end
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = canonical(x) end
  return t
end

local function summary(out)
  local s, f, e, p = out:match("(%d+) successe?s? / (%d+) failures? / (%d+) errors? / (%d+) pending")
  return s and { tonumber(s), tonumber(f), tonumber(e), tonumber(p) }
end

describe("orch busted on a suite", function()
  for _, format in ipairs({ "plainTerminal", "utfTerminal", "TAP", "junit", "gtest" }) do
    it("prints what busted alone prints, with -o " .. format, function()
      local code, out = busted("-o " .. format .. " suite")
      local ocode, oout = orch_busted("-j 2 -o " .. format .. " suite")
      assert.equal(1, code)
      assert.equal(code, ocode)
      assert.equal(normalize(out), normalize(oout))
    end)
  end

  it("gives busted's json report", function()
    -- (busted's json handler fails on a pending test: it cannot encode a function)
    local files = " suite/fail_fixture.lua suite/globals_fixture.lua"
    local _, out = busted("-o json" .. files)
    local code, oout = orch_busted("-o json" .. files)
    assert.equal(1, code)
    local want, got = json.decode(out:match("{.*}")), json.decode(oout:match("{.*}"))
    for _, list in ipairs({ "successes", "failures", "errors", "pendings" }) do
      assert.equal(#want[list], #got[list])
      for i, entry in ipairs(want[list]) do
        assert.equal(entry.name, got[list][i].name)
        assert.equal(normalize(entry.message or ""), normalize(got[list][i].message or ""))
        assert.same(canonical(entry.trace), canonical(got[list][i].trace))
      end
    end
  end)

  it("honours tags, filters, shuffling with a seed and -j 1", function()
    for _, args in ipairs({ "--tags=quick", "--exclude-tags=quick,skipped", "--filter=raises",
                            "--filter-out=arithmetic", "--shuffle --seed=7", "--sort" }) do
      local code, out = busted("-o plainTerminal " .. args .. " suite")
      local ocode, oout = orch_busted("-j 1 -o plainTerminal " .. args .. " suite")
      assert.equal(code, ocode)
      assert.same(summary(out), summary(oout))
      assert.equal(normalize(out), normalize(oout))
    end
  end)

  it("runs each file in a process of its own, passes the spec's output through", function()
    local code, out = orch_busted("-j 1 -o TAP suite/globals_fixture.lua suite/globals2_fixture.lua")
    assert.equal(0, code)
    assert.matches("ok 4 - prints to stdout", out, 1, true)
    local _, printed = out:gsub("output of a spec\n", "")
    assert.equal(2, printed)
  end)

  it("exits 0 when everything passes, as busted does", function()
    local code, out = orch_busted("-o plainTerminal suite/pass_fixture.lua")
    assert.equal(0, code)
    assert.same({ 4, 0, 0, 1 }, summary(out))
  end)
end)

describe("orch busted when a spec process dies", function()
  it("reports os.exit and SIGKILL as errors of the test that ran, keeps what passed", function()
    local code, out = orch_busted("-j 2 -o plainTerminal crash")
    assert.equal(1, code)
    assert.same({ 3, 0, 2, 0 }, summary(out))
    assert.matches("exiting exits\ncrash/exit_fixture.lua: the spec process exited with status 3"
      .. " before the file finished", out, 1, true)
    assert.matches("killing kills itself\ncrash/kill_fixture.lua: the spec process was killed by SIGKILL",
      out, 1, true)
    assert.not_matches("never runs", out, 1, true)
  end)

  it("reports a file that passes --timeout, and goes on", function()
    local t0 = os.time()
    local code, out = orch_busted("-j 1 --timeout 1 -o TAP slow/sleep_fixture.lua crash/after_fixture.lua")
    assert.equal(1, code)
    assert.truthy(os.time() - t0 < 10)
    assert.matches("ok 1 - is quick\nnot ok 2 - sleeps\n", out, 1, true)
    assert.matches("slow/sleep_fixture.lua: the file ran longer than 1 s (--timeout)", out, 1, true)
    assert.matches("ok 3 - still runs\n1..3", out, 1, true)
  end)

  it("--maxfail N stops the running files too once N tests failed", function()
    local t0 = os.time()
    local code, out, err = orch_busted("-j 2 --maxfail 2 -o plainTerminal slow/fail1_fixture.lua "
      .. "slow/fail2_fixture.lua slow/fail3_fixture.lua slow/fail4_fixture.lua")
    assert.equal(1, code)
    assert.truthy(os.time() - t0 < 6, "the files sleep 3 s each after failing")
    local counts = summary(out)
    assert.equal(0, counts[1])
    assert.truthy(counts[2] >= 2 and counts[2] < 4)
    assert.matches("stopped after %d+ failures and errors %(%-%-maxfail 2%)", err)
    assert.truthy(orch_spec.eventually(function()
      return os.execute("! env -u LD_PRELOAD pgrep -f 'slee[p] 3.25' >/dev/null")
    end, 3), "a spec process or its child was left running")
  end)

  it("stops in order on Ctrl-C: what finished is reported, exit 130", function()
    local out = os.tmpname()
    local pidfile = os.tmpname()
    local p = io.popen(("cd %s && { %s -j 2 -o plainTerminal slow/sleep_fixture.lua suite >%s 2>&1 & "
      .. "echo $! >%s; wait $!; echo \"exit=$?\"; }"):format(DIR, ORCH_BUSTED, out, pidfile))
    local pid
    assert.truthy(orch_spec.eventually(function()
      pid = tonumber(orch_spec.read_file(pidfile) or "")
      return pid and (orch_spec.read_file(out) or ""):find("+", 1, true)
    end, 10))
    orch_spec.eventually(function() return false end, 0.5)   -- the suite's files finish
    os.execute("kill -INT " .. pid)
    local status = p:read("a")
    p:close()
    local text = orch_spec.read_file(out)
    os.remove(out)
    os.remove(pidfile)
    assert.equal("exit=130\n", status)
    assert.matches("interrupted", text, 1, true)
    assert.truthy(summary(text)[1] >= 1, text)
    assert.not_matches("sleeps", text, 1, true)
  end)
end)

describe("orch busted SIGKILLed", function()
  it("leaves no spec process running", function()
    local pidfile = os.tmpname()
    local p = io.popen(("cd %s && { %s slow/spin_fixture.lua >/dev/null 2>&1 & echo $! >%s; wait; }")
      :format(DIR, ORCH_BUSTED, pidfile))
    local running = "env -u LD_PRELOAD pgrep -f 'slow/spi[n]_fixture' >/dev/null"
    assert.truthy(orch_spec.eventually(function()
      return orch_spec.read_file(pidfile) ~= "" and os.execute(running)
    end, 10))
    orch_spec.eventually(function() return false end, 0.5)   -- the test is spinning
    os.execute("kill -KILL " .. orch_spec.read_file(pidfile))
    p:close()
    os.remove(pidfile)
    assert.truthy(orch_spec.eventually(function() return not os.execute(running) end, 3))
  end)
end)

describe("orch busted's own options", function()
  it("refuses bad values with exit status 2", function()
    for _, args in ipairs({ "-j 0", "-j x", "--timeout=-1", "--maxfail", "--maxfail 1.5" }) do
      local code, _, err = orch_busted(args .. " suite")
      assert.equal(2, code)
      assert.matches("orch busted: option '%-[%-%a]+' ", err)
    end
  end)

  it("keeps file times in .orch-busted-times for the next run's order", function()
    os.remove(DIR .. "/.orch-busted-times")
    orch_busted("-o TAP suite/pass_fixture.lua crash/after_fixture.lua")
    local times = orch_spec.read_file(DIR .. "/.orch-busted-times")
    os.remove(DIR .. "/.orch-busted-times")
    assert.matches("^[%d.]+\tcrash/after_fixture.lua\n[%d.]+\tsuite/pass_fixture.lua\n$", times)
  end)
end)
