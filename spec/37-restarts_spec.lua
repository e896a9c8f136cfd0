-- orch.restarts on plain data: whether a service that exited comes back,
-- the delay before it does (growing in a row, capped, reset by a long
-- run), the restart limit over a sliding window, and the services each
-- strategy takes along. The clock is the values given; nothing is forked.
local restarts = require "orch.restarts"
local deps = require "orch.deps"

-- A service with the restart delay's options (orch.services' defaults).
local function service(opts)
  opts = opts or {}
  return {
    name = opts.name or "s", after = opts.after or {}, restart = opts.restart or "permanent",
    restart_delay = opts.restart_delay or 0.1, restart_backoff = opts.restart_backoff or 2,
    restart_delay_max = opts.restart_delay_max or 30,
  }
end

describe("orch.restarts", function()
  it("takes the spec's strategy, limit and window, or the defaults", function()
    local p = restarts.new({})
    assert.same({ "one_for_one", 3, 5 }, { p.strategy, p.max_restarts, p.window })
    p = restarts.new({ strategy = "rest_for_one", max_restarts = 0, restart_window = 2 })
    assert.same({ "rest_for_one", 0, 2 }, { p.strategy, p.max_restarts, p.window })
  end)

  it("restarts a permanent service always, a transient one after a failure, a temporary one never", function()
    for restart, want in pairs({ permanent = { true, true }, transient = { true, false },
                                 temporary = { false, false } }) do
      local s = service({ restart = restart })
      assert.equal(want[1], restarts.again(s, true), restart .. " after a failure")
      assert.equal(want[2], restarts.again(s, false), restart .. " after exit 0")
    end
  end)

  it("waits restart_delay, times restart_backoff for each restart in a row, at most restart_delay_max", function()
    local p = restarts.new({ restart_window = 5 })
    local s = service({ restart_delay = 0.1, restart_backoff = 2, restart_delay_max = 1 })
    local got = {}
    for i = 1, 7 do
      s.started_at = 100 + i      -- each run lasted a second: the row goes on
      got[i] = p:delay(s, 101 + i)
    end
    local want = { 0.1, 0.2, 0.4, 0.8, 1, 1, 1 }
    for i = 1, #want do assert.near(want[i], got[i], 1e-9, "restart " .. i) end
    s.started_at = 200             -- a run that lasted the window starts the row over
    assert.near(0.1, p:delay(s, 205), 1e-9)
    s.started_at = 205.1           -- restarted, and failed again at once
    assert.near(0.2, p:delay(s, 205.2), 1e-9)
    s.started_at = nil             -- never started: the row goes on
    assert.near(0.4, p:delay(s, 300), 1e-9)
    assert.equal(0, p:delay(service({ restart_delay = 0 }), 0))
  end)

  it("gives up past max_restarts within the window, which slides", function()
    local p = restarts.new({ max_restarts = 2, restart_window = 5 })
    assert.is_false(p:exceeded(0))
    assert.is_false(p:exceeded(1))
    assert.is_true(p:exceeded(2))    -- three in 5 s
    assert.is_false(p:exceeded(7))   -- those at 0, 1 and 2 are 5 s old or more
    assert.is_false(p:exceeded(11.9))
    assert.is_true(p:exceeded(11.95))
    p:forget()                       -- a supervisor that runs again
    assert.is_false(p:exceeded(12))
    assert.is_true(restarts.new({ max_restarts = 0 }):exceeded(0))
  end)

  it("takes along one service, all of them, or those after it in the start order", function()
    local list, by_name = {}, {}
    for i, t in ipairs({ { "web", { "api" } }, { "api", { "db" } }, { "db", {} }, { "cron", {} } }) do
      list[i] = service({ name = t[1], after = t[2] })
      by_name[t[1]] = list[i]
    end
    local order = assert(deps.order(list, by_name))   -- db, api, web, cron
    deps.link(order, by_name)
    local function taken(strategy, name)
      return restarts.new({ strategy = strategy }):set(by_name[name], order)
    end
    local api, cron, db, web = by_name.api, by_name.cron, by_name.db, by_name.web
    assert.same({ [api] = true }, taken("one_for_one", "api"))
    assert.same({ [api] = true, [cron] = true, [db] = true, [web] = true }, taken("one_for_all", "api"))
    assert.same({ [api] = true, [cron] = true, [web] = true }, taken("rest_for_one", "api"))
    assert.same({ [cron] = true }, taken("rest_for_one", "cron"))
  end)

  it("says why it gives up", function()
    local p = restarts.new({ max_restarts = 2, restart_window = 30 })
    assert.equal("service 'db' failed and the restart limit was reached (2 restarts in 30s): giving up",
      p:limit_error(service({ name = "db" }), true))
    assert.equal("service 'db' exited and the restart limit was reached (2 restarts in 30s): giving up",
      p:limit_error(service({ name = "db" }), false))
  end)
end)
