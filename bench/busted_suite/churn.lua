-- The body of bench/busted_suite's files: CPU-bound tests of uneven length
-- (string building, table sorting and arithmetic, as a parser's or a
-- codec's suite spends its time). Each file calls it with its own size.
local function churn(n)
  local parts = {}
  for k = 1, n do parts[#parts + 1] = ("%d:%x"):format(k, k * 7919) end
  table.sort(parts)
  local sum = 0
  for k = 1, n do sum = (sum + #parts[k] * k) % 1000003 end
  return sum
end

-- Five tests of `rounds` each, in a describe named after the file; `spec`
-- is the spec file's environment (busted's describe, it and assert).
return function(spec, name, rounds)
  spec.describe(name, function()
    for t = 1, 5 do
      spec.it("round " .. t, function() spec.assert.is_number(churn(rounds)) end)
    end
  end)
end
