--- A supervisor's spec, checked: its services as the supervisor keeps
-- them (defaults filled in, `after` resolved, each service's dependents)
-- and their start order. Misuse raises naming the option and the service.
local unpack = table.unpack

local services = {}


local SUP_OPTIONS = {
  strategy = "string", max_restarts = "number", restart_window = "number",
  shutdown_timeout = "number", services = "table",
}
local SERVICE_OPTIONS = {
  name = "string", run = "function", args = "table", after = "table", grace = "number",
  restart = "string", ready = "string", ready_timeout = "number",
}
local STRATEGIES = { one_for_one = true, one_for_all = true, rest_for_one = true }
local RESTARTS = { permanent = true, transient = true, temporary = true }

function services.keys(t)
  local list = {}
  for k in pairs(t) do list[#list + 1] = k end
  table.sort(list)
  return table.concat(list, ", ")
end

local function fail(fmt, ...)
  error("orch.supervisor: " .. fmt:format(...), 4)
end

local function check_fields(t, spec, what)
  for k, v in pairs(t) do
    local want = spec[k]
    if not want then
      fail("%sunknown option '%s' (valid: %s)", what, tostring(k), services.keys(spec))
    end
    if type(v) ~= want then
      fail("%soption '%s' must be a %s, got %s", what, k, want, type(v))
    end
  end
end

local function check_number(v, what, name, positive)
  if v ~= nil and (v ~= v or v < 0 or (positive and v == 0)) then
    fail("%soption '%s' must be a %s number, got %s", what, name,
      positive and "positive" or "non-negative", tostring(v))
  end
end

-- Returns the services in a start order (after before), or raises naming
-- the cycle.
local function start_order(list, by_name)
  local order, mark = {}, {}
  local function visit(s, path)
    if mark[s] == "done" then return end
    if mark[s] == "visiting" then
      local from = 1
      while path[from] ~= s.name do from = from + 1 end
      local cyc = { unpack(path, from) }
      cyc[#cyc + 1] = s.name
      fail("services: a cycle in 'after': %s", table.concat(cyc, " -> "))
    end
    mark[s] = "visiting"
    path[#path + 1] = s.name
    for _, dep in ipairs(s.after) do visit(by_name[dep], path) end
    path[#path] = nil
    mark[s] = "done"
    order[#order + 1] = s
  end
  for _, s in ipairs(list) do visit(s, {}) end
  return order
end

--- services.check(spec) -> services (in spec order), by_name, order (a
-- start order: every service after those it lists in `after`).
function services.check(spec)
  if type(spec) ~= "table" then fail("options must be a table, got %s", type(spec)) end
  check_fields(spec, SUP_OPTIONS, "")
  if spec.strategy and not STRATEGIES[spec.strategy] then
    fail("unknown strategy '%s' (valid: %s)", spec.strategy, services.keys(STRATEGIES))
  end
  check_number(spec.max_restarts, "", "max_restarts")
  check_number(spec.restart_window, "", "restart_window", true)
  check_number(spec.shutdown_timeout, "", "shutdown_timeout")
  if spec.services == nil or #spec.services == 0 then
    fail("'services' must be a non-empty list of services")
  end
  local list, by_name = {}, {}
  for i, t in ipairs(spec.services) do
    if type(t) ~= "table" then fail("services[%d] must be a table, got %s", i, type(t)) end
    local what = ("services[%d]%s: "):format(i, type(t.name) == "string" and (" (%s)"):format(t.name) or "")
    check_fields(t, SERVICE_OPTIONS, what)
    if not t.name or t.name == "" then fail("%s'name' is required", what) end
    if not t.run then fail("%s'run' (a function) is required", what) end
    if by_name[t.name] then fail("%sduplicate service name '%s'", what, t.name) end
    if t.restart and not RESTARTS[t.restart] then
      fail("%sunknown restart '%s' (valid: %s)", what, t.restart, services.keys(RESTARTS))
    end
    if t.ready and t.ready ~= "notify" then
      fail("%sunknown ready '%s' (valid: notify)", what, t.ready)
    end
    check_number(t.grace, what, "grace")
    check_number(t.ready_timeout, what, "ready_timeout", true)
    local s = {
      name = t.name, run = t.run, args = t.args or {}, after = t.after or {},
      grace = t.grace or 5, restart = t.restart or "permanent", notify = t.ready == "notify",
      ready_timeout = t.ready_timeout or 10, index = i,
      state = "pending", want = "up", restarts = 0, dependents = {},
    }
    list[i] = s
    by_name[s.name] = s
  end
  for _, s in ipairs(list) do
    for j, dep in ipairs(s.after) do
      if type(dep) ~= "string" then
        fail("services[%d] (%s): after[%d] must be a service name, got %s", s.index, s.name, j, type(dep))
      end
      if not by_name[dep] then
        fail("services[%d] (%s): 'after' names an unknown service '%s' (services: %s)",
          s.index, s.name, dep, services.keys(by_name))
      end
      if dep == s.name then fail("services[%d] (%s): a service cannot come after itself", s.index, s.name) end
    end
  end
  local order = start_order(list, by_name)
  for pos, s in ipairs(order) do
    s.pos = pos
    for _, dep in ipairs(s.after) do
      local d = by_name[dep]
      d.dependents[#d.dependents + 1] = s
    end
  end
  return list, by_name, order
end

return services
