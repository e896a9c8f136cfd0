-- docs/architecture.md points at code as `file:line` (`text`): each such
-- reference must still find its text on that line, so the walks it
-- describes cannot drift from the code unnoticed.
local function lines_of(path)
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  return lines
end

describe("docs/architecture.md", function()
  it("points at lines that hold the text it names", function()
    local doc = assert(io.open("docs/architecture.md", "r")):read("a")
    local checked, wrong = 0, {}
    for path, n, text in doc:gmatch("`([%w_/.%-]+):(%d+)` %(`([^`]+)`%)") do
      local line = lines_of(path)[tonumber(n)]
      if not (line and line:find(text, 1, true)) then
        wrong[#wrong + 1] = ("%s:%s should hold %q (it holds %q)"):format(path, n, text, tostring(line))
      end
      checked = checked + 1
    end
    assert.is_true(checked >= 30, "too few references found: " .. checked)
    assert.same({}, wrong)
  end)
end)
