//! `vipd.log`: lines in the daemon's log under the plugin's name.

use super::*;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, ctx: &Arc<Ctx>) -> mlua::Result<()> {
    let log = lua.create_table()?;
    // vipd.log (and print)
    use tracing::Level;
    for (path, level) in [
        ("log.debug", Level::DEBUG),
        ("log.info", Level::INFO),
        ("log.warn", Level::WARN),
        ("log.error", Level::ERROR),
    ] {
        let plugin = ctx.plugin.clone();
        put(
            &log,
            path,
            lua.create_function(move |lua, (msg, fields): (Value, Option<Value>)| {
                let msg = match msg {
                    Value::String(s) => s.to_string_lossy(),
                    other => other.to_string()?,
                };
                let fields = match fields {
                    Some(v @ Value::Table(_)) => {
                        Some(to_json(lua, v, "vipd.log fields")?.to_string())
                    }
                    _ => None,
                };
                // No `fields=""` on a line that gave none.
                let fields = fields.as_deref();
                let plugin = &*plugin;
                // tracing's macros want the level as a constant.
                match level {
                    Level::DEBUG => {
                        tracing::debug!(target: "vipd::plugin", plugin, fields, "{msg}")
                    }
                    Level::INFO => tracing::info!(target: "vipd::plugin", plugin, fields, "{msg}"),
                    Level::WARN => tracing::warn!(target: "vipd::plugin", plugin, fields, "{msg}"),
                    _ => tracing::error!(target: "vipd::plugin", plugin, fields, "{msg}"),
                }
                Ok(())
            })?,
        )?;
    }

    vipd.set("log", log)?;
    Ok(())
}
