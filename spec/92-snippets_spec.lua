-- The Lua snippets of README.md and docs/*.md run as they are, each on its
-- own (from the repository root, with the tree's modules on LUA_PATH and
-- LUA_CPATH), and print what their `-->` comments say.
--
-- `code --> OUTPUT`: OUTPUT is a line the snippet prints; " / " separates
-- consecutive lines, "..." stands for any text, runs of blanks and tabs
-- compare equal. The lines a snippet's comments document must appear in
-- its output in that order; other output may come between them.
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

-- { file, line, code } for each ```lua block of the file.
local function snippets(path)
  local list, lineno, block, start = {}, 0, nil, nil
  for line in (read(path) .. "\n"):gmatch("(.-)\n") do
    lineno = lineno + 1
    if block then
      if line:match("^```%s*$") then
        list[#list + 1] = { file = path, line = start, code = table.concat(block, "\n") .. "\n" }
        block = nil
      else
        block[#block + 1] = line
      end
    elseif line:match("^```lua%s*$") then
      block, start = {}, lineno
    end
  end
  return list
end

local function squash(s) return (s:gsub("[ \t]+", " "):gsub("^ ", ""):gsub(" $", "")) end

-- The documented output lines of a snippet, as anchored patterns.
local function documented(code)
  local want = {}
  for text in code:gmatch("%-%->%s*([^\n]*)") do
    for piece in (text .. " / "):gmatch("(.-) / ") do
      local pattern = squash(piece):gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("%%%.%%%.%%%.", ".-")
      want[#want + 1] = { text = piece, pattern = "^" .. pattern .. "$" }
    end
  end
  return want
end

local function run(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";;"
  local p = io.popen(("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH=%s timeout 10 lua5.4 %s 2>&1")
    :format(q(cpath), q(path)))
  local out = p:read("a")
  local ok, _, status = p:close()
  os.remove(path)
  return ok, out, status
end

local FILES = { "README.md" }
for path in io.popen("ls docs/*.md"):lines() do FILES[#FILES + 1] = path end

describe("the documentation's snippets", function()
  for _, file in ipairs(FILES) do
    for _, snippet in ipairs(snippets(file)) do
      it(("%s:%d runs on its own and prints what it says"):format(file, snippet.line), function()
        local ok, out, status = run(snippet.code)
        assert(ok, ("exit %s:\n%s"):format(tostring(status), out))
        local lines = {}
        for line in out:gmatch("[^\n]*") do lines[#lines + 1] = squash(line) end
        local at = 1
        for _, want in ipairs(documented(snippet.code)) do
          while at <= #lines and not lines[at]:match(want.pattern) do at = at + 1 end
          assert(at <= #lines, ("'--> %s' not printed (in this order); the output was:\n%s")
            :format(want.text, out))
          at = at + 1
        end
      end)
    end
  end

  it("finds the snippets and their --> comments", function()
    local found = snippets("README.md")
    assert.truthy(#found >= 5)
    local want = documented('print(x)  --> 1  2 / a ... b\n')
    assert.same({ "^1 2$", "^a .- b$" }, { want[1].pattern, want[2].pattern })
  end)
end)
