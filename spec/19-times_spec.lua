-- Times in seconds: NaN and negative ones are errors that say so, in the
-- parent and in a task alike, never a wait that does not end. core.now()
-- is a monotonic clock, and a wait or grace period counts from when it is
-- asked for, however long Lua code ran since the loop last turned.
local orch = require "orch"
local core = require "orch.core"
local procs = require "helper.procs"
-- the grace spec's kill is logged: collected, not written into busted's output
setup(orch_spec.quiet_logs)
teardown(orch_spec.restore_logs)

-- Runs Lua code for `seconds` of CPU time: the loop does not turn meanwhile.
local function compute(seconds)
  local t0 = os.clock()
  while os.clock() - t0 < seconds do end
end

describe("times in seconds", function()
  it("core.step, core.timer and core.child_sleep refuse NaN and negative times", function()
    local function refused(fn, t, why)
      local ok, err = pcall(fn, t, print)
      assert.is_false(ok)
      assert.matches("bad argument #1 to '[%w._]*' %(seconds must " .. why .. "%)", err)
    end
    for _, fn in ipairs{ core.step, core.timer, core.child_sleep } do
      refused(fn, 0 / 0, "be a number, got NaN")
      refused(fn, -0.5, "not be negative")
    end
    local ok, err = pcall(orch.sleep, 0 / 0)
    assert.is_false(ok)
    assert.matches("orch.sleep: seconds must be a non-negative number (got nan)", err, 1, true)
    core.step(0)  -- still a poll
  end)

  it("orch.sleep(0/0) and orch.sleep(-1) in a task fail the task at once", function()
    local pool <close> = orch.pool{ workers = 1, timeout = 5 }
    for _, t in ipairs{ 0 / 0, -1 } do
      local fut = pool:submit(function(s) orch.sleep(s) end, t)
      assert.is_true(fut:wait(5))
      assert.are.equal("error", fut:error().kind)
      assert.matches("orch.sleep: seconds must be a non%-negative number", fut:error().message)
    end
  end)

  it("core.now() is the monotonic clock, not the time of day", function()
    -- CLOCK_MONOTONIC counts from boot: decades away from os.time()
    assert.is_true(math.abs(core.now() - os.time()) > 1e6, "now " .. core.now())
    local a = core.now()
    compute(0.05)
    local b = core.now()
    assert.is_true(b - a >= 0.04 and b - a < 5, "step " .. (b - a))
  end)

  it("a timer and orch.sleep count from when they are made, not from the loop's last turn", function()
    -- t0 is read before the work: reading the clock between the work and
    -- the wait must not be what makes the wait right
    orch.sleep(0.01)
    local t0, fired = core.now(), nil
    compute(0.3)  -- no turn of the loop meanwhile
    local t <close> = core.timer(0.2, function() fired = core.now() end)
    while not fired do core.step() end
    assert.is_true(fired - t0 >= 0.49, "timer fired after " .. (fired - t0))
    t0 = core.now()
    compute(0.3)
    orch.sleep(0.2)
    assert.is_true(core.now() - t0 >= 0.49, "slept " .. (core.now() - t0))
    t0 = core.now()
    compute(0.3)
    core.step(0.2)  -- nothing comes: the whole timeout
    assert.is_true(core.now() - t0 >= 0.49, "stepped " .. (core.now() - t0))
  end)

  it("a wait inside a callback sees what the outer turn gathered and has not handled yet", function()
    -- two timers due in the same turn: whichever runs first waits for the
    -- other, which that turn already holds (pending): the inner wait
    -- handles it at once rather than blocking until its own limit
    local loop = require "orch.loop"
    local ran, waited = {}, nil
    local function cb(me, other)
      return function()
        ran[me] = true
        if ran[other] then return end
        local t0 = core.now()
        assert.is_true(loop.wait(function() return ran[other] end, 2, true))
        waited = core.now() - t0
      end
    end
    local t <close> = core.timer(0.01, cb(1, 2))
    local t2 <close> = core.timer(0.01, cb(2, 1)) -- luacheck: ignore 211
    compute(0.03)  -- both are due when the loop next turns
    core.step()
    assert.truthy(waited, "both timers ran in one turn")
    assert.is_true(waited < 0.5, "the inner wait took " .. waited .. " s")
  end)

  it("a wait with a time limit inside a callback of another such wait: each ends on time", function()
    local loop = require "orch.loop"
    local inner_took
    local t <close> = core.timer(0.05, function()
      local t0 = core.now()
      loop.wait(function() return false end, 0.3)
      inner_took = core.now() - t0
    end)
    local t0 = core.now()
    loop.wait(function() return false end, 0.1)  -- ends with the inner wait (0.05 + 0.3)
    local outer_took = core.now() - t0
    assert.is_true(inner_took >= 0.29 and inner_took < 1, "inner " .. tostring(inner_took))
    assert.is_true(outer_took >= 0.34 and outer_took < 1.5, "outer " .. outer_took)
  end)

  it("orch.sleep in a task that computed first sleeps the whole time", function()
    local pool <close> = orch.pool{ workers = 1 }
    local took = pool:submit(function()
      local t0, c = require("orch.core").now(), os.clock()
      while os.clock() - c < 0.3 do end
      orch.sleep(0.2)
      return require("orch.core").now() - t0
    end):result()
    assert.is_true(took >= 0.49, "computed and slept " .. took)
  end)

  it("a cancelled task stuck in C gets its whole grace, however long the parent computed first", function()
    local pool <close> = orch.pool{ workers = 1, grace = 0.6 }
    local pidfile = procs.tmpname()
    finally(function() os.remove(pidfile) end)
    local fut = pool:submit(function(path)
      os.execute(("sh -c 'echo $$ > %s; exec sleep 30'"):format(path))
    end, pidfile)
    assert.truthy(procs.wait_until(function() return tonumber(procs.slurp(pidfile) or "") end, 5))
    local t0 = core.now()
    compute(0.5)
    fut:cancel()
    assert.is_true(fut:wait(5))
    local took = core.now() - t0
    assert.is_true(took >= 1.05, "killed " .. took .. " s after the work began (0.5 s, then grace 0.6)")
    assert.equal("cancelled", fut:state())
  end)
end)
