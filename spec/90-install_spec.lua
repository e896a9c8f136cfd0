-- Installing: the rockspecs name every module and C source of the tree,
-- `luarocks make` builds and installs it offline into a fresh tree, and
-- `make install` into a fresh prefix; from another directory, the orch
-- command and a pool run with only what was installed on the paths (and
-- Debian's argparse and cjson). The builds run in a copy of the checkout:
-- luarocks compiles in place.

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

local ROCKSPECS = { "rockspec/orch-scm-1.rockspec", "rockspec/orch-0.1.0-1.rockspec" }

local function load_rockspec(path)
  local env = {}
  local chunk = assert(loadfile(path, "t", env))
  chunk()
  return env
end

-- A scratch directory with a copy of the checkout in it; removed at the end.
local function scratch_copy()
  local ok, tmp = sh("mktemp -d /tmp/orch-install.XXXXXX")
  assert.truthy(ok)
  tmp = tmp:gsub("%s+$", "")
  finally(function() os.execute("rm -rf " .. q(tmp)) end)
  local src = tmp .. "/src"
  assert(sh(("mkdir -p %s && cp -R src lua scripts rockspec docs Makefile README.md CHANGELOG.md LICENSE %s/")
    :format(q(src), q(src))))
  return tmp, src
end

-- What an installed orch must do from /tmp: a pool, and the orch command.
local POOL = [[
  local orch = require "orch"
  print(package.searchpath("orch", package.path))
  print(package.searchpath("orch.core", package.cpath))
  local pool <close> = orch.pool{ workers = 2 }
  print(table.concat(pool:map(function(x) return x * x end, { 1, 2, 3, 4 }), ","))
  print(pool:submit(string.rep, "ab", 3):result())
]]

-- env: the variables the pool needs; cmd_env: those the command needs
-- (a LuaRocks tree of one's own needs `luarocks path`; make install's
-- command has its paths written in and runs with LUA_PATH unset).
local CLEAN = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4"
local function check_installed(env, cmd_env, lmod, cmod, bin)
  local ran, res = sh(("cd /tmp && %s timeout 15 lua5.4 -e %s"):format(env, q(POOL)))
  assert(ran, "the installed orch failed:\n" .. res)
  local lines = {}
  for line in res:gmatch("[^\n]+") do lines[#lines + 1] = line end
  assert.same({ lmod .. "/orch/init.lua", cmod .. "/orch/core.so", "1,4,9,16", "ababab" }, lines)
  local ok, version = sh(("cd /tmp && %s %s --version"):format(cmd_env, q(bin)))
  assert(ok, "orch --version failed:\n" .. version)
  assert.matches("^orch %d+%.%d+%.%d+\n$", version)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write([[return function(n)
    local pool <close> = require("orch").pool{ workers = 2 }
    print(pool:submit(function(x) return x + 1 end, tonumber(n)):result())
  end]])
  f:close()
  local good, out = sh(("cd /tmp && %s %s run %s 41"):format(cmd_env, q(bin), q(file)))
  os.remove(file)
  assert(good, "orch run failed:\n" .. out)
  assert.equal("42\n", out)
end

describe("the rockspecs", function()
  it("are builtin builds with libev and hiredis as external dependencies, Linux only", function()
    for _, path in ipairs(ROCKSPECS) do
      local spec = load_rockspec(path)
      assert.equal("orch", spec.package)
      assert.equal(path:match("orch%-(.-)%.rockspec$"), spec.version)
      assert.equal("builtin", spec.build.type)
      assert.same({ "linux" }, spec.supported_platforms)
      assert.same({ header = "ev.h", library = "ev" }, spec.external_dependencies.LIBEV)
      assert.same({ header = "hiredis/adapters/libev.h", library = "hiredis" },
        spec.external_dependencies.HIREDIS)
      assert.matches("^git%+https://", spec.source.url)
      assert.matches("^https://", spec.description.homepage)
      local core = spec.build.modules["orch.core"]
      assert.same({ "ev", "hiredis" }, core.libraries)
      assert.same({ "_GNU_SOURCE" }, core.defines)
      assert.truthy(core.incdirs and core.libdirs)
    end
  end)

  it("the release rockspec is for orch.version and matches the scm one", function()
    local release = load_rockspec(ROCKSPECS[2])
    assert.equal(require("orch").version .. "-1", release.version)
    assert.equal("v" .. require("orch").version, release.source.tag)
    local scm = load_rockspec(ROCKSPECS[1])
    assert.same(scm.dependencies, release.dependencies)
    assert.same(scm.build, release.build)
  end)

  it("list every lua/orch module and every src/*.c file", function()
    for _, path in ipairs(ROCKSPECS) do
      local modules = load_rockspec(path).build.modules
      local files = listing("find lua/orch -name '*.lua'")
      for file in pairs(files) do
        local mod = file:match("^lua/(.-)%.lua$"):gsub("/init$", ""):gsub("/", ".")
        assert.equal(file, modules[mod], ("module %s missing from %s"):format(mod, path))
      end
      for _, file in pairs(modules) do
        if type(file) == "string" then assert.truthy(files[file], file .. " does not exist") end
      end
      local sources = {}
      for _, f in ipairs(modules["orch.core"].sources) do sources[f] = true end
      assert.same(listing("ls src/*.c"), sources)
    end
  end)
end)

describe("installing", function()
  it("with luarocks make, offline, into a tree of its own", function()
    local tmp, src = scratch_copy()
    local tree = tmp .. "/tree"
    local built, out = sh(("cd %s && luarocks --lua-version 5.4 make --deps-mode=none "
      .. "rockspec/orch-scm-1.rockspec --tree %s"):format(q(src), q(tree)))
    assert(built, "luarocks make failed:\n" .. out)
    local _, paths = sh("luarocks --lua-version 5.4 --tree " .. q(tree) .. " path")
    local env = ("LUA_PATH=%s LUA_CPATH=%s"):format(q(assert(paths:match("LUA_PATH='([^']*)'"))),
      q(assert(paths:match("LUA_CPATH='([^']*)'"))))
    check_installed(env, env, tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4", tree .. "/bin/orch")
    local docs = listing(("ls %s/lib/luarocks/rocks-5.4/orch/scm-1/docs"):format(q(tree)))
    assert.truthy(docs["stopping.md"], "docs not installed")
  end)

  it("with make install into a prefix, and with DESTDIR staged; uninstall removes it", function()
    local tmp, src = scratch_copy()
    local prefix = tmp .. "/prefix"
    local ok, out = sh(("make -C %s install PREFIX=%s"):format(q(src), q(prefix)))
    assert(ok, "make install failed:\n" .. out)
    assert.not_matches("apt%-get", out)
    local lmod, cmod = prefix .. "/share/lua/5.4", prefix .. "/lib/lua/5.4"
    check_installed(("LUA_PATH=%s LUA_CPATH=%s"):format(q(lmod .. "/?.lua;" .. lmod .. "/?/init.lua;;"),
      q(cmod .. "/?.so;;")), CLEAN, lmod, cmod, prefix .. "/bin/orch")
    assert.truthy(listing(("ls %s/share/doc/orch"):format(q(prefix)))["LICENSE"])
    ok, out = sh(("make -C %s uninstall PREFIX=%s"):format(q(src), q(prefix)))
    assert(ok, out)
    assert.equal("", select(2, sh(("find %s -type f"):format(q(prefix)))))

    local stage = tmp .. "/stage"
    ok, out = sh(("make -C %s install PREFIX=/opt/orch DESTDIR=%s"):format(q(src), q(stage)))
    assert(ok, "make install DESTDIR failed:\n" .. out)
    local launcher = assert(io.open(stage .. "/opt/orch/bin/orch")):read("a")
    assert.matches('package.path = "/opt/orch/share/lua/5.4/?.lua;', launcher, 1, true)
    assert.truthy(io.open(stage .. "/opt/orch/lib/lua/5.4/orch/core.so"))
    assert.truthy(io.open(stage .. "/opt/orch/share/lua/5.4/orch/cli/run.lua"))
  end)
end)
