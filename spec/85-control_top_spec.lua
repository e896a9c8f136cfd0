-- orch top against a real job (spec/scripts/ctl_job.lua), read from a
-- tmux pane: the screen, selection and action keys, q; and the snapshot
-- it prints when not on a terminal.
local P = require "scripts.sup_proc"

local dirs, servers = {}, {}
after_each(function()
  for name in pairs(servers) do os.execute("tmux -L " .. name .. " kill-server 2>/dev/null") end
  P.cleanup_all()
  for dir in pairs(dirs) do os.execute("rm -rf " .. P.quote(dir)) end
  dirs, servers = {}, {}
end)

local function start_job()
  local xdg = P.tmpdir()
  dirs[xdg] = true
  local job = P.start("spec/scripts/ctl_job.lua", nil, { XDG_RUNTIME_DIR = xdg })
  assert(P.wait_for(function() return P.stdout(job):find("\n", 1, true) end, 10), P.stderr(job))
  P.wait_for(function() return #P.service_pids(job, "web") == 1 end)
  return job, xdg
end

local function sh_out(cmd)
  return (orch_spec.sh(cmd))
end

-- A tmux server of our own running `orch top` in a 120x40 pane.
local function tmux_top(xdg)
  local name = ("orch-spec-%d-%d"):format(require("orch.core").getpid(), math.random(1e6))
  servers[name] = true
  local tmux = "tmux -L " .. name
  assert(os.execute(("%s new-session -d -x 120 -y 40 'XDG_RUNTIME_DIR=%s lua5.4 scripts/orch top; "
    .. "echo top-exited-$?; sleep 30'"):format(tmux, xdg)))
  local screen = {}
  function screen.text() return sh_out(tmux .. " capture-pane -p") end
  function screen.wait(pattern, timeout)
    return P.wait_for(function() return screen.text():find(pattern) ~= nil end, timeout or 10)
  end
  function screen.keys(...)
    for _, k in ipairs({ ... }) do os.execute(("%s send-keys %s"):format(tmux, k)) end
  end
  return screen
end

describe("orch top", function()
  it("prints one snapshot when stdout is not a terminal", function()
    local job, xdg = start_job()
    local out = sh_out(("XDG_RUNTIME_DIR=%s lua5.4 scripts/orch top %d </dev/null 2>&1; echo rc=$?")
      :format(xdg, job.pid))
    assert.matches("orch top %- ctljob %(pid " .. job.pid, out)
    assert.matches("\n +db +running +%d+", out)
    assert.matches("#1  workers 2", out, 1, true)
    assert.matches("\n +1 +1 +running +%d+ +[%d.]+s +spec/scripts/ctl_job.lua:%d+", out)
    assert.matches("LOGS\n", out, 1, true)
    assert.matches("rc=0\n$", out)
  end)

  it("shows the run live and acts on the selected service and task", function()
    local job, xdg = start_job()
    local screen = tmux_top(xdg)
    assert.is_true(screen.wait("SERVICES"), screen.text())
    assert.is_true(screen.wait("\n +db +running"), screen.text())
    assert.matches("\n +web +running", screen.text())
    assert.matches("\n +2 +1 +running", screen.text())
    -- the first row is db: s stops it (web first), u starts both again
    screen.keys("s")
    assert.is_true(screen.wait("\n +db +stopped"), screen.text())
    assert.matches("\n +web +stopped", screen.text())
    assert.matches("\n +cache +running", screen.text())
    screen.keys("u")
    assert.is_true(screen.wait("\n +web +running"), screen.text())
    -- down three rows: the first task; x kills it, the next one runs
    screen.keys("Down", "j", "j", "x")
    assert.is_true(screen.wait("failed 1"), screen.text())
    assert.is_true(screen.wait("\n +3 +1 +running"), screen.text())
    assert.is_true(screen.wait("kill 1: done"), screen.text())
    screen.keys("q")
    assert.is_true(screen.wait("top%-exited%-0"), screen.text())
    assert.is_true(P.alive(job.pid))
  end)
end)
