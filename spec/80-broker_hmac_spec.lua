-- SHA-256 (FIPS 180-4 examples) and HMAC-SHA256 (RFC 4231) in orch.core.
local core = require "orch.core"

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

describe("core.sha256", function()
  it("matches the FIPS 180-4 examples", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256(""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256("abc"))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      core.sha256(("a"):rep(1000000)))
  end)

  it("gives the same digest at every block boundary however the input is cut", function()
    for n = 50, 130 do
      local s = ("x"):rep(n)
      assert.equal(64, #core.sha256(s))
      assert.not_equal(core.sha256(s), core.sha256(s .. "y"))
    end
    -- 55, 56 and 64 bytes: the padding's edge cases (known digests)
    assert.equal("9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
      core.sha256(("a"):rep(55)))
    assert.equal("b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
      core.sha256(("a"):rep(56)))
    assert.equal("ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb",
      core.sha256(("a"):rep(64)))
  end)

  it("refuses what is not a string", function()
    assert.has_error(function() core.sha256({}) end)
    assert.has_error(function() core.hmac_sha256("k") end)
    assert.has_error(function() core.hmac_sha256(nil, "m") end)
  end)
end)

describe("core.hmac_sha256", function()
  -- RFC 4231, test cases 1-7 (case 5's MAC is truncated to 128 bits)
  local cases = {
    { ("0b"):rep(20), "4869205468657265",
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
    { "4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
    { ("aa"):rep(20), ("dd"):rep(50),
      "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
    { "0102030405060708090a0b0c0d0e0f10111213141516171819", ("cd"):rep(50),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
    { ("0c"):rep(20), "546573742057697468205472756e636174696f6e",
      "a3b6167473100ee06e0c796c2955552b", true },
    { ("aa"):rep(131),
      "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
    { ("aa"):rep(131),
      "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920" ..
      "616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e656564732074" ..
      "6f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f72697468" ..
      "6d2e",
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
  }
  for i, c in ipairs(cases) do
    it("matches RFC 4231 test case " .. i, function()
      local mac = core.hmac_sha256(unhex(c[1]), unhex(c[2]))
      assert.equal(64, #mac)
      if c[4] then mac = mac:sub(1, 32) end
      assert.equal(c[3], mac)
    end)
  end
end)
