//! `vipd explain ORDER|ACCOUNT`: one order's story, or an account's latest
//! orders', from the running daemon or, when none runs, from the store.

use std::process::ExitCode;

use super::ConfigFile;
use super::admin::{Api, load_outside, open_store};
use crate::engine::trace::{self, Trace};

/// What `vipd explain` is asked about.
pub(crate) struct Explain<'a> {
    pub config: &'a ConfigFile,
    /// An account's name, or an order key (a unique prefix is enough).
    pub what: &'a str,
    /// How many of an account's latest orders.
    pub last: usize,
    pub json: bool,
}

pub async fn explain(ask: Explain<'_>) -> anyhow::Result<ExitCode> {
    let config = load_outside(ask.config)?;
    let is_account = config.accounts.iter().any(|a| *a.name == *ask.what);
    let traces: Vec<Trace> = match Api::find(&config).await? {
        Some(api) if is_account => {
            let url = format!("{}/api/accounts/{}/trace", api.base, ask.what);
            api.call(api.http.get(url).query(&[("last", ask.last)]))
                .await?
        }
        Some(api) => {
            let url = format!("{}/api/orders/{}/trace", api.base, ask.what);
            vec![api.call(api.http.get(url)).await?]
        }
        None => {
            let ledger = open_store(&config)?;
            if is_account {
                trace::account(&ledger, ask.what, ask.last).await?
            } else {
                vec![trace::order(&ledger, ask.what).await?]
            }
        }
    };
    if ask.json {
        println!("{}", serde_json::to_string_pretty(&traces)?);
    } else if traces.is_empty() {
        println!("account {} has no orders", ask.what);
    } else {
        let text: Vec<String> = traces.iter().map(Trace::render).collect();
        print!("{}", text.join("\n"));
    }
    Ok(ExitCode::SUCCESS)
}
