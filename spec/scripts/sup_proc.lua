--- Spec helper: runs a script as an external job in its own session and
-- watches it from the outside (signals, output, exit status, processes).
-- Waits poll a condition with a deadline: the job is another process.
local P = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true
end

local read = orch_spec.read_file  -- spec/helper.lua
P.read = read

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
P.quote = q

function P.tmpdir()
  local p = io.popen("mktemp -d /tmp/orch-spec.XXXXXX")
  local dir = p:read("l")
  p:close()
  return dir
end

function P.sleep(s) sh(("sleep %.3f"):format(s)) end

--- Seconds since boot (/proc/uptime): a monotonic clock for deadlines.
function P.now()
  return tonumber(read("/proc/uptime"):match("^[%d.]+"))
end

--- Polls pred() every 20 ms until it is true or timeout seconds passed.
function P.wait_for(pred, timeout)
  local deadline = P.now() + (timeout or 10)
  repeat
    if pred() then return true end
    P.sleep(0.02)
  until P.now() > deadline
  return pred() and true or false
end

--- Starts `lua5.4 script args...` with setsid (its own session and process
-- group); env is a table of variables. Returns a job.
local started = {}  -- jobs not cleaned up yet, for P.cleanup_all

function P.start(script, args, env)
  local dir = P.tmpdir()
  local job = { dir = dir, out = dir .. "/out", err = dir .. "/err", rcfile = dir .. "/rc" }
  started[job] = true
  local vars = {}
  for k, v in pairs(env or {}) do vars[#vars + 1] = ("%s=%s"):format(k, q(v)) end
  local argv = {}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = q(a) end
  local cmd = ("(%s setsid %s %s %s >%s 2>%s </dev/null & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 &")
    :format(table.concat(vars, " "), "lua5.4",
      q(script), table.concat(argv, " "), q(job.out), q(job.err), q(dir .. "/pid"), q(job.rcfile))
  assert(sh(cmd), "cannot start " .. script)
  assert(P.wait_for(function()
    local s = read(dir .. "/pid")
    job.pid = s and tonumber(s:match("%d+"))
    return job.pid ~= nil
  end, 5), "no pid for " .. script)
  return job
end

function P.stdout(job) return read(job.out) or "" end
function P.stderr(job) return read(job.err) or "" end

--- The exit status once the job ended (128+n for signal n), else nil.
function P.rc(job)
  local s = read(job.rcfile)
  return s and tonumber(s:match("%d+"))
end

function P.wait_exit(job, timeout)
  P.wait_for(function() return P.rc(job) ~= nil end, timeout or 15)
  return P.rc(job)
end

--- Waits until the job's stdout or stderr holds pattern (plain text).
function P.wait_output(job, text, timeout, stream)
  return P.wait_for(function()
    local s = stream == "err" and P.stderr(job) or stream == "out" and P.stdout(job)
      or (P.stdout(job) .. P.stderr(job))
    return s:find(text, 1, true) ~= nil
  end, timeout or 10)
end

function P.signal(sig, pid) return sh(("kill -%s %d 2>/dev/null"):format(sig, pid)) end
function P.signal_group(sig, pid) return sh(("kill -s %s -- -%d 2>/dev/null"):format(sig, pid)) end

--- A process that exists and is not a zombie.
function P.alive(pid)
  local stat = read(("/proc/%d/stat"):format(pid))
  if not stat then return false end
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- Live processes whose environment holds CHAOS_MARK=token: those of a
-- job started with it, whatever their process group or parent is now (a
-- zombie's environment reads empty: it is not counted).
function P.marked(token)
  local p = io.popen("grep -lsxz " .. q("CHAOS_MARK=" .. token) .. " /proc/[0-9]*/environ")
  local pids = {}
  for line in p:lines() do
    local pid = tonumber(line:match("^/proc/(%d+)/"))
    if pid and P.alive(pid) then pids[#pids + 1] = pid end
  end
  p:close()
  return pids
end

--- Pids of a service as the log names them: "[name pid] started".
function P.service_pids(job, name)
  local pids = {}
  for pid in P.stderr(job):gmatch("%[" .. name .. " (%d+)%] started") do
    pids[#pids + 1] = tonumber(pid)
  end
  return pids
end

--- Position of a plain text in the job's stderr (nil when absent).
function P.pos(job, text) return (P.stderr(job):find(text, 1, true)) end

function P.cleanup(job)
  started[job] = nil
  if job.pid and not P.rc(job) then P.signal_group("KILL", job.pid) end
  sh("rm -rf " .. q(job.dir))
end

--- Kills and removes every job a spec started and did not clean up (one
-- whose assertions failed half-way): no spec leaves a process behind.
function P.cleanup_all()
  for job in pairs(started) do P.cleanup(job) end
end

return P
