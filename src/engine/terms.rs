//! What a payment is made under: a rule of the file, or an operator's
//! manual order (`vipd recharge`, `vipd.recharge`), which has no schedule,
//! the rules' window for its membership (one period wider when asked
//! `ahead`), and the manual budget. Deciding and paying read these,
//! never a `Rule`, so a manual order needs no stand-in rule.

use std::time::Duration;

use crate::config::{Budget, Config, MANUAL_RULE, Product, Rule, VERIFY_WITHIN, WhenLapsed};
use crate::model::Membership;

/// The terms of one payment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms<'a> {
    /// The rule's name (or `manual`): recorded on the order, part of its
    /// key, and the name budgets are kept under.
    pub name: &'a str,
    /// The membership paid for.
    pub membership: Membership,
    /// Due when the end is this close.
    pub renew_before: Duration,
    /// What to do when the membership has lapsed.
    pub when_lapsed: WhenLapsed,
    /// Spending caps.
    pub budget: Budget,
    /// Sends per decision key, at most.
    pub max_attempts: u32,
    /// How long after success the new end must show.
    pub verify_within: Duration,
}

impl<'a> Terms<'a> {
    /// A rule's terms.
    pub fn of(rule: &'a Rule) -> Terms<'a> {
        Terms {
            name: &rule.name,
            membership: rule.membership,
            renew_before: rule.renew_before,
            when_lapsed: rule.when_lapsed,
            budget: rule.budget,
            max_attempts: rule.max_attempts,
            verify_within: rule.verify_within,
        }
    }

    /// An operator's order for `product`: due within `due` (the window
    /// the rules keep for that membership, [`Config::manual_window`]), or,
    /// asked `ahead`, up to one period (the product's `adds`) earlier;
    /// lapsed or not, one attempt, under the manual budget.
    pub fn manual(
        config: &Config,
        product: &Product,
        due: Duration,
        ahead: bool,
    ) -> Terms<'static> {
        Terms {
            name: MANUAL_RULE,
            membership: product.extends,
            renew_before: if ahead { due + product.adds } else { due },
            when_lapsed: WhenLapsed::Renew,
            budget: config.manual.budget,
            max_attempts: 1,
            verify_within: VERIFY_WITHIN,
        }
    }
}

/// What a renewal was decided on.
pub(super) struct Decided {
    /// The end the decision saw.
    pub observed_end: Option<i64>,
    /// Why, in words (the order's first transition).
    pub why: String,
    /// The deciding check's `max_concurrent_checks` slot, handed on once
    /// the renewal holds its in-flight slot (none for a manual order).
    pub check_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// When the membership read the decision saw came back (monotonic):
    /// a renewal about to pay reads again only when this is older than
    /// [`SECOND_LOOK_AFTER`].
    pub read_at: tokio::time::Instant,
}

/// How old the decision's read may be when the renewal is about to pay
/// before the membership is read again (the second look). Younger, the
/// second look would be the same read twice: nothing but the renewal's
/// own slot waits has passed in between, and the ledger, not a read,
/// keeps vipd from paying a period twice. Older (the renewal waited for a
/// `max_in_flight` slot or the rate limit), someone else may have renewed
/// in between, and it reads again.
pub(crate) const SECOND_LOOK_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
