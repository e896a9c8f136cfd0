-- orch: process orchestration for Lua 5.4 on a libev C core.
-- Build and install from a checkout (offline, nothing is downloaded):
--   luarocks --lua-version 5.4 make rockspec/orch-scm-1.rockspec
-- libev is found as an external dependency (Debian: libev-dev); point
-- LuaRocks elsewhere with LIBEV_DIR=... or LIBEV_INCDIR=... LIBEV_LIBDIR=...
rockspec_format = "3.0"
package = "orch"
version = "scm-1"

source = {
  url = "git+file://.",  -- `luarocks make` builds the checkout it is run in
}

description = {
  summary = "Process pools, supervisors, queues and signals for Lua, on libev",
  detailed = [[
orch runs Lua work in pre-forked worker processes with futures, groups and
failure policies, keeps long-running services under a supervisor with an
ordered start and shutdown, and handles signals inside its event loop, so
Ctrl-C stops the children in order instead of killing them mid-write.]],
  license = "MIT",
  labels = { "process", "pool", "supervisor", "libev" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

external_dependencies = {
  LIBEV = { header = "ev.h", library = "ev" },
}

-- The Lua modules: one entry per file of lua/orch/ (spec/90-install
-- checks that none is missing).
local lua_modules = {
  "errors", "future", "group", "log", "loop", "pool", "queue", "signal", "supervisor",
}

local modules = {
  orch = "lua/orch/init.lua",
  ["orch.core"] = {
    -- every file of src/*.c
    sources = {
      "src/alloc.c", "src/chan.c", "src/conn.c", "src/core.c", "src/dispatch.c",
      "src/loop.c", "src/proc.c", "src/sig.c", "src/task.c", "src/wbuf.c",
      "src/wire.c", "src/worker.c",
    },
    defines = { "_GNU_SOURCE" },
    incdirs = { "src", "$(LIBEV_INCDIR)" },
    libdirs = { "$(LIBEV_LIBDIR)" },
    libraries = { "ev" },
  },
}
for i = 1, #lua_modules do  -- (a rockspec runs without ipairs)
  modules["orch." .. lua_modules[i]] = "lua/orch/" .. lua_modules[i] .. ".lua"
end

build = {
  type = "builtin",
  modules = modules,
  install = {
    bin = { orch = "scripts/orch" },  -- the `orch run FILE.lua` command
  },
}
