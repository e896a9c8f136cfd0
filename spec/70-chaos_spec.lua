-- Chaos (make chaos; tagged #slow so make test leaves it out, and make
-- stress runs it too): workers SIGKILLed every few ms under many tasks, job
-- signals at random moments into an ordered shutdown, the parent SIGKILLed
-- at random moments while it forks, and many lifecycles in one process.
-- Each part prints one "chaos:" line with its figures. Sizes come from the
-- environment (CHAOS_*, see docs/reliability-chaos.md); CHAOS_SEED replays
-- a run's random moments.
local orch = require "orch"
local core = require "orch.core"
local P = require "scripts.sup_proc"
local H = orch_spec

local function knob(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return assert(tonumber(v), name .. " must be a number (got " .. v .. ")")
end

local SEED = knob("CHAOS_SEED", os.time())
math.randomseed(SEED)

local function figure(fmt, ...)
  io.stdout:write("chaos: ", fmt:format(...), " (seed ", SEED, ")\n")
  io.stdout:flush()
end

--- A fresh token: a process whose environment holds CHAOS_MARK=token
-- belongs to that run, whatever its process group or parent is now.
local function new_token()
  return ("%d-%d-%d"):format(core.getpid(), os.time(), math.random(1 << 30))
end

--- Live processes whose environment holds CHAOS_MARK=token (a zombie's
-- environment reads empty: it is not counted).
local function marked(token)
  local p = io.popen("grep -lsxz " .. P.quote("CHAOS_MARK=" .. token) .. " /proc/[0-9]*/environ")
  local pids = {}
  for line in p:lines() do
    local pid = tonumber(line:match("^/proc/(%d+)/"))
    if pid and P.alive(pid) then pids[#pids + 1] = pid end
  end
  p:close()
  return pids
end

--- SIGKILLs whatever is left of a run: the spec never leaves a process behind.
local function kill_marked(token)
  for _ = 1, 20 do
    local pids = marked(token)
    if #pids == 0 then return end
    os.execute("kill -KILL " .. table.concat(pids, " ") .. " 2>/dev/null")
    P.sleep(0.02)
  end
end

local tokens = {}  -- every token a spec used, swept after each spec
after_each(function()
  for token in pairs(tokens) do kill_marked(token) end
  tokens = {}
  P.cleanup_all()
end)

local function token_for_spec()
  local token = new_token()
  tokens[token] = true
  return token
end

---------------------------------------------------------------------------
-- Worker massacre

--- Starts spec/scripts/chaos_killer.sh against this process's children;
-- the returned value stops it when closed and tells how many it killed.
local function start_killer(interval)
  local dir = P.tmpdir()
  assert(os.execute(("bash spec/scripts/chaos_killer.sh %d %s %s/count </dev/null >/dev/null 2>&1 & echo $! >%s/pid")
    :format(core.getpid(), interval, dir, dir)))
  local pid = tonumber(P.read(dir .. "/pid"):match("%d+"))
  local killer = { kills = 0 }
  function killer.stop()
    if not killer.stopped then
      killer.stopped = true
      P.signal("TERM", pid)
      P.wait_for(function() return P.read(dir .. "/count") ~= nil end, 5)
      killer.kills = tonumber((P.read(dir .. "/count") or ""):match("%d+")) or 0
      P.signal("KILL", pid)
      os.execute("rm -rf " .. P.quote(dir))
    end
    return killer.kills
  end
  return setmetatable(killer, { __close = killer.stop })
end

--- Waits for every future until one shared deadline; those still pending
-- then are lost.
local function settle_all(futs, seconds)
  local deadline = core.now() + seconds
  local lost = 0
  for _, f in ipairs(futs) do
    if not f:wait(math.max(0, deadline - core.now())) then lost = lost + 1 end
  end
  return lost
end

--- Outcomes of the massacre's futures: task i must return 2 * i, or fail
-- as "crashed" (the only failure a SIGKILLed worker may cause).
local function tally(futs)
  local t = { succeeded = 0, crashed = 0, wrong = 0 }
  for i, f in ipairs(futs) do
    local st = f:state()
    if st == "done" then
      local ok, v = pcall(f.result, f)
      if ok and v == 2 * i then t.succeeded = t.succeeded + 1 else t.wrong = t.wrong + 1 end
    elseif st == "failed" and f:error().kind == "crashed" then
      t.crashed = t.crashed + 1
    elseif st == "failed" or st == "cancelled" then
      t.wrong = t.wrong + 1
      t.example = t.example or tostring(f:error())
    end
  end
  return t
end

local function massacre(retries)
  local n = knob("CHAOS_TASKS", 100000)
  local pool <close> = orch.pool{ workers = knob("CHAOS_WORKERS", 4), retries = retries }
  local killer <close> = start_killer(knob("CHAOS_KILL_EVERY", 0.003))
  local futs = {}
  for i = 1, n do
    futs[i] = pool:submit(function(x)
      local s = 0
      for k = 1, 200 do s = s + k end  -- a little work, so tasks are hit mid-run
      return x * 2 + s - 20100
    end, i)
  end
  local lost = settle_all(futs, knob("CHAOS_DEADLINE", 300))
  local kills = killer.stop()
  local t = tally(futs)
  figure("massacre retries=%d: tasks=%d kills=%d restarts=%d succeeded=%d crashed=%d lost=%d wrong=%d",
    retries, n, kills, pool:stats().restarts, t.succeeded, t.crashed, lost, t.wrong)
  return t, lost, kills
end

describe("chaos #slow #chaos", function()
  it("worker massacre with retries: every task succeeds with its own value", function()
    local t, lost, kills = massacre(knob("CHAOS_RETRIES", 20))
    assert.are.equal(0, lost)
    assert.are.equal(0, t.wrong, t.example)
    assert.are.equal(0, t.crashed)
    assert.is_true(kills > 0)
  end)

  it("worker massacre without retries: each task succeeds or fails as crashed", function()
    local t, lost, kills = massacre(0)
    assert.are.equal(0, lost)
    assert.are.equal(0, t.wrong, t.example)
    assert.are.equal(knob("CHAOS_TASKS", 100000), t.succeeded + t.crashed)
    assert.is_true(kills > 0)
    assert.is_true(t.crashed > 0)
  end)
end)
