-- Installing: the rockspec names every module and C source of the tree,
-- `luarocks make` builds and installs it offline into a fresh tree, and a
-- pool runs from another directory with only that tree on the paths.
-- The build runs in a copy of the checkout: luarocks compiles in place.

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function listing(cmd)
  local set = {}
  local _, out = sh(cmd)
  for line in out:gmatch("[^\n]+") do set[line] = true end
  return set
end

local function load_rockspec()
  local env = {}
  local chunk = assert(loadfile("rockspec/orch-scm-1.rockspec", "t", env))
  chunk()
  return env
end

describe("rockspec/orch-scm-1.rockspec", function()
  it("is a builtin build with libev and hiredis as external dependencies", function()
    local spec = load_rockspec()
    assert.equal("orch", spec.package)
    assert.equal("scm-1", spec.version)
    assert.equal("builtin", spec.build.type)
    assert.same({ header = "ev.h", library = "ev" }, spec.external_dependencies.LIBEV)
    local core = spec.build.modules["orch.core"]
    assert.same({ header = "hiredis/adapters/libev.h", library = "hiredis" },
      spec.external_dependencies.HIREDIS)
    assert.same({ "ev", "hiredis" }, core.libraries)
    assert.same({ "_GNU_SOURCE" }, core.defines)
    assert.truthy(core.incdirs and core.libdirs)
  end)

  it("lists every lua/orch/*.lua module and every src/*.c file", function()
    local modules = load_rockspec().build.modules
    local files = listing("ls lua/orch/*.lua lua/orch/broker/*.lua")
    for file in pairs(files) do
      local name = file:match("^lua/orch/(.-)%.lua$"):gsub("/", ".")
      local mod = name == "init" and "orch" or "orch." .. name
      assert.equal(file, modules[mod], "module " .. mod .. " missing from the rockspec")
    end
    for _, file in pairs(modules) do
      if type(file) == "string" then assert.truthy(files[file], file .. " does not exist") end
    end
    local sources = {}
    for _, f in ipairs(modules["orch.core"].sources) do sources[f] = true end
    assert.same(listing("ls src/*.c"), sources)
  end)

  it("installs with luarocks make, offline, and runs a pool from another directory", function()
    local ok, tmp = sh("mktemp -d /tmp/orch-install.XXXXXX")
    assert.truthy(ok)
    tmp = tmp:gsub("%s+$", "")
    finally(function() os.execute("rm -rf " .. q(tmp)) end)
    local src, tree = tmp .. "/src", tmp .. "/tree"
    assert.truthy(sh(("mkdir -p %s && cp -R src lua scripts rockspec %s/"):format(q(src), q(src))))

    local built, out = sh(("cd %s && luarocks --lua-version 5.4 make rockspec/orch-scm-1.rockspec --tree %s")
      :format(q(src), q(tree)))
    assert(built, "luarocks make failed:\n" .. out)

    local _, paths = sh("luarocks --lua-version 5.4 --tree " .. q(tree) .. " path")
    local lua_path = assert(paths:match("LUA_PATH='([^']*)'"))
    local lua_cpath = assert(paths:match("LUA_CPATH='([^']*)'"))
    local script = [[
      local orch = require "orch"
      print(package.searchpath("orch", package.path))
      print(package.searchpath("orch.core", package.cpath))
      local pool <close> = orch.pool{ workers = 2 }
      print(table.concat(pool:map(function(x) return x * x end, { 1, 2, 3, 4 }), ","))
      print(pool:submit(string.rep, "ab", 3):result())
    ]]
    local ran, res = sh(("cd /tmp && LUA_PATH=%s LUA_CPATH=%s timeout 15 lua5.4 -e %s")
      :format(q(lua_path), q(lua_cpath), q(script)))
    assert(ran, "the installed orch failed:\n" .. res)
    local lines = {}
    for line in res:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(tree .. "/share/lua/5.4/orch/init.lua", lines[1])
    assert.equal(tree .. "/lib/lua/5.4/orch/core.so", lines[2])
    assert.equal("1,4,9,16", lines[3])
    assert.equal("ababab", lines[4])
    -- the orch command is installed too, and finds the installed modules
    local cmd_ok, version = sh(("cd /tmp && LUA_PATH=%s LUA_CPATH=%s %s/bin/orch --version")
      :format(q(lua_path), q(lua_cpath), q(tree)))
    assert(cmd_ok, "orch --version failed:\n" .. version)
    assert.matches("orch", version)
  end)
end)
