//! vipd keeps paid memberships from lapsing: it reads each account's
//! membership expiry (QQ Connect `get_vip_rich_info`) and, before it
//! lapses, pays for a renewal through a vendor's MD5-signed recharge API.
//!
//! # Layout
//!
//! Dependencies point one way, down this table's layers (`tests/layers.rs`
//! fails otherwise; ARCHITECTURE.md has the ports and the life of one
//! order):
//!
//! | layer | module | owns |
//! |---|---|---|
//! | 6 | [`cli`] | the `vipd` commands: parse arguments, set up logging, run, exit code |
//! | 6 | `fuzz` | fuzz target functions (feature `testing`: `fuzz/` and `tests/fuzz_corpus.rs` call them) |
//! | 5 | `service` | the daemon's wiring: start-up order, listeners, reload (file watch, SIGHUP, API), ordered shutdown |
//! | 5 | [`simulate`] | `vipd test`: the same engine, ledger and callback router on a paused clock against the sandbox |
//! | 4 | [`http`] | the callback receiver and the admin API (axum); the `Reload` port the service implements |
//! | 4 | [`plugins`] | Lua plugins: the sandboxed state per generation, limits, the `vipd` host API, `vipd lua-types`; `LuaHooks` implements the engine's `Hooks` |
//! | 3 | [`engine`] | scheduler, pure decisions, paying through the `Store` port, callbacks, evidence and verification; builds every upstream client; owns the `Hooks` port |
//! | 3 | [`sandbox`] | the simulated vendor of a configuration: both APIs, state, fault dice, callbacks |
//! | 2 | [`config`] | `rules.yaml`: raw serde shape → validated runtime config; how secrets are written and read |
//! | 2 | [`ledger`] | the `Store` port (async; everything vipd remembers) and its conformance suite; the sled store behind it: orders under deterministic keys, durable writes with group commit, budgets, events; the only module that imports sled |
//! | 2 | [`upstream`] | the recharge client and its outcome classes, the membership and token clients, the vendor's clock; the only module that builds HTTP clients |
//! | 2 | `metrics` | `/metrics` in the Prometheus text format: hot-path counters and histograms |
//! | 2 | `systemd` | the sd_notify protocol: READY, RELOADING, STOPPING, WATCHDOG, STATUS |
//! | 1 | [`model`] | values every layer may name: memberships, secrets, the protocol's choices, the vendor's signature, fault knobs, the `Clock` port |
//! | 0 | [`units`] | money in integer fen, human durations, rates, hex |
//! | 0 | `timefmt` | unix seconds → readable UTC text |
//!
//! Data flows one way: configuration is parsed and validated once into a
//! [`config::Config`]; clients are built from it (`engine::clients`);
//! nothing downstream re-checks what validation already guaranteed.

pub mod cli;
pub mod config;
pub mod engine;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod ledger;
pub(crate) mod metrics;
pub mod model;
pub mod plugins;
pub mod sandbox;
pub(crate) mod service;
pub mod simulate;
pub(crate) mod systemd;
pub(crate) mod timefmt;
pub mod units;
pub mod upstream;
