-- Micro-benchmark of the value serializer: lua5.4 bench/wire.lua
-- (after make build). Prints the best of 7 runs of each workload.
package.cpath = "build/?.so;" .. package.cpath
local core = require "orch.core"
local encode, decode = core.encode, core.decode

local function bench(name, n, f)
  local best = math.huge
  for _ = 1, 7 do
    collectgarbage()
    local t0 = os.clock()
    f(n)
    best = math.min(best, os.clock() - t0)
  end
  print(("%-42s %8.1f ms  %8.0f ns each"):format(name, best * 1e3, best / n * 1e9))
end

local ints = {}
for i = 1, 1000 do ints[i] = i * 7 end
local ints_s = encode(ints)
bench("encode 1000-integer table x1000", 1000, function(n) for _ = 1, n do encode(ints) end end)
bench("decode 1000-integer table x1000", 1000, function(n) for _ = 1, n do decode(ints_s) end end)
bench("encode+decode 1000-integer table x1000", 1000,
      function(n) for _ = 1, n do decode(encode(ints)) end end)

local ints100k = {}
for i = 1, 100000 do ints100k[i] = i end
local ints100k_s, slice_s = encode(ints100k), core.encode_slice(ints100k, 1, 1000)
bench("encode 100k-integer table x20", 20, function(n) for _ = 1, n do encode(ints100k) end end)
bench("decode 100k-integer table x20", 20, function(n) for _ = 1, n do decode(ints100k_s) end end)
local out = {}
bench("encode_slice 1000 integers x1000", 1000,
      function(n) for _ = 1, n do core.encode_slice(ints100k, 1, 1000) end end)
bench("decode_into 1000 integers x1000", 1000,
      function(n) for _ = 1, n do core.decode_into(slice_s, out, 1) end end)

local frame = { id = 42, fn = 3, args = { 17 } }
local frame_s = encode(frame)
bench("encode small frame x100k", 100000, function(n) for _ = 1, n do encode(frame) end end)
bench("decode small frame x100k", 100000, function(n) for _ = 1, n do decode(frame_s) end end)
bench("encode+decode small frame x100k", 100000,
      function(n) for _ = 1, n do decode(encode(frame)) end end)
bench("encode+decode (7, 'ok') x100k", 100000,
      function(n) for _ = 1, n do decode(encode(7, "ok")) end end)

local records = {}
for i = 1, 1000 do records[i] = { name = "item" .. i, id = i, tags = { "a", "b" } } end
bench("encode+decode 1000 records x100", 100,
      function(n) for _ = 1, n do decode(encode(records)) end end)

local function work(x) return x * 2 end
bench("encode+decode a closure x10k", 10000,
      function(n) for _ = 1, n do decode(encode(work), true) end end)

local big = ("x"):rep(10 * 1024 * 1024)
bench("encode+decode 10 MB string x10", 10, function(n) for _ = 1, n do decode(encode(big)) end end)
