-- orch 0.1.0: process orchestration for Lua 5.4 on a libev C core (Linux only).
--   luarocks --lua-version 5.4 install orch 0.1.0-1
-- From a checkout of the v0.1.0 tag (offline, nothing is downloaded):
--   luarocks --lua-version 5.4 make --deps-mode=none rockspec/orch-0.1.0-1.rockspec
-- (--deps-mode=none when argparse and lua-cjson come from Debian's
-- lua-argparse and lua-cjson: LuaRocks does not see apt's packages; without
-- it LuaRocks fetches them). libev is found as an external dependency
-- (Debian: libev-dev); point LuaRocks elsewhere with LIBEV_DIR=... or
-- LIBEV_INCDIR=... LIBEV_LIBDIR=...
-- rockspec/orch-scm-1.rockspec is the same for the development tree.
rockspec_format = "3.0"
package = "orch"
version = "0.1.0-1"

source = {
  url = "git+https://github.com/orch-lua/orch.git",
  tag = "v0.1.0",
}

description = {
  summary = "Process pools, supervisors, queues and signals for Lua, on libev",
  detailed = [[
orch runs Lua work in pre-forked worker processes with futures, groups and
failure policies, keeps long-running services under a supervisor with an
ordered start and shutdown, and handles signals inside its event loop, so
Ctrl-C stops the children in order instead of killing them mid-write.
Linux only (prctl, /proc, process groups).]],
  homepage = "https://github.com/orch-lua/orch",
  issues_url = "https://github.com/orch-lua/orch/issues",
  license = "MIT",
  labels = { "process", "pool", "supervisor", "libev" },
}

supported_platforms = { "linux" }

dependencies = {
  "lua >= 5.4, < 5.5",
  "argparse >= 0.7",    -- the orch command
  "lua-cjson >= 2.1",   -- orch.log.json
}

external_dependencies = {
  LIBEV = { header = "ev.h", library = "ev" },
  HIREDIS = { header = "hiredis/adapters/libev.h", library = "hiredis" },  -- the broker's client
}

-- The Lua modules: one entry per file of lua/orch/ and its folders
-- (spec/90-install checks that none is missing).
local lua_modules = {
  "backlog",
  "broker.dispatch",
  "broker.feed",
  "broker.leases",
  "broker.node",
  "broker.redis",
  "broker.stream",
  "busted.dispatch",
  "busted.frame",
  "busted.recorder",
  "busted.replay",
  "busted.run",
  "busted.schedule",
  "busted.spec_process",
  "busted.suite",
  "check",
  "child",
  "cli.busted",
  "cli.ctl",
  "cli.remote",
  "cli.run",
  "cli.top",
  "cli.usage",
  "cli.worker",
  "control",
  "deps",
  "deque",
  "dispatch",
  "errors",
  "future",
  "group",
  "joblog",
  "log",
  "loop",
  "map",
  "party",
  "pool",
  "progress",
  "queue",
  "restarts",
  "services",
  "signal",
  "status",
  "supervisor",
  "workers",
}

local modules = {
  orch = "lua/orch/init.lua",
  ["orch.cli"] = "lua/orch/cli/init.lua",
  ["orch.core"] = {
    -- every file of src/*.c
    sources = {
      "src/alloc.c", "src/alloc_big.c", "src/array.c", "src/chan.c", "src/chan_enc.c", "src/chunk.c",
      "src/conn.c", "src/control.c", "src/control_client.c", "src/core.c",
      "src/dispatch.c", "src/exit.c", "src/heap.c", "src/joblog.c", "src/lane.c", "src/limits.c",
      "src/loop.c", "src/memfd.c", "src/proc.c", "src/redis.c", "src/sha256.c", "src/sig.c",
      "src/spin.c", "src/task.c", "src/tty.c", "src/wbuf.c", "src/wire.c",
      "src/wire_dec.c", "src/wire_enc.c", "src/wire_path.c", "src/worker.c",
    },
    defines = { "_GNU_SOURCE" },
    incdirs = { "src", "$(LIBEV_INCDIR)", "$(HIREDIS_INCDIR)" },
    libdirs = { "$(LIBEV_LIBDIR)", "$(HIREDIS_LIBDIR)" },
    libraries = { "ev", "hiredis" },
  },
}
for i = 1, #lua_modules do  -- (a rockspec runs without ipairs)
  local name = lua_modules[i]
  modules["orch." .. name] = "lua/orch/" .. name:gsub("%.", "/") .. ".lua"
end

build = {
  type = "builtin",
  modules = modules,
  install = {
    bin = { orch = "scripts/orch" },  -- the orch command
  },
  copy_directories = { "docs" },      -- the guides and the API reference
}
