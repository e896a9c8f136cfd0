-- The parent's signals whatever it inherited: a script started with
-- SIGCHLD, INT or TERM blocked still reaps its workers and hears its
-- signals; an INT that comes before orch installed a handler ends the
-- script by that signal; a SIGKILLed parent leaves nothing of what its
-- tasks started.
local P = require "scripts.sup_proc"

--- Runs Lua code in a fresh lua5.4 whose signal mask blocks the given
-- signals (a parent started by a program that blocked them), under
-- timeout: returns its output and exit code (124: it hung).
local function run_blocked(signals, code)
  local path = orch_spec.lua_script(code)
  local py = ("import signal, os; signal.pthread_sigmask(signal.SIG_BLOCK, {%s}); "
    .. "os.execvp('lua5.4', ['lua5.4', '%s'])"):format(signals, path)
  local p = io.popen(("timeout -s KILL 20 python3 -c %s 2>&1; echo \"exit=$?\""):format(P.quote(py)))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out:gsub("exit=%d+%s*$", ""), tonumber(out:match("exit=(%d+)%s*$"))
end

describe("a parent started with signals blocked", function()
  it("reaps its workers: a crashed task fails and the pool closes", function()
    local out, code = run_blocked("signal.SIGCHLD, signal.SIGINT, signal.SIGTERM", [[
      local orch = require "orch"
      local pool = orch.pool{ workers = 2 }
      local fut = pool:submit(function() os.exit(9) end)
      assert(fut:wait(5), "the crashed task is still " .. fut:state())
      print("kind=" .. fut:error().kind, "exit=" .. tostring(fut:error().exit_code))
      print("next=" .. pool:submit(function() return 42 end):result())
      pool:close()
      print("joined=" .. tostring(pool:join(5)))
    ]])
    assert.are.equal(0, code, out)
    assert.matches("kind=crashed\texit=9\nnext=42\njoined=true\n", out, 1, true)
  end)

  it("hears INT and TERM once it handles them", function()
    local out, code = run_blocked("signal.SIGINT, signal.SIGTERM", [[
      local orch = require "orch"
      local core = require "orch.core"
      local got = {}
      orch.on_signal("INT", function(name) got[#got + 1] = name end)
      orch.on_signal("TERM", function(name) got[#got + 1] = name end)
      -- (not os.execute: system() ignores INT in the caller while it waits)
      io.popen("kill -INT " .. core.getpid()):close()
      io.popen("kill -TERM " .. core.getpid()):close()
      local deadline = core.now() + 5
      while #got < 2 and core.now() < deadline do orch.sleep(0.01) end
      print("got=" .. table.concat(got, ","))
    ]])
    assert.are.equal(0, code, out)
    assert.matches("got=INT,TERM\n", out, 1, true)
  end)
end)

describe("an INT before orch handles it", function()
  after_each(function() P.cleanup_all() end)

  --- A script that loads orch, says so, then works in plain Lua for a
  -- while (outside orch's loop, with no pool yet).
  local function start_loaded()
    local path = orch_spec.lua_script(table.concat({
      'require "orch"',
      'io.stdout:write("loaded\\n"); io.stdout:flush()',
      'local t = os.clock() + 10; while os.clock() < t do end', 'print("not interrupted")', ""
    }, "\n"))
    return P.start(path), path
  end

  it("ends the script by that signal (130), not by Lua's 'interrupted!'", function()
    local job, path = start_loaded()
    assert.is_true(P.wait_output(job, "loaded", 10))
    P.signal("INT", job.pid)
    local rc = P.wait_exit(job, 10)
    os.remove(path)
    assert.are.equal(130, rc, P.stderr(job))
    assert.are.equal("", P.stderr(job))
  end)
end)

describe("a parent SIGKILLed while its tasks run shell commands", function()
  after_each(function() P.cleanup_all() end)

  it("leaves nothing: not the workers, not the shells, not their commands", function()
    local token = ("%d-%d"):format(require("orch.core").getpid(), os.time())
    local job = P.start("spec/scripts/chaos_refork.lua", { "shell" }, { CHAOS_MARK = token })
    assert.is_true(P.wait_for(function()
      return select(2, P.stdout(job):gsub("sleeping", "")) == 2
    end, 10), P.stderr(job))
    P.sleep(0.2)  -- the shells have started their sleep
    assert.is_true(#P.marked(token) >= 5)  -- the parent, its workers, 2 sh, 2 sleep
    P.signal("KILL", job.pid)
    assert.are.equal(137, P.wait_exit(job, 10))
    local left = {}
    P.wait_for(function() left = P.marked(token); return #left == 0 end, 2)
    if #left > 0 then os.execute("kill -KILL " .. table.concat(left, " ")) end
    assert.are.same({}, left)
  end)
end)
