-- Lanes: beside its socket and pipe, each channel has a ring of memory
-- that both processes map (lane.c). While the reader is awake (polling,
-- or busy and bound to look there before it sleeps), the writer puts
-- whole frames on it, and the reader merges them with what it reads from
-- the fd by where the writer was in the stream. Real forks, frames of
-- every size (on the lane, through the fds, in memfds), parents that do
-- not turn the loop for a while, SIGKILLed workers, counted mappings.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec

local KB = 1 << 10

-- A string of n bytes made from seed: a mix-up of two shows.
local function text(n, seed)
  local piece = ("<%d>"):format(seed) .. ("abcdefghijklmnopqrstuvwxyz"):rep(2)
  return (piece:rep(n // #piece + 1)):sub(1, n)
end

-- Frame sizes that go on the lane (small), past it (more than its 16 KiB)
-- and in a memfd (512 KiB and more), in turn.
local SIZES = { 3, 90, 20 * KB, 7, 600 * KB, 1000, 40 * KB, 0 }
local function size(i) return SIZES[i % #SIZES + 1] end

-- Keeps this process off the loop for s seconds: it stays awake, so
-- replies meant for it may go on its lanes.
local function busy(s)
  local t = core.now()
  while core.now() - t < s do end
end

-- Keeps this process off the loop until path exists (a worker made it),
-- then for s seconds more.
local function busy_until(path, s)
  local t = core.now()
  while core.now() - t < 20 do
    local f = io.open(path)
    if f then f:close() break end
  end
  busy(s)
end

-- A path no file is at yet, removed at the end of the running test: a
-- worker makes it to say where it is.
local function new_mark()
  local path = os.tmpname()
  os.remove(path)
  finally(function() os.remove(path) end)
  return path
end

-- A pool of one worker that has run a task (its code cached, its
-- channel used), and that worker's proc.
local function warm_pool()
  local pool = orch.pool { workers = 1 }
  pool:submit(function() end):result()
  return pool, pool.slots[1].proc
end

-- The shared anonymous mappings of a process (lanes are; memfds are not).
-- The shared anonymous mappings of a process (lanes are its only ones):
-- how many, and their sizes in bytes.
local function shared_anon(pid)
  local sizes = {}
  for line in io.lines(("/proc/%s/maps"):format(pid)) do
    local from, to = line:match("^(%x+)%-(%x+) rw%-s ")
    if from and line:match("/dev/zero") then sizes[#sizes + 1] = tonumber(to, 16) - tonumber(from, 16) end
  end
  return #sizes, sizes
end

describe("lanes", function()
  it("carry a worker's frames while the parent is busy", function()
    local pool <close>, proc = warm_pool()
    local records = H.capture_logs(finally)
    local taken = proc:lane_bytes()
    local mark = new_mark()
    local f = pool:submit(function(x, path)
      require("orch").log.info("hello") -- the parent is awake for it: on the lane
      io.open(path, "w"):close()
      return x + 1
    end, 41, mark)
    busy_until(mark, 0.05) -- the parent does not turn the loop meanwhile
    assert.equal(42, f:result())
    assert.equal("hello", records[1].message)
    assert.is_true(proc:lane_bytes() > taken)
  end)

  it("carry frames to a child that is busy", function()
    local MSG = core.msg
    local mark = new_mark()
    local calls, got, exited = 0, nil, false
    local proc = core.spawn(function()
      local c = require("orch.core")
      local first = c.call("first") -- asleep when the reply comes: through the socket
      io.open(mark, "w"):close()
      local t = c.now()
      while c.now() - t < 0.5 do end -- awake: it looks at its lane before it sleeps again
      local second = c.call("second") -- its reply came before it asked
      c.send_parent(MSG.SEND, first, second)
    end, function(p, type, ...)
      if type == MSG.CALL then
        calls = calls + 1
        if calls == 1 then p:send(MSG.REPLY, "r1") end
      elseif type == MSG.SEND then
        got = { ... }
      end
    end, function() exited = true end)
    finally(function() proc:close() end)
    local t0 = core.now()
    repeat -- the loop turns: the first call is answered
      core.step(0.01)
      local f = io.open(mark)
    until (f and f:close()) or core.now() - t0 > 20
    proc:send(MSG.REPLY, "r2")
    core.step(0) -- it leaves now, while the child is busy
    local t = core.now()
    while not (got and exited) and core.now() - t < 20 do core.step(0.05) end
    assert.same({ "r1", "r2" }, got)
    assert.is_true(select(2, proc:lane_bytes()) > 0, "nothing went on the lane")
  end)

  it("let the next task leave at once after a step that read a reply there", function()
    local pool <close> = warm_pool()
    local marks = { new_mark(), new_mark() }
    local touch = function(path) io.open(path, "w"):close() return path end
    local first = pool:submit(touch, marks[1])
    busy_until(marks[1], 0.05) -- its reply waits on the lane
    core.step(1, true) -- a step that does not poll: it reads the lane, no turn of the loop
    assert.is_true(first:done())
    local second = pool:submit(touch, marks[2]) -- the worker is idle: it goes at once
    local t = core.now()
    repeat local f = io.open(marks[2]) until (f and f:close()) or core.now() - t > 5
    assert.is_true(core.now() - t < 5, "the task waited for the next step")
    assert.equal(marks[2], second:result())
  end)

  it("keep frames in order with those through the fds, both ways, whatever their size", function()
    local pool <close> = orch.pool { workers = 1 }
    local echo = function(n, seed, s)
      assert(#s == n, "argument cut")
      local piece = ("<%d>"):format(seed) .. ("abcdefghijklmnopqrstuvwxyz"):rep(2)
      local m = (seed * 7) % n + 1
      return (piece:rep(m // #piece + 1)):sub(1, m), seed
    end
    for round = 1, 3 do
      local futs = {}
      for i = 1, 400 do
        local n = size(i + round) + 1
        futs[i] = pool:submit(echo, n, i, text(n, i))
        if i % 50 == round then busy(0.002 * round) end -- results pile up on the lane meanwhile
      end
      for i, f in ipairs(futs) do
        local n = size(i + round) + 1
        local s, seed = f:result()
        assert.equal(i, seed)
        assert.equal(text((i * 7) % n + 1, i), s)
      end
    end
  end)

  it("keep a worker's log lines in order when the parent reads them late", function()
    local pool <close> = orch.pool { workers = 1 }
    local records = H.capture_logs(finally)
    do
      local f = pool:submit(function(count)
        local sizes = { 3, 90, 20 * 1024, 7, 600 * 1024, 1000, 40 * 1024, 0 }
        for i = 1, count do
          local n = sizes[i % #sizes + 1]
          require("orch").log.info("%d %s", i, ("x"):rep(n))
        end
        return count
      end, 300)
      busy(0.3) -- the lane fills, then the pipe, then the worker waits
      assert.equal(300, f:result())
    end
    assert.equal(300, #records)
    for i, r in ipairs(records) do
      assert.equal(("%d %s"):format(i, ("x"):rep(size(i))), r.message)
    end
  end)

  it("lose nothing a worker put there before it was killed", function()
    local pool <close>, proc = warm_pool()
    local records = H.capture_logs(finally)
    local taken = proc:lane_bytes()
    local mark = new_mark()
    local f = pool:submit(function(path)
      for i = 1, 20 do require("orch").log.info("line %d", i) end
      io.open(path, "w"):close()
      os.execute("kill -KILL " .. require("orch.core").getpid())
    end, mark)
    busy_until(mark, 0.1) -- the lines wait on the lane; the worker is gone before the parent looks
    f:wait()
    assert.equal("crashed", f:error().kind)
    local lines = {}
    for _, r in ipairs(records) do
      if r.message:match("^line") then lines[#lines + 1] = r.message end
    end
    assert.equal(20, #lines)
    for i, line in ipairs(lines) do assert.equal("line " .. i, line) end
    assert.is_true(proc:lane_bytes() > taken, "nothing came on the lane")
  end)

  it("are one mapping for the workers started together, gone with the last; a worker maps its own", function()
    local before = shared_anon("self")
    local pair -- the bytes of one worker's pair
    do
      local pool <close> = orch.pool { workers = 4 }
      local function pids()
        local seen, list = {}, {}
        for _, pid in ipairs(pool:map(function() return require("orch.core").getpid() end,
                                      { 1, 2, 3, 4, 5, 6, 7, 8 }, { chunk = 1 })) do
          if not seen[pid] then seen[pid] = true; list[#list + 1] = pid end
        end
        return list
      end
      local n, sizes = shared_anon("self")
      assert.equal(before + 1, n)
      for _, pid in ipairs(pids()) do
        local count, theirs = shared_anon(pid)
        assert.equal(1, count)
        pair = pair or theirs[1]
        assert.equal(pair, theirs[1])
      end
      assert.is_truthy(pair % 4096 == 0 and pair >= 2 * 16384)
      local found = false
      for _, bytes in ipairs(sizes) do found = found or bytes == 4 * pair end
      assert.is_true(found, "no mapping of 4 pairs in the parent")
      -- a replacement gets a mapping of its own; the dead one's pair waits
      -- for its three siblings, and the replacement maps none of theirs
      local old = pool.slots[1].pid
      os.execute("kill -9 " .. old)
      assert.is_true(H.wait_for(function()
        return pool.slots[1] and pool.slots[1].pid ~= old and pool.slots[1].proc:alive()
      end))
      assert.equal(before + 2, (shared_anon("self")))
      -- (looked at until it settles: a child just forked still unmaps what
      -- it inherited)
      local pid = pool.slots[1].pid
      assert.is_true(H.eventually(function() return shared_anon(pid) == 1 end, 10),
        ("the replacement maps %d"):format(shared_anon(pid)))
      local _, theirs = shared_anon(pid)
      assert.equal(pair, theirs[1])
    end
    collectgarbage()
    assert.equal(before, (shared_anon("self")))
  end)
end)
