//! What time it is, when the wall clock may lie.
//!
//! Every decision that uses wall time (is this account due, which budget
//! day is it, has the verify deadline passed) asks the [`TimeKeeper`]
//! instead of the system clock. It keeps the time as monotonic time since
//! an anchor: the wall clock at start, and then the vendor's `curtime`
//! from every recharge reply (the vendor's clock decides whether our
//! requests are accepted, so it is the clock that matters for money).
//!
//! When the wall clock disagrees with the anchored time by more than
//! [`TOLERANCE`] (it was stepped: by an operator, a bad NTP server, a VM
//! restored from a snapshot), payments are held and an alert fires:
//!
//! - if the anchor came from the vendor, the hold lasts until the wall
//!   clock agrees with the vendor again: the vendor's word wins;
//! - if it came from the wall clock itself (no reply since start), a step
//!   that stays for [`SETTLE`] is accepted (NTP correcting a clock that
//!   was wrong at boot); should it be wrong, the vendor's next reply is
//!   a 10004 that is not billed and anchors the time to the vendor.
//!
//! No clock is read here: callers pass the wall clock and an `Instant`,
//! so every branch is a table test.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far the wall clock may be from the anchored time.
pub(crate) const TOLERANCE: i64 = 120;
/// How long an uncontradicted step must last to be accepted.
pub(crate) const SETTLE: Duration = Duration::from_secs(600);

/// Where the anchored time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The system clock (at start, or an accepted step).
    Wall,
    /// A recharge reply's `curtime`.
    Vendor,
}

/// What the time is, and whether payments may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Now {
    /// The wall clock agrees: decide with `now`.
    Trusted { now: i64 },
    /// The wall clock disagrees with the anchored time by `by` seconds
    /// (positive: the wall clock is ahead). Do not pay.
    Disputed {
        now: i64,
        by: i64,
        source: Source,
        /// The first observation of this step (alert once).
        first: bool,
    },
}

#[derive(Debug)]
struct State {
    wall: i64,
    mono: Instant,
    source: Source,
    /// When the current disagreement was first seen, and by how much.
    step: Option<(Instant, i64)>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct TimeKeeper {
    state: Mutex<State>,
}

impl TimeKeeper {
    /// Anchored to the wall clock `wall` at `mono`.
    pub fn new(wall: i64, mono: Instant) -> TimeKeeper {
        TimeKeeper {
            state: Mutex::new(State {
                wall,
                mono,
                source: Source::Wall,
                step: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compares the wall clock (`wall`, read at `mono`) with the anchored
    /// time.
    pub(crate) fn observe(&self, wall: i64, mono: Instant) -> Now {
        let mut s = self.lock();
        let now = s.wall + mono.saturating_duration_since(s.mono).as_secs() as i64;
        let by = wall - now;
        if by.abs() <= TOLERANCE {
            // Agreeing: follow the wall clock (it is disciplined; the
            // monotonic clock only bridges steps).
            s.step = None;
            if s.source == Source::Wall {
                (s.wall, s.mono) = (wall, mono);
            }
            return Now::Trusted { now: wall };
        }
        let first = match s.step {
            Some((_, seen)) if (seen - by).abs() <= TOLERANCE => false,
            _ => {
                s.step = Some((mono, by));
                true
            }
        };
        let since = s.step.map_or(mono, |(at, _)| at);
        if s.source == Source::Wall && mono.saturating_duration_since(since) >= SETTLE {
            tracing::warn!(
                step_secs = by,
                "the wall clock stepped {by} s and stayed for {SETTLE:?}; accepting it"
            );
            (s.wall, s.mono, s.step) = (wall, mono, None);
            return Now::Trusted { now: wall };
        }
        Now::Disputed {
            now,
            by,
            source: s.source,
            first,
        }
    }

    /// The vendor's clock said `curtime` at `mono` (a recharge reply).
    pub fn vendor(&self, curtime: i64, mono: Instant) {
        let mut s = self.lock();
        (s.wall, s.mono, s.source) = (curtime, mono, Source::Vendor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_steady_clock_is_trusted() {
        let m = Instant::now();
        let k = TimeKeeper::new(T0, m);
        assert_eq!(k.observe(T0 + 10, at(m, 10)), Now::Trusted { now: T0 + 10 });
        // Drift within the tolerance is followed.
        assert_eq!(k.observe(T0 + 70, at(m, 10)), Now::Trusted { now: T0 + 70 });
    }

    #[test]
    fn a_step_back_is_disputed_until_the_clock_agrees_again() {
        let m = Instant::now();
        let k = TimeKeeper::new(T0, m);
        let d = k.observe(T0 - 3600, at(m, 1));
        assert_eq!(
            d,
            Now::Disputed {
                now: T0 + 1,
                by: -3601,
                source: Source::Wall,
                first: true
            }
        );
        assert!(matches!(
            k.observe(T0 - 3595, at(m, 6)),
            Now::Disputed { first: false, .. }
        ));
        // Stepped back: agrees again.
        assert_eq!(k.observe(T0 + 7, at(m, 7)), Now::Trusted { now: T0 + 7 });
    }

    #[test]
    fn an_uncontradicted_step_is_accepted_after_settling() {
        let m = Instant::now();
        let k = TimeKeeper::new(T0, m);
        assert!(matches!(
            k.observe(T0 + 28 * DAY, at(m, 1)),
            Now::Disputed { .. }
        ));
        assert!(matches!(
            k.observe(T0 + 28 * DAY + 599, at(m, 600)),
            Now::Disputed { .. }
        ));
        assert_eq!(
            k.observe(T0 + 28 * DAY + 600, at(m, 601)),
            Now::Trusted {
                now: T0 + 28 * DAY + 600
            }
        );
    }

    #[test]
    fn the_vendor_wins_over_a_wrong_wall_clock_for_good() {
        let m = Instant::now();
        // The clock was 28 days ahead at start; the vendor's reply says so.
        let k = TimeKeeper::new(T0 + 28 * DAY, m);
        k.vendor(T0, at(m, 1));
        let d = k.observe(T0 + 28 * DAY + 2, at(m, 2));
        assert!(
            matches!(d, Now::Disputed { now, source: Source::Vendor, .. } if now == T0 + 1),
            "{d:?}"
        );
        // Never accepted by waiting.
        let later = k.observe(T0 + 28 * DAY + 7200, at(m, 7200));
        assert!(
            matches!(later, Now::Disputed { now, .. } if now == T0 + 7199),
            "{later:?}"
        );
        // Fixed: agrees with the vendor.
        assert_eq!(
            k.observe(T0 + 7201, at(m, 7201)),
            Now::Trusted { now: T0 + 7201 }
        );
    }

    #[test]
    fn a_new_step_during_a_dispute_alerts_again() {
        let m = Instant::now();
        let k = TimeKeeper::new(T0, m);
        assert!(matches!(
            k.observe(T0 + 3600, at(m, 1)),
            Now::Disputed { first: true, .. }
        ));
        assert!(matches!(
            k.observe(T0 + 7200, at(m, 2)),
            Now::Disputed { first: true, .. }
        ));
    }
}
