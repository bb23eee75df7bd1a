//! Every integration test in one binary: one link instead of two dozen,
//! and the slow process-level tests share the machine's cores instead of
//! running one file after another. Run one part with its module path,
//! e.g. `cargo test --test suite layers::` or
//! `cargo test --test suite cluster::`.
//!
//! `tests/redaction.rs` is a binary of its own: it sets the process's
//! environment, which every other test's children would inherit.

mod common;

mod audit;
mod chaos;
mod cli;
mod clock;
mod cluster;
mod corruption;
mod engine;
mod fuzz_corpus;
mod install;
mod layers;
mod layout;
mod listeners;
mod logging;
mod money;
mod operator;
mod paying;
mod plugins;
mod schema;
mod service;
mod sign_props;
mod simulate;
mod state_folder;
mod systemd;
mod upstream;
