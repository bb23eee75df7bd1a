-- luacheck configuration for vipd plugins (scripts/ and examples/plugins/):
-- `luacheck scripts examples/plugins` (run by .ci/run).
std = "lua54"
-- The host API each plugin sees (README, "Lua plugins"); plugins read it,
-- never assign it.
read_globals = { "vipd" }
-- The type declarations are LuaLS's, not plugin code.
exclude_files = { "scripts/types/**" }
max_line_length = 120
