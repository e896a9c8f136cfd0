-- The control socket, orch ctl and orch top against a real job
-- (spec/scripts/ctl_job.lua: services db, web after db, cache; a pool of
-- 2 workers with 3 spinning tasks), each job under its own
-- XDG_RUNTIME_DIR so no other run is seen.
local P = require "scripts.sup_proc"
local core = require "orch.core"
local cjson = require "cjson"

local started = {}
after_each(function()
  P.cleanup_all()
  for dir in pairs(started) do os.execute("rm -rf " .. P.quote(dir)) end
  started = {}
end)

local function runtime_dir()
  local dir = P.tmpdir()
  started[dir] = true
  return dir
end

-- Starts the job; returns it and its socket path once it serves.
local function start_job(xdg, env)
  env = env or {}
  env.XDG_RUNTIME_DIR = xdg
  local job = P.start("spec/scripts/ctl_job.lua", nil, env)
  assert(P.wait_for(function() return P.stdout(job):find("\n", 1, true) end, 10),
    "the job did not serve: " .. P.stderr(job))
  return job, (P.stdout(job):match("^[^\n]+"))
end

local function orch(xdg, args)
  local out, code = orch_spec.sh(("XDG_RUNTIME_DIR=%s lua5.4 scripts/orch %s 2>&1"):format(P.quote(xdg), args))
  return code, out
end

local function status_of(xdg, target)
  local code, out = orch(xdg, ("ctl %s status --json"):format(target or ""))
  assert.equal(0, code, out)
  return cjson.decode(out)
end

local function service(st, name)
  for _, s in ipairs(st.supervisors[1].services) do
    if s.name == name then return s end
  end
end

-- One raw request on a fresh connection: the answer decoded.
local function ask(path, line)
  local c = assert(core.ctl_connect(path))
  assert(c:send(line .. "\n"))
  local answer, err = c:read_line(10)
  c:close()
  assert(answer, err)
  return cjson.decode(answer)
end

-- The next answer on a raw connection, decoded.
local function answer_of(c)
  local line, err = c:read_line(10)
  assert(line, err)
  return cjson.decode(line)
end

local function mode(path)
  local p = io.popen("stat -c %a " .. P.quote(path))
  local m = p:read("l")
  p:close()
  return m
end

describe("orch ctl", function()
  it("status as text and as --json; the socket in a 0700 directory, mode 0600", function()
    local xdg = runtime_dir()
    local job, path = start_job(xdg)
    assert.equal(("%s/orch/ctljob.%d.sock"):format(xdg, job.pid), path)
    assert.equal("700", mode(xdg .. "/orch"))
    assert.equal("600", mode(path))
    assert.is_true(P.wait_for(function()
      local code, out = orch(xdg, "ctl status")
      return code == 0 and select(2, out:gsub("running", "")) >= 5
    end, 10))
    local code, out = orch(xdg, "ctl status")
    assert.equal(0, code)
    assert.matches("ctljob (pid " .. job.pid, out, 1, true)
    assert.matches("  db +running +pid %d+", out)
    assert.matches("pool 1: 2 workers", out, 1, true)
    local st = status_of(xdg)
    assert.equal(1, st.v)
    assert.is_true(st.ok)
    assert.equal(job.pid, math.tointeger(st.pid))
    assert.equal("running", service(st, "web").state)
    assert.is_number(service(st, "web").uptime)
    local tasks = st.pools[1].tasks
    assert.equal(3, #tasks)
    assert.equal("running", tasks[1].state)
    assert.is_number(tasks[1].pid)
    assert.equal("queued", tasks[3].state)
  end)

  it("stops a service after those that depend on it, starts and restarts it", function()
    local xdg = runtime_dir()
    local job = start_job(xdg)
    P.wait_for(function() return #P.service_pids(job, "web") == 1 end)
    local web, db = P.service_pids(job, "web")[1], P.service_pids(job, "db")[1]
    local code, out = orch(xdg, "ctl stop db")
    assert.equal(0, code, out)
    assert.equal("db: stopped\n", out)
    local web_exit = P.pos(job, ("[web %d] exited"):format(web))
    local db_asked = P.pos(job, ("[db %d] stop requested"):format(db))
    assert.truthy(web_exit and db_asked and web_exit < db_asked, P.stderr(job))
    local st = status_of(xdg)
    assert.equal("stopped", service(st, "db").state)
    assert.equal("stopped", service(st, "web").state)
    assert.equal("running", service(st, "cache").state)
    code, out = orch(xdg, "ctl start db")
    assert.equal(0, code, out)
    assert.equal("db: started\n", out)
    st = status_of(xdg)
    for _, name in ipairs({ "db", "web" }) do
      assert.equal("running", service(st, name).state)
      assert.equal(0, service(st, name).restarts)  -- a start, not a restart
    end
    local db2, web2 = P.service_pids(job, "db")[2], P.service_pids(job, "web")[2]
    assert.equal(math.tointeger(service(st, "db").pid), db2)
    assert.truthy(P.pos(job, ("[db %d] started"):format(db2)) < P.pos(job, ("[web %d] started"):format(web2)))
    assert.is_nil(P.pos(job, "restarting"), P.stderr(job))
    code, out = orch(xdg, "ctl ctljob restart web")
    assert.equal(0, code, out)
    assert.equal("web: restarted\n", out)
    assert.equal(3, #P.service_pids(job, "web"))
    code, out = orch(xdg, "ctl start cache")
    assert.equal(0, code)
    assert.matches("already running", out, 1, true)
    code, out = orch(xdg, "ctl stop nosuch")
    assert.equal(1, code)
    assert.matches("unknown service 'nosuch'", out, 1, true)
  end)

  it("cancels and kills a pool task by id", function()
    local xdg = runtime_dir()
    start_job(xdg)
    local code, out = orch(xdg, "ctl cancel 1")
    assert.equal(0, code, out)
    assert.is_true(P.wait_for(function()
      local st = status_of(xdg)
      return st.pools[1].cancelled == 1 and st.pools[1].tasks[1].id ~= 1
    end, 10))
    code, out = orch(xdg, "ctl kill 2")
    assert.equal(0, code, out)
    assert.is_true(P.wait_for(function()
      local p = status_of(xdg).pools[1]
      return p.failed == 1 and p.restarts >= 1 and #p.tasks == 1
    end, 10))
    code, out = orch(xdg, "ctl cancel 999")
    assert.equal(1, code)
    assert.matches("no queued or running task 999", out, 1, true)
    code, out = orch(xdg, "ctl kill x")
    assert.equal(2, code)
    assert.matches("TASK_ID must be an integer", out, 1, true)
  end)

  it("logs: the recent records, then follows new ones", function()
    local xdg = runtime_dir()
    local job = start_job(xdg)
    P.wait_for(function() return #P.service_pids(job, "cache") == 1 end)
    local code, out = orch(xdg, "ctl logs")
    assert.equal(0, code)
    assert.matches("INFO  %[cache %d+%] started", out)
    local dir = runtime_dir()
    os.execute(("XDG_RUNTIME_DIR=%s lua5.4 scripts/orch ctl logs -f >%s/follow 2>&1 & echo $! >%s/pid")
      :format(P.quote(xdg), dir, dir))
    local follower = tonumber(P.read(dir .. "/pid"))
    finally(function() P.signal("KILL", follower) end)
    assert.is_true(P.wait_for(function() return (P.read(dir .. "/follow") or ""):find("started") end))
    assert.equal(0, (orch(xdg, "ctl restart cache")))
    assert.is_true(P.wait_for(function()
      return (P.read(dir .. "/follow") or ""):find("%[cache %d+%] restarting %(restart 1%)")
    end))
    assert.is_true(P.alive(follower))
  end)

  it("exits 3 when no run answers, 2 on usage errors and ambiguous targets", function()
    local xdg = runtime_dir()
    local code, out = orch(xdg, "ctl status")
    assert.equal(3, code)
    assert.matches("no orch run is alive", out, 1, true)
    assert.equal(2, (orch(xdg, "ctl frobnicate")))
    assert.equal(2, (orch(xdg, "ctl stop")))
    local a = start_job(xdg)
    local b = start_job(xdg)
    code, out = orch(xdg, "ctl status")
    assert.equal(2, code)
    assert.matches("2 runs match", out, 1, true)
    assert.equal(b.pid, status_of(xdg, tostring(b.pid)).pid)
    code, out = orch(xdg, "ctl list")
    assert.equal(0, code)
    assert.matches("ctljob +" .. a.pid, out)
    assert.matches("ctljob +" .. b.pid, out)
    code = orch(xdg, "ctl 999999 status")
    assert.equal(3, code)
  end)
end)

describe("the control socket", function()
  it("answers garbage and unknown commands with an error and keeps the connection", function()
    local xdg = runtime_dir()
    local _, path = start_job(xdg)
    local c = assert(core.ctl_connect(path))
    finally(function() c:close() end)
    for _, case in ipairs({
      { "garbage", "bad_request" }, { "[1,2]", "bad_request" }, { "{}", "unknown_command" },
      { '{"cmd":"eval","code":"os.exit()"}', "unknown_command" },
      { '{"cmd":"status","v":2}', "unsupported_version" },
      { '{"cmd":"stop","name":42}', "bad_request" },
    }) do
      assert(c:send(case[1] .. "\n"))
      local answer = answer_of(c)
      assert.is_false(answer.ok, case[1])
      assert.equal(case[2], answer.code, case[1])
      assert.is_string(answer.error)
    end
    assert(c:send('{"cmd":"status","id":"x1"}\n'))
    local answer = answer_of(c)
    assert.is_true(answer.ok)
    assert.equal("x1", answer.id)
  end)

  it("a megabyte request gets an error line and the connection closed", function()
    local xdg = runtime_dir()
    local _, path = start_job(xdg)
    local c = assert(core.ctl_connect(path))
    finally(function() c:close() end)
    c:send(('{"cmd":"status","pad":"%s"}\n'):format(("x"):rep(1024 * 1024)))
    local answer = answer_of(c)
    assert.is_false(answer.ok)
    assert.equal("too_long", answer.code)
    assert.same({ nil, "closed" }, { c:read_line(5) })
    assert.is_true(ask(path, '{"cmd":"status"}').ok)
  end)

  it("half requests and clients that vanish mid-answer disturb nothing", function()
    local xdg = runtime_dir()
    local job, path = start_job(xdg)
    local before = status_of(xdg)
    for _ = 1, 20 do
      local c = assert(core.ctl_connect(path))
      c:send('{"cmd":"sta')
      c:close()
      c = assert(core.ctl_connect(path))
      c:send('{"cmd":"status"}\n{"cmd":"logs"}\n')
      c:close()  -- gone before the answer
    end
    local idle = assert(core.ctl_connect(path))  -- says nothing, stays open
    finally(function() idle:close() end)
    local after = status_of(xdg)
    assert.same(before.supervisors[1].services[1].pid, after.supervisors[1].services[1].pid)
    assert.equal(0, after.pools[1].failed)
    assert.is_true(P.alive(job.pid))
  end)

  it("serves 50 clients at once", function()
    local xdg = runtime_dir()
    local _, path = start_job(xdg)
    local clients = {}
    for i = 1, 50 do
      clients[i] = assert(core.ctl_connect(path))
      assert(clients[i]:send(('{"cmd":"status","id":%d}\n'):format(i)))
    end
    for i = 50, 1, -1 do
      local answer = answer_of(clients[i])
      clients[i]:close()
      assert.is_true(answer.ok)
      assert.equal(i, math.tointeger(answer.id))
      assert.equal(3, #answer.supervisors[1].services)
    end
    -- and 50 processes at once
    local dir = runtime_dir()
    os.execute(("for i in $(seq 50); do (echo '{\"cmd\":\"status\"}' | socat -t 5 - UNIX-CONNECT:%s >%s/$i) & done; wait")
      :format(P.quote(path), dir))
    for i = 1, 50 do
      local text = P.read(dir .. "/" .. i)
      assert.is_string(text)
      local answer = cjson.decode(text)
      assert.is_true(answer.ok, i)
    end
  end)

  it("refuses another user's connection", function()
    local xdg = runtime_dir()
    os.execute("chmod 755 " .. P.quote(xdg))
    local path = xdg .. "/open.sock"
    local job = start_job(xdg, { CTL_PATH = path })
    local function as_nobody()
      -- (reads only: the refusal comes unasked, and a write could race the close)
      local p = io.popen(("setpriv --reuid=nobody --regid=nogroup "
        .. "--clear-groups socat -t 2 -u UNIX-CONNECT:%s - 2>&1"):format(P.quote(path)))
      local out = p:read("a")
      p:close()
      return out
    end
    assert.matches("Permission denied", as_nobody(), 1, true)  -- the socket is 0600
    os.execute("chmod 666 " .. P.quote(path))  -- even when the file lets it in
    local out = as_nobody()
    assert.matches('"code":"permission_denied"', out, 1, true)
    assert.not_matches("supervisors", out, 1, true)
    assert.is_true(P.alive(job.pid))
    assert.is_true(ask(path, '{"cmd":"status"}').ok)
  end)

  it("a socket left by a SIGKILLed run is not listed and is replaced", function()
    local xdg = runtime_dir()
    local a = start_job(xdg)
    P.signal_group("KILL", a.pid)
    P.wait_exit(a)
    assert.equal(1, #core.ctl_sockets(xdg .. "/orch"))  -- still there
    local code, out = orch(xdg, "ctl list")
    assert.equal(0, code)
    assert.equal("", out)
    assert.equal(0, #core.ctl_sockets(xdg .. "/orch"))
    local fixed = xdg .. "/fixed.sock"
    local b = start_job(xdg, { CTL_PATH = fixed })
    P.signal_group("KILL", b.pid)
    P.wait_exit(b)
    local c, path_c = start_job(xdg, { CTL_PATH = fixed })
    assert.equal(fixed, path_c)
    assert.equal(c.pid, math.tointeger(ask(fixed, '{"cmd":"hello"}').pid))
    local d = P.start("spec/scripts/ctl_job.lua", nil, { XDG_RUNTIME_DIR = xdg, CTL_PATH = fixed })
    assert.equal(1, P.wait_exit(d))
    assert.matches("another orch answers there", P.stderr(d), 1, true)
  end)

  -- Ended by its signal (core.die_by), a run raises no atexit handler:
  -- its socket is removed before the signal is raised.
  local function sockets(xdg) return #core.ctl_sockets(xdg .. "/orch") end

  it("a run ended by TERM removes its socket (a script, exit 143)", function()
    local xdg = runtime_dir()
    local job = start_job(xdg, { CTL_SPIN = "0" })
    assert.equal(1, sockets(xdg))
    P.signal("TERM", job.pid)
    assert.equal(143, P.wait_exit(job), P.stderr(job))
    assert.equal(0, sockets(xdg))
  end)

  it("orch run ended by INT removes its socket (exit 130)", function()
    local xdg = runtime_dir()
    local job = P.start("scripts/orch", { "run", "spec/scripts/sup_services.lua" },
      { XDG_RUNTIME_DIR = xdg })
    assert.is_true(P.wait_for(function() return sockets(xdg) == 1 end, 10), P.stderr(job))
    assert.is_true(P.wait_output(job, "once ran", 10, "out"))
    P.signal("INT", job.pid)
    assert.equal(130, P.wait_exit(job), P.stderr(job))
    assert.equal(0, sockets(xdg))
  end)
end)
