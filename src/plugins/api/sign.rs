//! `vipd.sign`: the vendor's signature, with a secret the plugin passes or a provider's the operator allowed (`plugins.sign_with`).

use super::*;

/// Adds this area to the `vipd` table.
pub(super) fn register(lua: &Lua, vipd: &Table, ctx: &Arc<Ctx>) -> mlua::Result<()> {
    // vipd.sign
    let c = ctx.clone();
    put(vipd, "sign", lua.create_function(move |_, (params, opts): (Table, Table)| {
        let mut pairs = Vec::new();
        for pair in params.pairs::<String, Value>() {
            let (k, v) = pair?;
            let v = match v {
                Value::String(s) => s.to_str()?.to_owned(),
                Value::Integer(i) => i.to_string(),
                Value::Number(n) => n.to_string(),
                other => return Err(rt_err(format!("vipd.sign: parameter {k:?} is a {}, not a string or number", other.type_name()))),
            };
            pairs.push((k, v));
        }
        let params = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let secret: Option<mlua::String> = opts.get("secret")?;
        let provider: Option<String> = opts.get("provider")?;
        match (secret, provider) {
            (Some(secret), None) => Ok(crate::model::sign::md5_sign(params, &secret.to_str()?)),
            (None, Some(p)) => {
                let signer = c.shared.signers.get(&p).ok_or_else(|| {
                    rt_err(format!("vipd.sign{{provider = {p:?}}}: no recharge provider of that name"))
                })?.as_ref().ok_or_else(|| {
                    // A plugin that can sign with a provider's secret can
                    // forge that vendor's callbacks.
                    rt_err(format!("vipd.sign{{provider = {p:?}}}: plugins may not sign with this provider's secret; list it in plugins.sign_with to allow it"))
                })?;
                if signer.mode() != crate::model::sign::SignMode::Md5 {
                    return Err(rt_err(format!(
                        "vipd.sign{{provider = {p:?}}}: the provider signs in hash mode, where the signature is the secret itself; it is not given to plugins"
                    )));
                }
                Ok(signer.sign(params))
            }
            _ => Err(rt_err("vipd.sign: give exactly one of opts.provider and opts.secret")),
        }
    })?)?;

    Ok(())
}
