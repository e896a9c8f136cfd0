-- How much this machine's speed moves within one process: batches of N
-- tasks (default 10,000), each submitted whole before its results are
-- taken, a million tasks in all, and the time per task of each batch in
-- microseconds. On a quiet machine the numbers stay close; a spread of 2x
-- says that single measurements of a few tens of milliseconds (and ratios
-- between them) carry that much noise.
--
--   lua5.4 bench/noise.lua [N]      (from the repo root, after make build)
local root = (arg and arg[0] or ""):match("^(.-)[^/]*$"):gsub("bench/$", ""):gsub("^$", "./")
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath
local orch = require "orch"
local now = require("orch.core").now

local n = math.tointeger(tonumber(arg[1] or 10000))
if not n or n < 1 then
  io.stderr:write("usage: lua5.4 bench/noise.lua [N]  (N: tasks a batch, a positive integer)\n")
  os.exit(2)
end
local function inc(x) return x + 1 end
local pool <close> = orch.pool{ workers = 2 }
for i = 1, 100 do pool:submit(inc, i):result() end  -- warm-up
local line = {}
for _ = 1, math.max(1, 1000000 // n) do
  local t0, futs = now(), {}
  for i = 1, n do futs[i] = pool:submit(inc, i) end
  for i = 1, n do assert(futs[i]:result() == i + 1) end
  line[#line + 1] = ("%.1f"):format((now() - t0) / n * 1e6)
  if #line == 20 then print(table.concat(line, " ")); line = {} end
end
if #line > 0 then print(table.concat(line, " ")) end
