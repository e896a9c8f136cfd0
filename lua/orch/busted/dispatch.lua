--- orch.busted.dispatch: runs spec files on an orch pool and hands their
-- event lines to the caller as they come.
--
-- Each file runs in a fresh interpreter that a pool task starts with
-- io.popen (orch/busted/spec_process.lua), not in the forked worker itself:
-- spec files fork, handle signals and start pools and supervisors of their
-- own, and a fork of this process would give them its loaded modules, its
-- loop and its signal set-up instead of the clean process that busted alone
-- gives each run (a pool started inside a pool worker, for one, does not
-- see its children exit). The spec process is in its worker's process
-- group, so the pool's SIGKILL of a worker (timeout, stop) ends it too.
--
-- The task passes each event line to the parent through an orch.queue as
-- soon as the spec process writes it, so when that process or its worker
-- dies, every test that finished is already reported; other output of the
-- spec goes to stdout as it came. The task's last queue item is the spec
-- process's exit status.
local orch = require "orch"
local frame = require "orch.busted.frame"

local dispatch = {}

local MARK = frame.MARK

-- The pool task (runs in a worker): queue items are { idx, line } for an
-- event and { idx, false, how, code } once the spec process has ended.
local function run_spec_file(queue, idx, command)
  local proc = assert(io.popen(command, "r"))
  for line in proc:lines("L") do
    local at = line:find(MARK, 1, true)
    if at then
      if at > 1 then io.stdout:write(line:sub(1, at - 1)) end
      assert(queue:put({ idx, (line:sub(at + #MARK):gsub("\n$", "")) }))
    else
      io.stdout:write(line)
    end
    io.stdout:flush()
  end
  local _, how, code = proc:close()
  assert(queue:put({ idx, false, how, code }))
end

local function run_files(opts)
  local queue = orch.queue{}
  local pool <close> = orch.pool{ workers = math.max(1, math.min(opts.jobs, opts.count)),
                                  timeout = opts.timeout, grace = 1 }
  local finished, left, failed = {}, opts.count, {}
  local function finish(idx, outcome)
    if finished[idx] then return end
    finished[idx], left = true, left - 1
    opts.on_finish(idx, outcome)
  end
  local function take(item)
    local idx = item[1]
    if finished[idx] then return end
    if item[2] then
      opts.on_event(idx, item[2])
    else
      finish(idx, { kind = "exit", how = item[3], code = item[4] })
    end
  end
  local function drain()
    for item in function() return queue:get(0) end do take(item) end
  end

  for _, idx in ipairs(opts.order) do
    local fut = pool:submit(run_spec_file, queue, idx, opts.command(idx))
    fut:on_done(function(f)
      if f:state() ~= "done" then failed[#failed + 1] = { idx, f:error() } end
    end)
  end
  while left > 0 and not opts.should_stop() do
    local item = queue:get(0.2)
    if item then take(item) end
    if #failed > 0 then
      drain()   -- what the task sent before it failed comes first
      for _, f in ipairs(failed) do finish(f[1], { kind = f[2].kind, message = f[2].message }) end
      failed = {}
    end
  end
  if left > 0 then
    pool:shutdown{ cancel_pending = true, grace = 1 }
    drain()
    for idx = 1, opts.count do finish(idx, { kind = "stopped" }) end
  end
end

--- dispatch.run(opts): runs every file, returns once each has finished or
-- should_stop() said to stop (running files are then stopped: a stop
-- request, then SIGKILL of their process group after a second).
-- opts: count (number of files), order (indices, in the order to start
-- them), command(idx) -> shell command, jobs, timeout (seconds or nil),
-- on_event(idx, line), on_finish(idx, outcome), should_stop() -> truthy.
-- outcome: { kind = "exit", how = "exit"|"signal", code = n } when the
-- spec process ended; { kind = TaskError.kind, message = ... } when its
-- task failed (timeout, the worker killed); { kind = "stopped" } for the
-- files that were running or waiting when the run was stopped.
function dispatch.run(opts)
  -- A worker killed for a timeout or a stop is this run's expected outcome,
  -- reported as the file's error: orch's own warning about it is not shown.
  local log_level = orch.log.level
  orch.log.level = "error"
  local ok, err = pcall(run_files, opts)
  orch.log.level = log_level
  if not ok then error(err, 0) end
end

return dispatch
