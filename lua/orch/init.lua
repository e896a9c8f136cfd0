--- orch: a process orchestrator for Lua on a libev C core.
-- Pools of pre-forked workers with futures, groups and failure policies;
-- supervisors with ordered start and shutdown; queues between processes;
-- signals handled inside the loop. See README.md and docs/API.md.
-- @module orch

-- First of all, the Lua version: the C core is built for 5.4's API, and
-- another interpreter would fail loading it with an undefined symbol.
require("orch.check").lua_version(_VERSION)

local core = require "orch.core"
local loop = require "orch.loop"
local log = require "orch.log"
local signal = require "orch.signal"
local pool = require "orch.pool"
local errors = require "orch.errors"

--- The module's table.
-- @table orch
-- @field version orch's version, a string
-- @field log orch.log (levels, handler, json)
-- @field TaskError what a failed future holds (orch.errors)
-- @field Interrupted the error of a script interrupted by INT or TERM
-- @field on_signal orch.on_signal(name, fn): fn(name) runs in the loop; nil
-- restores the default (orch.signal)
-- @field sleep orch.sleep(seconds): runs the loop that long (orch.loop)
-- @field cpu_count orch.cpu_count() -> the number of CPUs
local orch = {
  version = core.version,
  log = log,
  TaskError = errors.TaskError,
  Interrupted = errors.Interrupted,
  on_signal = signal.on_signal,
  sleep = loop.sleep,
  cpu_count = core.cpu_count,
}

--- A pool of pre-forked workers.
-- @tparam[opt] table opts workers, max_tasks_per_worker, timeout, retries,
-- retry_on, on_error, grace, init, backoff (see docs/API.md)
-- @treturn orch.pool.Pool
function orch.pool(opts)
  return pool.new(opts)
end

--- Services with an ordered start and shutdown.
-- @tparam table spec strategy, max_restarts, restart_window,
-- shutdown_timeout, restart_delay, restart_backoff, restart_delay_max,
-- services (see docs/services.md)
-- @treturn orch.supervisor.Supervisor
function orch.supervisor(spec)
  return require("orch.supervisor").new(spec)
end

--- A bounded FIFO queue between the parent and its children, made
-- before the pools and supervisors whose children use it.
-- @tparam[opt] table opts { capacity = N } (default: no limit)
-- @return a queue handle (q:put, q:get, q:close, q:len, #q)
function orch.queue(opts)
  return require("orch.queue").new(opts)
end

--- orch.control{ name =, path = } -> path: serves the control socket that
-- orch ctl and orch top talk to (see docs/control.md).
-- @tparam[opt] table opts { name = run name, path = socket path }
-- @treturn string the socket's path
function orch.control(opts)
  return require("orch.control").serve(opts)
end

--- What this process runs: its pools and supervisors (the data of the
-- USR1 report).
-- @treturn table
function orch.status()
  return require("orch.status").report()
end

--- Inside a service: says it is ready (services with ready = "notify").
-- @treturn boolean false outside a service
function orch.ready()
  return require("orch.supervisor").ready()
end

--- Inside a task or a service: true once the parent asked it to stop.
-- @treturn boolean
function orch.stopping()
  return core.stopping()
end

return orch
