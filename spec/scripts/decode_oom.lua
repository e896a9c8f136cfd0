-- A frame whose decoding runs the parent out of memory (spec/18-parent_faults_spec.lua).
-- The parent's address space is capped with prlimit once the children are
-- forked (they keep their own limit), just above what reading the frame
-- needs and below what decoding it does. Prints one line per event.
-- Usage: lua5.4 decode_oom.lua core|pool [cpath]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (arg[2] or "build/?.so") .. ";" .. package.cpath
local core = require "orch.core"
local MSG = core.msg
local mode = arg[1]

-- 400,000 distinct long strings: a 20 MB frame that takes some 40 MB to decode
local N = 400000
local function big()
  local t, s = {}, string.rep("x", 48)
  for i = 1, N do t[i] = s end  -- one string here; N of them once decoded
  return t
end

local function vm_size()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmSize:%s+(%d+)")
    if kb then return tonumber(kb) * 1024 end
  end
end

local function cap(extra)
  local pid = core.getpid()
  local limit = (extra and ("%d"):format(vm_size() + extra) or "unlimited") .. ":"  -- soft only
  assert(os.execute(("prlimit --pid %d --as=%s"):format(pid, limit)))
end

local function out(...) io.write(table.concat({ ... }, " "), "\n"); io.flush() end

if mode == "core" then
  local done = false
  local proc = core.spawn(function()
    core.send_parent(MSG.SEND, big())
    core.send_parent(MSG.SEND, "after")
    core.child_sleep(10)
  end, function(_, t, a, b)
    if t == 0 then
      out("bad", tostring(a), tostring(b == MSG.SEND))
    else
      out("frame", t == MSG.SEND and type(a) == "string" and a or "big")
      if a == "after" then done = true end
    end
  end, function() end)
  collectgarbage()
  cap(48 * 1024 * 1024)
  local ok, err = pcall(function()
    local t = core.now()
    while not done and core.now() - t < 20 do core.step(1) end
  end)
  cap(nil)
  out("step", tostring(ok), tostring(err))
  proc:close()
else
  local orch = require "orch"
  local pool = orch.pool { workers = 1 }
  local fbig = pool:submit(big)
  local fsmall = pool:submit(function() return "small" end)
  collectgarbage()
  cap(48 * 1024 * 1024)
  local ok, err = pcall(function() fbig:wait(20); fsmall:wait(20) end)
  cap(nil)
  out("wait", tostring(ok), tostring(err))
  local e = fbig:error()
  out("big", fbig:state(), e and e.kind or "-", e and tostring(e.message) or "-")
  out("small", fsmall:state(), tostring(fsmall:result()))
  out("after", tostring(pool:submit(function() return 42 end):result()), tostring(pool:stats().restarts))
  pool:terminate()
end
