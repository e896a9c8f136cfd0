-- Seed inputs for the fuzz targets, made with the real encoder so that
-- the fuzzer starts from valid encodings of every tag and shape.
--   lua5.4 src/fuzz/seeds.lua TARGET DIR [cpath]   writes DIR/seed-NNN
-- As a module (dofile), returns { [target] = function(core) -> list }, so
-- spec/04-fuzz_replay_spec.lua replays the very same seeds.
local seeds = {}

-- orch.core.decode's input: any run of values, as a worker's RESULT
-- payload holds them
function seeds.wire(core)
  local enc, out = core.encode_strict, {}
  local function add(s) out[#out + 1] = s end
  add(enc(nil, false, true))
  for _, n in ipairs{ 0, -1, 127, 128, -33, 1 << 20, 1 << 40, math.maxinteger, math.mininteger } do
    add(enc(n))
  end
  for _, x in ipairs{ 0.5, -0.0, 1 / 0, 0 / 0, 5e-324 } do add(enc(x)) end
  for _, l in ipairs{ 0, 1, 31, 32, 200 } do add(enc(("s"):rep(l))) end
  add(enc({}))
  add(enc({ 1, 2, 3, "four", 5.0 }))
  add(enc({ a = 1, b = "two", [true] = false, [1.5] = 3, [-7] = {} }))
  add(enc({ 10, 20, nil, 40, x = { y = { z = "deep" } } }))
  local shared = { "x" }
  local cyc = { a = shared, b = shared }
  cyc.self = cyc
  add(enc(cyc, shared))
  local many = {}
  for i = 1, 12 do many[i] = { i } end
  many.again = many -- past the inline refs: the context table
  for i = 1, 12 do many[-i] = many[i] end
  add(enc(many))
  local nest = {}
  for _ = 1, 50 do nest = { nest } end
  add(enc(nest))
  local hash = {}
  for i = 1, 300 do hash["k" .. i] = i end -- a hash hint above 127
  add(enc(hash))
  add(core.encode_slice({ 1, "b", { 3 }, nil, 5 }, 1, 5))
  -- integer runs (0x0c): long, broken by other values, at the ends of the range
  add(enc({ 1000, 2000, -3000, 4, 5, 0.5, 1 << 40, math.mininteger, "x", math.maxinteger, 600 }))
  local run = {}
  for i = 1, 300 do run[i] = i * 1000 end
  add(enc(run))
  add(core.encode_slice({ 1, 200, 300, "b", 400, 500 }, 1, 6))
  add(core.encode(print, function() return shared end)) -- refused: functions
  add(enc(1, "two", { 3 }) .. enc(4))
  return out
end

-- The frame reader's input: one byte of set-up (see fuzz_frame.c: the
-- seed of the read sizes; odd: a 256-byte limit), then a stream of frames
-- with headers as chan.c writes them, payloads from the real encoder.
function seeds.frame(core)
  local enc, msg, out = core.encode_strict, core.msg, {}
  local function frame(type, payload) return string.pack("<I4B", #payload, type) .. payload end
  local function results(from, to)
    local t = {}
    for id = from, to do t[#t + 1] = frame(msg.RESULT, enc(id, "value " .. id, { id })) end
    return table.concat(t)
  end
  local mixed = results(1, 3) .. frame(msg.LOG, enc("info", "hello")) .. results(4, 5)
    .. frame(msg.ERROR, enc(6, "error", "boom", "traceback", nil)) .. frame(msg.SEND, enc({ 1, 2 }))
  local big = frame(msg.RESULT, enc(7, ("b"):rep(3000)))
  local over = string.pack("<I4B", 0x7fffffff, msg.RESULT) .. "xyz"
  local bad = frame(msg.RESULT, "\255\255\255") .. frame(msg.LOG, enc("warn")) .. frame(msg.RESULT, enc(8))
  -- big frames (the payload in a memfd the target makes of the bytes after it)
  local function bigf(type, size) return string.pack("<I4BI8", 0x80000008, type, size) end
  local payload = enc(9, "nine")
  local bigs = bigf(msg.RESULT, #payload) .. payload
  local bigs_mixed = results(1, 2) .. bigf(msg.RESULT, 40) .. bigf(msg.LOG, 200) .. results(3, 3)
    .. bigf(msg.SEND, 0) .. bigf(msg.RESULT, 100) .. bigf(msg.RESULT, 7) .. bigf(msg.LOG, 1) .. mixed
  local streams = { results(1, 1), results(1, 40), mixed, big, mixed .. big, over, mixed .. over,
    bad, frame(msg.READY, ""), frame(msg.RESULT, enc(1)):sub(1, 7),
    bigs, bigs_mixed, bigf(msg.RESULT, 100000) .. mixed, bigf(msg.RESULT, 1):sub(1, 9),
    string.pack("<I4B", 0x80000009, msg.RESULT) .. mixed,
    frame(msg.WAKE, "") .. results(1, 2) .. frame(msg.WAKE, "") .. frame(msg.WAKE, "") .. mixed }
  for _, seed in ipairs{ 0, 1, 2, 77 } do
    for _, st in ipairs(streams) do out[#out + 1] = string.char(seed) .. st end
  end
  return out
end

-- fuzz_lane.c's steps: byte 0 (odd: a writer that breaks the rules
-- after them), then steps (op in the low 2 bits: 0 put on the lane, 1
-- write to the fd, each with a size byte; 2 the reader goes into a read,
-- 3 it comes back), 0xff, and the bytes written over the lane
function seeds.lane()
  local PUT, FD, TAKE, READ = 0, 1, 2, 3
  local function steps(list) return string.char(table.unpack(list)) end
  local mixed = steps{ PUT, 5, FD, 9, TAKE, PUT, 200, READ + 4 * 3, FD, 1, PUT, 3, TAKE,
    READ + 4 * 60, PUT, 255, PUT, 255, READ + 4 * 1, FD, 40, TAKE, READ + 4 * 63 }
  local raced = steps{ FD, 10, TAKE + 4 * 63, PUT, 4, FD, 20, PUT, 7, FD, 3, READ, TAKE, READ }
  local full = steps{ PUT, 230, PUT, 230, PUT, 230, PUT, 230, PUT, 230, FD, 2, TAKE, READ + 4 * 63 }
  local out = {}
  for _, body in ipairs{ mixed, raced, full, "" } do
    out[#out + 1] = "\0" .. body
    out[#out + 1] = "\1" .. body .. "\255" .. ("\0\0\255\0\64\16\0\128\0"):rep(4)
  end
  return out
end

if arg and arg[0] and arg[0]:match("seeds%.lua$") then
  local target, dir, cpath = arg[1], arg[2], arg[3]
  assert(seeds[target] and dir, "usage: seeds.lua TARGET DIR [cpath]")
  package.cpath = (cpath or "build/?.so") .. ";" .. package.cpath
  local list = seeds[target](require "orch.core")
  for i, s in ipairs(list) do
    local f = assert(io.open(("%s/seed-%03d"):format(dir, i), "wb"))
    f:write(s)
    f:close()
  end
  print(("seeds.lua: %d %s seeds in %s"):format(#list, target, dir))
end

return seeds
