--- orch.status: what this process runs, as `orch.status()`, the USR1
-- report and the control socket see it; and the actions taken on it from
-- outside (stop/start/restart a service, cancel/kill a task).
--
-- Pools and supervisors register themselves when they are made:
--
--     status.register(obj, "pool" | "supervisor")
--
-- The registry holds them weakly: a collected pool leaves it by itself.
-- An object reports through `obj:status_report()` when it has that method
-- (a table in the shape of one entry of `pools` or of `supervisors`
-- below); otherwise the adapter for its kind builds the entry from the
-- public API: `sup:status()` for supervisors, `pool:stats()` for pools.
-- A pool's task list comes from `pool:status_tasks()` when the pool has it:
--
--     pool:status_tasks() -> { { id =, state = "queued"|"running",
--                                pid = worker pid | nil, started = core.now()
--                                when it started | nil, task = the task as
--                                core.pack_task packed it (or fn = the function
--                                or "module.name" submitted), future = fut }, ... }
--
-- (a pool without it reports no tasks). A task's source is read from its
-- packed form (core.task_source), once per function id.
--
-- status.report() -> {
--   pid, time,                                  -- this process, os.time()
--   supervisors = { { id, services = { { name, pid, state, restarts, uptime,
--                                        exit_code, signal }, ... } }, ... },
--   pools = { { id, workers, idle, queued, running, done, failed, cancelled,
--               restarts, rate, tasks = { { id, state, pid, age, source }, ... } }, ... },
-- }
-- `uptime` and `age` are seconds; `rate` is tasks ended per second over the
-- last few seconds of reports (nil on a pool's first report).
local core = require "orch.core"
local signal = require "orch.signal"

local status = {}

local KINDS = { pool = true, supervisor = true }
local RATE_WINDOW = 5  -- seconds of samples behind a pool's rate

local registry = setmetatable({}, { __mode = "k" })  -- obj -> { kind, seq, samples }
local last_seq = 0
local usr1_installed = false

--- Registers obj (a pool or a supervisor); registering twice is harmless.
-- Returns obj.
function status.register(obj, kind)
  if type(obj) ~= "table" then
    error(("orch.status.register: expects a pool or supervisor object, got %s"):format(type(obj)), 2)
  end
  if not KINDS[kind] then
    error(("orch.status.register: kind must be 'pool' or 'supervisor' (got %s)"):format(tostring(kind)), 2)
  end
  if not registry[obj] then
    last_seq = last_seq + 1
    registry[obj] = { kind = kind, seq = last_seq, samples = {} }
  end
  if not usr1_installed then
    -- orch's USR1 default wherever a pool or a supervisor runs: the report
    usr1_installed = true
    signal.set_default("USR1", function() io.stderr:write(status.format(status.report())) end)
  end
  return obj
end

--- Forgets obj (a pool that was shut down, say).
function status.unregister(obj)
  registry[obj] = nil
end

-- The registered objects of a kind, in registration order.
local function registered(kind)
  local list = {}
  for obj, entry in pairs(registry) do
    if entry.kind == kind then list[#list + 1] = { obj = obj, entry = entry } end
  end
  table.sort(list, function(a, b) return a.entry.seq < b.entry.seq end)
  return list
end

---------------------------------------------------------------------------
-- supervisors

local function supervisor_report(sup)
  local services = {}
  for i, s in ipairs(sup:status()) do
    services[i] = {
      name = s.name, pid = s.pid, state = s.state, restarts = s.restarts,
      uptime = s.pid and core.pid_age(s.pid) or nil, exit_code = s.exit_code, signal = s.signal,
    }
  end
  return { services = services }
end

---------------------------------------------------------------------------
-- pools

local function source_of_fn(fn)
  if type(fn) == "string" then return fn end
  if type(fn) ~= "function" then return "?" end
  local info = debug.getinfo(fn, "S")
  if info.what == "C" then return "[C]" end
  return ("%s:%d"):format(info.short_src, info.linedefined)
end

-- fnid -> "short_src:line": a function id never names two pieces of code.
-- Only ids above 0 are kept: 0 is a task whose function travels by name,
-- -1 one whose code travels in the task itself (the parent's cache of
-- function ids is full), and either stands for many functions.
local source_by_fnid = {}

-- A task's "source:line", "module.name" or "[C]"; "?" when unknown.
local function source_of(t)
  local task = t.task
  local ok, _, fnid = pcall(core.task_info, task)
  if not ok then return source_of_fn(t.fn) end
  local source = source_by_fnid[fnid]
  if not source then
    source = core.task_source(task)
    if source and fnid > 0 then source_by_fnid[fnid] = source end
  end
  return source or "?"
end

local function pool_tasks(pool)
  if type(pool.status_tasks) == "function" then return pool:status_tasks() end
  return {}
end

-- Tasks ended per second over the last RATE_WINDOW seconds of reports.
local function rate_of(entry, ended, now)
  local samples = entry.samples
  samples[#samples + 1] = { now, ended }
  while #samples > 2 and now - samples[2][1] >= RATE_WINDOW do table.remove(samples, 1) end
  local first = samples[1]
  if now - first[1] <= 0 then return nil end
  return (ended - first[2]) / (now - first[1])
end

local function pool_report(pool, entry)
  local stats = pool:stats()
  local report = {}
  for k, v in pairs(stats) do report[k] = v end
  local now = core.now()
  report.rate = rate_of(entry, (stats.done or 0) + (stats.failed or 0) + (stats.cancelled or 0), now)
  report.tasks = {}
  for i, t in ipairs(pool_tasks(pool)) do
    report.tasks[i] = {
      id = t.id, state = t.state, pid = t.pid, source = source_of(t),
      age = t.started and now - t.started or nil,
    }
  end
  return report
end

---------------------------------------------------------------------------
-- the report

local ADAPTERS = { supervisor = supervisor_report, pool = pool_report }

--- orch.status() -> the report described above.
function status.report()
  local out = { pid = core.getpid(), time = os.time(), supervisors = {}, pools = {} }
  for kind, key in pairs({ supervisor = "supervisors", pool = "pools" }) do
    for i, r in ipairs(registered(kind)) do
      local obj = r.obj
      local entry = type(obj.status_report) == "function" and obj:status_report()
        or ADAPTERS[kind](obj, r.entry)
      entry.id = i
      out[key][i] = entry
    end
  end
  return out
end

local function fmt_age(s)
  if not s then return "-" end
  if s < 120 then return ("%.1fs"):format(s) end
  if s < 7200 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, math.floor(s % 3600) // 60)
end
status.fmt_age = fmt_age

--- The report as lines of text (the USR1 report, `orch ctl status`).
function status.format(report)
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  add("orch pid %d", report.pid)
  for _, sup in ipairs(report.supervisors) do
    add("supervisor %d:", sup.id)
    for _, s in ipairs(sup.services) do
      local how = s.signal and ("signal " .. s.signal) or s.exit_code and ("exit " .. s.exit_code) or ""
      add("  %-16s %-9s pid %-7s up %-8s restarts %d %s", s.name, s.state, tostring(s.pid or "-"),
        fmt_age(s.uptime), s.restarts or 0, how)
    end
  end
  for _, p in ipairs(report.pools) do
    add("pool %d: %d workers (%d idle), %d queued, %d running, %d done, %d failed, %d cancelled, "
      .. "%d restarts%s", p.id, p.workers, p.idle, p.queued, p.running, p.done, p.failed,
      p.cancelled, p.restarts, p.rate and (", %.1f/s"):format(p.rate) or "")
    for _, t in ipairs(p.tasks) do
      add("  task %-6d %-8s pid %-7s age %-8s %s", t.id, t.state, tostring(t.pid or "-"),
        fmt_age(t.age), t.source)
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

---------------------------------------------------------------------------
-- actions from outside

-- The supervisor that runs the service called name: sup, or nil, err, code.
local function find_service(name)
  local found
  for _, r in ipairs(registered("supervisor")) do
    for _, s in ipairs(r.obj:status()) do
      if s.name == name then
        if found then return nil, ("service name '%s' is ambiguous (two supervisors)"):format(name), "ambiguous" end
        found = { sup = r.obj, state = s.state }
      end
    end
  end
  if not found then return nil, ("unknown service '%s'"):format(tostring(name)), "unknown_service" end
  return found
end

--- status.service(action, name) -> true, detail | nil, err, code. action:
-- "stop" (the service and those that depend on it, dependents first, as
-- sup:stop(name)), "restart" (sup:restart(name)), "start" (sup:start(name):
-- a stopped service, with those its stop took down; a running one is left
-- alone). Returns once done: it runs the loop meanwhile.
function status.service(action, name)
  local found, err, code = find_service(name)
  if not found then return nil, err, code end
  local sup = found.sup
  if action == "start" and (found.state == "running" or found.state == "starting") then
    return true, "already running"
  end
  local done, why
  if action == "stop" then
    done, why = sup:stop(name)
  elseif action == "start" then
    done, why = sup:start(name)
  else
    done, why = sup:restart(name)
  end
  if not done then return nil, ("%s %s: %s"):format(action, name, tostring(why)), "failed" end
  return true
end

--- status.task(action, id) -> true | nil, err, code. action: "cancel"
-- (fut:cancel()) or "kill" (fut:kill()) of a queued or running task.
function status.task(action, id)
  for _, r in ipairs(registered("pool")) do
    for _, t in ipairs(pool_tasks(r.obj)) do
      if t.id == id and t.future then
        if action == "cancel" then t.future:cancel() else t.future:kill() end
        return true
      end
    end
  end
  return nil, ("no queued or running task %s"):format(tostring(id)), "unknown_task"
end

return status
