-- The first INT or TERM of a plain script: the ordered stop of what it
-- runs (a pool's tasks, a supervisor's services), then an Interrupted
-- error in the waiting script, whose <close> handlers run. Left uncaught,
-- the error ends the process by that signal (130 / 143) with one line on
-- stderr and no traceback; caught (orch.Interrupted.is), the script
-- decides. The scripts run in their own session and get real signals.
local P = require "scripts.sup_proc"
after_each(P.cleanup_all)

local SCRIPT = "spec/scripts/interrupted.lua"
local CODE = { INT = 130, TERM = 143 }

local function start(what, catch)
  local job = P.start(SCRIPT, { what, catch })
  assert.is_true(P.wait_output(job, "ready", 10, "out"), P.stderr(job))
  local pids = {}
  for pid in P.stdout(job):gmatch("%a+ (%d+)\n") do pids[#pids + 1] = tonumber(pid) end
  assert.are.equal(2, #pids, P.stdout(job))
  return job, pids
end

local function check_gone(pids)
  for _, pid in ipairs(pids) do
    assert.is_true(P.wait_for(function() return not P.alive(pid) end, 2), "left running: " .. pid)
  end
end

for _, what in ipairs({ "pool", "supervisor" }) do
  describe("a plain script with a " .. what, function()
    for sig, code in pairs(CODE) do
      it(("on SIG%s: ordered stop, <close> handlers run, ends by the signal (%d), one line"):format(sig, code), function()
        local job, pids = start(what)
        P.signal(sig, job.pid)
        local rc = P.wait_exit(job, 15)
        local out, err = P.stdout(job), P.stderr(job)
        assert.are.equal(code, rc, out .. err)
        local line = ("interrupted (SIG%s)"):format(sig)
        if what == "pool" then
          assert.matches("inner closed: " .. line:gsub("%p", "%%%0") .. " running=0\n", out)
        else
          assert.matches("inner closed: " .. line:gsub("%p", "%%%0") .. " a=stopped b=stopped\n", out)
        end
        assert.matches("outer closed: " .. line:gsub("%p", "%%%0"), out)
        assert.is_nil(out:find("not reached", 1, true))
        -- inner before outer: the handlers ran in order, before the end
        assert.is_true(out:find("inner closed", 1, true) < out:find("outer closed", 1, true))
        assert.are.equal("lua5.4: " .. line .. "\n", err)
        check_gone(pids)
      end)
    end

    it("Ctrl-C to the whole process group: the same (130)", function()
      local job, pids = start(what)
      P.signal_group("INT", job.pid)
      assert.are.equal(130, P.wait_exit(job, 15))
      assert.are.equal("lua5.4: interrupted (SIGINT)\n", P.stderr(job))
      assert.matches("outer closed: interrupted", P.stdout(job))
      check_gone(pids)
    end)

    it("caught with orch.Interrupted.is, the script decides (exit 0)", function()
      local job, pids = start(what, "catch")
      P.signal("TERM", job.pid)
      assert.are.equal(0, P.wait_exit(job, 15), P.stderr(job))
      assert.matches("outer closed: interrupted %(SIGTERM%)", P.stdout(job))
      assert.matches("caught: false true TERM\n", P.stdout(job))
      assert.are.equal("", P.stderr(job))
      check_gone(pids)
    end)
  end)
end
