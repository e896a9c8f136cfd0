-- Big frames: a payload of 512 KiB or more crosses in a memfd whose fd goes
-- over the channel's socket (chan.c, memfd.c): the parent's in its shared
-- memfd, written over once the child is done, the child's in a sealed one
-- each. Real forks, real big strings, real SIGKILLs; fds of the parent and
-- of the workers are counted before and after.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec
local MSG = core.msg

local MB = 1 << 20
local MIN = 512 << 10 -- the least payload that goes in a memfd (chan.c's BIG_MIN)

-- A string of n bytes that is not one byte repeated: a mix-up of pieces shows.
local function big(n, seed)
  local piece = ("%08d"):format(seed or 0) .. ("abcdefghijklmnopqrstuvwxyz"):rep(4)
  return (piece:rep(n // #piece + 1)):sub(1, n - 8) .. ("%08d"):format(n % 1e8)
end

local function fds_of(pid)
  local out = H.sh("ls /proc/" .. pid .. "/fd | wc -l")
  return tonumber(out)
end

-- The pids of the pool's workers, asked of the workers themselves.
local function worker_pid(pool)
  return pool:submit(function() return require("orch.core").getpid() end):result()
end

describe("big frames", function()
  setup(function()
    -- what the loop opens once for good (its signal watchers' fd) is open before fds are counted
    local pool <close> = orch.pool { workers = 1 }
    pool:submit(function() end):result()
  end)

  it("strings from 512 KiB to 16 MiB go there and back whole, in order with small frames", function()
    local pool <close> = orch.pool { workers = 2 }
    local sizes = { MIN - 64, MIN, 3 * MB + 7, MB, 16 * MB, 50, MIN + 1, 2 * MB }
    local futs = {}
    for i, n in ipairs(sizes) do
      futs[i] = pool:submit(function(s, k) return s, #s, k end, big(n, i), i)
    end
    for i, n in ipairs(sizes) do
      local s, len, k = futs[i]:result()
      assert.are.equal(n, len)
      assert.are.equal(i, k)
      assert.is_true(s == big(n, i), "value " .. i .. " changed on the way")
    end
  end)

  it("several big strings in one frame, more than are left out of the encoding, each whole in its place",
    function()
    -- strings of 512 KiB or more are written into the memfd from where
    -- they are (4 of them a frame); the rest, and the small values between
    -- them, are copied as any value is
    local pool <close> = orch.pool { workers = 1 }
    local args = { 1, big(2 * MB, 1), "a", big(3 * MB + 5, 2), big(MIN - 1, 3), { big(MIN, 4) },
      big(2 * MB + 2, 5), 7, big(4 * MB, 6), big(2 * MB + 3, 7), "end" }
    local back = table.pack(pool:submit(function(...)
      local t = table.pack(...)
      t[#t + 1] = ("r"):rep(2 * MB) .. "!" -- and a new one among what came
      return table.unpack(t, 1, #t)
    end, table.unpack(args)):result())
    assert.are.equal(#args + 1, back.n)
    for i, v in ipairs(args) do
      if type(v) == "table" then
        assert.is_true(back[i][1] == v[1], "value " .. i .. " changed on the way")
      else
        assert.is_true(back[i] == v, "value " .. i .. " changed on the way")
      end
    end
    assert.is_true(back[#args + 1] == ("r"):rep(2 * MB) .. "!")
  end)

  it("a task's strings of 512 KiB or more are pieces of its packed form, sent whole again on a retry",
    function()
    local s1, s2 = big(2 * MB, 1), big(3 * MB, 2)
    local function f(a, n, b) return a, n, b end
    local task = core.pack_task(f, s1, 5, s2)
    -- the head (function id, argument count, s1's tag and length), s1, the
    -- bytes between, s2: the strings themselves, not copies
    assert.are.equal("table", type(task))
    assert.are.equal(4, #task)
    assert.is_true(task[2] == s1 and task[4] == s2)
    assert.are.equal("userdata", type(core.pack_task(f, big(MIN - 1, 3))))

    local pool <close> = orch.pool { workers = 1 }
    local seen = os.tmpname()
    os.remove(seen)
    local fut = pool:group({ retries = 1 }):submit(function(a, n, b, path)
      local first = io.open(path) == nil
      if first then
        io.open(path, "w"):close()
        os.exit(3) -- the first run dies: the task goes again, to the replacement
      end
      return a, n, b
    end, s1, 5, s2, seen)
    local a, n, b = fut:result()
    os.remove(seen)
    assert.are.equal(2, fut.attempts)
    assert.is_true(a == s1 and n == 5 and b == s2, "the retried task changed on the way")
  end)

  it("go through memfds in both directions from 512 KiB on, not below: the parent's one made once", function()
    -- the memfds made by one worker's pool for `rounds` round trips of n bytes
    local function memfds(n, rounds)
      local out = H.sh(("strace -f -qq -e trace=memfd_create -o /dev/stdout lua5.4 %s 2>/dev/null"):format(
        H.lua_script(([[
          local orch = require "orch"
          local pool <close> = orch.pool { workers = 1 }
          for i = 1, %d do
            local s = pool:submit(function(x) return x end, ("z"):rep(%d) .. i):result()
            assert(s == ("z"):rep(%d) .. i)
          end
        ]]):format(rounds, n, n))))
      local count = { frame = 0, shared = 0 }
      for name in out:gmatch("memfd_create%(\"orch%-(%a+)\"") do count[name] = count[name] + 1 end
      return count
    end
    if not H.sh("command -v strace"):find("strace") then
      pending("strace is not installed")
      return
    end
    assert.are.same({ frame = 3, shared = 1 }, memfds(3 * MB, 3))
    assert.are.same({ frame = 3, shared = 1 }, memfds(MIN, 3))
    assert.are.same({ frame = 0, shared = 0 }, memfds(MIN - 4096, 3))
  end)

  it("past 256 MiB of shared memfds in a process, the next big task goes in a sealed one", function()
    if not H.sh("command -v strace"):find("strace") then
      pending("strace is not installed")
      return
    end
    -- three workers, three tasks of 96 MiB at once: two fit in the budget
    local out = H.sh(("strace -f -qq -e trace=memfd_create -o /dev/stdout lua5.4 %s 2>/dev/null"):format(
      H.lua_script([[
        local orch = require "orch"
        local pool <close> = orch.pool { workers = 3 }
        local s, futs = ("q"):rep(96 << 20), {}
        for i = 1, 3 do futs[i] = pool:submit(function(x) return #x end, s) end
        for i = 1, 3 do assert(futs[i]:result() == #s) end
        print("done")
      ]])))
    local count = { frame = 0, shared = 0 }
    for name in out:gmatch("memfd_create%(\"orch%-(%a+)\"") do count[name] = count[name] + 1 end
    assert.matches("done", out, 1, true)
    assert.are.same({ frame = 1, shared = 2 }, count)
  end)

  it("one after another through one worker, growing and shrinking: each whole (the shared memfd written over)",
    function()
      local pool <close> = orch.pool { workers = 1 }
      for i, n in ipairs { 3 * MB, 16 * MB, 3 * MB + 1, 2 * MB, 16 * MB - 5, 2 * MB, 40 * MB } do
        local s = pool:submit(function(x) return x end, big(n, i)):result()
        assert.are.equal(n, #s)
        assert.is_true(s == big(n, i), "value " .. i .. " changed on the way")
      end
    end)

  it("queued to a worker still holding the last: sealed memfds for those, each whole", function()
    local pool <close> = orch.pool { workers = 1 }
    local futs = {}
    for i = 1, 6 do futs[i] = pool:submit(function(s) return #s, s:sub(1, 8), s:sub(-8) end, big(3 * MB + i, i)) end
    for i = 1, 6 do
      assert.are.same({ 3 * MB + i, ("%08d"):format(i), ("%08d"):format(3 * MB + i), n = 3 },
        table.pack(futs[i]:result()))
    end
  end)

  it("leave no fd open in the parent or the workers", function()
    local before = H.fd_count()
    do
      local pool <close> = orch.pool { workers = 1 }
      local pid = worker_pid(pool)
      local wbefore = fds_of(pid)
      for i = 1, 20 do
        assert.are.equal(2 * MB + i, #pool:submit(function(s) return s end, big(2 * MB + i, i)):result())
      end
      assert.are.equal(before + 3, H.fd_count()) -- the socket, the pipe, the shared memfd
      assert.are.equal(pid, worker_pid(pool)) -- a small task: the shared memfd goes
      assert.are.equal(wbefore, fds_of(pid))
      assert.are.equal(before + 2, H.fd_count())
    end
    assert.are.equal(before, H.fd_count())
  end)

  it("a frame made while a reply is awaited is kept whole for later (a big task deferred)", function()
    local pool <close> = orch.pool { workers = 1 }
    local q = orch.queue()
    local first = pool:submit(function(queue) return #queue:get() end, q)
    local second = pool:submit(function(s) return #s end, big(3 * MB, 3))
    orch.sleep(0.2)
    q:put(big(2 * MB, 1))
    assert.are.equal(2 * MB, first:result())
    assert.are.equal(3 * MB, second:result())
  end)

  it("a big frame read with results before it is dropped when their callback closes the proc", function()
    local before = H.fd_count()
    local got, exited = {}, false
    local proc = core.spawn(function()
      core.send_parent(MSG.RESULT, 1, "one")
      core.send_parent(MSG.SEND, big(3 * MB))
      core.child_sleep(30)
    end, function(p, t)
      got[#got + 1] = t
      p:close()
    end, function() exited = true end)
    os.execute("sleep 0.5") -- both frames wait in the pipe: one read takes them
    H.wait_for(function() return #got > 0 end, 10)
    core.step(0.1)
    assert.are.same({ MSG.RESULT }, got)
    assert.is_false(exited)
    assert.is_false(proc:alive())
    assert.are.equal(before, H.fd_count())
  end)

  describe("and max_message", function()
    it("a big result over it fails its task in the worker; nothing was sent", function()
      local pool <close> = orch.pool { workers = 1, max_message = 2500000 }
      local fut = pool:submit(function() return ("x"):rep(3 * MB) end)
      fut:wait()
      assert.are.equal("error", fut:error().kind)
      assert.matches("a message of 31457%d%d bytes is over the limit of 2500000 bytes %(max_message%)",
        fut:error().message)
      assert.are.equal(0, pool:stats().restarts)
    end)

    it("a big frame over the parent's limit: crashed, bad frame, the worker replaced, no fd left", function()
      local before = H.fd_count()
      do
        local pool <close> = orch.pool { workers = 1, max_message = 2500000 }
        local fut = pool:submit(function()
          require("orch.core").set_max_message(0x7fffffff) -- a worker that ignores the limit
          return ("x"):rep(3 * MB)
        end)
        fut:wait()
        assert.are.equal("crashed", fut:error().kind)
        assert.are.equal("crashed: bad frame from worker: length over the limit", fut:error().message)
        assert.are.equal(8, pool:submit(function() return 8 end):result())
        assert.are.equal(1, pool:stats().restarts)
      end
      assert.are.equal(before, H.fd_count())
    end)
  end)

  describe("from a child that lies", function()
    if not H.sh("command -v python3"):find("python3") then
      it("(python3 is needed to lie)", function() pending("python3 is not installed") end)
      return
    end
    -- The child runs lying_frames.py, which sends, on the child's own ends of
    -- its channel, one big frame lying as `kind` says and a plain frame after it.
    local function lie(kind, max)
      local before = H.fd_count()
      local got, exited = {}, false
      local payload, after = core.encode("hello", 42), core.encode("after")
      local hex = function(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
      local proc = core.spawn(function()
        os.execute(("exec python3 spec/scripts/lying_frames.py %s %d %s %s"):format(kind, MSG.SEND, hex(payload),
          hex(after)))
        core.child_sleep(30)
      end, function(_, ...) got[#got + 1] = table.pack(...) end, function() exited = true end)
      if max then proc:set_max_message(max) end
      H.wait_for(function() return #got >= 2 or (#got == 1 and got[1][2] == "length over the limit") end, 20)
      proc:kill()
      assert.is_true(H.wait_for(function() return exited end, 10))
      proc:close()
      assert.are.equal(before, H.fd_count())
      return got
    end

    it("good: the frame python made decodes (so the lies below are the only difference)", function()
      local got = lie("good")
      assert.are.same({ MSG.SEND, "hello", 42, n = 3 }, got[1])
      assert.are.same({ MSG.SEND, "after", n = 2 }, got[2])
    end)

    for kind, why in pairs {
      none = "big frame: no file descriptor came with it",
      two = "big frame: more than one file descriptor came with it",
      notmemfd = "big frame: the file descriptor is not a memfd",
      file = "big frame: the file descriptor is not a memfd",
      unsealed = "big frame: the memfd is not sealed against writing and shrinking",
      short = "big frame: the size is beyond the end of the memfd",
    } do
      it(kind .. ": refused saying why, the frame after it comes, no fd left", function()
        local got = lie(kind)
        assert.are.same({ 0, why, MSG.SEND, n = 3 }, got[1])
        assert.are.same({ MSG.SEND, "after", n = 2 }, got[2])
      end)
    end

    it("a size over the limit: length over the limit, the rest dropped, no fd left", function()
      local got = lie("huge", 1000000)
      assert.are.same({ 0, "length over the limit", MSG.SEND, n = 3 }, got[1])
      assert.are.equal(1, #got)
    end)

    -- Only the parent writes in a shared memfd: the child's end reads such
    -- frames, the parent's refuses them as it does any length no frame has.
    it("shared: the form only the parent sends is refused, the rest dropped, no fd left", function()
      local got = lie("shared")
      assert.are.same({ 0, "length over the limit", MSG.SEND, n = 3 }, got[1])
      assert.are.equal(1, #got)
    end)
  end)

  describe("no fd left", function()
    it("when a worker is SIGKILLed while big values cross, either way", function()
      local before = H.fd_count()
      do
        local pool <close> = orch.pool { workers = 2 }
        local killed
        for round = 1, 6 do
          local futs = {}
          for i = 1, 4 do
            futs[i] = pool:submit(function(s) return s .. s end, big(4 * MB, i))
          end
          orch.sleep(0.005 * round)
          killed = H.children(core.getpid())
          os.execute("kill -9 " .. table.concat(killed, " ") .. " 2>/dev/null")
          for i = 1, 4 do
            futs[i]:wait(30)
            if not futs[i]:error() then
              assert.are.equal(8 * MB, #futs[i]:result())
            else
              assert.are.equal("crashed", futs[i]:error().kind)
            end
          end
        end
        -- the last round's workers may have been idle when killed: once
        -- the pool has reaped them, the next task goes to their replacements
        assert.is_true(H.eventually(function()
          orch.sleep(0.01)
          for _, pid in ipairs(killed) do
            if H.stat(pid) then return false end
          end
          return true
        end))
        assert.are.equal(3, pool:submit(function() return 3 end):result())
      end
      assert.are.equal(before, H.fd_count())
    end)

    it("when the pool closes with big frames in flight", function()
      local before = H.fd_count()
      for _, how in ipairs { "join", "terminate" } do
        local pool = orch.pool { workers = 2 }
        for i = 1, 8 do pool:submit(function(s) return s end, big(3 * MB, i)) end
        orch.sleep(0.01)
        if how == "join" then
          pool:close()
          assert.is_true(pool:join(30))
        else
          pool:terminate()
        end
        assert.are.equal(before, H.fd_count())
      end
    end)
  end)

  it("a parent out of fds: sends the bytes through the socket, refuses a big frame it cannot take "
    .. "#novalgrind", function()
    local out = H.run_lua([[
      local orch = require "orch"
      local pool <close> = orch.pool { workers = 1 }
      assert(pool:submit(function() return 1 end):result() == 1)
      local files = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        files[#files + 1] = f
      end
      print("sent", pool:submit(function(s, n) return #s, s == ("a"):rep(n) .. "z" end,
        ("a"):rep(3 << 20) .. "z", 3 << 20):result())
      local fut = pool:submit(function() return ("b"):rep(3 << 20) end)
      fut:wait()
      print("back", fut:error() and fut:error().message)
      for _, f in ipairs(files) do f:close() end
      print("then", #pool:submit(function() return ("c"):rep(3 << 20) end):result())
    ]], "ulimit -n 64;")
    assert.matches("sent\t3145729\ttrue\n", out)
    assert.matches("back\tcrashed: bad frame from worker: big frame: its file descriptor was lost "
      .. "%(no fd free here%)\n", out)
    assert.matches("then\t3145728\n", out)
  end)

  it("without memfds (a worker out of fds): the bytes go through the pipe #novalgrind", function()
    local pool <close> = orch.pool { workers = 1, limits = { files = 32 } }
    local n, s, five, r, last = pool:submit(function(len)
      local files = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        files[#files + 1] = f
      end
      KEEP_OPEN = files -- luacheck: ignore (until the result has left: memfd_create fails)
      return #files, ("q"):rep(len), 5, ("r"):rep(len + 1) .. "!", "end"
    end, 3 * MB):result()
    assert.is_true(n > 0)
    assert.is_true(s == ("q"):rep(3 * MB))
    assert.is_true(r == ("r"):rep(3 * MB + 1) .. "!")
    assert.are.same({ 5, "end" }, { five, last })
  end)
end)
