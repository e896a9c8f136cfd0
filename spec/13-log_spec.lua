-- orch.log: records from workers reach the parent's handler with the
-- worker's name and pid; the default handler writes one line to stderr.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec

describe("orch.log", function()
  local saved_handler, saved_level
  before_each(function() saved_handler, saved_level = orch.log.handler, orch.log.level end)
  after_each(function() orch.log.handler, orch.log.level = saved_handler, saved_level end)

  it("forwards a worker's records to the parent's handler", function()
    local records = {}
    orch.log.handler = function(r) records[#records + 1] = r end
    local pool <close> = orch.pool{ workers = 1 }
    local pid = pool:submit(function()
      local log = require("orch").log
      log.info("hello %s %d", "from", 42)
      log.warn("careful")
      log.debug("hidden at level info")
      return require("orch.core").getpid()
    end):result()
    assert.are.equal(2, #records)
    assert.are.equal("info", records[1].level)
    assert.are.equal("hello from 42", records[1].message)
    assert.are.equal("worker 1", records[1].name)
    assert.are.equal(pid, records[1].pid)
    assert.is_number(records[1].time)
    assert.are.equal("warn", records[2].level)
  end)

  it("keeps a worker's records and results in the order it wrote them", function()
    local events = {}
    orch.log.handler = function(r) events[#events + 1] = r.message end
    local pool <close> = orch.pool{ workers = 1 }
    local futs = {}
    for i = 1, 200 do
      futs[i] = pool:submit(function(x)
        if x % 7 == 0 then require("orch").log.info("log %d", x) end
        return x
      end, i)
      futs[i]:on_done(function(f) events[#events + 1] = "done " .. f:result() end)
    end
    for i = 1, 200 do futs[i]:wait() end
    local want = {}
    for i = 1, 200 do
      if i % 7 == 0 then want[#want + 1] = "log " .. i end
      want[#want + 1] = "done " .. i
    end
    assert.are.same(want, events)
  end)

  it("works the same in the parent", function()
    local records = {}
    orch.log.handler = function(r) records[#records + 1] = r end
    orch.log.level = "debug"
    orch.log.debug("in the parent")
    assert.are.equal(core.getpid(), records[1].pid)
    assert.are.equal("debug", records[1].level)
  end)

  it("writes one line to stderr by default", function()
    local out, code = H.run_lua([[
      local orch = require "orch"
      local pool <close> = orch.pool{ workers = 1 }
      pool:submit(function() require("orch").log.error("disk %s", "full") end):wait()
    ]])
    assert.are.equal(0, code)
    assert.matches("ERROR %[worker 1 %d+%] disk full\n", out)
  end)
end)
