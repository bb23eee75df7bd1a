//! Domain values every layer may name: the lowest layer, importing
//! nothing of vipd's (dependencies point one way).

pub mod clock;
pub mod knobs;
pub mod protocol;
mod secret;
pub mod sign;
pub mod webhook;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use clock::{Clock, SystemClock, TokioClock};
pub use knobs::Knobs;
pub use protocol::{Budget, CallbackMapping, Format, HttpMethod, OutcomeClass, SandboxMode};
pub use secret::Secret;
pub use sign::{SignMode, Signer};

/// The memberships the API reports, each with `_start`, `_end`, `_payway`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// QQ会员
    QqVip,
    /// QQ年费会员
    QqYearVip,
    /// QQ钻皇
    QqZuanhuang,
    /// 豪华版QQ会员
    QqHaohua,
    /// QQ SVIP (reserved by the API; its fields are documented as invalid).
    QqSvip,
}

impl Membership {
    /// All memberships in the API's order.
    pub(crate) const ALL: [Membership; 5] = [
        Membership::QqVip,
        Membership::QqYearVip,
        Membership::QqZuanhuang,
        Membership::QqHaohua,
        Membership::QqSvip,
    ];

    /// The field prefix, e.g. `qq_vip` for `qq_vip_end`.
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::QqVip => "qq_vip",
            Membership::QqYearVip => "qq_year_vip",
            Membership::QqZuanhuang => "qq_zuanhuang",
            Membership::QqHaohua => "qq_haohua",
            Membership::QqSvip => "qq_svip",
        }
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
