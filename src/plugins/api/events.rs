//! `vipd.on` and `vipd.every`: handlers and jobs, registered while loading.

use super::*;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, ctx: &Arc<Ctx>) -> mlua::Result<()> {
    // vipd.on / vipd.every
    let c = ctx.clone();
    put(
        vipd,
        "on",
        lua.create_function(move |_, (event, handler): (String, Function)| {
            c.registering(&format!("vipd.on({event:?})"))?;
            let kind = EventKind::lua_named(&event).ok_or_else(|| {
                let hint =
                    crate::config::error::closest(&event, EventKind::LUA.map(|k| k.as_str()))
                        .map(|s| format!("; did you mean {s:?}?"))
                        .unwrap_or_default();
                rt_err(format!("vipd.on({event:?}): no such event{hint}"))
            })?;
            c.shared
                .registry()
                .handlers
                .push((kind, c.plugin.clone(), handler));
            Ok(())
        })?,
    )?;
    let c = ctx.clone();
    put(vipd, "every", lua.create_function(move |_, (spec, job): (String, Function)| {
        c.registering(&format!("vipd.every({spec:?})"))?;
        let schedule = match HumanDuration::parse(&spec) {
            Ok(d) if d.0 >= Duration::from_secs(1) => Check::Every(d.0),
            Ok(_) => return Err(rt_err(format!("vipd.every({spec:?}): the interval must be at least 1s"))),
            Err(_) => Check::cron(&spec).map_err(|e| {
                rt_err(format!("vipd.every({spec:?}): neither an interval like \"5m\" nor a cron expression: {e}"))
            })?,
        };
        c.shared.registry().jobs.push(Job { plugin: c.plugin.clone(), spec, schedule, func: job });
        Ok(())
    })?)?;

    Ok(())
}
