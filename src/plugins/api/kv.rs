//! `vipd.kv`: the plugin's own durable keys, under its quota.

use super::*;

use crate::units::HumanDuration;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, ctx: &Arc<Ctx>) -> mlua::Result<()> {
    let kv = lua.create_table()?;
    // vipd.kv
    let c = ctx.clone();
    put(
        &kv,
        "kv.get",
        lua.create_function(move |lua, key: String| {
            let ledger = c.ledger(&format!("vipd.kv.get({key:?})"))?;
            match ledger.kv_get(&c.plugin, &key, crate::model::now_unix()) {
                Ok(Some(v)) => lua.to_value(&v),
                Ok(None) => Ok(Value::Nil),
                Err(e) => Err(rt_err(format!("vipd.kv.get({key:?}): {e}"))),
            }
        })?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.set",
        lua.create_function(
            move |lua, (key, value, opts): (String, Value, Option<Table>)| {
                let what = format!("vipd.kv.set({key:?})");
                let ledger = c.ledger(&what)?;
                let ttl = ttl_of(opts.as_ref(), &what)?;
                let value = to_json(lua, value, &what)?;
                ledger
                    .kv_set(
                        &c.plugin,
                        &key,
                        value,
                        ttl,
                        crate::model::now_unix(),
                        c.kv_quota,
                    )
                    .map_err(|e| rt_err(format!("{what}: {e}")))
            },
        )?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.del",
        lua.create_function(move |_, key: String| {
            let what = format!("vipd.kv.del({key:?})");
            c.ledger(&what)?
                .kv_del(&c.plugin, &key, crate::model::now_unix())
                .map_err(|e| rt_err(format!("{what}: {e}")))
        })?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.incr",
        lua.create_function(
            move |_, (key, by, opts): (String, Option<i64>, Option<Table>)| {
                let what = format!("vipd.kv.incr({key:?})");
                let ttl = ttl_of(opts.as_ref(), &what)?;
                c.ledger(&what)?
                    .kv_incr(
                        &c.plugin,
                        &key,
                        by.unwrap_or(1),
                        ttl,
                        crate::model::now_unix(),
                        c.kv_quota,
                    )
                    .map_err(|e| rt_err(format!("{what}: {e}")))
            },
        )?,
    )?;
    let c = ctx.clone();
    put(
        &kv,
        "kv.ttl",
        lua.create_function(move |_, key: String| {
            let what = format!("vipd.kv.ttl({key:?})");
            match c
                .ledger(&what)?
                .kv_ttl(&c.plugin, &key, crate::model::now_unix())
            {
                Ok(None) => Ok(None),
                Ok(Some(None)) => Ok(Some(-1)),
                Ok(Some(Some(secs))) => Ok(Some(secs)),
                Err(e) => Err(rt_err(format!("{what}: {e}"))),
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
