--- orch: a process orchestrator for Lua on a libev C core.
-- Pools of pre-forked workers with futures, groups and failure policies;
-- supervisors with ordered start and shutdown; queues between processes;
-- signals handled inside the loop. See README.md and docs/API.md.
local core = require "orch.core"
local loop = require "orch.loop"
local log = require "orch.log"
local signal = require "orch.signal"
local pool = require "orch.pool"
local TaskError = require("orch.errors").TaskError

local orch = {
  version = core.version,
  log = log,
  TaskError = TaskError,
  on_signal = signal.on_signal,
  sleep = loop.sleep,
  cpu_count = core.cpu_count,
}

--- orch.pool(opts) -> Pool
function orch.pool(opts)
  return pool.new(opts)
end

--- orch.supervisor(spec) -> Supervisor (services with an ordered shutdown)
function orch.supervisor(spec)
  return require("orch.supervisor").new(spec)
end

--- orch.queue{ capacity = N } -> queue between the parent and its children
function orch.queue(opts)
  return require("orch.queue").new(opts)
end

--- orch.control{ name =, path = } -> path: serves the control socket that
-- orch ctl and orch top talk to (see docs/control.md).
function orch.control(opts)
  return require("orch.control").serve(opts)
end

--- orch.status() -> what this process runs: its pools and supervisors.
function orch.status()
  return require("orch.status").report()
end

--- Inside a service: says it is ready (services with ready = "notify").
function orch.ready()
  return require("orch.supervisor").ready()
end

--- Inside a task or a service: true once the parent asked it to stop.
function orch.stopping()
  return core.stopping()
end

return orch
