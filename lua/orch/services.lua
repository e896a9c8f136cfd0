--- A supervisor's spec, checked: its services as the supervisor keeps
-- them (defaults filled in, `after` resolved, each service's dependents)
-- and their start order (both from orch.deps). Misuse raises naming the
-- option and the service.
local check = require "orch.check"
local deps = require "orch.deps"

local services = {}

-- Each option's kind (orch.check's vocabulary).
local SUP_OPTIONS = {
  strategy = "string", max_restarts = "non-negative integer",
  restart_window = "positive number", shutdown_timeout = "non-negative number",
  services = "table", restart_delay = "non-negative number",
  restart_backoff = "positive number", restart_delay_max = "non-negative number",
}
local SERVICE_OPTIONS = {
  name = "string", run = "function", args = "table", after = "table",
  grace = "non-negative number", restart = "string", ready = "string",
  ready_timeout = "positive number", restart_delay = "non-negative number",
  restart_backoff = "positive number", restart_delay_max = "non-negative number",
}
local STRATEGIES = { one_for_one = true, one_for_all = true, rest_for_one = true }
local RESTARTS = { permanent = true, transient = true, temporary = true }

services.keys = check.keys

local function fail(fmt, ...)
  check.fail("orch.supervisor", fmt, ...)
end

--- services.check(spec) -> services (in spec order), by_name, order (a
-- start order: every service after those it lists in `after`).
function services.check(spec)
  if type(spec) ~= "table" then fail("options must be a table (got %s)", check.show(spec)) end
  check.options("orch.supervisor", spec, SUP_OPTIONS)
  if spec.restart_backoff and spec.restart_backoff < 1 then
    fail("option 'restart_backoff' must be a number >= 1 (got %s)", check.show(spec.restart_backoff))
  end
  if spec.strategy and not STRATEGIES[spec.strategy] then
    fail("unknown strategy '%s' (valid: %s)", spec.strategy, services.keys(STRATEGIES))
  end
  if spec.services == nil or #spec.services == 0 then
    fail("'services' must be a non-empty list of services")
  end
  local list, by_name = {}, {}
  for i, t in ipairs(spec.services) do
    if type(t) ~= "table" then fail("services[%d] must be a table (got %s)", i, check.show(t)) end
    local what = ("services[%d]%s: "):format(i, type(t.name) == "string" and (" (%s)"):format(t.name) or "")
    check.options("orch.supervisor", t, SERVICE_OPTIONS, what)
    if not t.name or t.name == "" then fail("%s'name' is required", what) end
    if not t.run then fail("%s'run' (a function) is required", what) end
    if by_name[t.name] then fail("%sduplicate service name '%s'", what, t.name) end
    if t.restart and not RESTARTS[t.restart] then
      fail("%sunknown restart '%s' (valid: %s)", what, t.restart, services.keys(RESTARTS))
    end
    if t.ready and t.ready ~= "notify" then
      fail("%sunknown ready '%s' (valid: notify)", what, t.ready)
    end
    local delay = {}  -- the restart delay's options: the service's, else the spec's
    for _, k in ipairs({ "restart_delay", "restart_backoff", "restart_delay_max" }) do
      if t[k] ~= nil then delay[k] = t[k] else delay[k] = spec[k] end
    end
    if delay.restart_backoff and delay.restart_backoff < 1 then
      fail("%soption 'restart_backoff' must be a number >= 1 (got %s)", what,
        check.show(delay.restart_backoff))
    end
    local s = {
      name = t.name, run = t.run, args = t.args or {}, after = t.after or {},
      grace = t.grace or 5, restart = t.restart or "permanent", notify = t.ready == "notify",
      ready_timeout = t.ready_timeout or 10, index = i,
      restart_delay = delay.restart_delay or 0.1, restart_backoff = delay.restart_backoff or 2,
      restart_delay_max = delay.restart_delay_max or 30,
      state = "pending", want = "up", restarts = 0,
    }
    list[i] = s
    by_name[s.name] = s
  end
  for _, s in ipairs(list) do
    for j, dep in ipairs(s.after) do
      if type(dep) ~= "string" then
        fail("services[%d] (%s): after[%d] must be a service name (got %s)", s.index, s.name, j, check.show(dep))
      end
      if not by_name[dep] then
        fail("services[%d] (%s): 'after' names an unknown service '%s' (services: %s)",
          s.index, s.name, dep, services.keys(by_name))
      end
      if dep == s.name then fail("services[%d] (%s): a service cannot come after itself", s.index, s.name) end
    end
  end
  local order, cycle = deps.order(list, by_name)
  if not order then fail("services: a cycle in 'after': %s", table.concat(cycle, " -> ")) end
  deps.link(order, by_name)
  return list, by_name, order
end

return services
