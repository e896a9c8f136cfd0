-- make doc: LDoc (config.ld) builds the API reference from the doc comments
-- of lua/orch/*.lua, one page per module named as it is required.
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("the API reference (config.ld)", function()
  it("has a page per module, with the doc comments in it", function()
    local p = io.popen("mktemp -d /tmp/orch-doc.XXXXXX")
    local dir = p:read("l")
    p:close()
    finally(function() os.execute("rm -rf " .. q(dir)) end)
    local run = io.popen(("ldoc -d %s . 2>&1"):format(q(dir)))
    local out = run:read("a")
    assert(run:close(), "ldoc failed:\n" .. out)
    for _, mod in ipairs({ "orch", "orch.pool", "orch.future", "orch.group", "orch.errors",
                           "orch.supervisor", "orch.queue", "orch.log", "orch.signal" }) do
      local f = io.open(("%s/modules/%s.html"):format(dir, mod))
      assert(f, "no page for " .. mod)
      f:close()
    end
    local log = assert(io.open(dir .. "/modules/orch.log.html")):read("a")
    assert.matches("one JSON object per record", log, 1, true)
    local pool = assert(io.open(dir .. "/modules/orch.pool.html")):read("a")
    assert.matches("submit", pool, 1, true)
    assert.truthy(io.open(dir .. "/topics/stopping.md.html"), "the guides are topics")
  end)
end)
