-- Big blocks (src/alloc_big.c): the state's blocks of 2 MiB or more, and
-- big frames' payloads read in, are huge-page mappings of their own, and
-- freed ones are kept for reuse. Real strings and tables through the
-- wrapped allocator, real workers, their resident memory read from /proc.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec

local MB = 1 << 20

local function rss(pid)
  local s = H.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s+(%d+)")) * 1024
end

-- A string of n bytes that is not one byte repeated: a mix-up of pieces shows.
local function big(n, seed)
  local piece = ("%08d"):format(seed) .. ("abcdefghijklmnopqrstuvwxyz"):rep(3)
  return (piece:rep(n // #piece + 1)):sub(1, n)
end

-- Makes and drops a 16 MiB string: its blocks are kept after a collection.
local function keep_one()
  assert.are.equal(16 * MB, #("x"):rep(16 * MB))
  collectgarbage()
  collectgarbage()
  assert.is_true(core.big_blocks().kept >= 1)
end

describe("big blocks", function()
  it("strings and tables made, grown, shrunk and freed across 2 MiB keep every byte", function()
    for _, n in ipairs({ 2 * MB - 64, 2 * MB - 25, 2 * MB, 2 * MB + 1, 5 * MB + 3, 33 * MB }) do
      local s = big(n, n)
      assert.are.equal(n, #s)
      assert.are.equal(big(n, n), s)
      assert.are.equal(("%08d"):format(n), s:sub(1, 8))
    end
    -- an array part grown through the wrapped allocator from a few slots
    -- to 32 MiB (Lua reallocates it), then cut down by a rehash
    local t = {}
    for i = 1, 2000000 do t[i] = i * 3 end
    for i = 1, 2000000, 99991 do assert.are.equal(i * 3, t[i]) end
    for i = 2000000, 1001, -1 do t[i] = nil end
    t.x = 1 -- a rehash: the array part shrinks to its 1000 items
    for i = 1, 1000 do assert.are.equal(i * 3, t[i]) end
    assert.are.equal(1000, #t)
    local parts = {}
    for i = 1, 64 do parts[i] = big(64 * 1024, i) end
    assert.are.equal(4 * MB, #table.concat(parts))
  end)

  it("an array part that grows moves its pages to a bigger block and keeps none it leaves", function()
    collectgarbage()
    collectgarbage() -- nothing else big is freed while it grows
    local before = core.big_blocks()
    local t = {}
    for i = 1, 4000000 do t[i] = i end -- 2, 4, ... 64 MiB
    local after = core.big_blocks()
    assert.is_true(after.made - before.made >= 5, "made " .. after.made - before.made)
    assert.is_true(after.kept_bytes <= before.kept_bytes, -- (kept ones may expire meanwhile)
      ("kept %d bytes, then %d"):format(before.kept_bytes, after.kept_bytes))
    for i = 1, 4000000, 7919 do assert.are.equal(i, t[i]) end
  end)

  it("a freed big block is used again for the next one of about its size: no new mapping", function()
    assert.are.equal(24 * MB, #big(24 * MB, 1)) -- made and dropped
    collectgarbage()
    collectgarbage()
    local before = core.big_blocks()
    assert.is_true(before.kept >= 1)
    local s = ("y"):rep(24 * MB)
    local after = core.big_blocks()
    assert.are.equal(before.mapped, after.mapped)
    assert.is_true(after.made > before.made)
    assert.are.equal(24 * MB, #s)
  end)

  it("a big value arriving while a dead one waits for the collector takes its block", function()
    -- in a process of its own: a small heap, as the rule wants
    local out, code = H.run_lua([[
      local orch = require "orch"
      local core = require "orch.core"
      local pool <close> = orch.pool { workers = 1 }
      local function echo(x) return x end
      local n = 24 << 20
      local vals = { ("a"):rep(n - 8) .. "00000001", ("b"):rep(n - 8) .. "00000002" }
      local mapped
      for i = 1, 6 do
        local v = vals[i % 2 + 1]
        assert(pool:submit(echo, v):result() == v, "round " .. i)
        if i == 1 then mapped = core.big_blocks().mapped end
      end
      print("more mappings", core.big_blocks().mapped - mapped)
      -- results held: a collection frees none of them
      local held = {}
      for i = 1, 3 do held[i] = pool:submit(echo, vals[i % 2 + 1]):result() end
      assert(held[1] == vals[2] and held[2] == vals[1] and held[3] == vals[2])
      print("held ok")
    ]])
    assert.are.equal(0, code, out)
    -- from round 2 on, each result takes the block of the one before it,
    -- dead but not yet collected
    assert.matches("more mappings\t0\n", out)
    assert.matches("held ok", out)
  end)

  it("collects for a big value only while the collector runs and the rest of the heap is small", function()
    -- maps for a decoded value when the last one is dead but not collected
    local function mappings(mode, small_tables)
      local out, code = H.run_lua(([[
        local core = require "orch.core"
        local e = core.encode(("z"):rep(24 << 20))
        local rest = {}
        for i = 1, %d do rest[i] = { i } end
        collectgarbage(); collectgarbage()
        collectgarbage("%s")
        local a = core.decode(e)
        assert(#a == 24 << 20)
        a = nil
        local before = core.big_blocks().mapped
        local b = core.decode(e)
        print("mappings", core.big_blocks().mapped - before)
        assert(b == ("z"):rep(24 << 20))
      ]]):format(small_tables, mode))
      assert.are.equal(0, code, out)
      return tonumber(out:match("mappings\t(%d+)"))
    end
    assert.are.equal(0, mappings("restart", 1000))
    assert.are.equal(1, mappings("stop", 1000))
    -- some 7 MB of small tables: collecting them costs more than fresh pages
    assert.are.equal(1, mappings("restart", 100000))
    -- inside a finalizer the collector cannot run: the value is made all the same
    local out, code = H.run_lua([[
      local core = require "orch.core"
      local e = core.encode(("q"):rep(24 << 20))
      local got
      setmetatable({}, { __gc = function() got = core.decode(e) == ("q"):rep(24 << 20) end })
      collectgarbage(); collectgarbage()
      print("in a finalizer", got)
    ]])
    assert.are.equal(0, code, out)
    assert.matches("in a finalizer\ttrue\n", out)
  end)

  it("keeps nothing under an address-space limit, and lets kept blocks go when memory runs short #noasan", function()
    local out, code = H.run_lua([[
      local core = require "orch.core"
      local s = ("x"):rep(8 << 20)
      s = nil
      collectgarbage(); collectgarbage()
      print("limited kept", core.big_blocks().kept)
    ]], "ulimit -v 2000000;")
    assert.are.equal(0, code, out)
    assert.matches("limited kept\t0", out)
    -- kept blocks, then (the address space capped just above what the
    -- process has) a block that cannot be had: they go, and the state goes on
    out, code = H.run_lua([[
      local core = require "orch.core"
      local keep = {}
      for i = 1, 3 do keep[i] = ("x"):rep((16 << 20) + i) end
      keep = nil
      collectgarbage(); collectgarbage()
      print("kept", core.big_blocks().kept)
      local vm = io.open("/proc/self/status"):read("a"):match("VmSize:%s+(%d+)") * 1024
      assert(os.execute(("prlimit --pid %d --as=%d:"):format(core.getpid(), vm + (64 << 20))))
      print("huge", pcall(string.rep, "x", 256 << 20))
      print("after", core.big_blocks().kept, #("y"):rep(4 << 20))
    ]])
    assert.are.equal(0, code, out)
    assert.matches("kept\t[1-4]\n", out)
    assert.matches("huge\tfalse\tnot enough memory", out)
    assert.matches("after\t0\t4194304", out)
  end)

  it("a forked worker keeps none of the parent's kept blocks", function()
    keep_one()
    local pool <close> = orch.pool { workers = 1 }
    local kept = pool:submit(function() return require("orch.core").big_blocks().kept end):result()
    assert.are.equal(0, kept)
  end)

  it("a worker collects after a task with big values and keeps their blocks for the next such task", function()
    local pool <close> = orch.pool { workers = 1 }
    local function stats() return require("orch.core").big_blocks() end
    local v = big(12 * MB, 7)
    -- the counts are the process's, the parent's before the fork among them
    local st0 = pool:submit(stats):result()
    for _ = 1, 6 do assert.are.equal(v, pool:submit(function(x) return x end, v):result()) end
    -- asked in a task with big values of its own, so that the blocks stay
    local st = pool:submit(function(x) return require("orch.core").big_blocks(), #x end, v):result()
    assert.is_true(st.made - st0.made >= 14, "made " .. st.made - st0.made)
    -- each task needs the payload read in and the string: two blocks,
    -- mapped once and kept from then on
    assert.is_true(st.mapped - st0.mapped <= 3, "mapped " .. st.mapped - st0.mapped)
    -- a task without big values lets them go as it ends
    pool:submit(function() end):result()
    assert.are.equal(0, pool:submit(stats):result().kept)
  end)

  it("an idle worker lets its kept blocks go after a second #novalgrind", function()
    collectgarbage()
    collectgarbage() -- the worker inherits no dead big values to collect meanwhile
    local pool <close> = orch.pool { workers = 1 }
    local pid = pool:submit(function() return require("orch.core").getpid() end):result()
    local base = rss(pid)
    assert.are.equal(48 * MB, pool:submit(function(x) return #x end, ("x"):rep(48 * MB)):result())
    local held, t0 = rss(pid), core.now()
    assert.is_true(held > base + 32 * MB, ("held %d MB over %d MB"):format(held >> 20, base >> 20))
    local idle
    local gone = H.eventually(function()
      idle = rss(pid)
      return idle < base + 16 * MB
    end, 5)
    assert.is_true(gone, ("idle %d MB over %d MB"):format(idle >> 20, base >> 20))
    -- not at the end of the task: once the worker has been idle a second
    assert.is_true(core.now() - t0 > 0.8, "let go after " .. (core.now() - t0) .. " s")
  end)

  it("the parent's kept blocks go after 10 s of the loop, with nothing else to do #slow", function()
    keep_one()
    orch.sleep(10.5)
    assert.are.equal(0, core.big_blocks().kept)
  end)
end)
