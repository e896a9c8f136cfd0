-- Misuse raises at the edge with a message that says what was wrong and
-- where: the position is the line of the caller's code (this file's),
-- never one of orch's own files, whatever lies between. A method called
-- with a dot says so. Nothing is left running.
local orch = require "orch"
local H = orch_spec

local SPEC = debug.getinfo(1, "S").short_src

-- fails(text, f): f() raises a message that holds text and starts with
-- this file and the line of f's call to orch (f is written on one line).
local function fails(text, f)
  local line = debug.getinfo(f, "S").linedefined
  local ok, err = pcall(f)
  assert.is_false(ok, "no error for: " .. text)
  assert.is_string(err)
  local where = ("%s:%d: "):format(SPEC, line)
  assert.are.equal(where, err:sub(1, #where), err)
  assert.is_truthy(err:find(text, 1, true), ("%q does not hold %q"):format(err, text))
end

local function noop() end

describe("bad arguments", function()
  after_each(function()
    local kids = H.children()
    assert.are.same({}, kids)
  end)

  it("orch.pool names the option, the kind and the value", function()
    fails([[orch.pool: option 'workers' must be a positive integer (got "2")]],
      function() orch.pool{ workers = "2" } end)
    fails("orch.pool: option 'workers' must be a positive integer (got 0)",
      function() orch.pool{ workers = 0 } end)
    fails("orch.pool: option 'workers' must be a positive integer (got 1.5)",
      function() orch.pool{ workers = 1.5 } end)
    fails("orch.pool: option 'timeout' must be a positive number (got -1)",
      function() orch.pool{ timeout = -1 } end)
    fails("orch.pool: option 'grace' must be a non-negative number (got nan)",
      function() orch.pool{ grace = 0 / 0 } end)
    fails("orch.pool: option 'retries' must be a non-negative integer (got -1)",
      function() orch.pool{ retries = -1 } end)
    fails([[orch.pool: option 'on_error' must be "continue", "fail_fast" or a function (got "x")]],
      function() orch.pool{ on_error = "x" } end)
    fails([[option 'retry_on'[1] must be a failure kind: error, timeout, crashed, killed (got "sometimes")]],
      function() orch.pool{ retry_on = { "sometimes" } } end)
    fails("orch.pool: option 'init' must be a function or string (got 5)",
      function() orch.pool{ init = 5 } end)
    fails([[orch.pool: options must be a table (got "four")]], function() orch.pool("four") end)
    fails("orch.pool: unknown option 'worker' (valid: backoff, broker, grace, init, lease, limits, max_memory_per_worker",
      function() orch.pool{ worker = 2 } end)
  end)

  it("pool methods check their arguments and a dot instead of a colon", function()
    local pool = orch.pool{ workers = 1 }
    fails("orch.pool: submit expects a function or a 'module.name' string (got 42)",
      function() pool:submit(42) end)
    fails("orch.pool: use pool:submit(...) (a colon), not pool.submit(...)", function() pool.submit(noop) end)
    local co = coroutine.create(noop)
    fails("orch.pool: submit: upvalue 'co': cannot send a thread",
      function() pool:submit(function() return co end) end)
    fails("orch.pool: submit: args[1].a: cannot send a thread", function() pool:submit(print, { a = co }) end)
    fails([[pool:map: items must be a table (an array) (got "abc")]], function() pool:map(print, "abc") end)
    fails("pool:imap: items must be a table (an array) (got 3)", function() pool:imap(print, 3) end)
    fails([[pool:map: option 'chunk' must be a positive integer or "auto" (got 0)]],
      function() pool:map(print, {}, { chunk = 0 }) end)
    fails("pool:map: unknown option 'chunks' (valid: chunk, joblog, ordered, progress, resume, resume_failed)",
      function() pool:map(print, {}, { chunks = 10 }) end)
    fails("pool:map: option 'progress' must be a boolean or a function (got 3)",
      function() pool:map(print, {}, { progress = 3 }) end)
    fails("pool:map: option 'joblog' must be a file name (a string) (got true)",
      function() pool:map(print, {}, { joblog = true }) end)
    fails("pool:map: option 'resume' needs option 'joblog' (the log to resume from)",
      function() pool:map(print, {}, { resume = true }) end)
    fails("orch.pool: use pool:map(...) (a colon), not pool.map(...)", function() pool.map(print, {}) end)
    fails("orch.pool: use pool:imap(...) (a colon), not pool.imap(...)", function() pool.imap(print, {}) end)
    fails([[pool:group: options must be a table (got "x")]], function() pool:group("x") end)
    fails("orch.pool: use pool:group(...) (a colon), not pool.group(...)", function() pool.group() end)
    fails("orch.pool: use pool:stats(...) (a colon), not pool.stats(...)", function() pool.stats() end)
    fails([[orch.pool: join: timeout must be a non-negative number or nil (got "soon")]],
      function() pool:join("soon") end)
    fails("orch.pool: join before close (call pool:close() first)", function() pool:join() end)
    fails("orch.pool: shutdown: unknown option 'cancel' (valid: cancel_pending, grace)",
      function() pool:shutdown{ cancel = true } end)
    fails("orch.pool: use pool:terminate(...) (a colon), not pool.terminate(...)",
      function() pool.terminate() end)
    fails("orch.pool: use pool:close(...) (a colon), not pool.close(...)", function() pool.close() end)
    pool:close()
    fails("orch.pool: submit on a closed pool", function() pool:submit(print) end)
    fails("orch.pool: submit on a closed pool", function() pool:map(print, { 1 }) end)
    pool:join()
  end)

  it("group and future methods check their arguments", function()
    local pool <close> = orch.pool{ workers = 1 }
    local g = pool:group()
    fails("orch.pool: submit expects a function or a 'module.name' string (got 42)",
      function() g:submit(42) end)
    fails("orch.group: use group:submit(...) (a colon), not group.submit(...)", function() g.submit(noop) end)
    fails([[orch.group: wait: timeout must be a non-negative number or nil (got "x")]],
      function() g:wait("x") end)
    fails("orch.group: use group:cancel(...) (a colon), not group.cancel(...)", function() g.cancel() end)
    fails("orch.group: use group:kill(...) (a colon), not group.kill(...)", function() g.kill() end)
    fails("group:map: items must be a table (an array) (got 3)", function() g:map(print, 3) end)
    fails("orch.group: use group:imap(...) (a colon), not group.imap(...)", function() g.imap(print, {}) end)
    local fut = pool:submit(noop)
    fails([[orch.future: wait: timeout must be a non-negative number or nil (got "soon")]],
      function() fut:wait("soon") end)
    fails("orch.future: on_done expects a function (got 5)", function() fut:on_done(5) end)
    for _, m in ipairs({ "result", "wait", "done", "state", "error", "cancel", "kill", "on_done" }) do
      fails(("orch.future: use fut:%s(...) (a colon), not fut.%s(...)"):format(m, m), function() fut[m]() end)
    end
    fut:wait()
  end)

  it("orch.supervisor and its methods point at the caller", function()
    fails("orch.supervisor: services[1] (a): option 'after' must be a table (got \"b\")",
      function() orch.supervisor{ services = { { name = "a", run = noop, after = "b" } } } end)
    fails("orch.supervisor: options must be a table (got \"x\")", function() orch.supervisor("x") end)
    fails("orch.supervisor: services[1] (a): option 'restart_delay' must be a non-negative number (got -1)",
      function() orch.supervisor{ services = { { name = "a", run = noop, restart_delay = -1 } } } end)
    fails("orch.supervisor: option 'restart_backoff' must be a number >= 1 (got 0.5)",
      function() orch.supervisor{ restart_backoff = 0.5, services = { { name = "a", run = noop } } } end)
    fails("orch.supervisor: services[1] (a): 'after' names an unknown service 'b'",
      function() orch.supervisor{ services = { { name = "a", run = noop, after = { "b" } } } } end)
    local sup = orch.supervisor{ services = { { name = "a", run = noop } } }
    fails("orch.supervisor: stop: unknown service 'nope' (services: a)", function() sup:stop("nope") end)
    fails("orch.supervisor: restart: unknown service 5 (services: a)", function() sup:restart(5) end)
    for _, m in ipairs({ "run", "start", "stop", "restart", "status" }) do
      fails(("orch.supervisor: use sup:%s(...) (a colon), not sup.%s(...)"):format(m, m),
        function() sup[m]() end)
    end
  end)

  it("orch.queue and its methods point at the caller", function()
    fails("orch.queue: option 'capacity' must be a positive integer (got 0)",
      function() orch.queue{ capacity = 0 } end)
    fails("orch.queue: unknown option 'cap' (valid: capacity)", function() orch.queue{ cap = 1 } end)
    local q = orch.queue{ capacity = 1 }
    fails("orch.queue: put: cannot put nil", function() q:put(nil) end)
    fails("orch.queue: put: timeout must be a non-negative number or nil (got -1)",
      function() q:put(1, -1) end)
    fails("cannot send a thread", function() q:put(coroutine.create(noop)) end)
    fails([[orch.queue: get: timeout must be a non-negative number or nil (got "x")]],
      function() q:get("x") end)
    for _, m in ipairs({ "put", "get", "close", "len" }) do
      fails(("orch.queue: use q:%s(...) (a colon), not q.%s(...)"):format(m, m), function() q[m](1) end)
    end
  end)

  it("signals, sleep, logging, control and TaskError point at the caller", function()
    fails("orch.on_signal: unknown signal 'BOGUS' (valid: INT, TERM, HUP, QUIT, USR1, USR2)",
      function() orch.on_signal("BOGUS", print) end)
    fails("orch.on_signal: handler must be a function or nil (got 5)",
      function() orch.on_signal("USR2", 5) end)
    fails("orch.sleep: seconds must be a non-negative number (got -1)", function() orch.sleep(-1) end)
    fails([[orch.sleep: seconds must be a non-negative number (got "1")]], function() orch.sleep("1") end)
    fails("orch.log.info: bad argument #2 (number expected, got string)",
      function() orch.log.info("%d", "x") end)
    fails("orch.log.warn: format must be a string (got 5)", function() orch.log.warn(5, 1) end)
    fails([[orch.control: option 'name' must be letters, digits, '_', '.' or '-' (got "a b")]],
      function() orch.control{ name = "a b" } end)
    fails("orch.control: unknown option 'bogus' (valid: name, path)",
      function() orch.control{ bogus = 1 } end)
    fails([[orch.control: options must be a table (got "x")]], function() orch.control("x") end)
    fails([[orch.TaskError.new: fields.kind must be one of error, timeout, crashed, killed, cancelled (got "x")]],
      function() orch.TaskError.new{ kind = "x" } end)
  end)

  it("a misuse reached through the caller's own tail call names the caller's caller", function()
    local function make() return orch.pool{ workers = 0 } end
    fails("orch.pool: option 'workers' must be a positive integer (got 0)",
      function() local p = make(); return p end)
  end)

  it("require 'orch' from another Lua version says which one it needs", function()
    fails("orch needs Lua 5.4 (this is Lua 5.3): run it with lua5.4",
      function() require("orch.check").lua_version("Lua 5.3") end)
    for _, lua in ipairs({ "lua5.1", "lua5.3" }) do
      if os.execute(("command -v %s >/dev/null 2>&1"):format(lua)) then
        local p = io.popen(lua .. [[ -e 'package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
          package.cpath = "build/?.so;" .. package.cpath
          local ok, err = pcall(require, "orch") print(ok, err)' 2>&1]])
        local out = p:read("a")
        p:close()
        assert.matches("^false\t%(command line%):3: orch needs Lua 5%.4 %(this is Lua 5%.%d%): run it with lua5%.4", out)
      end
    end
  end)

  it("a 'module.name' that does not exist fails the task clearly", function()
    local pool <close> = orch.pool{ workers = 1 }
    local fut = pool:submit("no_such_module.fn")
    fut:wait()
    assert.are.equal("error", fut:error().kind)
    assert.matches("no_such_module", fut:error().message)
  end)

  it("orch.core checks its arguments and names them", function()
    local core = require "orch.core"
    assert.has_error(function() core.pack_task(5) end)
    assert.matches("bad argument #1 to 'orch.core.pack_task' %(function or module name expected", select(2, pcall(core.pack_task, 5)))
    assert.matches("bad argument #1 to 'orch.core.pack_chunk' %(function or module name expected",
      select(2, pcall(core.pack_chunk, 5, {}, 1, 2)))
    assert.matches("bad argument #2 to 'orch.core.pack_chunk' %(table expected",
      select(2, pcall(core.pack_chunk, print, 7, 1, 2)))
    assert.matches("bad argument #3 to 'orch.core.pack_chunk' %(number expected",
      select(2, pcall(core.pack_chunk, print, {}, nil, 2)))
    assert.matches("bad argument #1 to 'orch.core.array'", select(2, pcall(core.array, -1)))
    assert.matches("bad argument #2 to 'orch.core.spawn' %(fn, on_message, on_exit for each child",
      select(2, pcall(core.spawn, print)))
    assert.matches("bad argument #3 to 'orch.core.spawn' %(function expected",
      select(2, pcall(core.spawn, print, print, 3)))
    assert.matches("bad argument #4 to 'orch.core.spawn' %(fn, on_message, on_exit",
      select(2, pcall(core.spawn, print, print, print, print)))
    assert.matches("must not be negative", select(2, pcall(core.timer, -1, print)))
    assert.matches("bad argument #2 to 'orch.core.timer'", select(2, pcall(core.timer, 1, 42)))
    assert.matches("unknown signal 'NOPE'", select(2, pcall(core.signum, "NOPE")))
    assert.matches("signal must be INT", select(2, pcall(core.on_signal, "KILL", print)))
    assert.matches("only in a child process", select(2, pcall(core.serve)))
    assert.matches("only in a child process", select(2, pcall(core.call, "x")))
  end)
end)
