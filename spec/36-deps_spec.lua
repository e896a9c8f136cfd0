-- orch.deps on plain data: the start order of services by their `after`
-- lists, the cycle it refuses, and the sets a stop, a restart and a start
-- by name take along (dependents, needs). Nothing is forked here.
local deps = require "orch.deps"

-- Services from { name, after... } lists, in the given order.
local function graph(spec)
  local list, by_name = {}, {}
  for i, t in ipairs(spec) do
    local s = { name = t[1], after = { table.unpack(t, 2) } }
    list[i], by_name[s.name] = s, s
  end
  return list, by_name
end

local function names(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = s.name end
  return out
end

local function set_names(set)
  local out = {}
  for s in pairs(set) do out[#out + 1] = s.name end
  table.sort(out)
  return out
end

-- web needs api and cache, which both need db.
local DIAMOND = { { "web", "api", "cache" }, { "api", "db" }, { "cache", "db" }, { "db" } }

describe("orch.deps", function()
  it("orders each service after those it lists in 'after', otherwise in list order", function()
    local list, by_name = graph(DIAMOND)
    assert.same({ "db", "api", "cache", "web" }, names(deps.order(list, by_name)))
    list, by_name = graph({ { "b" }, { "a" }, { "c", "a" } })
    assert.same({ "b", "a", "c" }, names(deps.order(list, by_name)))
  end)

  it("keeps 'after' in random graphs without a cycle", function()
    math.randomseed(36)
    for _ = 1, 200 do
      local n, spec = math.random(1, 12), {}
      for i = 1, n do
        spec[i] = { "s" .. i }
        for j = 1, i - 1 do  -- only earlier names: no cycle
          if math.random() < 0.3 then spec[i][#spec[i] + 1] = "s" .. j end
        end
      end
      for i = n, 2, -1 do  -- shuffled, so the order is not the list's
        local j = math.random(1, i)
        spec[i], spec[j] = spec[j], spec[i]
      end
      local list, by_name = graph(spec)
      local order = assert(deps.order(list, by_name))
      assert.equal(n, #order)
      local pos = {}
      for p, s in ipairs(order) do
        assert.is_nil(pos[s], "twice in the order: " .. s.name)
        pos[s] = p
      end
      for _, s in ipairs(list) do
        for _, dep in ipairs(s.after) do
          assert.is_true(pos[by_name[dep]] < pos[s], ("%s before %s"):format(s.name, dep))
        end
      end
    end
  end)

  it("refuses a cycle, naming it from where it closes", function()
    local list, by_name = graph({ { "a", "c" }, { "b", "a" }, { "c", "b" } })
    local order, cycle = deps.order(list, by_name)
    assert.is_nil(order)
    assert.same({ "a", "c", "b", "a" }, cycle)
    -- the way in is not part of it
    list, by_name = graph({ { "x", "a" }, { "a", "b" }, { "b", "a" }, { "y" } })
    order, cycle = deps.order(list, by_name)
    assert.is_nil(order)
    assert.same({ "a", "b", "a" }, cycle)
  end)

  it("links each service to its place in the order and to its dependents", function()
    local list, by_name = graph(DIAMOND)
    deps.link(assert(deps.order(list, by_name)), by_name)
    assert.same({ 4, 2, 3, 1 }, { by_name.web.pos, by_name.api.pos, by_name.cache.pos, by_name.db.pos })
    assert.same({ "api", "cache" }, names(by_name.db.dependents))
    assert.same({ "web" }, names(by_name.api.dependents))
    assert.same({}, by_name.web.dependents)
  end)

  it("takes along what depends on a service, and what a service needs, directly or not", function()
    local list, by_name = graph(DIAMOND)
    deps.link(assert(deps.order(list, by_name)), by_name)
    assert.same({ "api", "cache", "db", "web" }, set_names(deps.with_dependents(by_name.db)))
    assert.same({ "api", "web" }, set_names(deps.with_dependents(by_name.api)))
    assert.same({ "web" }, set_names(deps.with_dependents(by_name.web)))
    assert.same({ "api", "cache", "db", "web" }, set_names(deps.with_needs(by_name.web, by_name)))
    assert.same({ "api", "db" }, set_names(deps.with_needs(by_name.api, by_name)))
    assert.same({ "db" }, set_names(deps.with_needs(by_name.db, by_name)))
    -- into a set already holding some
    local set = deps.with_needs(by_name.api, by_name)
    assert.equal(set, deps.with_needs(by_name.cache, by_name, set))
    assert.same({ "api", "cache", "db" }, set_names(set))
  end)

  it("is ready once every service in 'after' runs", function()
    local _, by_name = graph(DIAMOND)
    assert.is_true(deps.ready(by_name.db, by_name))  -- needs nothing
    by_name.api.state, by_name.cache.state = "running", "starting"
    assert.is_false(deps.ready(by_name.web, by_name))
    by_name.cache.state = "running"
    assert.is_true(deps.ready(by_name.web, by_name))
  end)
end)
