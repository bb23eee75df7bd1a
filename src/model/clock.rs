//! The wall clock as a port: the daemon reads the system's, tests read one
//! that follows tokio's (paused) clock and can be stepped.
//!
//! Only the wall clock is behind this trait. Monotonic time is tokio's
//! `Instant`, which tests already control with `tokio::time::pause` and
//! `advance`; [`TokioClock`] ties the wall clock to it, so one `advance`
//! moves both, as the real world does.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Unix time on the wall clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Unix milliseconds.
    fn unix_ms(&self) -> i64;

    /// Unix seconds.
    fn unix(&self) -> i64 {
        self.unix_ms().div_euclid(1000)
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A wall clock that reads `anchor` at the moment it was made and then
/// moves with tokio's clock (so `tokio::time::advance` moves it too), plus
/// whatever [`TokioClock::step`] added: a clock an operator or a bad NTP
/// server stepped.
#[derive(Debug)]
pub struct TokioClock {
    anchor_ms: i64,
    at: tokio::time::Instant,
    step_ms: AtomicI64,
}

impl TokioClock {
    /// Reads `anchor_unix` now.
    pub fn new(anchor_unix: i64) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            anchor_ms: anchor_unix * 1000,
            at: tokio::time::Instant::now(),
            step_ms: AtomicI64::new(0),
        })
    }

    /// Steps the wall clock by `secs` (negative: back) without moving
    /// monotonic time.
    pub fn step(&self, secs: i64) {
        self.step_ms.fetch_add(secs * 1000, Ordering::Relaxed);
    }
}

impl Clock for TokioClock {
    fn unix_ms(&self) -> i64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.at);
        self.anchor_ms + elapsed.as_millis() as i64 + self.step_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_advance_and_steps() {
        let c = TokioClock::new(1_800_000_000);
        assert_eq!(c.unix(), 1_800_000_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(c.unix_ms(), 1_800_000_002_500);
        c.step(-3_600);
        assert_eq!(c.unix(), 1_800_000_002 - 3_600);
    }

    #[test]
    fn seconds_round_down_before_1970_too() {
        #[derive(Debug)]
        struct At(i64);
        impl Clock for At {
            fn unix_ms(&self) -> i64 {
                self.0
            }
        }
        assert_eq!(At(-1).unix(), -1);
        assert_eq!(At(1_999).unix(), 1);
    }
}
