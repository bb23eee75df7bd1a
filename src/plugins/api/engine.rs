//! `vipd.vip_info` and `vipd.recharge`: the engine, reached through the host (a recharge is a manual order, under the manual budget).

use super::*;
use crate::engine::ManualOrder;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, ctx: &Arc<Ctx>) -> mlua::Result<()> {
    // vipd.vip_info / vipd.recharge
    let c = ctx.clone();
    put(
        vipd,
        "vip_info",
        lua.create_async_function(move |lua, account: String| {
            let c = c.clone();
            async move {
                let engine = c.engine(&format!("vipd.vip_info({account:?})"))?;
                let info = engine
                    .plugin_vip_info(&account)
                    .await
                    .map_err(|e| rt_err(format!("vipd.vip_info({account:?}): {e}")))?;
                lua_value(&lua, &info)
            }
        })?,
    )?;
    let c = ctx.clone();
    put(vipd, "recharge", lua.create_async_function(move |lua, req: Table| {
        let c = c.clone();
        let args: mlua::Result<(String, String, bool, bool, Option<String>)> = (|| {
            Ok((
                req.get("account")?,
                req.get("product")?,
                req.get::<Option<bool>>("dry_run")?.unwrap_or(false),
                req.get::<Option<bool>>("ahead")?.unwrap_or(false),
                req.get::<Option<String>>("reason")?,
            ))
        })();
        async move {
            let (account, product, dry_run, ahead, reason) = args.map_err(|e| {
                rt_err(format!(
                    "vipd.recharge: needs {{account = string, product = string, dry_run = boolean?, ahead = boolean?, reason = string?}}: {e}"
                ))
            })?;
            let by = format!("plugin {}", c.plugin);
            let reason = reason.unwrap_or_else(|| "asked by the plugin".to_owned());
            let what = format!("vipd.recharge{{account = {account:?}, product = {product:?}}}");
            let engine = c.engine(&what)?;
            let (acct, prod) = (account.clone(), product.clone());
            let message = c
                .on_daemon(async move {
                    let order = ManualOrder {
                        account: &acct,
                        product: &prod,
                        dry_run,
                        ahead,
                        who: crate::engine::Operator {
                            by: &by,
                            why: &reason,
                        },
                    };
                    engine
                        .manual_recharge(order)
                        .await
                        .map_err(|e| rt_err(format!("{what}: {e}")))
                })
                .await?;
            tracing::info!(plugin = %c.plugin, account, product, dry_run, ahead, "{message}");
            let out = lua.create_table()?;
            out.set("ok", true)?;
            out.set("message", message)?;
            Ok(out)
        }
    })?)?;

    Ok(())
}
