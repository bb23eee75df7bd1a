//! `forecast:` steps: the forecast made at a moment of the run, held to
//! what the run then paid in its window.

use super::expect::Failure;
use crate::engine::forecast::Forecast;
use crate::ledger::{Order, OrderState};
use crate::units::Fen;

/// A forecast made during the run, and where its step is.
pub(crate) struct Made {
    pub at: String,
    pub forecast: Forecast,
}

impl Made {
    /// How what the run paid within the forecast's window differs from
    /// it: per rule, as many renewals (orders planned in the window and
    /// paid), and no more spent (it counts `max_price`; the vendor may
    /// bill less). `now` is when the run ended: a window that outlasts it
    /// cannot be judged.
    pub(crate) fn differences(&self, orders: &[Order], now: i64) -> Vec<Failure> {
        let f = &self.forecast;
        let until = f.from + i64::from(f.days) * 86_400;
        let when = format!(
            "the forecast made at {} for {}d",
            crate::timefmt::utc(f.from),
            f.days
        );
        if now < until {
            return vec![Failure {
                expected: format!("{when} to be judged when its window is over"),
                actual: format!(
                    "the test ended at {}, before {}: let it run longer (run_for)",
                    crate::timefmt::utc(now),
                    crate::timefmt::utc(until)
                ),
                account: None,
            }];
        }
        let mut out = Vec::new();
        for b in &f.budgets {
            let paid: Vec<&Order> = orders
                .iter()
                .filter(|o| {
                    *o.rule == *b.rule
                        && (f.from..until).contains(&o.created_at)
                        && (o.state == OrderState::Succeeded || o.spent > Fen::ZERO)
                })
                .collect();
            let spent = Fen(paid.iter().map(|o| o.spent.0).sum());
            if paid.len() != b.renewals || spent > b.spend {
                let accounts: Vec<&str> = paid.iter().map(|o| o.account.as_str()).collect();
                out.push(Failure {
                    expected: format!(
                        "{when}: rule {}: {} renewals, {} at most",
                        b.rule, b.renewals, b.spend
                    ),
                    actual: format!(
                        "the run paid {} ({spent}): {}",
                        paid.len(),
                        if accounts.is_empty() {
                            "none".to_owned()
                        } else {
                            accounts.join(", ")
                        }
                    ),
                    account: None,
                });
            }
        }
        out
    }
}
