-- The serializer's limits against hostile or absurd input: crafted frames
-- cannot make the decoder allocate far more than their size, slice bounds
-- at the ends of the integer range give a result or a clear error (never a
-- hang), every count read from the wire is checked, and every input the
-- fuzzer saved (spec/fuzz/) decodes or fails with a byte offset.
local core = require "orch.core"
local decode = core.decode

local craft = dofile("src/fuzz/craft.lua")
local uvar = craft.uvar

local function decode_err(s, allow)
  local ok, msg = pcall(decode, s, allow)
  assert(not ok, "expected an error")
  return msg
end

-- Bytes the Lua heap grew by while decoding s, garbage included: the
-- collector is stopped, so what a failed decode allocated is still
-- counted. Returns the growth, then pcall's results.
local function heap_growth(s)
  collectgarbage()
  collectgarbage("stop")
  local before = collectgarbage("count")
  local r = table.pack(pcall(decode, s))
  local grown = (collectgarbage("count") - before) * 1024
  collectgarbage("restart")
  return grown, table.unpack(r, 1, r.n)
end

-- Lua itself needs up to ~16 bytes of heap per byte of a valid frame (an
-- array slot per one-byte integer) and a table per 4 bytes (56 bytes):
-- a crafted frame may cost a small multiple of that, never more.
local BOUND = 64

local many_hinted, nested_arrays, nested_hinted = craft.many_hinted, craft.nested_arrays, craft.nested_hinted

-- Runs Lua code in a child interpreter with orch.core loaded as core, for
-- at most `seconds`: its output and whether it finished in time.
local function in_child(code, seconds)
  local cpath = os.getenv("ORCH_CPATH") or "build/?.so"
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("package.cpath = %q .. ';' .. package.cpath\n"):format(cpath),
          "local core = require 'orch.core'\n", code)
  f:close()
  local p = assert(io.popen(("timeout -s KILL %d lua5.4 %s 2>&1"):format(seconds, script)))
  local out = p:read("a")
  local _, _, status = p:close()
  os.remove(script)
  return out, status ~= 137, status
end

describe("orch.core wire limits", function()

  describe("presizing from a frame", function()
    it("keeps a list of tables that hint 2^24 pairs within the frame's size", function()
      local s = many_hinted(1000)
      local grown, ok, t = heap_growth(s)
      assert.is_true(ok)
      assert.equal(1000, #t)
      assert.is_true(grown < BOUND * #s, ("%d bytes grew the heap by %d"):format(#s, grown))
    end)

    it("keeps nested tables that each claim the bytes left within the frame's size", function()
      local s = nested_arrays(200, 4096)
      local grown, ok, msg = heap_growth(s)
      assert.is_false(ok)
      assert.matches("^orch%.core%.decode: byte %d+: truncated", msg)
      assert.is_true(grown < BOUND * #s, ("%d bytes grew the heap by %d"):format(#s, grown))
    end)

    it("keeps nested hash hints within the frame's size", function()
      local s = nested_hinted(200, 4096)
      local grown, ok = heap_growth(s)
      assert.is_false(ok)
      assert.is_true(grown < BOUND * #s, ("%d bytes grew the heap by %d"):format(#s, grown))
    end)

    it("shares one budget between the frame's values", function()
      -- the same crafted table twice in one frame: the second cannot
      -- presize from bytes the first already claimed
      local one = nested_arrays(100, 2048)
      local grown = heap_growth(one .. one)
      assert.is_true(grown < BOUND * 2 * #one, ("%d bytes grew the heap by %d"):format(2 * #one, grown))
    end)

    it("still decodes large valid tables exactly", function()
      local t = { list = {}, map = {} }
      for i = 1, 5000 do
        t.list[i] = { i, tostring(i) }
        t.map["k" .. i] = { x = i, y = -i }
      end
      local s = core.encode_strict(t)
      local grown, ok, back = heap_growth(s)
      assert.is_true(ok)
      assert.same(t, back)
      assert.is_true(grown < BOUND * #s, ("%d bytes grew the heap by %d"):format(#s, grown))
    end)

    it("keeps a worker's result within a small multiple of its frame", function()
      -- the parent decodes RESULT frames with the decoder core.decode uses;
      -- here the frame comes from a real worker
      local orch = require "orch"
      local pool = orch.pool{ workers = 1 }
      local function make(k)
        local out = {}
        for i = 1, k do out[i] = { a = i, b = { i }, [i] = true } end
        return out
      end
      assert.equal(1, #pool:submit(make, 1):result()) -- the worker is up
      local size = #core.encode_strict(make(20000))
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      local back = pool:submit(make, 20000):result()
      local grown = (collectgarbage("count") - before) * 1024
      collectgarbage("restart")
      pool:terminate()
      assert.equal(20000, #back)
      assert.is_true(grown < BOUND * size, ("%d bytes grew the heap by %d"):format(size, grown))
    end)
  end)

  describe("slice bounds", function()
    local function slice_in_child(call)
      return in_child(([[
local ok, r = pcall(function()
  local t = { [math.maxinteger - 1] = "a", [math.maxinteger] = "b",
              [math.mininteger] = "c", [math.mininteger + 1] = "d" }
  %s
end)
if ok then
  io.write("ok ", #r)
else
  io.write("error ", tostring(r))
end
]]):format(call), 20)
    end

    it("encodes the first and the last two integers as lists of two", function()
      for _, case in ipairs{ { "math.maxinteger - 1", "math.maxinteger", "a", "b" },
                             { "math.mininteger", "math.mininteger + 1", "c", "d" } } do
        local out, finished = slice_in_child(([[
          local s = core.encode_slice(t, %s, %s)
          local list = core.decode(s)
          assert(list[1] == %q and list[2] == %q and #list == 2)
          return s]]):format(table.unpack(case)))
        assert.is_true(finished, "encode_slice(t, " .. case[1] .. ", " .. case[2] .. ") did not return")
        assert.matches("^ok %d+$", out)
      end
    end)

    it("refuses a slice longer than a list can be", function()
      for _, ij in ipairs{ { "math.mininteger", "math.maxinteger" }, { "0", "math.maxinteger" },
                           { "-1", "math.maxinteger - 1" }, { "1", "1 << 31" },
                           { "math.mininteger", "-1" } } do
        local out, finished = slice_in_child(("return core.encode_slice(t, %s, %s)"):format(ij[1], ij[2]))
        assert.is_true(finished, "encode_slice(t, " .. ij[1] .. ", " .. ij[2] .. ") did not return")
        assert.matches("^error result: slice %-?%d+%.%.%-?%d+ too long %(at most 2147483647 values%)$", out)
      end
    end)

    it("encodes an empty list when j < i, however far apart", function()
      local out, finished = slice_in_child([[
        local s = core.encode_slice(t, math.maxinteger, math.mininteger)
        assert(next(core.decode(s)) == nil)
        return s]])
      assert.is_true(finished)
      assert.matches("^ok %d+$", out)
    end)

    it("checks pack_chunk's bounds the same way", function()
      local out, finished = slice_in_child([[
        local ok, e = pcall(core.pack_chunk, print, t, math.mininteger, math.maxinteger)
        assert(not ok and e:find("^items: slice %S+ too long"), e)
        return core.task_bytes(core.pack_chunk(print, t, math.maxinteger - 1, math.maxinteger))]])
      assert.is_true(finished, "pack_chunk did not return")
      assert.matches("^ok %d+$", out)
    end)
  end)

  describe("counts read from the wire", function()
    it("checks an upvalue count against the bytes left", function()
      -- a function with two upvalues, its count forged to 2^40
      local f
      do
        local a, b = 1, 2
        f = function() return a + b end
      end
      local code = string.dump(f)
      local s = "\9" .. uvar(#code) .. code .. uvar(1 << 40) .. "\x81\x82"
      assert.matches("^orch%.core%.decode: byte %d+: upvalue count 1099511627776 exceeds the 2 bytes left$",
                     decode_err(s, true))
    end)

    it("checks an integer run against its array part and the bytes left", function()
      local run = "\x0c\2\xd0\x0f\xa0\x1f" -- 1000, 2000
      assert.same({ 1000, 2000 }, decode("\6\2\0" .. run .. "\0"))
      assert.matches("^orch%.core%.decode: byte 3: integer run of 2 values %(2%.%.1 here%)$",
                     decode_err("\6\1\0" .. run .. "\0"))
      assert.same({ 1, 1000, 2000, 2 }, decode("\6\4\0\x81" .. run .. "\x82\0"))
      assert.matches("^orch%.core%.decode: byte 5: integer run of 2 values %(2%.%.1 here%)$",
                     decode_err("\6\3\0\x81\x82" .. run .. "\0"))
      assert.matches("integer run of 1 values", decode_err("\6\2\0\x0c\1\x81\x82\0"))
      assert.matches("integer run of 0 values", decode_err("\6\2\0\x0c\0\x81\x82\0"))
      assert.matches("^orch%.core%.decode: byte 4: integer run length 1099511627776 exceeds",
                     decode_err("\6\3\0\x0c" .. uvar(1 << 40) .. "\1\2\3\0"))
      assert.matches("^orch%.core%.decode: byte 6: truncated integer$",
                     decode_err("\6\2\0\x0c\2\x01\x80"))
      assert.matches("^orch%.core%.decode: byte 5: integer overflows 64 bits$",
                     decode_err("\6\2\0\x0c\2" .. ("\xff"):rep(9) .. "\x02\x01\0"))
      assert.matches("^orch%.core%.decode: byte 0: integer run outside a table's array part$",
                     decode_err(run))
      assert.matches("^orch%.core%.decode: byte 3: integer run outside a table's array part$",
                     decode_err("\6\0\1" .. run .. "\0"))
      local ok, msg = pcall(core.decode_into, "\6\1\0" .. run .. "\0", {}, 1)
      assert.is_false(ok)
      assert.matches("^orch%.core%.decode_into: byte 3: integer run of 2 values", msg)
    end)

    it("refuses a list in decode_into longer than the bytes left", function()
      local ok, msg = pcall(core.decode_into, "\6" .. uvar(1 << 40) .. "\0\0", {}, 1)
      assert.is_false(ok)
      assert.matches("^orch%.core%.decode_into: byte 1: array size %d+ exceeds", msg)
    end)
  end)
end)
