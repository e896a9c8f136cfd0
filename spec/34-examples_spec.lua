-- The examples of scripts/examples that end by themselves run to the end
-- and check their own results (each asserts what it shows); ordered_shutdown
-- and signals wait for a signal and are driven by 32-signals_spec.
local function run_example(name)
  local p = io.popen(("lua5.4 scripts/examples/%s.lua 2>&1; echo \"exit=$?\""):format(name))
  local out = p:read("a")
  p:close()
  return out:gsub("exit=%d+%s*$", ""), tonumber(out:match("exit=(%d+)%s*$"))
end

describe("examples", function()
  it("pool.lua: a SIGKILLed worker is replaced and its task retried", function()
    local out, code = run_example("pool")
    assert.are.equal(0, code, out)
    assert.matches("killing worker %d %(pid %d+%) while it counts range %d+", out)
    assert.matches("primes below 2000000: 148933 %(expected 148933%)", out)
    assert.matches("restarts=1", out)
  end)

  it("kill_all.lua, task_queue.lua and fail_fast.lua run to the end", function()
    for _, name in ipairs({ "kill_all", "task_queue", "fail_fast" }) do
      local out, code = run_example(name)
      assert.are.equal(0, code, name .. ":\n" .. out)
    end
  end)
end)
