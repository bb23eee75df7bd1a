//! What the chaos suites share: the sandbox's faults, the true callbacks a
//! vendor may re-deliver, and the verdict taken from the sandbox's own
//! records and the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::signed;
use super::stack::{Stack, StackConfig};

/// A number from the environment, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every fault knob of the sandbox's recharge API.
pub const FAULTS: &str = "{ transient_rate: 0.05, http500_rate: 0.03, garbage_rate: 0.03, hang_rate: 0.02, hang_for: 3s, drop_callback_rate: 0.05, duplicate_callback_rate: 0.1, fail_rate: 0.05 }";

/// The chaos suites' configuration for `accounts` due accounts: the
/// sandbox in async mode with every fault on, and a daily cap enough for
/// every account once, not for many twice (returned too, in yuan).
pub fn chaos_config(accounts: usize) -> (StackConfig, f64) {
    let mut cfg = StackConfig::due(accounts);
    cfg.sandbox =
        format!("  mode: async\n  callback_delay: 200ms\n  faults: {{ recharge: {FAULTS} }}");
    cfg.provider = "    max_in_flight: 32\n    callback: { within: 5s }".into();
    let cap = accounts as f64 * 20.0 + 200.0;
    cfg.rule = format!("    budget: {{ per_day: {cap:.2} }}\n    max_attempts: 5");
    cfg.daemon = "  max_concurrent_checks: 64".into();
    (cfg, cap)
}

/// Every true callback the sandbox has sent or would send, signed again:
/// what a vendor re-delivers.
pub fn true_callbacks(sandbox_orders: &[Value]) -> Vec<Vec<(String, String)>> {
    sandbox_orders
        .iter()
        .filter(|o| o["orderid"].is_string() && o["state"] != "pending" && o["state"] != "refused")
        .map(|o| {
            let status = if o["state"] == "succeeded" {
                "success"
            } else {
                "failed"
            };
            let time = o["received_at"].as_i64().unwrap().to_string();
            signed(&[
                ("orderid", o["orderid"].as_str().unwrap()),
                ("status", status),
                ("price", o["price"].as_str().unwrap_or("15.00")),
                ("qq_number", o["target"].as_str().unwrap_or("")),
                ("time", &time),
            ])
        })
        .collect()
}

/// Accounts that are done: renewed and verified, or with an `unknown`
/// order.
pub fn done(orders: &[Value]) -> usize {
    orders
        .iter()
        .filter(|o| {
            o["state"] == "unknown"
                || (o["state"] == "succeeded" && o["verification"]["status"] == "verified")
        })
        .filter_map(|o| o["account"].as_str())
        .collect::<BTreeSet<&str>>()
        .len()
}

/// The figures of a run, from the sandbox and the ledger's orders.
pub struct Verdict {
    pub requests: usize,
    pub billed: usize,
    pub billed_yuan: f64,
    pub twice: Vec<(String, usize)>,
    pub unknown_to_ledger: Vec<String>,
    pub unknown: usize,
    pub lapsed_silently: Vec<String>,
}

impl Verdict {
    /// Accounts `a0..a{accounts}`, each due once; `orders` the ledger's;
    /// `log` every daemon log (`status` keeps only the latest events, the
    /// log has every `order_unknown`).
    pub async fn of(stack: &Stack, accounts: usize, orders: &[Value], log: &str) -> Verdict {
        let sandbox = stack.sandbox_orders().await;
        let mut billed: BTreeMap<String, usize> = BTreeMap::new();
        let mut billed_yuan = 0.0;
        for o in sandbox.iter().filter(|o| o["billed"] == true) {
            *billed
                .entry(o["account"].as_str().unwrap().to_owned())
                .or_default() += 1;
            billed_yuan += o["price"].as_str().unwrap().parse::<f64>().unwrap();
        }
        let alert_lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("event=\"order_unknown\""))
            .collect();
        let alerted: BTreeSet<&str> = orders
            .iter()
            .filter(|o| o["state"] == "unknown")
            .filter(|o| {
                let key = o["key"].as_str().unwrap();
                alert_lines.iter().any(|l| l.contains(key))
            })
            .filter_map(|o| o["account"].as_str())
            .collect();
        let ends = stack
            .get(&format!("{}/_sandbox/accounts", stack.sandbox_url))
            .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let renewed: BTreeSet<String> = ends
            .as_array()
            .unwrap()
            .iter()
            // Due in 1 day at start; one renewal adds 30.
            .filter(|a| a["ends"]["qq_vip"].as_i64().unwrap_or(0) > now + 20 * 86_400)
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect();
        Verdict {
            requests: sandbox.len(),
            billed: billed.values().sum(),
            billed_yuan,
            twice: billed
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(a, n)| (a.clone(), *n))
                .collect(),
            unknown_to_ledger: billed
                .keys()
                .filter(|a| {
                    !orders.iter().any(|o| {
                        o["account"] == a.as_str()
                            && (o["state"] == "succeeded" || o["state"] == "unknown")
                    })
                })
                .cloned()
                .collect(),
            unknown: orders.iter().filter(|o| o["state"] == "unknown").count(),
            lapsed_silently: (0..accounts)
                .map(|i| format!("a{i}"))
                .filter(|a| !renewed.contains(a) && !alerted.contains(a.as_str()))
                .collect(),
        }
    }

    /// No period billed twice, every billed order known to the ledger,
    /// no lapse without an alert, no budget passed.
    pub fn assert_sound(&self, cap: f64) {
        assert!(
            self.twice.is_empty(),
            "periods billed twice: {:?}",
            self.twice
        );
        assert!(
            self.unknown_to_ledger.is_empty(),
            "billed, unknown to the ledger: {:?}",
            self.unknown_to_ledger
        );
        assert!(
            self.lapsed_silently.is_empty(),
            "lapsed without alert: {:?}",
            self.lapsed_silently
        );
        assert!(
            self.billed_yuan <= cap,
            "budget passed: {}",
            self.billed_yuan
        );
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests to the vendor, {} billed ({:.2} yuan), periods billed twice: {}, billed orders the ledger does not know: {}, unknown orders: {}, lapses without alert: {}",
            self.requests,
            self.billed,
            self.billed_yuan,
            self.twice.len(),
            self.unknown_to_ledger.len(),
            self.unknown,
            self.lapsed_silently.len()
        )
    }
}
