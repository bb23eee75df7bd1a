//! The sandbox: what a plugin's code can reach.
//!
//! The state opens only `coroutine`, `table`, `string`, `utf8`, `math` and
//! `os` (cut down to `time`, `date`, `clock`); `io`, `debug` and `package`
//! are never opened. From the base library `dofile`, `loadfile` and
//! `rawset` are removed (the last so that no plugin can write through the
//! read-only `vipd.config`), `load` only takes text, `collectgarbage`
//! cannot stop the collector, and `string.dump` is gone. `require` finds
//! modules only inside `scripts_dir`.
//!
//! Each plugin gets its own global table (`_ENV`) and its own copies of the
//! library tables, so plugins cannot see or clobber each other's globals or
//! library functions; the string metatable is hidden (`getmetatable("")`
//! is `"string"`). `setmetatable` refuses `__gc`: finalizers would run
//! outside every limit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlua::{ChunkMode, Function, Lua, LuaOptions, StdLib, Table, Value};

/// Base-library functions a plugin may use, as they are.
const BASE: &[&str] = &[
    "assert",
    "error",
    "getmetatable",
    "ipairs",
    "next",
    "pairs",
    "pcall",
    "rawequal",
    "rawget",
    "rawlen",
    "select",
    "setmetatable",
    "tonumber",
    "tostring",
    "type",
    "xpcall",
    "_VERSION",
];

/// Libraries a plugin may use.
const LIBS: &[&str] = &["coroutine", "table", "string", "utf8", "math"];

/// Lua helpers defined once per state: text-only `load`, a safe
/// `collectgarbage`, and `freeze` for read-only views.
const PRELUDE: &str = r#"
local limit_hit = ...
local raw_load, raw_gc, error, type, next, setmetatable, tostring, rawget =
      load, collectgarbage, error, type, next, setmetatable, tostring, rawget
local raw_pcall, raw_xpcall, raw_resume, pack, unpack =
      pcall, xpcall, coroutine.resume, table.pack, table.unpack
local helpers = {}
-- A limit error must reach the handler's top: once the call has passed a
-- limit, pcall, xpcall and coroutine.resume pass the error on instead of
-- returning it (else `while true do pcall(loop) end` would never end).
local function pass_limits(r)
  if not r[1] and limit_hit() then error(r[2], 0) end
  return unpack(r, 1, r.n)
end
function helpers.pcall(...) return pass_limits(pack(raw_pcall(...))) end
function helpers.xpcall(...) return pass_limits(pack(raw_xpcall(...))) end
function helpers.resume(...) return pass_limits(pack(raw_resume(...))) end
function helpers.load_for(env)
  return function(chunk, name, _mode, e)
    return raw_load(chunk, name, "t", e or env)
  end
end
-- Finalizers run when the collector decides, outside every handler and so
-- outside every limit: a looping `__gc` would hang the daemon (and
-- `vipd check`). Lua 5.4 marks an object for finalization only if its
-- metatable has `__gc` when it is set, so refusing such metatables here is
-- enough (plugins cannot make userdata, and `debug` is never opened).
function helpers.setmetatable(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: finalizers (__gc) are not allowed in a plugin; they would run outside every limit", 2)
  end
  return setmetatable(t, mt)
end
local gc_ok = { collect = true, count = true, step = true, isrunning = true }
function helpers.collectgarbage(opt, ...)
  opt = opt or "collect"
  if not gc_ok[opt] then
    error("collectgarbage(\"" .. tostring(opt) .. "\") is not allowed in a plugin", 2)
  end
  return raw_gc(opt, ...)
end
-- A read-only view of `t`: nested tables are wrapped when first reached,
-- so a view of 10,000 accounts costs nothing until a plugin looks. With
-- `part`, `t` only names the keys (key -> true) and `part(key)` builds a
-- key's value the first time it is read.
local function freeze(t, path, part)
  if type(t) ~= "table" then return t end
  local views, built = {}, {}
  local function raw(k)
    if part == nil then return t[k] end
    if not t[k] then return nil end
    local v = built[k]
    if v == nil then
      v = part(k)
      built[k] = v
    end
    return v
  end
  local function get(k)
    local v = raw(k)
    if type(v) ~= "table" then return v end
    local view = views[k]
    if view == nil then
      view = freeze(v, path .. "." .. tostring(k))
      views[k] = view
    end
    return view
  end
  return setmetatable({}, {
    __index = function(_, k) return get(k) end,
    __newindex = function(_, k)
      error(path .. " is read-only (tried to set " .. tostring(k) .. ")", 2)
    end,
    __len = function() return part == nil and #t or 0 end,
    __pairs = function()
      return function(_, k)
        local nk = next(t, k)
        if nk == nil then return nil end
        return nk, get(nk)
      end, nil, nil
    end,
    __metatable = "read-only",
  })
end
helpers.freeze = freeze
return helpers
"#;

/// A fresh sandboxed state: safe libraries only, the limits hook installed,
/// the memory cap set.
pub(crate) fn new_state(memory: usize) -> mlua::Result<(Lua, Table)> {
    let lua = Lua::new_with(
        StdLib::COROUTINE
            | StdLib::TABLE
            | StdLib::STRING
            | StdLib::UTF8
            | StdLib::MATH
            | StdLib::OS,
        LuaOptions::default(),
    )?;
    super::limits::install(&lua)?;
    let globals = lua.globals();
    let string: Table = globals.get("string")?;
    string.set("dump", Value::Nil)?;
    super::pattern::install(&lua, &string)?;
    let os: Table = globals.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "date", "clock"] {
        safe_os.set(name, os.get::<Function>(name)?)?;
    }
    // The string metatable is shared by every string of the state: hidden,
    // so no plugin can change what `("x"):format()` means for the others.
    lua.load(r#"getmetatable("").__metatable = "string""#)
        .set_name("=vipd")
        .exec()?;
    let limit_hit = lua.create_function(|_, ()| Ok(super::limits::current_limit_hit()))?;
    let helpers: Table = lua.load(PRELUDE).set_name("=vipd").call(limit_hit)?;
    let coroutine: Table = globals.get("coroutine")?;
    coroutine.set("resume", helpers.get::<Function>("resume")?)?;
    let base = lua.create_table()?;
    for name in BASE.iter().chain(LIBS) {
        base.set(*name, globals.get::<Value>(*name)?)?;
    }
    base.set("os", safe_os)?;
    base.set("collectgarbage", helpers.get::<Function>("collectgarbage")?)?;
    base.set("pcall", helpers.get::<Function>("pcall")?)?;
    base.set("xpcall", helpers.get::<Function>("xpcall")?)?;
    base.set("setmetatable", helpers.get::<Function>("setmetatable")?)?;
    lua.set_memory_limit(memory)?;
    Ok((lua, {
        helpers.set("base", base)?;
        helpers
    }))
}

/// The global table of one plugin: the safe base, its own `vipd`, `load`,
/// `require` and `print`.
pub(crate) fn plugin_env(
    lua: &Lua,
    helpers: &Table,
    vipd: Table,
    require: Function,
) -> mlua::Result<Table> {
    let base: Table = helpers.get("base")?;
    let env = lua.create_table()?;
    for pair in base.pairs::<Value, Value>() {
        let (k, v) = pair?;
        // Library tables are copied, so that one plugin replacing
        // `string.format` changes only its own.
        let v = match v {
            Value::Table(lib) => {
                let copy = lua.create_table()?;
                for f in lib.pairs::<Value, Value>() {
                    let (name, f) = f?;
                    copy.raw_set(name, f)?;
                }
                Value::Table(copy)
            }
            other => other,
        };
        env.raw_set(k, v)?;
    }
    let load_for: Function = helpers.get("load_for")?;
    env.raw_set("load", load_for.call::<Function>(env.clone())?)?;
    let log: Table = vipd.get("log")?;
    env.raw_set("print", log.get::<Function>("info")?)?;
    env.raw_set("vipd", vipd)?;
    env.raw_set("require", require)?;
    env.raw_set("_G", env.clone())?;
    Ok(env)
}

/// Whether `name` is a module name `require` accepts: dotted words.
fn valid_module(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Where module `name` lives inside `scripts_dir`, if it does.
pub(crate) fn module_path(scripts_dir: &Path, name: &str) -> Result<PathBuf, String> {
    if !valid_module(name) {
        return Err(format!(
            "require({name:?}): a module name is dotted words (letters, digits, _ and -), found under scripts_dir"
        ));
    }
    let rel: PathBuf = name.split('.').collect();
    let root = scripts_dir.canonicalize().map_err(|e| {
        format!(
            "require({name:?}): scripts_dir {}: {e}",
            scripts_dir.display()
        )
    })?;
    for candidate in [rel.with_extension("lua"), rel.join("init.lua")] {
        let path = root.join(&candidate);
        if let Ok(real) = path.canonicalize() {
            // A symlink must not lead out of scripts_dir.
            if !real.starts_with(&root) {
                return Err(format!(
                    "require({name:?}): {} leads outside scripts_dir",
                    candidate.display()
                ));
            }
            return Ok(real);
        }
    }
    Err(format!(
        "require({name:?}): no {} or {} in {}",
        rel.with_extension("lua").display(),
        rel.join("init.lua").display(),
        scripts_dir.display()
    ))
}

/// `require` for one plugin: modules run in the plugin's environment and
/// are cached per plugin.
pub(crate) fn require_fn(
    lua: &Lua,
    scripts_dir: Arc<Path>,
    env_slot: Table,
) -> mlua::Result<Function> {
    let loaded = lua.create_table()?;
    lua.create_function(move |lua, name: String| {
        match loaded.get::<Value>(name.as_str())? {
            Value::Nil => {}
            Value::Boolean(false) => {
                return Err(mlua::Error::RuntimeError(format!(
                    "require({name:?}): circular require"
                )));
            }
            v => return Ok(v),
        }
        let path = module_path(&scripts_dir, &name).map_err(mlua::Error::RuntimeError)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| mlua::Error::RuntimeError(format!("require({name:?}): {e}")))?;
        let env: Table = env_slot.get("env")?;
        let chunk_name = path
            .strip_prefix(scripts_dir.canonicalize().unwrap_or_default())
            .unwrap_or(&path)
            .display()
            .to_string();
        loaded.set(name.as_str(), false)?;
        let result = lua
            .load(text)
            .set_name(format!("@{chunk_name}"))
            .set_mode(ChunkMode::Text)
            .set_environment(env)
            .call::<Value>(name.as_str());
        let value = match result {
            Ok(Value::Nil) => Value::Boolean(true),
            Ok(v) => v,
            Err(e) => {
                loaded.set(name.as_str(), Value::Nil)?;
                return Err(e);
            }
        };
        loaded.set(name.as_str(), value.clone())?;
        Ok(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_stay_inside_scripts_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/chat.lua"), "return {}").unwrap();
        assert!(module_path(dir.path(), "lib.chat").is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "lib..chat",
            "",
            "a/b",
            "lib.chat.lua/x",
        ] {
            assert!(module_path(dir.path(), bad).is_err(), "{bad:?} accepted");
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.lua"), "return 1").unwrap();
        std::os::unix::fs::symlink(outside.path().join("evil.lua"), dir.path().join("evil.lua"))
            .unwrap();
        let e = module_path(dir.path(), "evil").unwrap_err();
        assert!(e.contains("outside scripts_dir"), "{e}");
    }
}
