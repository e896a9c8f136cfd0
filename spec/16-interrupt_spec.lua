-- The default INT/TERM behaviour of a plain script with pools: the first
-- signal cancels the pools' work and raises "interrupted" in the script,
-- whose <close> handlers run; nothing is left running.
local H = orch_spec

local function start()
  local out = os.tmpname()
  local p = io.popen(("setsid lua5.4 spec/scripts/pool_interrupt.lua > %s 2>&1 & echo $!"):format(out))
  local pid = tonumber(p:read("l"))
  p:close()
  finally(function()  -- whatever the assertions say, nothing is left running
    os.execute(("kill -KILL -%d 2>/dev/null"):format(pid))
    os.remove(out)
  end)
  assert.is_true(H.eventually(function() return (H.read_file(out) or ""):find("ready") end, 10))
  local workers = {}
  for w in H.read_file(out):gmatch("worker (%d+)") do workers[#workers + 1] = tonumber(w) end
  return pid, out, workers
end

describe("a plain script with pools", function()
  for _, sig in ipairs({ "INT", "TERM" }) do
    it("on SIG" .. sig .. " cancels the work, raises 'interrupted' and cleans up", function()
      local pid, out, workers = start()
      assert.are.equal(2, #workers)
      os.execute(("kill -%s %d"):format(sig, pid))
      assert.is_true(H.eventually(function() return not H.alive(pid) end, 10))
      local text = H.read_file(out)
      os.remove(out)
      assert.matches("cleanup ran: interrupted %(SIG" .. sig .. "%)", text)
      assert.is_nil(text:find("not reached"))
      for _, w in ipairs(workers) do assert.is_false(H.alive(w)) end
    end)
  end

  it("ignores a Ctrl-C sent to the whole process group in its workers", function()
    local pid, out, workers = start()
    -- INT to the group: the workers must not die of it; the parent decides
    os.execute(("kill -INT -%d"):format(pid))
    assert.is_true(H.eventually(function() return not H.alive(pid) end, 10))
    local text = H.read_file(out)
    os.remove(out)
    assert.matches("cleanup ran: interrupted", text)
    for _, w in ipairs(workers) do assert.is_false(H.alive(w)) end
  end)
end)
