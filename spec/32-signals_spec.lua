-- Signals from the outside: the job runs in its own session (setsid) and
-- gets real signals, to its whole process group, to the parent alone or to
-- one child.
local P = require "scripts.sup_proc"
after_each(P.cleanup_all)

local EXAMPLE = "scripts/examples/ordered_shutdown.lua"

local function count_lines(path)
  local seen, n, dup = {}, 0, 0
  for line in io.lines(path) do
    n = n + 1
    if seen[line] then dup = dup + 1 end
    seen[line] = true
  end
  return n, dup
end

local function start_example()
  local dir = P.tmpdir()
  local out = dir .. "/written"
  local job = P.start(EXAMPLE, nil, { ORCH_EXAMPLE_OUT = out, ORCH_EXAMPLE_DELAY = "0" })
  job.written = out
  job.extra = dir
  assert.is_true(P.wait_output(job, "] started", 10, "err"))
  assert.is_true(P.wait_for(function() return #P.service_pids(job, "worker") == 1 end, 10))
  P.sleep(0.3) -- let it produce for a while (behaviour, not synchronisation)
  return job
end

local function check_nothing_lost(job, rc, code)
  local out, err = P.stdout(job), P.stderr(job)
  assert.equal(code, rc, err)
  local produced = tonumber(out:match("produced (%d+)"))
  local written = tonumber(out:match("written (%d+)"))
  assert.truthy(produced and produced > 0, out .. err)
  assert.equal(produced, written)
  assert.matches("in order, no gaps, no duplicates", out, 1, true)
  local n, dup = count_lines(job.written)
  assert.equal(produced, n)
  assert.equal(0, dup)
  -- the writer is asked to stop only after the worker exited
  local w_exit = P.pos(job, "] exited with code 0")
  local r_ask = err:find("%[results %d+%] stop requested")
  local wk_exit = err:find("%[worker %d+%] exited")
  assert.truthy(w_exit and r_ask and wk_exit, err)
  assert.is_true(wk_exit < r_ask, err)
end

local function finish(job)
  os.execute("rm -rf " .. P.quote(job.extra))
  P.cleanup(job)
end

describe("signals under a supervisor", function()
  for _, case in ipairs({
    { "TERM to the whole group: ordered shutdown, nothing lost, exit 143", "TERM", P.signal_group, 143 },
    { "INT to the whole group (Ctrl-C): the same, exit 130", "INT", P.signal_group, 130 },
    { "TERM to the parent alone: the same, exit 143", "TERM", P.signal, 143 },
  }) do
    local title, sig, send, code = case[1], case[2], case[3], case[4]
    it(title, function()
      local job = start_example()
      send(sig, job.pid)
      local rc = P.wait_exit(job, 15)
      check_nothing_lost(job, rc, code)
      finish(job)
    end)
  end

  it("INT and TERM sent to a child itself do nothing to it", function()
    local job = P.start("spec/scripts/sup_deaf.lua")
    assert.is_true(P.wait_output(job, "] ready", 10, "err"))
    local pid = P.service_pids(job, "stubborn")[1]
    P.signal("INT", pid)
    P.signal("TERM", pid)
    P.signal("HUP", pid)
    local beats = select(2, P.stdout(job):gsub("beat", ""))
    assert.is_true(P.wait_for(function()
      return select(2, P.stdout(job):gsub("beat", "")) >= beats + 3
    end, 5))
    assert.is_true(P.alive(pid))
    assert.is_nil(P.rc(job))
    P.signal_group("KILL", job.pid)
    P.cleanup(job)
  end)

  it("a second signal kills a service that ignores stop requests; exit by that signal", function()
    local job = P.start("spec/scripts/sup_deaf.lua")
    assert.is_true(P.wait_output(job, "] ready", 10, "err"))
    local pid = P.service_pids(job, "stubborn")[1]
    P.signal_group("TERM", job.pid)
    assert.is_true(P.wait_output(job, "stop requested", 5, "err"))
    P.sleep(0.2)
    assert.is_true(P.alive(pid))          -- grace is 60 s: it still runs
    P.signal_group("INT", job.pid)
    local rc = P.wait_exit(job, 5)
    assert.equal(143, rc)                  -- ends by the first signal
    assert.is_true(P.wait_for(function() return not P.alive(pid) end, 1))
    assert.matches("killed: second signal INT", P.stderr(job), 1, true)
    P.cleanup(job)
  end)

  it("children die within a second when the parent is SIGKILLed", function()
    local job = start_example()
    local pids = { P.service_pids(job, "results")[1], P.service_pids(job, "worker")[1] }
    P.signal("KILL", job.pid)
    assert.equal(137, P.wait_exit(job, 5))
    assert.is_true(P.wait_for(function()
      return not P.alive(pids[1]) and not P.alive(pids[2])
    end, 1))
    finish(job)
  end)
end)
