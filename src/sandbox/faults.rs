//! The dice of the simulated upstream's faults: what goes wrong with one
//! reply, given the configured [`Knobs`].

use serde::Serialize;

pub use crate::model::knobs::Knobs;

/// What goes wrong with one reply, after the dice are thrown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyFault {
    /// HTTP 500.
    Http500,
    /// An HTML page instead of JSON.
    Garbage,
    /// The reply is held for `hang_for`.
    Hang,
}

/// Throws the reply-fault dice once: at most one fault per reply.
pub(crate) fn roll_reply_fault(knobs: &Knobs, rng: &mut fastrand::Rng) -> Option<ReplyFault> {
    let x = rng.f64();
    let mut edge = knobs.http500_rate;
    if x < edge {
        return Some(ReplyFault::Http500);
    }
    edge += knobs.garbage_rate;
    if x < edge {
        return Some(ReplyFault::Garbage);
    }
    edge += knobs.hang_rate;
    (x < edge).then_some(ReplyFault::Hang)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_faults_follow_rates() {
        let mut rng = fastrand::Rng::with_seed(7);
        let none = Knobs::default();
        assert!((0..1000).all(|_| roll_reply_fault(&none, &mut rng).is_none()));
        let all500 = Knobs {
            http500_rate: 1.0,
            ..Knobs::default()
        };
        assert_eq!(
            roll_reply_fault(&all500, &mut rng),
            Some(ReplyFault::Http500)
        );
        let third = Knobs {
            garbage_rate: 0.3,
            ..Knobs::default()
        };
        let hits = (0..10_000)
            .filter(|_| roll_reply_fault(&third, &mut rng) == Some(ReplyFault::Garbage))
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }
}
