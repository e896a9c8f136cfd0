-- The value serializer (src/wire_enc.c, src/wire_dec.c) through orch.core.encode / decode.
-- luacheck: globals WIRE_SPEC_GLOBAL
local core = require "orch.core"
local encode, encode_strict, decode = core.encode, core.encode_strict, core.decode

-- encode then decode with functions allowed, all values back
local function rt(...)
  return decode(encode(...), true)
end

local function bits(x)
  return string.pack("<d", x)
end

-- pcall that returns the error message (or fails if there was none)
local function err_of(f, ...)
  local ok, msg = pcall(f, ...)
  assert(not ok, "expected an error")
  return msg
end

local function decode_err(s, allow)
  return err_of(decode, s, allow)
end

-- unsigned LEB128, to forge inputs
local uvar = dofile("src/fuzz/craft.lua").uvar

describe("orch.core wire", function()

  describe("round trip", function()
    it("keeps nil and booleans, and every argument in order", function()
      local n, a, b, c, d = (function(...) return select("#", ...), ... end)(rt(nil, false, true, nil))
      assert.equal(4, n)
      assert.is_nil(a)
      assert.equal(false, b)
      assert.equal(true, c)
      assert.is_nil(d)
    end)

    it("encodes nothing as the empty string", function()
      assert.equal("", encode())
      assert.equal(0, select("#", decode("")))
    end)

    it("keeps integers, all 64 bits, as integers", function()
      for _, n in ipairs{ 0, 1, -1, 127, 128, -32, -33, -129, 255, 256, 1 << 31,
                          -(1 << 31), (1 << 53) + 1, math.maxinteger, math.mininteger,
                          math.maxinteger - 1, math.mininteger + 1 } do
        local r = rt(n)
        assert.equal(n, r)
        assert.equal("integer", math.type(r))
      end
    end)

    it("keeps integers at every length of their encoding, alone and in runs", function()
      local list = {}
      for width = 5, 63 do
        for _, n in ipairs{ (1 << width) - 1, 1 << width, (1 << width) + 1 } do
          list[#list + 1] = n
          list[#list + 1] = -n
          assert.equal(n, rt(n))
          assert.equal(-n, rt(-n))
        end
      end
      assert.same(list, decode(encode(list)))
      local out = {}
      assert.equal(#list, core.decode_into(core.encode_slice(list, 1, #list), out, 1))
      assert.same(list, out)
    end)

    it("uses one byte for small integers", function()
      for n = -32, 127 do assert.equal(1, #encode(n)) end
      assert.equal(3, #encode(128))
      assert.equal(2, #encode(-33))
      assert.equal(11, #encode(math.mininteger))
    end)

    it("keeps floats bit-exact", function()
      local nan_payload = string.unpack("<d", string.pack("<I8", 0x7ff8000000000abc))
      local neg_nan = string.unpack("<d", string.pack("<I8", 0xfff0000000000001))
      local values = { 0.5, -0.5, 0.0, -0.0, 1.0, 1 / 0, -1 / 0, 0 / 0, nan_payload, neg_nan,
                       2.0^53 + 2, 2.0^63, math.pi, 5e-324, 1.7976931348623157e308 }
      for _, x in ipairs(values) do
        local r = rt(x)
        assert.equal("float", math.type(r))
        assert.equal(bits(x), bits(r))
      end
    end)

    it("keeps -0.0, infinities, NaN and 2^53+1 as floats", function()
      assert.equal(-1 / 0, 1 / rt(-0.0))
      assert.equal(1 / 0, 1 / rt(0.0))
      assert.equal(1 / 0, rt(1 / 0))
      assert.equal(-1 / 0, rt(-1 / 0))
      local nan = rt(0 / 0)
      assert.is_true(nan ~= nan)
      local big = 2.0^53 + 1 -- rounds to 2^53 as a float: must stay that float
      local r = rt(big)
      assert.equal("float", math.type(r))
      assert.equal(big, r)
      assert.equal("float", math.type(rt(3.0)))
    end)

    it("keeps strings binary-safe", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs{ "", "a", "\0", "a\0b", all, all:rep(3), ("x"):rep(31), ("x"):rep(32),
                          ("y"):rep(127), ("y"):rep(128), ("z"):rep(70000) } do
        assert.equal(s, rt(s))
      end
    end)

    it("keeps a 10 MB string", function()
      local s = ("0123456789abcdef"):rep(10 * 1024 * 1024 // 16) .. "\0end"
      local r = rt(s)
      assert.equal(#s, #r)
      assert.is_true(s == r)
    end)

    it("keeps nested tables", function()
      local t = { 1, 2, { 3, { 4, { 5, x = { y = { z = "deep" } } } } }, name = "n", list = {} }
      assert.same(t, rt(t))
    end)

    it("keeps tables with mixed keys and holes", function()
      local t = { 10, 20, nil, 40, [0] = "zero", [-1] = "minus one", [-2^40 // 1] = "far",
                  [1.5] = "float key", [-0.25] = "neg float", [1 / 0] = "inf",
                  [true] = "yes", [false] = "no", s = "string", ["two words"] = 2,
                  [""] = "empty", [100] = 100, [math.mininteger] = "min", [math.maxinteger] = "max" }
      assert.same(t, rt(t))
    end)

    it("keeps tables used as keys", function()
      local k = { "key" }
      local t = { [k] = "v" }
      local r = rt(t)
      local rk = next(r)
      assert.same({ "key" }, rk)
      assert.equal("v", r[rk])
    end)

    it("keeps big arrays and big hashes", function()
      local arr, hash = {}, {}
      for i = 1, 5000 do arr[i] = i * 3 - 7000 end
      for i = 1, 5000 do hash["k" .. i] = i end
      assert.same(arr, rt(arr))
      assert.same(hash, rt(hash))
      local mixed = { a = arr, h = hash }
      for i = 1, 300 do mixed[i] = i % 7 == 0 and { i } or i end
      assert.same(mixed, rt(mixed))
    end)

    it("keeps arrays whose keys live in the hash part", function()
      local t = { x = 1, y = 2, z = 3 }
      t[1], t[2], t[3] = "a", "b", "c"
      local u = {}
      for i = 10, 1, -1 do u[i] = i end
      assert.same(t, rt(t))
      assert.same(u, rt(u))
    end)

    it("sends a sparse table as pairs, not as nils up to its border", function()
      local t = {}
      for k = 0, 50 do t[2^k // 1] = k end
      local s = encode(t)
      assert.is_true(#s < 1000, "sparse table took " .. #s .. " bytes")
      assert.same(t, decode(s))
    end)

    it("keeps shared references", function()
      local shared = { 1, 2 }
      local t = { a = shared, b = shared, list = { shared, shared } }
      local r = rt(t)
      assert.equal(r.a, r.b)
      assert.equal(r.a, r.list[1])
      assert.equal(r.a, r.list[2])
      assert.same({ 1, 2 }, r.a)
    end)

    it("keeps cycles", function()
      local t = { name = "t" }
      t.self = t
      local u = { t = t }
      t.u = u
      local r = rt(t)
      assert.equal(r, r.self)
      assert.equal(r, r.u.t)
      assert.equal("t", r.name)
      local ring = {}
      local node = ring
      for i = 1, 50 do node.next = { i = i }; node = node.next end
      node.next = ring
      local rr = rt(ring)
      node = rr
      for _ = 1, 51 do node = node.next end
      assert.equal(rr, node)
    end)

    it("keeps sharing across the values of one call", function()
      local t = { 1 }
      local a, b, c = rt(t, "x", t)
      assert.equal(a, c)
      assert.equal("x", b)
      -- and not across calls
      assert.are_not.equal(rt(t), rt(t))
    end)

    it("keeps sharing among many tables", function()
      local items = {}
      for i = 1, 40 do items[i] = { i = i } end
      local t = { first = items, again = {} }
      for i = 40, 1, -1 do t.again[#t.again + 1] = items[i] end
      local r = rt(t)
      for i = 1, 40 do
        assert.equal(r.first[i], r.again[41 - i])
        assert.equal(i, r.first[i].i)
      end
    end)
  end)

  describe("functions", function()
    it("copies upvalues by value", function()
      local n = 0
      local function inc()
        n = n + 1
        return n
      end
      inc()
      local g = rt(inc)
      assert.equal(2, g())
      assert.equal(3, g())
      assert.equal(1, n)
    end)

    it("sends a recursive local function", function()
      local function fact(k)
        if k <= 1 then return 1 end
        return k * fact(k - 1)
      end
      local f = rt(fact)
      assert.equal(3628800, f(10))
    end)

    it("sends a function with a table upvalue, shared with an argument", function()
      local cfg = { k = 2, list = { 1, 2, 3 } }
      local function f() return cfg.k * #cfg.list, cfg end
      local g, c = rt(f, cfg)
      local v, gc = g()
      assert.equal(6, v)
      assert.equal(c, gc)
      assert.same(cfg, c)
    end)

    it("sends functions calling other local functions", function()
      local function sq(x) return x * x end
      local function sum_sq(t)
        local s = 0
        for _, v in ipairs(t) do s = s + sq(v) end
        return s
      end
      assert.equal(14, rt(sum_sq)({ 1, 2, 3 }))
    end)

    it("sends functions inside tables", function()
      local t = { add = function(a, b) return a + b end, n = 1 }
      local r = rt(t)
      assert.equal(5, r.add(2, 3))
    end)

    it("binds _ENV to the globals of the decoding side", function()
      local function f() return string.format("%s-%d", WIRE_SPEC_GLOBAL or "none", 7) end
      local g = rt(f)
      local found
      for i = 1, math.huge do
        local name, value = debug.getupvalue(g, i)
        if not name then break end
        if name == "_ENV" then found = value end
      end
      assert.equal(_G, found)
      assert.equal("none-7", g())
    end)

    it("runs with the receiving process's globals", function()
      local function f(x) return ("%s:%d"):format(WIRE_SPEC_GLOBAL, x * 2) end
      local path = os.tmpname()
      local file = assert(io.open(path, "wb"))
      file:write(encode(f, string.format, os.time))
      file:close()
      local cpath = package.cpath:gsub("'", "")
      local script = ([[package.cpath = '%s'; WIRE_SPEC_GLOBAL = 'child'
        local fh = io.open('%s', 'rb'); local s = fh:read('a'); fh:close()
        local f, fmt, time = require('orch.core').decode(s, true)
        io.write(f(21), ' ', fmt('%%05d', 42), ' ', math.type(time()))]]):format(cpath, path)
      local pipe = assert(io.popen("lua5.4 -e \"" .. script:gsub("\n", " ") .. "\"", "r"))
      local out = pipe:read("a")
      pipe:close()
      os.remove(path)
      assert.equal("child:42 00042 integer", out)
    end)

    it("turns any _ENV, and the globals table, into the receiver's globals", function()
      local function make()
        local _ENV = { y = 5, WIRE_SPEC_GLOBAL = "sandbox" } -- luacheck: ignore
        return function() return y, WIRE_SPEC_GLOBAL end -- luacheck: ignore
      end
      local f = make()
      assert.same({ 5, "sandbox" }, { f() })
      local g = rt(f)
      _G.WIRE_SPEC_GLOBAL = "global" -- busted runs specs in a sandbox _ENV
      local y, v = g()
      _G.WIRE_SPEC_GLOBAL = nil
      assert.is_nil(y)
      assert.equal("global", v)
      local G = _G
      local h = rt(function() return G end)
      assert.equal(_G, h())
    end)

    it("sends C functions by name", function()
      assert.equal(os.time, rt(os.time))
      assert.equal(string.format, rt(string.format))
      assert.equal(print, rt(print))
      assert.equal(core.decode, rt(core.decode))
      local f = rt(function() return string.format("%d", 5) end)
      assert.equal("5", f())
    end)

    it("keeps debug information (errors name their line)", function()
      local function boom() error("boom") end
      local msg = err_of(rt(boom))
      assert.matches("02%-wire_spec%.lua:%d+: boom", msg)
    end)

    it("refuses functions in decode unless allowed", function()
      local s = encode(function() end)
      assert.equal("orch.core.decode: byte 0: function refused (functions only travel "
                   .. "from the parent to its workers)", decode_err(s))
      assert.matches("^orch.core.decode: byte 4: function refused",
                     decode_err(encode({ 1, print })))
    end)
  end)

  describe("refusals name the path", function()
    it("userdata", function()
      assert.equal("args[2].conn: cannot send userdata", err_of(encode, 1, { conn = io.stdout }))
    end)

    it("coroutines", function()
      assert.equal("args[1]: cannot send a thread (coroutine)",
                   err_of(encode, coroutine.create(print)))
    end)

    it("tables with a metatable", function()
      assert.equal("args[2]: cannot send a table with a metatable",
                   err_of(encode, 1, setmetatable({}, {})))
      assert.equal("args[1].x[2]: cannot send a table with a metatable",
                   err_of(encode, { x = { 1, setmetatable({}, { __index = {} }) } }))
    end)

    it("paths through every kind of key", function()
      local u = io.stdout
      assert.equal("args[1][3]: cannot send userdata", err_of(encode, { 1, 2, u }))
      assert.equal("args[1][2][1]: cannot send userdata", err_of(encode, { 1, { u } }))
      assert.equal('args[1]["two words"]: cannot send userdata',
                   err_of(encode, { ["two words"] = u }))
      assert.equal('args[1]["say \\"hi\\"\\10"]: cannot send userdata',
                   err_of(encode, { ['say "hi"\n'] = u }))
      assert.equal("args[1][true]: cannot send userdata", err_of(encode, { [true] = u }))
      assert.equal("args[1][1.5]: cannot send userdata", err_of(encode, { [1.5] = u }))
      assert.equal("args[1][-7]: cannot send userdata", err_of(encode, { [-7] = u }))
      assert.equal("args[1][<table>]: cannot send userdata", err_of(encode, { [{}] = u }))
      assert.equal("args[1]: key: cannot send userdata", err_of(encode, { [u] = 1 }))
      assert.equal("args[3].a.b.c: cannot send userdata",
                   err_of(encode, 1, 2, { a = { b = { c = u } } }))
    end)

    it("upvalues, by name", function()
      local handle = io.stdout
      local function f() return handle end
      assert.equal("args[1]: upvalue 'handle': cannot send userdata", err_of(encode, f))
      assert.equal("args[2][1].cb: upvalue 'handle': cannot send userdata",
                   err_of(encode, 0, { { cb = f } }))
      local function g() return f() end
      assert.equal("args[1]: upvalue 'f': upvalue 'handle': cannot send userdata",
                   err_of(encode, g))
      local opts = { out = handle }
      local function h() return opts end
      assert.equal("args[1]: upvalue 'opts'.out: cannot send userdata", err_of(encode, h))
    end)

    it("C functions that no loaded module exports", function()
      local wrapped = coroutine.wrap(function() end)
      assert.equal("args[1]: cannot send a C function that no loaded module exports "
                   .. "(package.loaded[mod][key])", err_of(encode, wrapped))
    end)

    it("functions from a worker (encode_strict)", function()
      local msg = ": cannot send a function: functions only travel from the parent to its workers"
      assert.equal("args[2]" .. msg, err_of(encode_strict, 1, print))
      assert.equal("args[1].cb" .. msg, err_of(encode_strict, { cb = function() end }))
      assert.equal("args[1]" .. msg, err_of(encode_strict, function() end))
      assert.equal("x", decode(encode_strict("x")))
    end)

    it("nesting deeper than 200", function()
      local function chain(depth)
        local t = {}
        local node = t
        for _ = 2, depth do node[1] = {}; node = node[1] end
        return t
      end
      local ok = rt(chain(200))
      assert.is_table(ok)
      local msg = err_of(encode, chain(201))
      assert.matches("^args%[1%]%[1%].*%.%.%..*%[1%]: nesting deeper than 200$", msg)
      -- functions count as a level
      local f = (function() local t = chain(200); return function() return t end end)()
      assert.matches("nesting deeper than 200$", err_of(encode, f))
    end)

    it("leave encode usable", function()
      for _ = 1, 3 do
        err_of(encode, { ("x"):rep(100000), io.stdout })
        assert.equal("ok", decode(encode("ok")))
      end
    end)
  end)

  describe("decoder", function()
    local rich = {
      1, -1, 1000, math.mininteger, 0.5, -0.0, 0 / 0, "short", ("long"):rep(20), true, false,
      { a = { b = { c = {} } }, [2.5] = "f", [true] = 1, [-3] = -3 },
      nested = { 1, 2, 3, { x = "y" } },
    }
    rich.self = rich
    rich.again = rich.nested
    rich[20] = "after a hole"
    local rich_s = encode(rich)

    it("reads the documented format", function()
      assert.equal("\0\1\2\x80\x7f\x60\x22hi", encode(nil, false, true, 0, -1, -32, "hi"))
      assert.equal("\6\2\0\x81\x82\0", encode({ 1, 2 }))
      assert.equal("\6\0\1\x21k\x81\0", encode({ k = 1 }))
      local t = {}
      t.self = t -- 0x16: a table referred to again later
      assert.equal("\x16\0\1\x24self\7\1\0", encode(t))
      assert.equal("\3\x80\2", encode(128))
      -- 0x0c: integers of an array part as a run (count, bare varints),
      -- opened at an integer outside -32..127; a run of one is plain
      assert.equal("\6\4\0\x81\x0c\3\xd0\x0f\xa0\x1f\x0a\0", encode({ 1, 1000, 2000, 5 }))
      assert.equal("\6\2\0\3\xd0\x0f\x22hi\0", encode({ 1000, "hi" }))
      assert.equal("\4" .. string.pack("<d", 0.5), encode(0.5))
      local n, a, b = (function(...) return select("#", ...), ... end)(decode("\0\x81"))
      assert.equal(2, n); assert.is_nil(a); assert.equal(1, b)
    end)

    it("sends the integers of an array part as runs, mixed with other values", function()
      local big = {}
      for i = 1, 100000 do big[i] = i * 1000 end
      local s = encode(big)
      assert.is_true(#s < 100000 * 4, #s .. " bytes") -- no tag a value
      assert.same(big, decode(s))
      local mixed = { 500, 600, -700, 0.5, 800, 900, "s", math.maxinteger, math.mininteger,
                      { 1000, 2000 }, 3000, true, -1 << 40, 1 << 40, 7, 8, 9000 }
      mixed[19] = 10000 -- after a hole: a pair, not in a run
      mixed.k = 11000
      local back = decode(encode(mixed))
      assert.same(mixed, back)
      assert.equal(math.type(mixed[4]), math.type(back[4]))
      -- a slice and decode_into take the same runs
      local items = { 1, 200, 300, -400, "x", 500, 600, 2.0, 700 }
      local out = { "keep" }
      assert.equal(#items, core.decode_into(core.encode_slice(items, 1, #items), out, 2))
      assert.same({ "keep", table.unpack(items) }, out)
      assert.equal("float", math.type(out[9]))
    end)

    it("fails cleanly on every truncation", function()
      local f = function(x) return x end
      local s = encode(rich, f, "tail")
      -- a prefix may end exactly between two values: those decode
      local whole = { [#encode(rich)] = true, [#encode(rich, f)] = true }
      for len = 1, #s - 1 do
        local ok, msg = pcall(decode, s:sub(1, len), true)
        if ok then
          assert.is_true(whole[len], "prefix of " .. len .. " bytes decoded")
        else
          local at = tonumber(msg:match("^orch%.core%.decode: byte (%d+): "))
          assert.is_number(at, msg)
          assert.is_true(at <= len, msg)
        end
      end
    end)

    it("survives random byte flips", function()
      math.randomseed(20240531)
      local decoded, failed = 0, 0
      for _ = 1, 20000 do
        local bytes = { rich_s:byte(1, -1) }
        for _ = 1, math.random(1, 4) do
          bytes[math.random(#bytes)] = math.random(0, 255)
        end
        local s = string.char(table.unpack(bytes))
        local ok, msg = pcall(decode, s)
        if ok then
          decoded = decoded + 1
        else
          failed = failed + 1
          assert.matches("^orch%.core%.decode: byte %d+: ", msg)
        end
      end
      assert.is_true(decoded > 0 and failed > 0)
    end)

    it("survives random garbage", function()
      math.randomseed(7)
      for _ = 1, 20000 do
        local n = math.random(0, 40)
        local b = {}
        for i = 1, n do b[i] = math.random(0, 255) end
        local ok, msg = pcall(decode, string.char(table.unpack(b)))
        assert.is_true(ok or msg:find("^orch%.core%.decode: byte %d+: ") ~= nil, msg)
      end
    end)

    it("rejects forged lengths without allocating", function()
      collectgarbage()
      local before = collectgarbage("count")
      local huge = uvar(1 << 40)
      assert.equal("orch.core.decode: byte 1: string length 1099511627776 exceeds the 3 bytes left",
                   decode_err("\5" .. huge .. "abc"))
      assert.matches("^orch.core.decode: byte 1: array size %d+ exceeds",
                     decode_err("\6" .. huge .. "\0\0"))
      assert.matches("^orch.core.decode: byte 1: string length %d+ exceeds",
                     decode_err("\5" .. ("\xff"):rep(9) .. "\1x"))
      -- a huge hash hint only presizes what the bytes left could fill
      assert.same({}, decode("\6\0\xff\0"))
      assert.is_true(collectgarbage("count") - before < 1024)
    end)

    it("rejects bad input with the byte offset", function()
      assert.equal("orch.core.decode: byte 0: unknown tag 0x40", decode_err("\x40"))
      assert.equal("orch.core.decode: byte 1: unknown tag 0x1f", decode_err("\x80\x1f"))
      assert.equal("orch.core.decode: byte 0: reference to unknown value 1", decode_err("\7\1"))
      -- a table not announced as shared cannot be referred to
      assert.equal("orch.core.decode: byte 4: reference to unknown value 1",
                   decode_err("\6\0\0\0\7\1"))
      assert.equal("orch.core.decode: byte 1: integer overflows 64 bits",
                   decode_err("\3" .. ("\xff"):rep(9) .. "\2"))
      assert.equal("orch.core.decode: byte 1: truncated integer", decode_err("\3\xff"))
      assert.equal("orch.core.decode: byte 0: truncated float", decode_err("\4\0\0"))
      assert.equal("orch.core.decode: byte 0: truncated string (5 bytes, 2 left)",
                   decode_err("\x25ab"))
      assert.equal("orch.core.decode: byte 3: NaN table key",
                   decode_err("\6\0\1" .. "\4" .. string.pack("<d", 0 / 0) .. "\x81\0"))
      assert.equal("orch.core.decode: byte 3: truncated table: key expected",
                   decode_err("\6\0\0"))
      assert.matches("byte 0: globals marker outside", decode_err("\10"))
      assert.matches("^orch.core.decode: byte 0: bad bytecode: ",
                     decode_err("\9\3abc\0", true))
      assert.matches("^orch.core.decode: byte 0: bad bytecode: .*text chunk",
                     decode_err("\9" .. uvar(#"return 1") .. "return 1\0", true))
      assert.matches("^orch.core.decode: byte 0: cannot load C function 'no_such_module.f'",
                     decode_err("\8\14no_such_module\1f", true))
      assert.equal("orch.core.decode: byte 0: 'string.nope' is nil here, not a function",
                   decode_err("\8\6string\4nope", true))
    end)

    it("bounds nesting at 200", function()
      local function forged(depth)
        return ("\6\1\0"):rep(depth - 1) .. "\6\0\0\0" .. ("\0"):rep(depth - 1)
      end
      local t = decode(forged(200))
      for _ = 1, 199 do t = t[1] end
      assert.same({}, t)
      assert.equal("orch.core.decode: byte 600: nesting deeper than 200", decode_err(forged(201)))
      assert.matches("nesting deeper than 200", decode_err(forged(100000)))
    end)

    it("checks its arguments", function()
      assert.matches("bad argument #1 to '.*decode' %(string expected, got no value%)",
                     err_of(decode))
      assert.matches("bad argument #1 to '.*decode' %(string expected, got table%)",
                     err_of(decode, {}))
    end)

    it("keeps the stack and memory flat over many calls", function()
      local small = encode({ id = 1, args = { 17, "x" } }, 2)
      local bad = small:sub(1, -3)
      collectgarbage()
      collectgarbage()
      local before = collectgarbage("count")
      for _ = 1, 100000 do
        local t, n = decode(small)
        assert(t.args[1] == 17 and n == 2)
        assert(not pcall(decode, bad))
      end
      for _ = 1, 2000 do pcall(encode, { 1, 2, { io.stdout } }) end
      collectgarbage()
      collectgarbage()
      assert.is_true(collectgarbage("count") - before < 256,
                     ("grew by %.0f KiB"):format(collectgarbage("count") - before))
    end)
  end)
  describe("lists for map's chunks", function()
    local encode_slice, decode_into = core.encode_slice, core.decode_into

    it("decode a slice into a table at an offset, holes and shared tables kept", function()
      local shared = { x = 1 }
      local s = encode_slice({ "a", shared, nil, shared, 5.5, "z" }, 2, 5)
      local out = { "keep" }
      assert.equal(4, decode_into(s, out, 2))
      assert.equal("keep", out[1])
      assert.equal(1, out[2].x)
      assert.is_nil(out[3])
      assert.equal(out[2], out[4])
      assert.equal(5.5, out[5])
      assert.is_nil(out[6])
      assert.equal(0, decode_into(encode_slice({ 1 }, 2, 1), out, 1))
    end)

    it("refuse what a worker may not send, naming its place in the slice", function()
      assert.has_error(function() encode_slice({ 1, 2, io.stdout }, 2, 3) end,
        "result[2]: cannot send userdata")
      assert.has_error(function() encode_slice({ print }, 1, 1) end)
      -- past the first batches of values the encoder fetches at once
      local long = {}
      for i = 1, 100 do long[i] = i % 3 == 0 and { i } or i * 1000 end
      long[70] = io.stdout
      assert.has_error(function() encode_slice(long, 1, 100) end, "result[70]: cannot send userdata")
      long[70] = 70000
      local out = {}
      assert.equal(100, decode_into(encode_slice(long, 1, 100), out, 1))
      assert.same(long, out)
    end)

    it("raise on anything but one whole list, and on a bad offset", function()
      local s = encode_slice({ 1, 2, 3 }, 1, 3)
      local function bad(str, i)
        local ok, err = pcall(decode_into, str, {}, i or 1)
        assert.is_false(ok)
        return err
      end
      assert.matches("truncated", bad(s:sub(1, -2)))
      assert.matches("bytes after the list", bad(s .. "x"))
      assert.matches("a list expected", bad(core.encode(1)))
      assert.matches("a list expected, got nothing", bad(""))
      assert.matches("keys other than 1..n", bad(core.encode({ 1, 2, x = 3 })))
      assert.matches("index out of range", bad(s, 0))
      assert.matches("index out of range", bad(s, math.maxinteger))
      assert.matches("function", bad(core.encode({ function() end })))
    end)
  end)
end)
