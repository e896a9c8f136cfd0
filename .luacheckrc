-- luacheck settings (make lint): Lua 5.4; specs run under busted and share
-- the helper table orch_spec (spec/helper.lua).
std = "lua54"
max_line_length = 160
files["spec"] = { std = "+busted", read_globals = { "orch_spec" } }
-- a <close> variable is used by going out of scope
ignore = { "211/t", "211/cleanup" }
files["bench/busted_suite"] = { std = "+busted" }
