-- orch.supervisor: validation in-process (nothing forks), behaviour in
-- child scripts watched from the outside.
local orch = require "orch"
local P = require "scripts.sup_proc"
after_each(P.cleanup_all)

local function noop() end

local function bad(spec, pattern)
  local ok, err = pcall(orch.supervisor, spec)
  assert.is_false(ok)
  assert.matches(pattern, err, 1, true)
end

describe("orch.supervisor validation", function()
  it("names unknown options and lists the valid ones", function()
    bad({ services = { { name = "a", run = noop } }, stratgy = "x" },
      "unknown option 'stratgy' (valid: max_restarts, restart_backoff, restart_delay, "
      .. "restart_delay_max, restart_window, services, shutdown_timeout, strategy)")
    bad({ services = { { name = "a", run = noop, gracee = 1 } } },
      "services[1] (a): unknown option 'gracee' (valid: after, args, grace, name, ready, "
      .. "ready_timeout, restart, restart_backoff, restart_delay, restart_delay_max, run)")
  end)
  it("refuses unknown after names, cycles and duplicate names", function()
    bad({ services = { { name = "a", run = noop, after = { "b" } } } },
      "'after' names an unknown service 'b'")
    bad({ services = {
      { name = "a", run = noop, after = { "c" } },
      { name = "b", run = noop, after = { "a" } },
      { name = "c", run = noop, after = { "b" } } } },
      "a cycle in 'after': a -> c -> b -> a")
    bad({ services = { { name = "a", run = noop }, { name = "a", run = noop } } },
      "duplicate service name 'a'")
  end)
  it("checks kinds and values", function()
    bad({ services = {} }, "non-empty list of services")
    bad({ services = { { name = "a" } } }, "'run' (a function) is required")
    bad({ services = { { run = noop } } }, "'name' is required")
    bad({ services = { { name = "a", run = noop, restart = "always" } } }, "unknown restart 'always'")
    bad({ services = { { name = "a", run = noop, ready = "yes" } } }, "unknown ready 'yes'")
    bad({ strategy = "all", services = { { name = "a", run = noop } } }, "unknown strategy 'all'")
    bad({ services = { { name = "a", run = noop, grace = -1 } } }, "'grace' must be a non-negative number")
    bad({ services = { { name = "a", run = "f" } } }, "option 'run' must be a function (got \"f\")")
    bad("x", "options must be a table")
  end)
  it("checks names given to stop, start and restart", function()
    local sup = orch.supervisor{ services = { { name = "a", run = noop } } }
    assert.has_error(function() sup:stop("nope") end,
      "orch.supervisor: stop: unknown service 'nope' (services: a)")
    assert.has_error(function() sup:restart("nope") end)
    assert.has_error(function() sup:start("nope") end,
      "orch.supervisor: start: unknown service 'nope' (services: a)")
    assert.equal("pending", sup:status()[1].state)
  end)
  it("orch.ready outside a service does nothing", function()
    assert.is_false(orch.ready())
  end)
end)

local function run_script(script, env, timeout)
  local job = P.start(script, nil, env)
  local rc = P.wait_exit(job, timeout or 20)
  local out, err = P.stdout(job), P.stderr(job)
  P.cleanup(job)
  return rc, out, err
end

describe("orch.supervisor restarts", function()
  for strategy, expect in pairs({
    one_for_one = "restarts a=0 b=1 c=0",
    one_for_all = "restarts a=1 b=1 c=1",
    rest_for_one = "restarts a=0 b=1 c=1",
  }) do
    it(strategy .. " restarts the right services, then stops in reverse order", function()
      local dir = P.tmpdir()
      local rc, out, err = run_script("spec/scripts/sup_restart.lua",
        { STRATEGY = strategy, MARK = dir .. "/crashed" })
      os.execute("rm -rf " .. P.quote(dir))
      assert.equal(0, rc, err)
      assert.matches(expect, out, 1, true)
      assert.matches("stopped", out, 1, true)
      -- the final stop: c exits before b is asked, b exits before a is asked
      local tail = err:sub((err:find("shutting down (stop requested)", 1, true)))
      local c_exit = tail:find("%[c %d+%] exited")
      local b_ask = tail:find("%[b %d+%] stop requested")
      local b_exit = tail:find("%[b %d+%] exited")
      local a_ask = tail:find("%[a %d+%] stop requested")
      assert.truthy(c_exit and b_ask and b_exit and a_ask, tail)
      assert.is_true(c_exit < b_ask and b_exit < a_ask, tail)
    end)
  end

  it("gives up after max_restarts in restart_window: stops all, run() returns nil, err", function()
    local rc, out, err = run_script("spec/scripts/sup_intensity.lua")
    assert.equal(3, rc, err)
    assert.matches("run\tnil\tservice 'crasher' failed and the restart limit was reached", out)
    assert.matches("crasher\tfailed\t2\t1", out, 1, true)
    assert.matches("base\tstopped\t0\t0", out, 1, true)
    assert.matches("restarting (restart 2)", err, 1, true)
  end)

  it("start(name) brings back a service and what its stop took down, counting no restart", function()
    local rc, out, err = run_script("spec/scripts/sup_start.lua")
    assert.equal(0, rc, err)
    local at = {}  -- step -> name -> { state, restarts, pid }
    for step, name, state, restarts, pid in out:gmatch("([%w-]+)\t(%w+)\t(%a+)\t(%d+)\t(%w+)\n") do
      at[step] = at[step] or {}
      at[step][name] = { state = state, restarts = tonumber(restarts), pid = tonumber(pid) }
    end
    local function states(step)
      local list = {}
      for _, name in ipairs({ "db", "web", "api", "cache", "bad" }) do list[#list + 1] = at[step][name].state end
      return table.concat(list, " ")
    end
    assert.equal("running stopped stopped running failed", states("stop-web"))
    assert.equal("running running running running failed", states("start-web"))
    assert.equal(at.start.db.pid, at["start-web"].db.pid)        -- untouched
    assert.are_not.equal(at.start.web.pid, at["start-web"].web.pid)
    assert.equal(at.start.cache.pid, at["start-cache"].cache.pid)  -- running: left alone
    assert.equal("stopped stopped stopped running failed", states("stop-db"))
    -- api was stopped by name after db's stop: db's start leaves it down
    assert.equal("running running stopped running failed", states("start-db"))
    assert.equal("running running running running failed", states("start-api"))
    assert.matches("start-bad-result\tnil\tservice 'bad' failed", out, 1, true)
    -- the supervisor was over (every service stopped): web starts with db, which it needs
    assert.equal("stopped stopped stopped stopped failed", states("stop-cache"))
    assert.equal("running running stopped stopped failed", states("start-again"))
    for step, services in pairs(at) do
      for name, s in pairs(services) do assert.equal(0, s.restarts, step .. " " .. name) end
    end
    assert.is_nil(err:find("restarting", 1, true), err)
    -- after order, from the log: db ready, then web, then api started
    for _, step in ipairs({ "start-web", "start-db" }) do
      local db, web = at[step].db.pid, at[step].web.pid
      local ready = err:find(("[db %d] ready"):format(db), 1, true)
      local web_start = err:find(("[web %d] started"):format(web), 1, true)
      assert.truthy(ready and web_start and ready < web_start, step .. "\n" .. err)
    end
    local web_start = err:find(("[web %d] started"):format(at["start-web"].web.pid), 1, true)
    local api_start = err:find(("[api %d] started"):format(at["start-web"].api.pid), 1, true)
    assert.truthy(web_start < api_start, err)
    -- started by name first: b and a, which it needs; c stays pending
    assert.equal("running", at.first.a.state)
    assert.equal("running", at.first.b.state)
    assert.equal("pending", at.first.c.state)
    -- misuse reports the caller's line
    assert.matches("misuse\tfalse\tspec/scripts/sup_start.lua:%d+: orch.supervisor: use sup:start%(...%) %(a colon%)", out)
    assert.matches("misuse\tfalse\tspec/scripts/sup_start.lua:%d+: orch.supervisor: start: unknown service 'nosuch' "
      .. "%(services: api, bad, cache, db, web%)", out)
    assert.matches("start: unknown service 42", out, 1, true)
  end)

  it("restart kinds, readiness and ready_timeout; run() returns once nothing is left", function()
    local dir = P.tmpdir()
    local rc, out, err = run_script("spec/scripts/sup_lifecycle.lua", { MARK = dir .. "/flaky" })
    os.execute("rm -rf " .. P.quote(dir))
    assert.equal(0, rc, err)
    assert.matches("run\ttrue", out)
    assert.matches("done\tstopped\t0\t0", out, 1, true)       -- transient, returned
    assert.matches("oops\tfailed\t0\t1", out, 1, true)        -- temporary, failed
    assert.matches("flaky\tstopped\t1\t0", out, 1, true)      -- transient, failed once
    assert.matches("mute\tfailed\t0\tnil\tKILL", out, 1, true) -- never ready
    assert.matches("not ready after 0.3s", err, 1, true)
    -- "late" lists "slow" in after: it starts only once slow said it is ready
    local ready = err:find("%[slow %d+%] ready")
    local late = err:find("%[late %d+%] started")
    assert.truthy(ready and late and ready < late, err)
  end)
end)
