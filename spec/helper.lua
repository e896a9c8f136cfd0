-- Loaded by busted before every spec file (see .busted): the tree's own
-- modules first, and helpers that look at processes and fds from outside.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath

local H = {}
_G.orch_spec = H

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.read_file = read_file

-- pid, state and ppid of a process, from /proc/PID/stat (nil if gone).
function H.stat(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local state, ppid, pgid = s:match("%) (%S) (%d+) (%d+)")
  return { state = state, ppid = tonumber(ppid), pgid = tonumber(pgid) }
end

-- The direct children of pid (default: this process), and how many of
-- them are zombies (read from /proc, so no helper process is counted).
function H.children(pid)
  pid = pid or require("orch.core").getpid()
  local list, zombies = {}, 0
  local s = read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or ""
  for n in s:gmatch("%d+") do
    local st = H.stat(n)
    if st then
      list[#list + 1] = tonumber(n)
      if st.state == "Z" then zombies = zombies + 1 end
    end
  end
  return list, zombies
end

-- Is there a process with this pid that is not a zombie?
function H.alive(pid)
  local st = H.stat(pid)
  return st ~= nil and st.state ~= "Z"
end

-- The fds this process has open. Listed by a shell that writes to a file,
-- so the parent holds no pipe of its own while it is being looked at.
function H.fd_count()
  local tmp = os.tmpname()
  os.execute(("ls /proc/%d/fd > %s"):format(require("orch.core").getpid(), tmp))
  local n = 0
  for _ in io.lines(tmp) do n = n + 1 end
  os.remove(tmp)
  return n
end

-- Runs orch's loop until pred() holds (true) or timeout seconds pass
-- (false): for conditions that events in this process make true.
function H.wait_for(pred, timeout)
  return require("orch.loop").wait(function() return pred() and true end, timeout or 5)
end

-- Polls an outside condition (another process's state) until it holds or
-- timeout seconds pass; for things no event of ours can tell.
function H.eventually(pred, timeout)
  local core = require "orch.core"
  local deadline = core.now() + (timeout or 5)
  while core.now() < deadline do
    if pred() then return true end
    os.execute("sleep 0.02")
  end
  return pred()
end

-- Writes Lua code to path (default: a fresh temporary file), after lines
-- that give it the tree's paths; returns the path.
function H.lua_script(code, path)
  path = path or os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path\n')
  f:write('package.cpath = "' .. (os.getenv("ORCH_CPATH") or "build/?.so") .. ';" .. package.cpath\n')
  f:write(code)
  f:close()
  return path
end

-- Runs a shell command; returns what it wrote to stdout and its exit code
-- (the signal number when a signal ended it, as io.popen's close says).
function H.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

-- Runs Lua code in a fresh lua5.4 with the tree's paths; returns its
-- output (stdout and stderr) and exit code.
function H.run_lua(code, env)
  local path = H.lua_script(code)
  local p = io.popen(("%s lua5.4 %s 2>&1; echo \"exit=$?\""):format(env or "", path))
  local out = p:read("a")
  p:close()
  os.remove(path)
  local code_ = tonumber(out:match("exit=(%d+)%s*$"))
  return out:gsub("exit=%d+%s*$", ""), code_
end

-- Collects orch's log records instead of writing them to stderr, for
-- the rest of the running test (the spec passes busted's finally, which
-- restores the handler): specs that provoke failures keep busted's output
-- clean. Returns the list the records go to.
function H.capture_logs(finally)
  local log = require "orch.log"
  local records, saved = {}, log.handler
  log.handler = function(r) records[#records + 1] = r end
  finally(function() log.handler = saved end)
  return records
end

-- The same for a whole spec file whose tests provoke failures on purpose
-- (tasks killed after their grace, init that fails): setup(H.quiet_logs)
-- and teardown(H.restore_logs) at its top. H.logged holds the records.
local saved_handler
function H.quiet_logs()
  local log = require "orch.log"
  saved_handler = saved_handler or log.handler
  H.logged = {}
  log.handler = function(r) H.logged[#H.logged + 1] = r end
end

function H.restore_logs()
  if saved_handler then require("orch.log").handler = saved_handler end
  saved_handler = nil
end

---------------------------------------------------------------------------
-- stop specs (spec/4x): processes left behind. require "helper.procs".
-- Reads /proc without forking, so counting never adds a process.
package.preload["helper.procs"] = function()
  local procs = {}

  local function read(path)
    local f = io.open(path)
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
  end

  local function self_pid()
    return tonumber(read("/proc/self/stat"):match("^(%d+)"))
  end

  --- State letter of pid ("R", "S", "Z", ...), nil when it does not exist.
  function procs.state(pid)
    local s = read(("/proc/%d/stat"):format(pid))
    return s and s:match("^.*%)%s+(%a)")
  end

  --- True when pid has ended (gone, or a zombie nobody reaps yet).
  function procs.dead(pid)
    local st = procs.state(pid)
    return st == nil or st == "Z" or st == "X"
  end

  --- Direct children of pid (default: this process) as { pid = state }.
  function procs.children(pid)
    pid = pid or self_pid()
    local out = {}
    local s = read(("/proc/%d/task/%d/children"):format(pid, pid)) or ""
    for c in s:gmatch("%d+") do
      local n = tonumber(c)
      out[n] = procs.state(n) or "?"
    end
    return out
  end

  --- Every descendant of pid (default: this process) as { pid = state }.
  function procs.descendants(pid, out)
    out = out or {}
    for c, st in pairs(procs.children(pid)) do
      out[c] = st
      procs.descendants(c, out)
    end
    return out
  end

  --- Counts of this process's descendants not in `before` (a table from
  -- procs.descendants()): alive (not zombies), zombies.
  function procs.count(before)
    local alive, zombies = 0, 0
    for pid, st in pairs(procs.descendants()) do
      if not (before and before[pid]) then
        if st == "Z" then zombies = zombies + 1 else alive = alive + 1 end
      end
    end
    return alive, zombies
  end

  --- Polls (running orch's loop when orch is loaded) until pred() holds or
  -- timeout seconds pass; returns pred()'s last value.
  function procs.wait_until(pred, timeout)
    local core = package.loaded["orch.core"]
    local sleep = package.loaded["orch"] and package.loaded["orch"].sleep
    local clock = core and core.now or os.time
    local deadline = clock() + (timeout or 5)
    while true do
      local v = pred()
      if v or clock() > deadline then return v end
      if sleep and core and not core.in_child() then sleep(0.02) else os.execute("sleep 0.02") end
    end
  end

  --- A fresh temporary file name (removed by procs.cleanup()).
  local made = {}
  function procs.tmpname()
    local name = os.tmpname()
    made[#made + 1] = name
    return name
  end

  --- A task body that runs until it is stopped, with no stop checks at all.
  function procs.busy()
    local n = 0
    while true do n = n + 1 end
  end

  --- Appends text to the file at path (tasks leave traces with it).
  function procs.append(path, text)
    local f = assert(io.open(path, "a"))
    f:write(text)
    f:close()
  end

  function procs.slurp(path)
    return read(path)
  end

  --- Runs fn(pool) with a fresh pool, then shuts it down (terminates it if
  -- fn failed) and checks that no child process is left, alive or zombie.
  function procs.with_pool(opts, fn)
    local orch = require "orch"
    local before = procs.descendants()
    local pool = orch.pool(opts)
    local ok, err = xpcall(fn, debug.traceback, pool)
    if ok then
      pool:close()
      local jok, jerr = pcall(pool.join, pool, 10)
      if not jok or not jerr then
        pool:terminate()
        error(jok and "the pool did not shut down within 10 s" or jerr, 0)
      end
    else
      pool:terminate()
    end
    procs.cleanup()
    if not ok then error(err, 0) end
    local alive, zombies
    procs.wait_until(function()
      alive, zombies = procs.count(before)
      return alive == 0 and zombies == 0
    end, 3)
    assert(alive == 0 and zombies == 0,
      ("processes left behind: %d alive, %d zombies"):format(alive, zombies))
  end

  function procs.cleanup()
    for _, name in ipairs(made) do os.remove(name) end
    made = {}
  end

  return procs
end

return H
