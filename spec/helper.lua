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

-- Runs Lua code in a fresh lua5.4 with the tree's paths; returns its
-- output (stdout and stderr) and exit code.
function H.run_lua(code, env)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path\n')
  f:write('package.cpath = "' .. (os.getenv("ORCH_CPATH") or "build/?.so") .. ';" .. package.cpath\n')
  f:write(code)
  f:close()
  local p = io.popen(("%s lua5.4 %s 2>&1; echo \"exit=$?\""):format(env or "", path))
  local out = p:read("a")
  p:close()
  os.remove(path)
  local code_ = tonumber(out:match("exit=(%d+)%s*$"))
  return out:gsub("exit=%d+%s*$", ""), code_
end

return H
