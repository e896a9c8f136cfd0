-- Times in seconds: NaN and negative ones are errors that say so, in the
-- parent and in a task alike, never a wait that does not end.
local orch = require "orch"
local core = require "orch.core"

describe("times in seconds", function()
  it("core.step, core.timer and core.child_sleep refuse NaN and negative times", function()
    local function refused(fn, t, why)
      local ok, err = pcall(fn, t, print)
      assert.is_false(ok)
      assert.matches("bad argument #1 to '[%w._]*' %(seconds must " .. why .. "%)", err)
    end
    for _, fn in ipairs{ core.step, core.timer, core.child_sleep } do
      refused(fn, 0 / 0, "be a number, got NaN")
      refused(fn, -0.5, "not be negative")
    end
    local ok, err = pcall(orch.sleep, 0 / 0)
    assert.is_false(ok)
    assert.matches("orch.sleep: seconds must be a non-negative number (got nan)", err, 1, true)
    core.step(0)  -- still a poll
  end)

  it("orch.sleep(0/0) and orch.sleep(-1) in a task fail the task at once", function()
    local pool <close> = orch.pool{ workers = 1, timeout = 5 }
    for _, t in ipairs{ 0 / 0, -1 } do
      local fut = pool:submit(function(s) orch.sleep(s) end, t)
      assert.is_true(fut:wait(5))
      assert.are.equal("error", fut:error().kind)
      assert.matches("orch.sleep: seconds must be a non%-negative number", fut:error().message)
    end
  end)
end)
