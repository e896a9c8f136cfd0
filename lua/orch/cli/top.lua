--- orch top: a live full-screen view of a running orch (plain ANSI): its
-- services, pools, running tasks and last log records, refreshed about
-- twice a second, with keys to act on the selected service or task. Not
-- on a terminal, it prints one snapshot and exits.
local core = require "orch.core"
local remote = require "orch.cli.remote"
local status = require "orch.status"

local top = { summary = "A live view of a running orch: services, pools, tasks, logs; q quits." }

local REFRESH = 0.5
local KEYS_LINE = "up/down or j/k select   s stop  u start  r restart   c cancel  x kill   q quit"

function top.configure(command)
  command:description([[
A full-screen view of a running orch, refreshed about twice a second:
services (state, pid, uptime, restarts), pools (workers, queued, running,
done, failed, recent rate), running tasks (id, worker pid, age, the
function's source:line) and the last log records. TARGET is the run's
name, its pid or its socket path; with one run alive it may be left out.

Keys: up/down (or j/k) select a service or a task; s stops, u starts and
r restarts the selected service; c cancels and x kills the selected task;
q quits. Not on a terminal, it prints one snapshot and exits.]])
  command:argument("target", "The run: a name, a pid or a socket path."):args("?")
end

---------------------------------------------------------------------------
-- the screen's lines, from one status answer and the recent records

local function fit(text, cols)
  if #text > cols then return text:sub(1, cols) end
  return text
end

-- -> lines, selectable (selectable[k] = { line =, kind =, key = })
local function layout(st, records, rows)
  local lines, selectable = {}, {}
  local function add(text) lines[#lines + 1] = text end
  local function pick(kind, key, text)
    add(text)
    selectable[#selectable + 1] = { line = #lines, kind = kind, key = key }
  end
  add(("orch top - %s (pid %d, up %s)   %s"):format(st.name, st.pid, status.fmt_age(st.uptime),
    os.date("%H:%M:%S")))
  add("")
  add(("SERVICES  %-18s %-10s %-8s %-9s %s"):format("NAME", "STATE", "PID", "UPTIME", "RESTARTS"))
  for _, sup in ipairs(st.supervisors or {}) do
    for _, s in ipairs(sup.services or {}) do
      pick("service", s.name, ("          %-18s %-10s %-8s %-9s %d"):format(s.name, s.state,
        tostring(s.pid or "-"), status.fmt_age(s.uptime), s.restarts or 0))
    end
  end
  add("")
  add("POOLS")
  local tasks = {}
  for _, p in ipairs(st.pools or {}) do
    add(("  #%d  workers %d (idle %d)  queued %d  running %d  done %d  failed %d  cancelled %d  rate %s")
      :format(p.id, p.workers, p.idle, p.queued, p.running, p.done, p.failed, p.cancelled,
        p.rate and ("%.1f/s"):format(p.rate) or "-"))
    for _, t in ipairs(p.tasks or {}) do t.pool = p.id; tasks[#tasks + 1] = t end
  end
  add("")
  add(("TASKS     %-8s %-5s %-8s %-8s %-9s %s"):format("ID", "POOL", "STATE", "PID", "AGE", "SOURCE"))
  for _, t in ipairs(tasks) do
    pick("task", t.id, ("          %-8d %-5d %-8s %-8s %-9s %s"):format(t.id, t.pool, t.state,
      tostring(t.pid or "-"), status.fmt_age(t.age), t.source or "?"))
  end
  add("")
  add("LOGS")
  local room = math.max(1, rows - #lines - 2)
  for i = math.max(1, #records - room + 1), #records do
    add("  " .. remote.format_record(records[i]))
  end
  return lines, selectable
end

---------------------------------------------------------------------------
-- talking to the run

local function fetch(session, rows)
  local st, err = session:request({ cmd = "status" }, 5)
  if not st then return nil, err end
  if not st.ok then return nil, st.error end
  local logs = session:request({ cmd = "logs", lines = rows }, 5)
  return st, logs and logs.records or {}
end

local ACTION_KEYS = {
  s = { "service", "stop" }, u = { "service", "start" }, r = { "service", "restart" },
  c = { "task", "cancel" }, x = { "task", "kill" },
}

-- Runs the action a key asks for on the selected row; returns a message.
local function act(session, key, selected)
  local what = ACTION_KEYS[key]
  if not what then return nil end
  if not selected or selected.kind ~= what[1] then
    return ("select a %s first"):format(what[1])
  end
  local req = what[1] == "service" and { cmd = what[2], name = selected.key }
    or { cmd = what[2], task = selected.key }
  local answer, err = session:request(req, nil)
  if not answer then return err end
  if not answer.ok then return "failed: " .. tostring(answer.error) end
  return ("%s %s: done"):format(what[2], tostring(selected.key))
end

---------------------------------------------------------------------------
-- the screen

local function draw(lines, selectable, sel, message, rows, cols)
  local out = { "\27[H" }
  local highlighted = selectable[sel] and selectable[sel].line
  for i = 1, rows - 1 do
    local text = fit(lines[i] or "", cols)
    if i == highlighted then text = "\27[7m" .. text .. "\27[0m" end
    out[#out + 1] = text .. "\27[K\r\n"
  end
  out[#out + 1] = "\27[7m" .. fit(message or KEYS_LINE, cols) .. "\27[0m\27[K"
  io.write(table.concat(out))
  io.flush()
end

-- The keys in what one read brought (several when typed fast): escape
-- sequences such as "\27[A" whole, other bytes one by one.
local function split_keys(bytes)
  local keys, i = {}, 1
  while i <= #bytes do
    local seq = bytes:match("^\27%[[%d;]*[%a~]", i) or bytes:match("^\27O%a", i)
    keys[#keys + 1] = seq or bytes:sub(i, i)
    i = i + #keys[#keys]
  end
  return keys
end

local function move(sel, key, n)
  if key == "\27[A" or key == "k" then return math.max(1, sel - 1) end
  if key == "\27[B" or key == "j" then return math.min(math.max(n, 1), sel + 1) end
  return sel
end

local function live(session)
  local term = assert(core.tty_raw())
  io.write("\27[?1049h\27[?25l\27[2J")
  -- the terminal is given back however the view ends (q, an error, Ctrl-C)
  local cleanup <close> = setmetatable({}, { __close = function()
    io.write("\27[?25h\27[?1049l")
    io.flush()
    term:restore()
  end })
  local sel, message, key = 1, nil, nil
  while key ~= "q" do
    local rows, cols = core.tty_size()
    local st, records = fetch(session, rows)
    if not st then return nil, records end
    local lines, selectable = layout(st, records, rows)
    sel = math.min(sel, math.max(#selectable, 1))
    draw(lines, selectable, sel, message, rows, cols)
    for _, k in ipairs(split_keys(core.tty_key(REFRESH) or "")) do
      key = k
      if key == "q" then break end
      local selected = selectable[sel]
      sel = move(sel, key, #selectable)
      message = ACTION_KEYS[key] and act(session, key, selected) or message
    end
  end
  return true
end

function top.run(args)
  local path, err, code = remote.resolve(args.target)
  if not path then
    io.stderr:write("orch: top: ", err, "\n")
    return code
  end
  local session, why, no_run = remote.open(path)
  if not session then
    io.stderr:write("orch: top: ", why, "\n")
    return no_run
  end
  if not (core.isatty(0) and core.isatty(1)) then
    local st, records = fetch(session, 20)
    session:close()
    if not st then io.stderr:write("orch: top: ", records, "\n"); return remote.NO_RUN end
    io.write(table.concat((layout(st, records, 40)), "\n"), "\n")
    return 0
  end
  local ok, problem = live(session)
  session:close()
  if not ok then
    io.stderr:write("orch: top: ", tostring(problem), "\n")
    return remote.NO_RUN
  end
  return 0
end

return top
