-- Chaos (make chaos; tagged #slow so make test leaves it out, and make
-- stress runs it too): workers SIGKILLed every few ms under many tasks, job
-- signals at random moments into an ordered shutdown, the parent SIGKILLed
-- at random moments while it forks, and many lifecycles in one process.
-- Each part prints one "chaos:" line with its figures. Sizes come from the
-- environment (CHAOS_*, see docs/reliability.md); CHAOS_SEED replays
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

local marked = P.marked

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

---------------------------------------------------------------------------
-- Shutdown storm: scripts/examples/ordered_shutdown.lua (a producer, a
-- queue, a writer that lists nothing and that the producer lists in
-- `after`) gets TERM or INT on its whole process group at a random moment.

local STORM_EXAMPLE = "scripts/examples/ordered_shutdown.lua"

--- The numbers the writer wrote: how many, and whether they are 1..n.
local function written_lines(path)
  local n, in_order = 0, true
  local f = io.open(path)
  if not f then return 0, true end
  for line in f:lines() do
    n = n + 1
    if tonumber(line) ~= n then in_order = false end
  end
  f:close()
  return n, in_order
end

--- Sends sig to the job's process group once the group exists (setsid may
-- not have run yet at the very first moments).
local function signal_job(sig, job)
  assert(P.wait_for(function() return P.signal_group(sig, job.pid) end, 5),
    "no process group " .. job.pid)
end

--- One trial; returns what it saw. Exact: the job ends by the signal; if
-- the producer started it said how many it produced and the writer wrote
-- exactly those, in order; if not, nothing was written.
local function storm_trial(token, max_delay)
  local dir = P.tmpdir()
  local out = dir .. "/written"
  local job = P.start(STORM_EXAMPLE, nil,
    { ORCH_EXAMPLE_OUT = out, ORCH_EXAMPLE_DELAY = "0", CHAOS_MARK = token })
  local sig = math.random(2) == 1 and "TERM" or "INT"
  P.sleep(math.random() ^ 3 * max_delay)  -- dense over the start, sparse later
  signal_job(sig, job)
  local r = { sig = sig, rc = P.wait_exit(job, 30) }
  local stdout, stderr = P.stdout(job), P.stderr(job)
  r.produced = tonumber(stdout:match("produced (%d+)"))
  r.started = stderr:find("%[worker %d+%] started") ~= nil
  r.written, r.in_order = written_lines(out)
  r.left = #marked(token)
  r.log = stdout .. stderr
  kill_marked(token)
  P.cleanup(job)
  os.execute("rm -rf " .. P.quote(dir))
  return r
end

local function storm_check(r)
  assert.are.equal(128 + core.signum(r.sig), r.rc, r.log)
  assert.are.equal(0, r.left, r.log)
  if r.started or r.produced then
    assert.are.equal(r.produced, r.written, r.log)
  else
    assert.are.equal(0, r.written, r.log)
  end
  assert.is_true(r.in_order, r.log)
end

---------------------------------------------------------------------------
-- Parent SIGKILL: spec/scripts/chaos_refork.lua runs a pool whose workers
-- are replaced after every task, and is SIGKILLed at a random moment.

--- One trial: the job's parent SIGKILLed `delay` seconds after it started
-- (with "shell", after its sleeping tasks said so). Returns the live
-- processes of the run a second after the parent was reaped, and whether
-- the pool had started.
local function parent_kill_trial(mode, token, delay)
  local job = P.start("spec/scripts/chaos_refork.lua", { mode }, { CHAOS_MARK = token })
  if mode == "shell" then
    assert(P.wait_for(function()
      return select(2, P.stdout(job):gsub("sleeping", "")) == 2
    end, 10), P.stderr(job))
  end
  P.sleep(delay)
  local running = P.stdout(job):find("ready", 1, true) ~= nil
  P.signal("KILL", job.pid)
  local rc = P.wait_exit(job, 10)
  local left = {}
  P.wait_for(function() left = marked(token); return #left == 0 end, 1)
  local what = {}
  for _, pid in ipairs(left) do
    what[#what + 1] = pid .. " " .. ((P.read(("/proc/%d/cmdline"):format(pid)) or ""):gsub("%z", " "))
  end
  kill_marked(token)
  P.cleanup(job)
  return { rc = rc, left = #left, running = running, what = table.concat(what, "; ") }
end

--- N trials of one mode; prints the figure, then checks each trial.
local function parent_kills(mode, trials, max_delay)
  local token = token_for_spec()
  local results, running, left = {}, 0, 0
  for i = 1, trials do
    local r = parent_kill_trial(mode, token, math.random() ^ 2 * max_delay)
    results[i] = r
    if r.running then running = running + 1 end
    left = left + r.left
  end
  figure("parent SIGKILL (%s): trials=%d (%d once the pool ran) left=%d",
    mode, trials, running, left)
  for _, r in ipairs(results) do
    assert.are.equal(137, r.rc)
    assert.are.equal(0, r.left, "left after a second: " .. r.what)
  end
end

---------------------------------------------------------------------------
-- Lifecycles: pools and supervisors made, used, crashed and closed in this
-- process, many times over.

--- A pool: 20 tasks of which every 7th ends its worker (os.exit), then
-- closed one of four ways. Returns how many tasks crashed as they must.
local function pool_lifecycle(i)
  local crashed = 0
  do
    local pool <close> = orch.pool{ workers = 2, retries = i % 2 }
    local futs = {}
    for k = 1, 20 do
      futs[k] = k % 7 == 0 and pool:submit(function() os.exit(3) end)
        or pool:submit(function(x) return x end, k)
    end
    for k, f in ipairs(futs) do
      if k % 7 == 0 then
        assert.is_true(f:wait(30))
        assert.are.equal("crashed", f:error().kind)
        crashed = crashed + 1
      else
        assert.are.equal(k, f:result())
      end
    end
    local way = i % 4
    if way == 0 then pool:close(); assert.is_true(pool:join(30))
    elseif way == 1 then pool:shutdown()
    elseif way == 2 then pool:terminate() end  -- way 3: the <close> alone
  end
  return crashed
end

--- A producer -> queue -> writer supervisor: the producer fails after a
-- few items and is restarted; every third time the writer is SIGKILLed
-- from outside too. Then an ordered stop.
local function supervisor_lifecycle(i)
  local q = orch.queue{ capacity = 100 }
  local sup <close> = orch.supervisor{
    max_restarts = 100, restart_window = 1,
    services = {
      { name = "writer", ready = "notify",
        run = function(queue)
          orch.ready()
          while not orch.stopping() do queue:get(0.05) end
        end, args = { q } },
      { name = "producer", after = { "writer" },
        run = function(queue)
          for n = 1, 5 do queue:put(n, 0.05) end
          error("producer fails on purpose")
        end, args = { q } },
    },
  }
  sup:start()
  if i % 3 == 0 then
    os.execute("kill -KILL " .. assert(sup:status()[1].pid))
  end
  orch.sleep(0.05)
  sup:stop()
  q:close()
end

--- What this process holds: open fds, live children, zombie children.
local function holdings()
  collectgarbage()
  collectgarbage()
  local kids, zombies = H.children()
  return H.fd_count(), #kids, zombies
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

  it("shutdown storm: TERM/INT at random moments; produced = written, in order", function()
    local trials = knob("CHAOS_STORM_TRIALS", 30)
    local max_delay = knob("CHAOS_STORM_WITHIN", 1.0)
    local token = token_for_spec()
    local sum = { early = 0, produced = 0, written = 0, lost = 0, disorder = 0, left = 0 }
    local results = {}
    for i = 1, trials do
      local r = storm_trial(token, max_delay)
      results[i] = r
      if not r.started then sum.early = sum.early + 1 end
      sum.produced = sum.produced + (r.produced or 0)
      sum.written = sum.written + r.written
      sum.lost = sum.lost + math.abs((r.produced or 0) - r.written)
      if not r.in_order then sum.disorder = sum.disorder + 1 end
      sum.left = sum.left + r.left
    end
    figure("storm: trials=%d (%d before the producer started) produced=%d written=%d lost=%d out_of_order=%d left=%d",
      trials, sum.early, sum.produced, sum.written, sum.lost, sum.disorder, sum.left)
    for _, r in ipairs(results) do storm_check(r) end
  end)

  it("parent SIGKILLed at random moments while it re-forks: nothing of the run is left", function()
    parent_kills("refork", knob("CHAOS_KILL_TRIALS", 30), knob("CHAOS_KILL_WITHIN", 0.5))
  end)

  it("parent SIGKILLed while tasks run shell commands: nothing of the run is left, "
    .. "not even the commands", function()
    parent_kills("shell", knob("CHAOS_SHELL_TRIALS", 10), knob("CHAOS_KILL_WITHIN", 0.5))
  end)

  it("lifecycles: pools and supervisors made, crashed and closed leak no fd, child or zombie", function()
    local n = knob("CHAOS_LIFECYCLES", 100)
    local handler = orch.log.handler
    orch.log.handler = function() end  -- the supervisors' failure logs are the point
    local ok, run = pcall(function()
      -- one of each first: libev opens its eventfd once, at the first child
      pool_lifecycle(1)
      supervisor_lifecycle(1)
      local r = { before = { holdings() }, crashed = 0 }
      for i = 1, n do
        r.crashed = r.crashed + pool_lifecycle(i)
        supervisor_lifecycle(i)
      end
      return r
    end)
    orch.log.handler = handler
    assert(ok, run)
    local fds, kids, zombies = table.unpack(run.before)
    local fds2, kids2, zombies2
    H.eventually(function()
      fds2, kids2, zombies2 = holdings()
      return fds2 == fds and kids2 == kids and zombies2 == zombies
    end, 3)
    figure("lifecycles: pools=%d supervisors=%d crashed_tasks=%d leaked fds=%d children=%d zombies=%d",
      n, n, run.crashed, fds2 - fds, kids2 - kids, zombies2 - zombies)
    assert.are.same({ fds, kids, zombies }, { fds2, kids2, zombies2 })
  end)
end)
