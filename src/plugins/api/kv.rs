//! `vipd.kv`: the plugin's own durable keys, under its quota, in the
//! daemon's store (so shared by every node that shares the store).
//!
//! The functions are asynchronous: a store on the network is waited for
//! without blocking the plugin's thread (like every host call, they are
//! refused while the plugin loads).

use super::*;

use crate::ledger::kv::Ttl;
use crate::units::HumanDuration;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, ctx: &Arc<Ctx>) -> mlua::Result<()> {
    let kv = lua.create_table()?;
    // vipd.kv
    let c = ctx.clone();
    put(
        &kv,
        "kv.get",
        lua.create_async_function(move |lua, key: String| {
            let c = c.clone();
            async move {
                let what = format!("vipd.kv.get({key:?})");
                let store = c.store(&what)?;
                match store.kv_get(&c.plugin, &key, c.host.now()).await {
                    Ok(Some(v)) => lua.to_value(&v),
                    Ok(None) => Ok(Value::Nil),
                    Err(e) => Err(rt_err(format!("{what}: {e}"))),
                }
            }
        })?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.set",
        lua.create_async_function(
            move |lua, (key, value, opts): (String, Value, Option<Table>)| {
                let c = c.clone();
                let what = format!("vipd.kv.set({key:?})");
                let args = ttl_of(opts.as_ref(), &what)
                    .and_then(|ttl| Ok((ttl, to_json(&lua, value, &what)?)));
                async move {
                    let (ttl, value) = args?;
                    c.store(&what)?
                        .kv_set(&c.plugin, &key, value, ttl, c.host.now(), c.kv_quota)
                        .await
                        .map_err(|e| rt_err(format!("{what}: {e}")))
                }
            },
        )?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.del",
        lua.create_async_function(move |_, key: String| {
            let c = c.clone();
            async move {
                let what = format!("vipd.kv.del({key:?})");
                c.store(&what)?
                    .kv_del(&c.plugin, &key, c.host.now())
                    .await
                    .map_err(|e| rt_err(format!("{what}: {e}")))
            }
        })?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.incr",
        lua.create_async_function(
            move |_, (key, by, opts): (String, Option<i64>, Option<Table>)| {
                let c = c.clone();
                let what = format!("vipd.kv.incr({key:?})");
                let ttl = ttl_of(opts.as_ref(), &what);
                async move {
                    let ttl = ttl?;
                    c.store(&what)?
                        .kv_incr(
                            &c.plugin,
                            &key,
                            by.unwrap_or(1),
                            ttl,
                            c.host.now(),
                            c.kv_quota,
                        )
                        .await
                        .map_err(|e| rt_err(format!("{what}: {e}")))
                }
            },
        )?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.ttl",
        lua.create_async_function(move |_, key: String| {
            let c = c.clone();
            async move {
                let what = format!("vipd.kv.ttl({key:?})");
                match c.store(&what)?.kv_ttl(&c.plugin, &key, c.host.now()).await {
                    Ok(Ttl::Absent) => Ok(None),
                    Ok(Ttl::Forever) => Ok(Some(-1)),
                    Ok(Ttl::Left(secs)) => Ok(Some(secs)),
                    Err(e) => Err(rt_err(format!("{what}: {e}"))),
                }
            }
        })?,
    )?;

    vipd.set("kv", kv)?;
    Ok(())
}

fn ttl_of(opts: Option<&Table>, what: &str) -> mlua::Result<Option<i64>> {
    let Some(opts) = opts else { return Ok(None) };
    match opts.get::<Value>("ttl")? {
        Value::Nil => Ok(None),
        Value::Integer(n) if n > 0 => Ok(Some(n)),
        Value::Number(n) if n >= 1.0 => Ok(Some(n as i64)),
        Value::String(s) => HumanDuration::parse(&s.to_str()?)
            .map(|d| Some(d.0.as_secs() as i64))
            .map_err(|e| rt_err(format!("{what}: ttl: {e}"))),
        other => Err(rt_err(format!(
            "{what}: ttl must be seconds (> 0) or a duration like \"1h\", not {other:?}"
        ))),
    }
}
