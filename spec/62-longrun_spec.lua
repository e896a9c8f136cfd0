-- Long runs for real: map, imap and group:map with progress, a job log and
-- resume; runs SIGKILLed at random points and started again until they
-- finish, compared with an uninterrupted run; the progress line on a real
-- terminal (tmux); the failed item named.
local H = orch_spec
local orch = require "orch"
local core = require "orch.core"

local function tmp() return os.tmpname() end

-- A child script: map (or imap, or group:map) over N items with a job log,
-- resumed; writes the results, encoded in hex, to out when it finishes.
local RUNNER = [[
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local core = require "orch.core"
local how, log, out, n = arg[1], arg[2], arg[3], tonumber(arg[4])
local items = {}
for i = 1, n do items[i] = i end
local function work(x)
  local t = os.clock() + 0.002
  while os.clock() < t do end
  return { x, x * x, ("item %d"):format(x), x % 7 == 0 and 0.1 * x or nil }
end
local pool <close> = orch.pool{ workers = 2 }
local results = {}
local opts = { joblog = log, resume = true }
if how == "map" then
  results = pool:map(work, items, opts)
elseif how == "group" then
  results = pool:group():map(work, items, opts)
elseif how == "imap" then
  for i, v in pool:imap(work, items, opts) do results[i] = v end
end
local f = assert(io.open(out .. ".tmp", "wb"))
f:write((core.encode(results):gsub(".", function(c) return ("%02x"):format(c:byte()) end)))
f:close()
os.rename(out .. ".tmp", out)
]]

local function expected(n)
  local r = {}
  for x = 1, n do r[x] = { x, x * x, ("item %d"):format(x), x % 7 == 0 and 0.1 * x or nil } end
  return r
end

local function decode_hex(s)
  return core.decode((s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)))
end

-- Starts the runner in its own process group; returns its pid.
local function start(script, how, log, out, n)
  local p = io.popen(("setsid lua5.4 %s %s %s %s %d >/dev/null 2>&1 & echo $!"):format(script, how, log, out, n))
  local pid = tonumber(p:read("l"))
  p:close()
  return pid
end

describe("a long run killed at random points", function()
  for _, how in ipairs({ "map", "imap", "group" }) do
    it("resumed (" .. how .. ") returns what an uninterrupted run returns", function()
      local script, log, out = tmp(), tmp(), tmp()
      os.remove(log); os.remove(out)
      local f = assert(io.open(script, "w")); f:write(RUNNER); f:close()
      finally(function() os.remove(script); os.remove(log); os.remove(out) end)
      local n, kills, runs = 600, 0, 0
      math.randomseed(os.time())
      while not H.read_file(out) and runs < 40 do
        runs = runs + 1
        local pid = start(script, how, log, out, n)
        -- killed at a random instant, the first few times: within the
        -- first 0.45 s of a run that takes 0.6 s of its 2 workers' time
        -- (one that ends sooner, as a resumed one may, is not killed)
        local after = kills < 4 and 0.1 + math.random() * 0.35 or 60
        H.eventually(function() return not H.alive(pid) end, after)
        if H.alive(pid) then
          os.execute(("kill -KILL -%d 2>/dev/null"):format(pid))
          kills = kills + 1
          assert.is_true(H.eventually(function() return not H.alive(pid) end, 5))
        end
      end
      assert.is_true(kills >= 1, "the run ended before it could be killed")
      assert.are.same(expected(n), decode_hex(H.read_file(out)))
      -- each item logged done once per run that finished it: no item twice
      local seen, lines = {}, 0
      for index in H.read_file(log):gmatch("\n(%d+)\tdone\t") do
        assert.is_nil(seen[index], "item " .. index .. " logged twice")
        seen[index] = true
        lines = lines + 1
      end
      assert.are.equal(n, lines)
    end)
  end
end)

describe("resume", function()
  local log
  before_each(function() log = tmp() end)
  after_each(function() os.remove(log) end)

  it("raises a failure the log holds without running anything, or runs it again with resume_failed", function()
    local pool <close> = orch.pool{ workers = 2 }
    local flag = tmp()
    finally(function() os.remove(flag) end)
    local items = {}
    for i = 1, 40 do items[i] = i end
    local function f(x)
      local h = io.open(flag)
      local ok = h and h:read("a") == "ok"
      if h then h:close() end
      if x == 17 and not ok then error("bad item") end
      return x * 10
    end
    local ok, err = pcall(pool.map, pool, f, items, { joblog = log, chunk = 4 })
    assert.is_false(ok)
    assert.are.same({ 17, "error" }, { err.index, err.kind })
    assert.matches("^item 17: .*bad item", err.message)
    local before = pool:stats().done
    ok, err = pcall(pool.map, pool, f, items, { joblog = log, resume = true, chunk = 4 })
    assert.is_false(ok)
    assert.are.same({ 17, "error" }, { err.index, err.kind })
    assert.matches("bad item", err.message)
    assert.are.equal(before, pool:stats().done)  -- nothing ran
    local h = assert(io.open(flag, "w")); h:write("ok"); h:close()
    local out = pool:map(f, items, { joblog = log, resume = true, resume_failed = true, chunk = 4 })
    for i = 1, 40 do assert.are.equal(i * 10, out[i]) end
  end)

  it("refuses the log of another function or other items", function()
    local pool <close> = orch.pool{ workers = 2 }
    local function f(x) return x end
    local function g(x) return -x end
    pool:map(f, { 1, 2, 3 }, { joblog = log })
    assert.has_error(function() pool:map(g, { 1, 2, 3 }, { joblog = log, resume = true }) end,
      ("joblog '%s' was written for another function: not resuming from it (remove it or use another path)"):format(log))
    assert.has_error(function() pool:map(f, { 1, 2 }, { joblog = log, resume = true }) end)
    assert.are.same({ 1, 2, 3 }, pool:map(f, { 1, 2, 3 }, { joblog = log, resume = true }))
  end)

  it("checks its options", function()
    local pool <close> = orch.pool{ workers = 1 }
    local f = function(x) return x end
    assert.has_error(function() pool:map(f, { 1 }, { resume = true }) end,
      "pool:map: option 'resume' needs option 'joblog' (the log to resume from)")
    assert.has_error(function() pool:map(f, { 1 }, { joblog = 3 }) end,
      "pool:map: option 'joblog' must be a file name (a string) (got 3)")
    assert.has_error(function() pool:imap(f, { 1 }, { progress = "yes" }) end,
      [[pool:imap: option 'progress' must be a boolean or a function (got "yes")]])
    assert.has_error(function() pool:map(f, { 1 }, { chunk = "big" }) end,
      [[pool:map: option 'chunk' must be a positive integer or "auto" (got "big")]])
  end)
end)

describe("which item failed", function()
  it("is named by index and message, in chunks or one by one, for map, imap and group:map", function()
    local pool <close> = orch.pool{ workers = 2 }
    local items = {}
    for i = 1, 1000 do items[i] = i end
    local function f(x) if x == 537 then error({ code = x }) end return x end
    for _, chunk in ipairs({ 1, 10, "auto" }) do
      local ok, err = pcall(pool.map, pool, f, items, { chunk = chunk })
      assert.is_false(ok)
      assert.are.same({ 537, "error", { code = 537 } }, { err.index, err.kind, err.value })
      assert.matches("^item 537: %(error object is a table value%)", err.message)
      ok, err = pcall(function() for _ in pool:imap(f, items, { chunk = chunk }) do end end)
      assert.are.same({ false, 537 }, { ok, err.index })
      ok, err = pcall(function() return pool:group():map(f, items, { chunk = chunk }) end)
      assert.are.same({ false, 537 }, { ok, err.index })
    end
  end)

  it("is the chunk's first item when its worker dies", function()
    local pool <close> = orch.pool{ workers = 2 }
    local ok, err = pcall(pool.map, pool, function(x)
      if x == 25 then require("orch.core").die_by("KILL") end
      return x
    end, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25 },
      { chunk = 10 })
    assert.is_false(ok)
    assert.are.same({ "crashed", 21 }, { err.kind, err.index })
    assert.matches("^item 21 %(in its chunk of items 21..25%): ", err.message)
  end)
end)

describe("progress in a map", function()
  it("calls a function with item counts, for imap too", function()
    local pool <close> = orch.pool{ workers = 2 }
    local items = {}
    for i = 1, 300 do items[i] = i end
    local function slow(x) local t = os.clock() + 0.003; while os.clock() < t do end return x end
    for _, kind in ipairs({ "map", "imap" }) do
      local seen = {}
      local opts = { progress = function(p) seen[#seen + 1] = p end }
      if kind == "map" then pool:map(slow, items, opts) else for _ in pool:imap(slow, items, opts) do end end
      assert.is_true(#seen >= 2, kind)
      assert.are.same({ 300, 0, 300 }, { seen[#seen].done, seen[#seen].failed, seen[#seen].total })
      for k = 2, #seen do assert.is_true(seen[k].done >= seen[k - 1].done) end
    end
  end)

  it("redraws one line in place on a terminal (tmux)", function()
    if not os.execute("command -v tmux >/dev/null") then
      pending("tmux is not installed")
      return
    end
    local script, done = tmp(), tmp()
    os.remove(done)
    local f = assert(io.open(script, "w"))
    f:write([[
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"
local pool <close> = orch.pool{ workers = 2 }
local items = {}
for i = 1, 400 do items[i] = i end
pool:map(function(x) local t = os.clock() + 0.005; while os.clock() < t do end return x end, items,
  { progress = true })
io.stdout:write("finished\n")
os.execute("touch ]] .. done .. [[")
os.execute("sleep 30")
]])
    f:close()
    local session = "orchprogress" .. core.getpid()
    finally(function()
      os.execute("tmux kill-session -t " .. session .. " 2>/dev/null")
      os.remove(script); os.remove(done)
    end)
    assert.is_true(os.execute(("tmux new-session -d -s %s -x 120 -y 20 'cd %s && lua5.4 %s'")
      :format(session, os.getenv("PWD"), script)))
    local function screen()
      local p = io.popen("tmux capture-pane -p -t " .. session)
      local s = p:read("a")
      p:close()
      return s
    end
    local midway
    H.eventually(function()
      local s = screen()
      if s:find("pool:map: %d+/400") and not s:find("400/400") then midway = s end
      return H.read_file(done) ~= nil
    end, 30)
    local final = screen()
    assert.is_not_nil(midway, "no progress line seen while it ran")
    local _, count = final:gsub("pool:map: %d+/400", "")
    assert.are.equal(1, count, final)  -- redrawn in place: one line, not one per report
    assert.matches("pool:map: 400/400 %(100%%%), 0 failed, [%d.]+/s, ETA 0:00, elapsed %d:%d%d\nfinished", final)
  end)
end)

describe("a job log", function()
  it("holds one line per item, with the worker's pid and the item's seconds", function()
    local log = tmp()
    finally(function() os.remove(log) end)
    local pool <close> = orch.pool{ workers = 2 }
    local items = {}
    for i = 1, 50 do items[i] = i end
    pool:map(function(x) return x end, items, { joblog = log, chunk = 10 })
    local pids = {}
    for _, w in pairs(pool.slots) do pids[w.pid] = true end
    local n = 0
    for line in H.read_file(log):gmatch("[^\n]+") do
      local index, attempts, seconds, pid, result = line:match("^(%d+)\tdone\t(%d+)\t([%d.]+)\t(%d+)\t(%x+)\t$")
      if index then n = n + 1 else assert.matches("^[#i]", line) end
      if index then
        assert.are.equal("1", attempts)
        assert.is_true(tonumber(seconds) < 1)
        assert.is_true(pids[tonumber(pid)], pid)
      end
      if index then assert.are.equal(tonumber(index), decode_hex(result)) end
    end
    assert.are.equal(50, n)
  end)
end)

describe("a job log that cannot be written", function()
  -- the file may hold 4 KB (RLIMIT_FSIZE; SIGXFSZ ignored, so the write
  -- fails with EFBIG): the run fails, it does not go on losing lines
  for _, how in ipairs { "map", "imap", "group" } do
    it("fails the run with the file's error (" .. how .. ")", function()
      local log = tmp()
      finally(function() os.remove(log) end)
      local out, code = H.run_lua(([[
        local orch = require "orch"
        local pool <close> = orch.pool{ workers = 2 }
        local items = {}
        for i = 1, 5000 do items[i] = i end
        local opts = { joblog = %q, chunk = 100 }
        local ok, err = pcall(function()
          if %q == "map" then return pool:map(function(x) return x end, items, opts) end
          if %q == "group" then return pool:group():map(function(x) return x end, items, opts) end
          for _ in pool:imap(function(x) return x end, items, opts) do end
        end)
        print("ok=" .. tostring(ok), err)
      ]]):format(log, how, how), "trap '' XFSZ; prlimit --fsize=4096")
      assert.are.equal(0, code, out)
      assert.matches("ok=false\tjoblog '" .. log:gsub("%p", "%%%0") .. "': cannot write: File too large", out)
    end)
  end
end)
