//! Fault knobs of the simulated upstream, as configured (the sandbox throws
//! the dice: `sandbox::faults`). Each rate is a probability per
//! request (0.0 to 1.0); the dice are seeded so a run can be repeated.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;

/// Faults injected into one API. All default to off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Knobs {
    /// Added before every reply.
    pub latency: Option<HumanDuration>,
    /// Recharge: 10021 before billing. Vip-info: `ret=-1` "system busy".
    #[schemars(range(min = 0.0, max = 1.0))]
    pub transient_rate: f64,
    /// Reply HTTP 500 (recharge: after billing, so the reply is lost).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub http500_rate: f64,
    /// Reply an HTML page (recharge: after billing).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub garbage_rate: f64,
    /// Hold the reply for `hang_for` (recharge: after billing).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub hang_rate: f64,
    /// How long a hang lasts (default 30s: longer than client timeouts).
    pub hang_for: Option<HumanDuration>,
    /// Recharge, async: settle but never call back.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub drop_callback_rate: f64,
    /// Recharge, async: call back twice.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub duplicate_callback_rate: f64,
    /// Recharge, async: the order settles as failed (refunded).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub fail_rate: f64,
    /// Vip-info: send every number as a string.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub string_numbers_rate: f64,
}

impl Knobs {
    /// Every rate must be a probability.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("transient_rate", self.transient_rate),
            ("http500_rate", self.http500_rate),
            ("garbage_rate", self.garbage_rate),
            ("hang_rate", self.hang_rate),
            ("drop_callback_rate", self.drop_callback_rate),
            ("duplicate_callback_rate", self.duplicate_callback_rate),
            ("fail_rate", self.fail_rate),
            ("string_numbers_rate", self.string_numbers_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0, not {rate}"));
            }
        }
        Ok(())
    }

    /// The hang length.
    pub(crate) fn hang_duration(&self) -> Duration {
        self.hang_for
            .map_or(Duration::from_secs(30), HumanDuration::get)
    }

    /// The latency to add.
    pub fn latency(&self) -> Duration {
        self.latency.map_or(Duration::ZERO, HumanDuration::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_probabilities() {
        let k = Knobs {
            transient_rate: 1.5,
            ..Knobs::default()
        };
        assert!(k.validate().unwrap_err().contains("transient_rate"));
        assert!(Knobs::default().validate().is_ok());
    }
}
