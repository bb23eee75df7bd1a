//! `vipd.config`: the configuration as plugins see it, built lazily.

use super::*;

/// The configuration as plugins see it (`vipd.config`): names, tags,
/// rules, products; no secrets, tokens or openids. Each top-level key is
/// turned into Lua only when a plugin first reads it: with 10,000 accounts
/// `accounts` and the rules' account lists are a few MB of Lua tables,
/// which a plugin that never looks should not cost.
const CONFIG_KEYS: &[&str] = &[
    "timezone",
    "dry_run",
    "accounts",
    "rules",
    "products",
    "providers",
];

#[derive(Serialize)]
struct AccountView<'a> {
    name: &'a str,
    qq_number: &'a str,
    tags: &'a [String],
    provider: &'a str,
}

#[derive(Serialize)]
struct RuleView<'a> {
    name: &'a str,
    membership: &'static str,
    product: &'a str,
    accounts: Vec<&'a str>,
    renew_before: u64,
    per_day: Option<f64>,
    per_month: Option<f64>,
}

#[derive(Serialize)]
struct ProductView<'a> {
    provider: &'a str,
    extends: &'static str,
    adds: u64,
    max_price: f64,
}

/// The value of `vipd.config[key]`, built from `config`.
fn config_part(lua: &Lua, config: &Config, key: &str) -> mlua::Result<Value> {
    match key {
        "timezone" => api::lua_value(lua, &config.daemon.timezone.name()),
        "dry_run" => Ok(Value::Boolean(config.daemon.dry_run)),
        "accounts" => {
            let accounts: Vec<_> = config
                .accounts
                .iter()
                .map(|a| AccountView {
                    name: &a.name,
                    qq_number: &a.qq_number,
                    tags: &a.tags,
                    provider: &a.provider,
                })
                .collect();
            api::lua_value(lua, &accounts)
        }
        "rules" => {
            let rules: Vec<_> = config
                .rules
                .iter()
                .map(|r| RuleView {
                    name: &r.name,
                    membership: r.membership.as_str(),
                    product: &r.product.name,
                    accounts: r.accounts.iter().map(|a| &**a).collect(),
                    renew_before: r.renew_before.as_secs(),
                    per_day: r.budget.per_day.map(|f| f.as_yuan_f64()),
                    per_month: r.budget.per_month.map(|f| f.as_yuan_f64()),
                })
                .collect();
            api::lua_value(lua, &rules)
        }
        "products" => {
            let products: BTreeMap<_, _> = config
                .products
                .iter()
                .map(|(n, p)| {
                    let view = ProductView {
                        provider: &p.provider,
                        extends: p.extends.as_str(),
                        adds: p.adds.as_secs(),
                        max_price: p.max_price.as_yuan_f64(),
                    };
                    (n.as_str(), view)
                })
                .collect();
            api::lua_value(lua, &products)
        }
        "providers" => {
            let providers: BTreeMap<_, _> = config
                .providers
                .iter()
                .map(|(n, p)| {
                    let kind = match p {
                        Provider::QqConnect(_) => "qq_connect",
                        Provider::Recharge(_) => "recharge",
                    };
                    (n.as_str(), kind)
                })
                .collect();
            api::lua_value(lua, &providers)
        }
        _ => Ok(Value::Nil),
    }
}

/// `vipd.config`: a read-only view whose top-level keys are built by
/// [`config_part`] on first access (the view holds the generation's
/// `Arc<Config>`, so it copies nothing up front).
pub(super) fn config_view(
    lua: &Lua,
    freeze: &Function,
    config: &Arc<Config>,
) -> mlua::Result<Table> {
    let keys = lua.create_table()?;
    for key in CONFIG_KEYS {
        keys.set(*key, true)?;
    }
    let config = config.clone();
    let part = lua.create_function(move |lua, key: String| config_part(lua, &config, &key))?;
    freeze.call((keys, "vipd.config", part))
}
