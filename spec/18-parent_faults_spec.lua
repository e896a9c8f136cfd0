-- Faults on the parent's side of a child's channel: frames that cannot be
-- decoded (bad bytes, a length over the limit, no memory left), sends made
-- from finalizers in the middle of another send, fds when spawning fails,
-- buffers after a big message, and on_exit after close.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec
local MSG = core.msg

-- Runs a Lua script of spec/scripts in a child interpreter with the plain
-- build (no sanitizer preloaded: these scripts cap the address space or
-- the fds); returns its output.
local function script(prefix, name, ...)
  local cmd = ("%s timeout 60 env -u LD_PRELOAD lua5.4 spec/scripts/%s %s 2>&1"):format(prefix, name,
    table.concat({ ... }, " "))
  return (H.sh(cmd))
end

local function vm_rss(pid)
  local s = H.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s+(%d+)")) * 1024
end

describe("a frame the parent cannot decode", function()
  it("for lack of memory: reported as a bad frame, the frames after it come #noasan", function()
    local s = script("", "decode_oom.lua", "core")
    assert.matches("bad not enough memory true\nframe after\nstep true nil", s, 1, true)
  end)

  it("for lack of memory, in a pool: that task crashes saying why, the worker is replaced #noasan", function()
    local s = script("", "decode_oom.lua", "pool")
    assert.matches("wait true nil", s, 1, true)
    assert.matches("big failed crashed crashed: bad frame from worker: not enough memory", s, 1, true)
    assert.matches("small done small", s, 1, true)
    assert.matches("after 42 1", s, 1, true)
  end)

  describe("over max_message", function()
    local pool
    after_each(function() if pool then pool:terminate() end end)

    it("a result too big fails its task in the worker, saying so", function()
      pool = orch.pool { workers = 1, max_message = 100000 }
      local fut = pool:submit(function() return string.rep("x", 200000) end)
      fut:wait()
      local err = fut:error()
      assert.are.equal("error", err.kind)
      assert.matches("a message of 2000%d%d bytes is over the limit of 100000 bytes %(max_message%)",
        err.message)
      assert.are.equal(7, pool:submit(function() return 7 end):result())
      assert.are.equal(0, pool:stats().restarts)
    end)

    it("arguments too big are refused at submit", function()
      pool = orch.pool { workers = 1, max_message = 100000 }
      local function len(s) return #s end
      local big = string.rep("x", 200000)
      -- the packed task: the function's id, or its code once this process
      -- has handed out all its function ids; the argument
      local size = core.task_info(core.pack_task(len, big))
      local ok, err = pcall(pool.submit, pool, len, big)
      assert.is_false(ok)
      assert.matches("spec/18%-parent_faults_spec.lua:%d+: orch.pool: submit: the task takes "
        .. size .. " bytes packed %(its function and arguments%), over the limit of 100000 %(max_message%)", err)
      assert.are.equal(10, pool:submit(len, string.rep("x", 10)):result())
    end)

    it("arguments too big are refused at submit, a task packed in pieces too", function()
      pool = orch.pool { workers = 1, max_message = 3 << 20 }
      local function len(s) return #s end
      local big = string.rep("x", 4 << 20)  -- a piece of the packed task, not a copy
      local task = core.pack_task(len, big)
      assert.are.equal("table", type(task))
      local size = 0
      for _, piece in ipairs(task) do size = size + #piece end
      assert.is_true(size > 4 << 20)
      local ok, err = pcall(pool.submit, pool, len, big)
      assert.is_false(ok)
      assert.matches("the task takes " .. size .. " bytes packed", err, 1, true)
      assert.are.equal(2 << 20, pool:submit(len, string.rep("x", 2 << 20)):result())
    end)

    it("is checked as an option", function()
      for _, bad in ipairs({ 0, 1.5, 2 ^ 31 }) do
        local ok, err = pcall(orch.pool, { max_message = bad })
        assert.is_false(ok)
        assert.matches("option 'max_message' must be a positive integer", err, 1, true)
      end
      local ok, err = pcall(orch.pool, { max_message = 1 << 31 })
      assert.is_false(ok)
      assert.matches("option 'max_message' must be at most 2^31 - 1 bytes (got 2147483648)", err, 1, true)
    end)

    it("a frame longer than the parent's limit: crashed, bad frame, the worker replaced", function()
      pool = orch.pool { workers = 1, max_message = 100000 }
      local fut = pool:submit(function()
        require("orch.core").set_max_message(0x7fffffff)  -- a worker that ignores the limit
        return string.rep("x", 200000)
      end)
      fut:wait()
      local err = fut:error()
      assert.are.equal("crashed", err.kind)
      assert.are.equal("crashed: bad frame from worker: length over the limit", err.message)
      assert.matches("task crashed %(pid %d+%): bad frame from worker: length over the limit", tostring(err))
      assert.are.equal(8, pool:submit(function() return 8 end):result())
      assert.are.equal(1, pool:stats().restarts)
    end)

    it("a header announcing more than the limit reserves nothing for it", function()
      local got, exited = {}, false
      local proc = core.spawn(function()
        core.send_parent(MSG.SEND, string.rep("y", 3000000))
        core.child_sleep(10)
      end, function(_, t, why, ftype) got[#got + 1] = { t, why, ftype } end,
      function() exited = true end)
      proc:set_max_message(1000000)
      assert.is_true(H.wait_for(function() return #got > 0 end, 10))
      assert.are.same({ 0, "length over the limit", MSG.SEND }, got[1])
      local cap = proc:buffer_sizes()
      assert.is_true(cap <= 1000000 + 65536, "in buffer: " .. cap)
      proc:kill()
      assert.is_true(H.wait_for(function() return exited end, 10))
      assert.are.equal(1, #got)
    end)
  end)

  -- fut's task crashed: its worker was SIGKILLed for what it sent (message)
  local function assert_killed_for(fut, message)
    assert.is_true(fut:wait(30))
    local err = fut:error()
    assert.are.equal("crashed", err.kind)
    assert.are.equal(9, err.signal)
    assert.are.equal(message, err.message)
  end

  it("of another kind than an answer: the running task crashes saying why", function()
    local pool = orch.pool { workers = 1, max_message = 100000 }
    local fut = pool:submit(function()
      local core_ = require("orch.core")
      core_.set_max_message(0x7fffffff)
      core_.send_parent(core_.msg.SEND, string.rep("z", 200000))
      core_.child_sleep(10)
    end)
    assert_killed_for(fut, "crashed: bad frame from worker: length over the limit")
    assert.are.equal(9, pool:submit(function() return 9 end):result())
    pool:terminate()
  end)

  it("a result for a task the worker is not running: that task crashes, the worker replaced", function()
    local pool = orch.pool { workers = 1 }
    local fut = pool:submit(function()
      local core_ = require("orch.core")
      core_.send_parent(core_.msg.RESULT, 999999, "not mine")
      core_.child_sleep(10)
      return "too late"
    end)
    assert_killed_for(fut, "crashed: protocol error: result for task 999999 out of order")
    assert.are.equal(10, pool:submit(function() return 10 end):result())
    assert.are.equal(1, pool:stats().restarts)
    pool:terminate()
  end)
end)

-- These run in a fresh interpreter (H.run_lua: the same build, sanitizer
-- included), whose small heap lets a collection step at every allocation
-- stay cheap: finalizers then run inside encodes.
describe("a send from a finalizer in the middle of another send", function()
  it("proc:send: both frames arrive whole", function()
    local out, code = H.run_lua([[
      local core = require "orch.core"
      local MSG = core.msg
      local echoed = {}
      local proc = core.spawn(function()
        collectgarbage("incremental", 200, 100, 13)
        while true do
          local v = core.call()
          if v == nil then break end
          core.send_parent(MSG.SEND, v)
        end
      end, function(_, t, v) if t == MSG.SEND then echoed[#echoed + 1] = v end end, function() end)
      local payload = {}
      for i = 1, 40 do payload[i] = { i, tostring(i) } end
      local sent, ran = 0, 0
      collectgarbage("incremental", 1, 1000, 0) -- a collection step at every chance
      for _ = 1, 100 do
        for _ = 1, 3 do
          setmetatable({}, { __gc = function()
            ran = ran + 1
            if proc:send(MSG.REPLY, "gc") then sent = sent + 1 end
          end })
        end
        if proc:send(MSG.REPLY, payload) then sent = sent + 1 end
      end
      collectgarbage("incremental", 200, 100, 13)
      local t = core.now()
      while #echoed < sent and core.now() - t < 30 do core.step(0.1) end
      local tables, bad = 0, 0
      for _, v in ipairs(echoed) do
        if v ~= "gc" then
          tables = tables + 1
          for i = 1, 40 do
            if type(v[i]) ~= "table" or v[i][1] ~= i or v[i][2] ~= tostring(i) then bad = bad + 1 end
          end
        end
      end
      print(("ran>0=%s echoed=%d sent=%d tables=%d bad=%d"):format(tostring(ran > 0), #echoed, sent, tables, bad))
      proc:send(MSG.REPLY, nil)
      proc:close()
    ]])
    assert.are.equal(0, code, out)
    local sent = out:match("sent=(%d+)")
    assert.matches("ran>0=true echoed=" .. tostring(sent) .. " sent=%d+ tables=100 bad=0", out)
  end)

  it("core.send_parent in a worker, during a result's encoding: the result arrives whole", function()
    local out, code = H.run_lua([[
      local orch = require "orch"
      local pool = orch.pool { workers = 1 }
      local n, futs = 300, {}
      for k = 1, 10 do
        futs[k] = pool:submit(function(count)
          local c = require("orch.core")
          collectgarbage("incremental", 1, 1000, 0)
          local t, ran = {}, 0
          for i = 1, count do
            t[i] = { i, tostring(i) }
            setmetatable({}, { __gc = function()
              ran = ran + 1
              c.send_parent(c.msg.SEND, { "gc", ran })
            end })
          end
          return t
        end, n)
      end
      local bad = 0
      for k = 1, 10 do
        if not futs[k]:wait(30) then bad = bad + 1000 else
          local ok, t = pcall(futs[k].result, futs[k])
          if not ok or #t ~= n then bad = bad + 100 else
            for i = 1, n do if t[i][1] ~= i or t[i][2] ~= tostring(i) then bad = bad + 1 end end
          end
        end
      end
      print(("bad=%d restarts=%d"):format(bad, pool:stats().restarts))
      pool:terminate()
    ]])
    assert.are.equal(0, code, out)
    assert.matches("bad=0 restarts=0", out, 1, true)
  end)
end)

describe("spawning without fds left", function()
  it("leaves nothing open, says why, and the next pool works #noasan", function()
    local s = script("ulimit -n 64;", "spawn_emfile.lua")
    local before, after = s:match("fds\t(%d+)\t(%d+)")
    assert.matches("error\tfalse\t.-orch: cannot start child %d+ of 40: %a+: Too many open files", s)
    assert.are.equal(before, after)
    assert.matches("small\t6", s, 1, true)
  end)
end)

describe("buffers after a big message", function()
  it("the parent's read buffer is given back once drained", function()
    local pool = orch.pool { workers = 1 }
    local w = pool.slots[1]
    assert.are.equal(32 * 1024 * 1024, #pool:submit(function() return string.rep("x", 32 * 1024 * 1024) end):result())
    for i = 1, 3 do assert.are.equal(i, pool:submit(function() return i end):result()) end
    local cap = w.proc:buffer_sizes()
    assert.is_true(cap <= 1024 * 1024, "in buffer: " .. cap)
    pool:terminate()
  end)

  it("the worker's read buffer is given back once drained #novalgrind #noasan", function()
    local pool = orch.pool { workers = 1 }
    local pid = pool:submit(function() return require("orch.core").getpid() end):result()
    local base = vm_rss(pid)
    local big = string.rep("x", 64 * 1024 * 1024)
    assert.are.equal(#big, pool:submit(function(s) return #s end, big):result())
    big = nil  -- luacheck: ignore
    for _ = 1, 2 do pool:submit(function() collectgarbage() collectgarbage() end):result() end
    local rss = vm_rss(pid)
    assert.is_true(rss < base + 16 * 1024 * 1024, ("worker RSS %d MB over %d MB"):format(rss >> 20, base >> 20))
    pool:terminate()
  end)
end)

describe("on_exit", function()
  it("does not come after proc:close() from on_message while an exited child is drained", function()
    local exits, messages = 0, 0
    local proc = core.spawn(function()
      core.send_parent(MSG.SEND, "last words")
    end, function(p)
      messages = messages + 1
      p:close()
    end, function() exits = exits + 1 end)
    local pid = proc:pid()
    -- the child has exited and written all before the loop looks: both
    -- SIGCHLD and its frame are pending, and reaping drains the frame
    assert.is_true(H.eventually(function() local st = H.stat(pid) return not st or st.state == "Z" end, 10))
    for _ = 1, 5 do core.step(0.05) end
    assert.are.equal(1, messages)
    assert.are.equal(0, exits)
    assert.is_false(proc:alive())
  end)
end)
