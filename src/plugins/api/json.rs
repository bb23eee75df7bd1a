//! `vipd.json`: encode and decode.

use super::*;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, _: &Arc<Ctx>) -> mlua::Result<()> {
    let json = lua.create_table()?;
    // vipd.json
    put(
        &json,
        "json.encode",
        lua.create_function(|lua, v: Value| {
            let j = to_json(lua, v, "vipd.json.encode")?;
            serde_json::to_string(&j).map_err(|e| rt_err(format!("vipd.json.encode: {e}")))
        })?,
    )?;
    put(
        &json,
        "json.decode",
        lua.create_function(|lua, text: mlua::String| {
            let j: serde_json::Value = serde_json::from_slice(&text.as_bytes()).map_err(|e| {
                let shown: String = String::from_utf8_lossy(&text.as_bytes())
                    .chars()
                    .take(60)
                    .collect();
                rt_err(format!("vipd.json.decode({shown:?}…): {e}"))
            })?;
            lua.to_value(&j)
        })?,
    )?;
    json.set("null", lua.null())?;

    vipd.set("json", json)?;
    Ok(())
}
