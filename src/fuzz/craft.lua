-- Forges wire bytes the encoder never writes, for the specs and
-- amplify.lua: varints, and frames whose tables announce more than they
-- hold.
local craft = {}

-- unsigned LEB128
function craft.uvar(n)
  local out = {}
  repeat
    local b = n % 128
    n = n // 128
    out[#out + 1] = string.char(n > 0 and b + 128 or b)
  until n == 0
  return table.concat(out)
end

-- k empty tables in a list, each hinting 2^24 pairs
function craft.many_hinted(k)
  return "\6" .. craft.uvar(k) .. "\0" .. ("\6\0\x98\0"):rep(k) .. "\0"
end

-- depth tables nested, each claiming n array values, then n bytes
function craft.nested_arrays(depth, n)
  return ("\6" .. craft.uvar(n) .. "\0"):rep(depth) .. ("\x80"):rep(n)
end

-- depth tables nested, each hinting 2^24 pairs, then n bytes
function craft.nested_hinted(depth, n)
  return ("\6\0\x98"):rep(depth) .. ("\x80"):rep(n)
end

return craft
