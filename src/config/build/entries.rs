//! The builder's entries: providers, products, accounts and the sandbox's
//! settings, each checked against the others it names.

use std::collections::BTreeMap;

use super::*;

impl Builder<'_> {
    pub(super) fn providers(
        &mut self,
        raw: BTreeMap<String, raw::RawProvider>,
    ) -> BTreeMap<String, Provider> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let subject = format!("provider {name}");
            let at = |key: &'static str| ["providers", name.as_str(), key];
            let provider = match p {
                raw::RawProvider::QqConnect(q) => Provider::QqConnect(QqConnectProvider {
                    base_url: self.url(&at("base_url"), &subject, &q.base_url),
                    oauth_consumer_key: q.oauth_consumer_key,
                    client_secret: q
                        .client_secret
                        .map(|raw| self.secret(&at("client_secret"), &subject, &raw)),
                    timeout: q
                        .timeout
                        .map_or(Duration::from_secs(10), HumanDuration::get),
                    rate_limit: q.rate_limit,
                    format: q.format,
                    name: name.clone(),
                }),
                raw::RawProvider::Recharge(r) => {
                    let secret = self.secret(&at("secret"), &subject, &r.secret);
                    if r.max_in_flight == Some(0) {
                        self.error(
                            &at("max_in_flight"),
                            format!("{subject}: max_in_flight must be at least 1"),
                        );
                    }
                    let cb = r.callback;
                    let defaults = CallbackMapping::default();
                    Provider::Recharge(RechargeProvider {
                        base_url: self.url(&at("base_url"), &subject, &r.base_url),
                        appid: r.appid,
                        secret,
                        sign_mode: r.sign_mode,
                        method: r.method,
                        debug: r.debug,
                        timeout: r
                            .timeout
                            .map_or(Duration::from_secs(15), HumanDuration::get),
                        rate_limit: r.rate_limit,
                        max_in_flight: r.max_in_flight.unwrap_or(8).max(1),
                        target_param: r.target_param.unwrap_or_else(|| "qq_number".into()),
                        callback: CallbackMapping {
                            order_field: cb.order_field.unwrap_or(defaults.order_field),
                            status_field: cb.status_field.unwrap_or(defaults.status_field),
                            sign_field: cb.sign_field.unwrap_or(defaults.sign_field),
                            price_field: cb.price_field.unwrap_or(defaults.price_field),
                            success_values: cb.success_values.unwrap_or(defaults.success_values),
                            failure_values: cb.failure_values.unwrap_or(defaults.failure_values),
                            reply: cb.reply.unwrap_or(defaults.reply),
                            time_field: cb.time_field.unwrap_or(defaults.time_field),
                            max_age: cb.max_age.map_or(defaults.max_age, HumanDuration::get),
                            within: cb.within.map_or(defaults.within, HumanDuration::get),
                        },
                        name: name.clone(),
                    })
                }
            };
            out.insert(name, provider);
        }
        out
    }

    pub(super) fn products(
        &mut self,
        raw: BTreeMap<String, raw::RawProduct>,
        providers: &BTreeMap<String, Provider>,
    ) -> BTreeMap<String, Arc<Product>> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let subject = format!("product {name}");
            let at = |key: &'static str| ["products", name.as_str(), key];
            match providers.get(&p.provider) {
                Some(Provider::Recharge(_)) => {}
                Some(Provider::QqConnect(_)) => self.error(
                    &at("provider"),
                    format!("{subject}: provider {} is a qq_connect provider; products need kind: recharge", p.provider),
                ),
                None => {
                    let hint = error::closest(&p.provider, providers.keys().map(String::as_str))
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    self.error(&at("provider"), format!("{subject}: no provider named {}{hint}", p.provider));
                }
            }
            if !p.path.starts_with('/') {
                self.error(
                    &at("path"),
                    format!("{subject}: path {:?} must start with /", p.path),
                );
            }
            if p.adds.get().is_zero() {
                self.error(
                    &at("adds"),
                    format!("{subject}: adds must be longer than 0s"),
                );
            }
            if p.max_price <= Fen::ZERO {
                self.error(
                    &at("max_price"),
                    format!("{subject}: max_price must be more than 0.00"),
                );
            }
            out.insert(
                name.clone(),
                Arc::new(Product {
                    name,
                    provider: p.provider,
                    path: p.path,
                    extends: p.extends,
                    adds: p.adds.get(),
                    max_price: p.max_price,
                    params: p.params.into_iter().collect(),
                }),
            );
        }
        out
    }

    /// `accounts:`, then the lines of `accounts_file:` (with their line
    /// numbers: their errors name the file and line).
    pub(super) fn accounts(
        &mut self,
        raw: Vec<raw::RawAccount>,
        from_file: Vec<(raw::RawAccount, usize)>,
        providers: &BTreeMap<String, Provider>,
    ) -> Vec<Account> {
        let readers: Vec<&String> = providers
            .iter()
            .filter(|(_, p)| matches!(p, Provider::QqConnect(_)))
            .map(|(n, _)| n)
            .collect();
        let mut seen = HashSet::with_capacity(raw.len() + from_file.len());
        let mut out = Vec::with_capacity(raw.len() + from_file.len());
        let in_yaml = raw.into_iter().map(|a| (a, None));
        let in_file = from_file.into_iter().map(|(a, line)| (a, Some(line)));
        for (a, line) in in_yaml.chain(in_file) {
            self.at_line = line;
            let subject = format!("account {}", a.name);
            let name = a.name.clone();
            let at = |key: &'static str| ["accounts", name.as_str(), key];
            if a.name.is_empty()
                || !a
                    .name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-.@".contains(c))
            {
                self.error(
                    &at("name"),
                    format!("{subject}: names use letters, digits and _ - . @ only"),
                );
            }
            if !seen.insert(a.name.clone()) {
                self.error(&at("name"), format!("{subject}: the name is used twice"));
            }
            if a.qq_number.is_empty() || !a.qq_number.bytes().all(|b| b.is_ascii_digit()) {
                self.error(
                    &at("qq_number"),
                    format!("{subject}: qq_number {:?} is not a number", a.qq_number),
                );
            }
            let provider = match (&a.provider, readers.as_slice()) {
                (Some(p), _) => {
                    if !matches!(providers.get(p), Some(Provider::QqConnect(_))) {
                        self.error(
                            &at("provider"),
                            format!("{subject}: {p} is not a qq_connect provider"),
                        );
                    }
                    p.clone()
                }
                (None, [only]) => (*only).clone(),
                (None, []) => {
                    self.error(
                        &at("name"),
                        format!("{subject}: no qq_connect provider is configured to read it"),
                    );
                    String::new()
                }
                (None, _) => {
                    self.error(
                        &at("name"),
                        format!("{subject}: several qq_connect providers exist; say which with provider:"),
                    );
                    String::new()
                }
            };
            let access_token = self.secret(&at("access_token"), &subject, &a.access_token);
            let refresh_token = a
                .refresh_token
                .map(|raw| self.secret(&at("refresh_token"), &subject, &raw));
            out.push(Account {
                name: a.name,
                qq_number: a.qq_number,
                openid: a.openid,
                access_token,
                refresh_token,
                tags: a.tags,
                provider,
            });
        }
        self.at_line = None;
        out
    }

    pub(super) fn sandbox(
        &mut self,
        raw: raw::RawSandbox,
        products: &BTreeMap<String, Arc<Product>>,
        accounts: &[Account],
    ) -> SandboxSettings {
        for product in raw.prices.keys() {
            if !products.contains_key(product) {
                self.error(
                    &["sandbox", "prices", product],
                    format!("sandbox: prices: no product named {product}"),
                );
            }
        }
        let mut memberships = BTreeMap::new();
        // A set, not a scan of every account for each membership: the
        // benchmarks give the sandbox one membership per account.
        let names: HashSet<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
        for (account, terms) in raw.memberships {
            if !names.contains(account.as_str()) {
                self.error(
                    &["sandbox", "memberships", &account],
                    format!("sandbox: memberships: no account named {account}"),
                );
            }
            let mut ends = BTreeMap::new();
            for (m, rel) in terms {
                match HumanDuration::parse_signed_secs(&rel) {
                    Ok(secs) => {
                        ends.insert(m, secs);
                    }
                    Err(e) => self.error(
                        &["sandbox", "memberships", &account],
                        format!("sandbox: memberships: {account}: {m}: {e}"),
                    ),
                }
            }
            memberships.insert(account, ends);
        }
        for (api, knobs) in [
            ("recharge", &raw.faults.recharge),
            ("vip_info", &raw.faults.vip_info),
        ] {
            if let Err(e) = knobs.validate() {
                // The knob is the message's first word: point at its key.
                let knob = e.split_whitespace().next().unwrap_or_default();
                self.error(
                    &["sandbox", "faults", api, knob],
                    format!("sandbox: faults: {api}: {e}"),
                );
            }
        }
        SandboxSettings {
            mode: raw.mode.unwrap_or_default(),
            callback_delay: raw
                .callback_delay
                .map_or(Duration::from_millis(500), HumanDuration::get),
            token_ttl: raw.token_ttl.map_or(QQ_TOKEN_TTL, HumanDuration::get),
            balance: raw.balance,
            prices: raw.prices,
            memberships,
            recharge_faults: raw.faults.recharge,
            vip_info_faults: raw.faults.vip_info,
            seed: raw.seed,
        }
    }
}
