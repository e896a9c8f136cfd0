-- orch.log.json and the environment: ORCH_LOG sets the level and
-- ORCH_LOG_FORMAT=json the handler, read when orch.log loads, in the parent
-- and (inherited by fork) in its workers.
local cjson = require "cjson"
local H = orch_spec

local function records(out)
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

local SCRIPT = [[
  local orch = require "orch"
  local pool <close> = orch.pool{ workers = 1 }
  pool:submit(function() require("orch").log.debug("worker says %q", "a/b\n") end):result()
  orch.log.info("main says hi")
  orch.log.debug("main debug")
]]

describe("orch.log.json", function()
  it("writes one JSON object per record, keys in a fixed order", function()
    local out, code = H.run_lua([[
      local orch = require "orch"
      orch.log.handler = orch.log.json
      orch.log.warn("disk %s", "full")
    ]])
    assert.equal(0, code, out)
    assert.matches('^{"time":%d+,"level":"warn","name":"main","pid":%d+,"message":"disk full"}\n$', out)
  end)

  it("ORCH_LOG=debug ORCH_LOG_FORMAT=json: every record as JSON, workers' too", function()
    local out, code = H.run_lua(SCRIPT, "ORCH_LOG=debug ORCH_LOG_FORMAT=json")
    assert.equal(0, code, out)
    local r = records(out)
    assert.equal(3, #r, out)
    assert.same({ "debug", "worker 1", 'worker says "a/b\\\n"' }, { r[1].level, r[1].name, r[1].message })
    assert.same({ "info", "main", "main says hi" }, { r[2].level, r[2].name, r[2].message })
    assert.equal("main debug", r[3].message)
    assert.is_number(r[1].pid)
    assert.is_number(r[1].time)
  end)

  it("ORCH_LOG=warn leaves info out; text stays the default format", function()
    local out, code = H.run_lua(SCRIPT .. 'orch.log.warn("careful")', "ORCH_LOG=warn")
    assert.equal(0, code, out)
    assert.matches("^%d%d:%d%d:%d%d WARN  %[main %d+%] careful\n$", out)
  end)

  it("says once what is wrong with a value that means nothing, and goes on", function()
    local out, code = H.run_lua('require("orch").log.info("still logging")',
      "ORCH_LOG=loud ORCH_LOG_FORMAT=xml")
    assert.equal(0, code, out)
    assert.matches("orch.log: ORCH_LOG: unknown level 'loud' (valid: debug, info, warn, error)",
      out, 1, true)
    assert.matches("orch.log: ORCH_LOG_FORMAT: unknown format 'xml' (valid: text, json)", out, 1, true)
    assert.matches("INFO  %[main %d+%] still logging", out)
  end)
end)
