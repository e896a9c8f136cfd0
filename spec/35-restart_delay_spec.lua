-- A service that keeps failing is restarted after restart_delay seconds,
-- times restart_backoff for each restart in a row, at most
-- restart_delay_max; a run that lasted restart_window seconds starts the
-- row over. The services write the time of each start; the gaps between
-- starts are measured (lower bounds strict, upper bounds loose: the
-- machine is shared). A clean exit is logged as an exit, never a failure.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec

-- A service body that appends the time of its start to path, then runs
-- plan[n](n) for its n-th start (error: a failure; return: exit 0).
local function service(path, plan)
  return function()
    local f = assert(io.open(path, "a"))
    f:write(("%.6f\n"):format(core.now()))
    f:close()
    local n = 0
    for _ in io.lines(path) do n = n + 1 end
    return (plan[n] or plan.default)(n)
  end
end

local function fail() error("failing on purpose") end
local function exit() end

local function gaps(path)
  local times, out = {}, {}
  for line in io.lines(path) do times[#times + 1] = tonumber(line) end
  for i = 2, #times do out[i - 1] = times[i] - times[i - 1] end
  return out
end

-- The gaps are at least the delays and not much more.
local function assert_gaps(expected, got)
  assert.are.equal(#expected, #got, "starts: " .. #got + 1)
  for i, d in ipairs(expected) do
    assert.is_true(got[i] >= d * 0.95, ("gap %d: %.3f s, expected %.3f s"):format(i, got[i], d))
    assert.is_true(got[i] < d + 0.5, ("gap %d: %.3f s, expected %.3f s"):format(i, got[i], d))
  end
end

local function run(spec)
  local sup = orch.supervisor(spec)
  return sup, sup:run()
end

describe("restart delays", function()
  local path
  before_each(function() path = os.tmpname() end)
  after_each(function()
    os.remove(path)
    assert.are.same({}, (H.children()))
  end)

  it("grow by restart_backoff from restart_delay; the restart limit still ends a crash loop #novalgrind", function()
    local logs = H.capture_logs(finally)
    local _, ok, err = run{ max_restarts = 4, restart_window = 30, services = {
      { name = "loop", run = service(path, { default = fail }) } } }
    assert.is_nil(ok)
    assert.matches("service 'loop' failed and the restart limit was reached %(4 restarts", err)
    assert_gaps({ 0.1, 0.2, 0.4, 0.8 }, gaps(path))
    local said = {}
    for _, r in ipairs(logs) do said[#said + 1] = r.message end
    said = table.concat(said, "\n")
    assert.matches("restarting in 0.1s\n", said, 1, true)
    assert.matches("restarting in 0.8s\n", said, 1, true)
  end)

  it("stop growing at restart_delay_max; the options can be set per service #novalgrind", function()
    H.capture_logs(finally)
    run{ max_restarts = 4, restart_window = 30, services = {
      { name = "capped", run = service(path, { default = fail }),
        restart_delay = 0.05, restart_backoff = 3, restart_delay_max = 0.2 } } }
    assert_gaps({ 0.05, 0.15, 0.2, 0.2 }, gaps(path))
  end)

  it("start over once a run lasted restart_window seconds #novalgrind", function()
    H.capture_logs(finally)
    local stay = function() orch.sleep(0.6); fail() end
    local _, ok = run{ max_restarts = 10, restart_window = 0.5, services = {
      { name = "s", restart = "transient", run = service(path, {
        fail, fail, stay, fail, exit }) } } }
    assert.is_true(ok)
    -- 0.1, 0.2, then a run of 0.6 s, then 0.1 again, then 0.2
    local g = gaps(path)
    assert.are.equal(4, #g)
    assert_gaps({ 0.1, 0.2 }, { g[1], g[2] })
    assert_gaps({ 0.7, 0.2 }, { g[3], g[4] })
  end)

  it("restart_delay = 0 restarts at once #novalgrind", function()
    H.capture_logs(finally)
    run{ max_restarts = 3, restart_window = 30, restart_delay = 0, services = {
      { name = "quick", run = service(path, { default = fail }) } } }
    local g = gaps(path)
    assert.are.equal(3, #g)
    for _, d in ipairs(g) do assert.is_true(d < 0.09, ("gap %.3f s"):format(d)) end
  end)
end)

describe("a permanent service that exits 0", function()
  it("is logged as an exit, restarted after its delay, never called failed #novalgrind", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local logs = H.capture_logs(finally)
    local sup, ok, err = run{ max_restarts = 2, restart_window = 30, services = {
      { name = "clean", run = service(path, { default = exit }) } } }
    assert.is_nil(ok)
    assert.matches("service 'clean' exited and the restart limit was reached", err)
    for _, r in ipairs(logs) do
      if r.name == "clean" and r.message:find("^exited") then
        assert.are.equal("exited with code 0", r.message)
        assert.are.equal("info", r.level)
      end
      assert.is_nil(r.message:find("failed", 1, true) and r.name == "clean" or nil, r.message)
    end
    assert.are.equal("stopped", sup:status()[1].state)
    assert.are.equal(0, sup:status()[1].exit_code)
    assert_gaps({ 0.1, 0.2 }, gaps(path))
  end)
end)
