//! vipd keeps paid memberships from lapsing: it reads each account's
//! membership expiry (QQ Connect `get_vip_rich_info`) and, before it
//! lapses, pays for a renewal through a vendor's MD5-signed recharge API.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the `vipd` commands: parse arguments, set up logging, run, exit code |
//! | [`config`] | `rules.yaml`: raw serde shape → validated runtime config; secrets |
//! | [`upstream`] | the signer, the recharge client and its outcome classes, the membership and token clients; the only module that builds HTTP clients |
//! | [`daemon`] | `vipd run`: start-up order, listeners, ordered shutdown |
//! | [`http`] | the callback receiver and the admin API (axum) |
//! | [`engine`] | scheduler, pure decisions, paying through the ledger, callbacks, evidence and verification |
//! | [`ledger`] | the sled store: orders under deterministic keys, durable writes with group commit, budgets, events; the only module that imports sled |
//! | [`metrics`] | `/metrics` in the Prometheus text format: hot-path counters and histograms; the rest read from the ledger at scrape time |
//! | [`plugins`] | Lua plugins: the sandboxed state per generation, limits, the `vipd` host API, `vipd lua-types` |
//! | [`sandbox`] | the simulated upstream: both APIs, state, fault knobs, callbacks |
//! | [`systemd`] | the sd_notify protocol: READY, RELOADING, STOPPING, WATCHDOG, STATUS |
//! | [`model`] | domain values every layer may name: memberships, the wall clock |
//! | [`units`] | money in integer fen, human durations, rates, hex |
//! | [`timefmt`] | unix seconds → readable UTC text |
//! | `fuzz` | fuzz target functions (hidden; `fuzz/` and `tests/fuzz_corpus.rs` call them) |
//!
//! Data flows one way: configuration is parsed and validated once into a
//! [`config::Config`]; clients are built from it; nothing downstream
//! re-checks what validation already guaranteed.

pub mod cli;
pub mod config;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod plugins;
pub mod sandbox;
pub mod service;
pub mod systemd;
pub mod timefmt;
pub mod units;
pub mod upstream;
