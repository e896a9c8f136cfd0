-- The progress reporter of long runs: its numbers, how often it reports
-- (a loop timer, whatever the rate of items), and its plain lines when
-- stderr is not a terminal.
local H = orch_spec
local core = require "orch.core"
local progress = require "orch.progress"

-- Adds `step` done items every `every` seconds until `total`, running the
-- loop; returns the reporter's calls.
local function drive(total, step, every, how)
  local calls = {}
  local p <close> = progress.new(how or function(s) calls[#calls + 1] = s end, total)
  local done = 0
  local function tick()
    p:add(step)
    done = done + step
    if done < total then core.timer(every, tick) end
  end
  core.timer(every, tick)
  H.wait_for(function() return done >= total end, 10)
  p:finish()
  return calls
end

describe("progress", function()
  it("calls a function a few times a second and once at the end, with the numbers", function()
    local t0 = core.now()
    -- 10,000 items over ~1 s in many small steps: reports follow the
    -- timer, not the items
    local calls = drive(10000, 10, 0.001)
    local elapsed = core.now() - t0
    assert.is_true(#calls >= 2)
    assert.is_true(#calls <= elapsed / progress.REDRAW + 2, ("%d calls in %.2fs"):format(#calls, elapsed))
    local last = calls[#calls]
    assert.are.same({ 10000, 0, 10000, 0 }, { last.done, last.failed, last.total, last.eta })
    assert.is_true(last.rate > 0 and last.elapsed > 0)
    local mid = calls[1]
    assert.is_true(mid.done < 10000 and mid.eta > 0)
  end)

  it("counts items done before (a resumed run) as done, but not in the rate", function()
    local calls = {}
    local p <close> = progress.new(function(s) calls[#calls + 1] = s end, 100, 60)
    orch_spec.wait_for(function() return false end, 0.3)
    p:add(30, 10)
    p:finish()
    local last = calls[#calls]
    assert.are.same({ 90, 10, 100 }, { last.done, last.failed, last.total })
    assert.is_true(last.rate < 40 / 0.29)
    assert.are.equal(0, last.eta)
  end)

  it("formats a line", function()
    local line = progress.format({ done = 1200, failed = 3, total = 10000, elapsed = 75,
      rate = 16, eta = 3725 })
    assert.are.equal("1203/10000 (12%), 3 failed, 16.0/s, ETA 1:02:05, elapsed 1:15", line)
    assert.matches("ETA %?", progress.format({ done = 0, failed = 0, total = 5, elapsed = 0, rate = 0 }))
  end)

  it("writes plain lines to a stderr that is not a terminal, and a last one", function()
    local out, code = H.run_lua([[
      local core = require "orch.core"
      local progress = require "orch.progress"
      progress.LINE_EVERY = 0.2
      local p = progress.new(true, 50, 0, "job")
      local n = 0
      local function tick() p:add(1); n = n + 1; if n < 50 then core.timer(0.02, tick) end end
      core.timer(0.02, tick)
      require("orch.loop").wait(function() return n == 50 end)
      p:finish()
    ]])
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("\r", 1, true))
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.is_true(#lines >= 3 and #lines <= 8, out)
    assert.matches("^job: %d+/50 %(%d+%%%), 0 failed, [%d.]+/s, ETA [%d:?]+, elapsed 0:0%d$", lines[1])
    assert.matches("^job: 50/50 %(100%%%), 0 failed, .*ETA 0:00", lines[#lines])
  end)

  it("does nothing when off", function()
    local p = progress.new(nil, 10)
    p:add(3); p:finish()
  end)
end)
