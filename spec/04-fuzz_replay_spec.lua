-- Replays what `make fuzz` keeps: every input a fuzz target saved in
-- spec/fuzz/NAME/ (inputs that crashed it or grew the heap too much once)
-- and the seeds it starts from. Each must decode, or be refused with the
-- byte offset, within the bound the fuzzer enforces on heap growth.
local core = require "orch.core"
local seeds = dofile("src/fuzz/seeds.lua")

-- as src/fuzz/fuzz_wire.c: AMPLIFY_MAX times the input, plus AMPLIFY_SLACK
local AMPLIFY_MAX, AMPLIFY_SLACK = 64, 16 * 1024

local function saved_inputs(dir)
  local list = {}
  local p = assert(io.popen("ls -1 " .. dir .. " 2>/dev/null"))
  for name in p:lines() do
    local f = assert(io.open(dir .. "/" .. name, "rb"))
    list[#list + 1] = { name = name, bytes = f:read("a") }
    f:close()
  end
  p:close()
  return list
end

-- Runs f(s, ...) with the collector stopped: ok, its error, heap growth.
local function measured(f, s, ...)
  collectgarbage()
  collectgarbage("stop")
  local before = collectgarbage("count")
  local ok, err = pcall(f, s, ...)
  local grown = (collectgarbage("count") - before) * 1024
  collectgarbage("restart")
  return ok, err, grown
end

local function replay(name, s)
  for _, how in ipairs{ { "decode", core.decode }, { "decode_into", core.decode_into, {}, 1 } } do
    local ok, err, grown = measured(how[2], s, how[3], how[4])
    if not ok then
      assert.matches("^orch%.core%." .. how[1] .. ": byte %d+: ", err, nil, false, name)
    end
    assert.is_true(grown <= AMPLIFY_MAX * #s + AMPLIFY_SLACK,
                   ("%s: %d bytes grew the heap by %d in %s"):format(name, #s, grown, how[1]))
  end
end

describe("fuzz reproducers", function()
  it("replays every saved input of the wire target", function()
    local saved = saved_inputs("spec/fuzz/wire")
    assert.is_true(#saved > 0, "spec/fuzz/wire/ holds the inputs the fuzzer found")
    for _, input in ipairs(saved) do replay(input.name, input.bytes) end
  end)

  it("replays the wire target's seeds", function()
    for i, s in ipairs(seeds.wire(core)) do replay("seed " .. i, s) end
  end)
end)
