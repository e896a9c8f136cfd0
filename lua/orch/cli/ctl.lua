--- orch ctl: talks to a running orch through its control socket.
--   orch ctl [TARGET] status [--json] | stop|start|restart NAME |
--            cancel|kill TASK_ID | logs [-f] | list
-- Exit: 0 done, 1 the run refused or the command failed, 2 usage, 3 no
-- run answers.
local remote = require "orch.cli.remote"
local status = require "orch.status"
local usage = require "orch.cli.usage"

local ctl = { summary = "Control a running orch: status, stop/start/restart, cancel/kill, logs, list." }

-- action -> number of operands after it
local ACTIONS = { status = 0, stop = 1, start = 1, restart = 1, cancel = 1, kill = 1, logs = 0, list = 0 }

function ctl.configure(command)
  command:description([[
Talk to a running orch (one that serves a control socket: orch run, or a
script that called orch.control{}). TARGET is the run's name, its pid or its
socket path; with one run alive it may be left out.

  orch ctl status [--json]         services and pools
  orch ctl stop|start|restart NAME a service (ordered: dependents stop first)
  orch ctl cancel|kill TASK_ID     a queued or running pool task
  orch ctl logs [-f]               recent log records, then follow them
  orch ctl list                    the live runs of this user

Exit status: 0 done, 1 the command failed, 2 usage error, 3 no run answers.]])
  command:argument("words", "[TARGET] ACTION [OPERAND]"):args("+")
  command:flag("--json", "status: the answer as one JSON object.")
  command:flag("-f --follow", "logs: go on printing records as they come.")
  command:option("--timeout", "Seconds to wait for an answer (default: 10; stop,\n"
    .. "start and restart wait as long as the run takes).")
end

local function fail(message, code)
  io.stderr:write("orch: ctl: ", message, "\n")
  return code or 1
end

-- words -> { target, action, operand } | nil, message
local function parse(words)
  local target, at = nil, 1
  if not ACTIONS[words[1]] then target, at = words[1], 2 end
  local action = words[at]
  if not action then return nil, ("unknown action '%s'"):format(target) end
  if not ACTIONS[action] then return nil, ("unknown action '%s'"):format(action) end
  local operand = words[at + 1]
  local want = ACTIONS[action]
  if want == 1 and not operand then return nil, ("%s needs %s"):format(action,
    (action == "cancel" or action == "kill") and "a TASK_ID" or "a service NAME") end
  if #words > at + want then return nil, ("unexpected '%s'"):format(words[at + want + 1]) end
  if action == "list" and target then return nil, "list takes no TARGET" end
  return { target = target, action = action, operand = operand }
end

local function list()
  for _, r in ipairs(remote.runs()) do
    local session = remote.open(r.path)
    local hello = session and session:request({ cmd = "hello" }, 2)
    if session then session:close() end
    io.write(("%-20s %8d %10s  %s\n"):format(r.name, r.pid,
      hello and hello.ok and status.fmt_age(hello.uptime) or "?", r.path))
  end
  return 0
end

local function print_status(answer, json_line)
  if json_line then
    io.write(json_line, "\n")
  else
    io.write(("%s (pid %d, up %s)\n"):format(answer.name, answer.pid, status.fmt_age(answer.uptime)))
    io.write((status.format(answer):gsub("^[^\n]*\n", "")))
  end
end

local function follow(session)
  while true do
    local msg, err = session:read(nil)
    if not msg then return fail(err, 0) end
    if msg.record then io.write(remote.format_record(msg.record), "\n"); io.flush() end
  end
end

-- The request for an action, and what to say once it is done.
local function request_for(action, operand, args)
  if action == "cancel" or action == "kill" then
    local id = math.tointeger(tonumber(operand))
    if not id then return nil, ("TASK_ID must be an integer (got '%s')"):format(operand) end
    return { cmd = action, task = id }, ("task %d: %s"):format(id,
      action == "cancel" and "cancel requested" or "killed")
  elseif action == "logs" then
    return { cmd = "logs", follow = args.follow or nil }
  elseif action == "status" then
    return { cmd = "status" }
  end
  local done = { stop = "stopped", start = "started", restart = "restarted" }
  return { cmd = action, name = operand }, ("%s: %s"):format(operand, done[action])
end

function ctl.run(args)
  local words, bad = parse(args.words)
  if not words then return usage.error("ctl", "ctl: " .. bad) end
  local target, action, operand = words.target, words.action, words.operand
  if action == "list" then return list() end
  local req, said = request_for(action, operand, args)
  if not req then return usage.error("ctl", "ctl: " .. said) end
  local timeout = tonumber(args.timeout) or 10
  if ACTIONS[action] == 1 and req.name then timeout = tonumber(args.timeout) end
  local path, err, code = remote.resolve(target)
  if not path then return fail(err, code) end
  local session, why, no_run = remote.open(path)
  if not session then return fail(why, no_run) end
  local answer, problem, line = session:request(req, timeout)
  if not answer then session:close(); return fail(problem, remote.NO_RUN) end
  if not answer.ok then session:close(); return fail(tostring(answer.error), 1) end
  if action == "status" then
    print_status(answer, args.json and line)
  elseif action == "logs" then
    for _, r in ipairs(answer.records or {}) do io.write(remote.format_record(r), "\n") end
    io.flush()
    if args.follow then return follow(session) end
  else
    io.write(said, answer.detail and (" (" .. answer.detail .. ")") or "", "\n")
  end
  session:close()
  return 0
end

return ctl
