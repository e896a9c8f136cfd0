-- CPU-bound tests of uneven length (file 7 of 8): string building, table
-- sorting and arithmetic, as a parser's or a codec's suite spends its time.
local ROUNDS = 160000

local function churn(n)
  local parts = {}
  for k = 1, n do parts[#parts + 1] = ("%d:%x"):format(k, k * 7919) end
  table.sort(parts)
  local sum = 0
  for k = 1, n do sum = (sum + #parts[k] * k) % 1000003 end
  return sum
end

describe("work 7", function()
  for t = 1, 5 do
    it("round " .. t, function()
      assert.is_number(churn(ROUNDS))
    end)
  end
end)
