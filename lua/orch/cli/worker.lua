--- orch worker: a broker node. Serves the tasks that pools with
-- `broker = BROKER_URL` send to a queue, on a local pool, until INT or
-- TERM; then stops in order (nothing new, running tasks get --grace
-- seconds, the rest is handed back to other nodes) and ends by that
-- signal (exit status 128+n). Exit 1 when the broker cannot be reached at
-- start, 2 for usage errors.
local orch = require "orch"
local core = require "orch.core"
local node = require "orch.broker.node"
local redis = require "orch.broker.redis"
local usage = require "orch.cli.usage"

local worker = {
  summary = "Serve a queue of pools on a broker (Redis) as a node.",
}

function worker.configure(command)
  command:description([[
Serve the tasks that pools with `broker = BROKER_URL` send to a queue:
each task runs on a local pool of N workers, with the timeout and grace
it was sent with. Run one on each host that should take work:

  orch worker redis://queue-host:6379/0 --queue jobs --workers 8

Set ORCH_SECRET (the pools' secret) to refuse unsigned tasks. The first INT
or TERM stops in order: nothing new, running tasks get --grace seconds,
the rest goes back to other nodes; a second one hurries it. orch then ends
by that signal (exit status 130 / 143).]])
  command:argument("broker", "redis://[user:password@]host[:port][/db] or unix://[user:password@]/path[?db=N]")
  command:option("--queue", "The queue to serve.", "orch")
  command:option("--workers", "Local worker processes (default: the CPU count)."):convert(tonumber)
  command:option("--lease", "Seconds a task may go without a lease renewal before\n"
    .. "another node takes it over, for tasks that carry no lease\n"
    .. "of their own (pools send theirs with each task).", "30"):convert(tonumber)
  command:option("--grace", "Seconds running tasks get to finish on INT/TERM.", "10")
    :convert(tonumber)
  command:option("--max-tasks-per-worker", "Replace a worker after N tasks."):convert(tonumber)
  command:option("--log-level", "Lowest level logged (default: $ORCH_LOG, else info).")
    :choices({ "debug", "info", "warn", "error" })
end

local function positive(args, name, integer)
  local v = args[name]
  if v == nil then return true end
  if v <= 0 or v ~= v or (integer and math.type(v) ~= "integer") then
    return false, ("worker: --%s must be a positive %s"):format(name:gsub("_", "-"),
      integer and "integer" or "number")
  end
  return true
end

local function check(args)
  local ok, err = pcall(redis.parse_url, args.broker)
  if not ok then return false, "worker: " .. tostring(err):gsub("^[^:]*:%d+: ", "") end
  if not args.queue:match("^[%w_.%-]+$") then
    return false, ("worker: --queue must be letters, digits, '_', '.' or '-' (got %q)"):format(args.queue)
  end
  for _, name in ipairs{ "workers", "max_tasks_per_worker" } do
    ok, err = positive(args, name, true)
    if not ok then return false, err end
  end
  for _, name in ipairs{ "lease", "grace" } do
    ok, err = positive(args, name, false)
    if not ok then return false, err end
  end
  return true
end

function worker.run(args)
  local ok, err = check(args)
  if not ok then return usage.error("worker", err) end
  if args.log_level then orch.log.level = args.log_level end
  local served, result, sig = pcall(node.serve, {
    broker = args.broker, queue = args.queue, workers = args.workers, lease = args.lease,
    grace = args.grace, max_tasks_per_worker = args.max_tasks_per_worker,
  })
  if not served then
    io.stderr:write("orch: worker: ", (tostring(result):gsub("^orch%.serve: ", "")), "\n")
    return 1
  end
  io.stderr:flush()
  if sig then core.die_by(sig) end
  return 0
end

return worker
