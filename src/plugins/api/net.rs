//! `vipd.http`: requests to allowed destinations, others through the guarded client.

use super::*;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, ctx: &Arc<Ctx>) -> mlua::Result<()> {
    let http = lua.create_table()?;
    // vipd.http
    for (path, method) in [
        ("http.request", None),
        ("http.get", Some("GET")),
        ("http.post", Some("POST")),
    ] {
        let c = ctx.clone();
        put(
            &http,
            path,
            lua.create_async_function(move |lua, args: mlua::MultiValue| {
                let c = c.clone();
                let spec = crate::plugins::http::Spec::from_lua(&lua, method, args);
                async move {
                    let mut spec = spec?;
                    c.doing_io(&format!("vipd.{path} {}", spec.describe()))?;
                    if let Some(name) = spec.signed_with() {
                        let secret = c.shared.webhook_secrets.get(name).ok_or_else(|| {
                            rt_err(format!(
                                "vipd.{path} {}: no webhook secret named {name:?} in plugins.webhook_secrets",
                                spec.describe()
                            ))
                        })?;
                        spec.sign(secret, c.host.now());
                    }
                    let allowed = c
                        .shared
                        .destinations
                        .check(spec.url())
                        .map_err(|e| rt_err(format!("vipd.{path} {}: {e}", spec.describe())))?;
                    let client = if allowed {
                        &c.host.http
                    } else {
                        &c.host.guarded
                    };
                    let reply = match &c.host.simulated {
                        Some(sim) => sim.answer(&spec),
                        None => crate::plugins::http::send(client, &spec)
                            .await
                            .map_err(rt_err)?,
                    };
                    reply.into_lua_table(&lua)
                }
            })?,
        )?;
    }

    vipd.set("http", http)?;
    Ok(())
}
