-- Measures how much a crafted frame grows the Lua heap of the process
-- that decodes it (the parent, for a worker's RESULT frame): frame bytes
-- -> heap growth, garbage included (the collector is stopped while it
-- decodes). docs/reliability.md records the figures.
--   lua5.4 src/fuzz/amplify.lua [cpath]      (default build/?.so)
package.cpath = (arg[1] or "build/?.so") .. ";" .. package.cpath
local core = require "orch.core"

local craft = dofile("src/fuzz/craft.lua")

local shapes = {
  { "list of k tables hinting 2^24 pairs each", craft.many_hinted, 8190 },
  { "200 nested tables claiming n values each", function(n) return craft.nested_arrays(200, n) end,
    257 * 1024 },
  { "200 nested tables hinting 2^24 pairs, n bytes", function(n) return craft.nested_hinted(200, n) end,
    32 * 1024 },
}

for _, shape in ipairs(shapes) do
  local s = shape[2](shape[3])
  collectgarbage()
  collectgarbage("stop")
  local before = collectgarbage("count")
  local ok = pcall(core.decode, s)
  local grown = (collectgarbage("count") - before) * 1024
  collectgarbage("restart")
  print(("%-48s %8d bytes -> %12d bytes (%.0fx, %s)"):format(shape[1], #s, grown,
        grown / #s, ok and "decoded" or "refused"))
end
