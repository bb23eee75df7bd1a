//! The simulated vendor's state: accounts and their memberships, tokens,
//! the balance, and every recharge request received. The HTTP layer
//! ([`super`]) holds it behind one mutex and keeps each critical section
//! short: no I/O and no waiting while it is held.

use std::collections::HashMap;

use serde::Serialize;

use super::faults::Knobs;
use crate::config::{Config, Provider, SandboxMode};
use crate::model::Membership;
use crate::model::sign::Signer;
use crate::units::Fen;

/// A recharge application the sandbox serves, by appid.
#[derive(Debug, Clone)]
pub struct App {
    /// The provider's name in the configuration.
    pub provider: String,
    /// Verifies requests, signs callbacks.
    pub signer: Signer,
    /// The parameter naming the account.
    pub target_param: String,
    /// Field names of callbacks.
    pub callback: crate::config::CallbackMapping,
}

/// A product the sandbox sells: (appid, path) → this.
#[derive(Debug, Clone)]
pub struct Sku {
    /// The product's name.
    pub name: String,
    /// The membership extended.
    pub extends: Membership,
    /// Seconds added.
    pub adds_secs: i64,
    /// Price charged.
    pub price: Fen,
}

/// One simulated user.
#[derive(Debug, Clone, Serialize)]
pub struct SimAccount {
    /// The configured name.
    pub name: String,
    /// The QQ number recharged.
    pub qq_number: String,
    /// The openid read.
    pub openid: String,
    /// `*_start` per membership, [`Membership::ALL`] order, 0 = none.
    pub starts: [i64; 5],
    /// `*_end` per membership, 0 = none.
    pub ends: [i64; 5],
    /// `*_payway` per membership, 0 = none.
    pub payways: [i64; 5],
}

/// A token the sandbox knows.
#[derive(Debug, Clone)]
pub struct TokenState {
    /// Whose it is.
    pub openid: String,
    /// Unix seconds it expires at; `None` = never (configured tokens).
    pub expires_at: Option<i64>,
    /// Revoked by the user.
    pub revoked: bool,
}

/// How a recharge request ended at the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Refused before billing (see `codeid`).
    Refused,
    /// Billed, waiting for the callback.
    Pending,
    /// Billed and extended.
    Succeeded,
    /// Billed, then failed and refunded.
    Failed,
}

/// One recharge request as the sandbox received it.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRecord {
    /// Sequence number of the request.
    pub seq: u64,
    /// The vendor order id (billed requests only).
    pub orderid: Option<String>,
    /// Unix seconds received.
    pub received_at: i64,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The provider (when the appid was known).
    pub provider: Option<String>,
    /// The product (when the path was known).
    pub product: Option<String>,
    /// The target parameter's value.
    pub target: Option<String>,
    /// The account name (when the target was known).
    pub account: Option<String>,
    /// The code replied (before any reply fault).
    pub codeid: i64,
    /// Whether money moved (and was not refunded).
    pub billed: bool,
    /// Price charged.
    pub price: Option<Fen>,
    /// Where it ended.
    pub state: OrderState,
    /// The reply fault injected, if any.
    pub fault: Option<super::faults::ReplyFault>,
    /// Callback deliveries attempted.
    pub callbacks_sent: u32,
    /// Callback deliveries the receiver acknowledged.
    pub callbacks_acked: u32,
    /// Where the callback goes.
    pub notify_url: Option<String>,
}

/// Settings that tests may change at run time.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Control {
    /// sync or async.
    pub mode: SandboxMode,
    /// Delay before async settlement.
    pub callback_delay: crate::units::HumanDuration,
    /// How long a refreshed access token lives.
    pub token_ttl: crate::units::HumanDuration,
    /// Money left; `None` = unlimited.
    pub balance: Option<Fen>,
    /// Recharge faults.
    pub recharge: Knobs,
    /// Vip-info faults.
    pub vip_info: Knobs,
}

/// Everything the sandbox knows.
#[derive(Debug)]
pub struct World {
    /// Recharge applications by appid.
    pub apps: HashMap<String, App>,
    /// Products by (appid, path).
    pub skus: HashMap<(String, String), Sku>,
    /// qq_connect apps: oauth_consumer_key → client_secret (if any).
    pub readers: HashMap<String, Option<String>>,
    /// Accounts in config order.
    pub accounts: Vec<SimAccount>,
    /// qq_number → index.
    pub by_qq: HashMap<String, usize>,
    /// openid → index.
    pub by_openid: HashMap<String, usize>,
    /// Access tokens.
    pub tokens: HashMap<String, TokenState>,
    /// Refresh tokens (each works once): token → openid.
    pub refresh_tokens: HashMap<String, String>,
    /// Every recharge request received.
    pub orders: Vec<OrderRecord>,
    /// Run-time settings.
    pub control: Control,
    /// The fault dice.
    pub rng: fastrand::Rng,
    /// Counter for ids and tokens.
    pub next_id: u64,
    /// `get_vip_rich_info` requests received (benchmarks time a check
    /// cycle by it).
    pub reads: u64,
}

impl World {
    /// Builds the world of a configuration at `now`.
    pub(crate) fn from_config(config: &Config, now: i64) -> World {
        let mut apps = HashMap::new();
        let mut readers = HashMap::new();
        for p in config.providers.values() {
            match p {
                Provider::Recharge(r) => {
                    apps.insert(
                        r.appid.clone(),
                        App {
                            provider: r.name.clone(),
                            signer: r.signer(),
                            target_param: r.target_param.clone(),
                            callback: r.callback.clone(),
                        },
                    );
                }
                Provider::QqConnect(q) => {
                    readers.insert(
                        q.oauth_consumer_key.clone(),
                        q.client_secret.as_ref().map(|s| s.expose().to_owned()),
                    );
                }
            }
        }
        let mut skus = HashMap::new();
        for product in config.products.values() {
            let seller = config.seller_of(product);
            skus.insert(
                (seller.appid.clone(), product.path.clone()),
                Sku {
                    name: product.name.clone(),
                    extends: product.extends,
                    adds_secs: product.adds.as_secs() as i64,
                    price: config
                        .sandbox
                        .prices
                        .get(&product.name)
                        .copied()
                        .unwrap_or(product.max_price),
                },
            );
        }
        let mut world = World {
            apps,
            skus,
            readers,
            accounts: Vec::new(),
            by_qq: HashMap::new(),
            by_openid: HashMap::new(),
            tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            orders: Vec::new(),
            control: Control {
                mode: config.sandbox.mode,
                callback_delay: crate::units::HumanDuration(config.sandbox.callback_delay),
                token_ttl: crate::units::HumanDuration(config.sandbox.token_ttl),
                balance: config.sandbox.balance,
                recharge: config.sandbox.recharge_faults.clone(),
                vip_info: config.sandbox.vip_info_faults.clone(),
            },
            rng: config
                .sandbox
                .seed
                .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            next_id: 1,
            reads: 0,
        };
        for a in &config.accounts {
            let mut ends = [0; 5];
            let mut starts = [0; 5];
            let mut payways = [0; 5];
            if let Some(terms) = config.sandbox.memberships.get(&a.name) {
                for (m, rel) in terms {
                    ends[*m as usize] = now + rel;
                    starts[*m as usize] = now - 30 * 86_400;
                    payways[*m as usize] = 111;
                }
            }
            let idx = world.accounts.len();
            world.by_qq.insert(a.qq_number.clone(), idx);
            world.by_openid.insert(a.openid.clone(), idx);
            world.tokens.insert(
                a.access_token.expose().to_owned(),
                TokenState {
                    openid: a.openid.clone(),
                    expires_at: None,
                    revoked: false,
                },
            );
            if let Some(rt) = &a.refresh_token {
                world
                    .refresh_tokens
                    .insert(rt.expose().to_owned(), a.openid.clone());
            }
            world.accounts.push(SimAccount {
                name: a.name.clone(),
                qq_number: a.qq_number.clone(),
                openid: a.openid.clone(),
                starts,
                ends,
                payways,
            });
        }
        world
    }

    /// A fresh id with a prefix, e.g. `SB00000001`.
    pub(crate) fn fresh_id(&mut self, prefix: &str) -> String {
        let id = self.next_id;
        self.next_id += 1;
        format!("{prefix}{id:08}")
    }

    /// Extends `account`'s membership by `adds_secs` from `max(end, now)`.
    pub fn extend(&mut self, account: usize, m: Membership, adds_secs: i64, now: i64) {
        let a = &mut self.accounts[account];
        let i = m as usize;
        a.ends[i] = a.ends[i].max(now) + adds_secs;
        a.starts[i] = now;
        a.payways[i] = 5;
    }

    /// The order with this vendor id.
    pub(crate) fn order_mut(&mut self, orderid: &str) -> Option<&mut OrderRecord> {
        self.orders
            .iter_mut()
            .rev()
            .find(|o| o.orderid.as_deref() == Some(orderid))
    }

    /// Checks an access token for `openid`: `Ok` or a QQ `(ret, msg)`.
    pub(crate) fn check_token(
        &self,
        token: &str,
        openid: &str,
        now: i64,
    ) -> Result<usize, (i64, &'static str)> {
        let state = self
            .tokens
            .get(token)
            .ok_or((100013, "access token is invalid"))?;
        if state.revoked {
            return Err((100015, "access token has been revoked"));
        }
        if state.expires_at.is_some_and(|at| at <= now) {
            return Err((100014, "access token expired"));
        }
        if state.openid != openid {
            return Err((100016, "access token check failed"));
        }
        self.by_openid
            .get(openid)
            .copied()
            .ok_or((100016, "access token check failed"))
    }
}
