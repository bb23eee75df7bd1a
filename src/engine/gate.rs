//! Per-provider traffic control: a pause gate (exhausted balance, bad
//! configuration), a rate limiter, and an in-flight limit.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::decide::{Admission, GateEffect};

/// Why and until when a provider is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pause {
    /// Balance or call quota exhausted: one order per `probe_every` may go
    /// through; the first that is paid reopens the gate.
    UntilProbe { why: String, next_probe: i64 },
    /// Our configuration is wrong: nothing until the next reload.
    UntilReload { why: String },
}

/// Whether a recharge provider takes orders.
#[derive(Debug)]
pub(crate) struct Gate {
    pause: Mutex<Option<Pause>>,
    probe_every: i64,
}

impl Gate {
    /// An open gate; probes every `probe_every` once paused.
    pub fn new(probe_every: Duration) -> Gate {
        Gate {
            pause: Mutex::new(None),
            probe_every: probe_every.as_secs().max(1) as i64,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pause>> {
        self.pause.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks without taking a probe slot (for `plan` and `status`).
    pub fn peek(&self, now: i64) -> Admission {
        match &*self.lock() {
            None => Admission::Open,
            Some(Pause::UntilProbe { next_probe, .. }) if *next_probe <= now => Admission::Probe,
            Some(Pause::UntilProbe { why, next_probe }) => Admission::Closed {
                why: format!("{why}; next probe at {}", crate::timefmt::utc(*next_probe)),
            },
            Some(Pause::UntilReload { why }) => Admission::Closed {
                why: format!("{why}; fix the configuration and reload"),
            },
        }
    }

    /// Admits an order; a probe slot is taken when one is due.
    pub(crate) fn admit(&self, now: i64) -> Admission {
        let mut pause = self.lock();
        match &mut *pause {
            Some(Pause::UntilProbe { next_probe, .. }) if *next_probe <= now => {
                *next_probe = now + self.probe_every;
                Admission::Probe
            }
            _ => {
                drop(pause);
                self.peek(now)
            }
        }
    }

    /// Applies an outcome. Returns true when the gate newly paused.
    pub(crate) fn apply(&self, effect: GateEffect, why: &str, now: i64) -> bool {
        let mut pause = self.lock();
        match effect {
            GateEffect::None => false,
            GateEffect::Resume => {
                if matches!(*pause, Some(Pause::UntilProbe { .. })) {
                    *pause = None;
                }
                false
            }
            GateEffect::PauseUntilProbe => {
                let newly = pause.is_none();
                if !matches!(*pause, Some(Pause::UntilReload { .. })) {
                    *pause = Some(Pause::UntilProbe {
                        why: why.to_owned(),
                        next_probe: now + self.probe_every,
                    });
                }
                newly
            }
            GateEffect::PauseUntilReload => {
                let newly = !matches!(*pause, Some(Pause::UntilReload { .. }));
                *pause = Some(Pause::UntilReload {
                    why: why.to_owned(),
                });
                newly
            }
        }
    }
}

/// Spaces requests `interval` apart (a leaky bucket without bursts).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// One request per `interval`.
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub(crate) async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Rate limit and in-flight cap of one provider.
#[derive(Debug)]
pub(crate) struct Traffic {
    /// `None`: unlimited.
    pub rate: Option<RateLimiter>,
    /// Requests in flight at once.
    pub slots: Semaphore,
}

impl Traffic {
    /// From a provider's `rate_limit` and `max_in_flight`.
    pub fn new(rate: Option<crate::units::Rate>, max_in_flight: usize) -> Traffic {
        Traffic {
            rate: rate.map(|r| RateLimiter::new(r.interval())),
            slots: Semaphore::new(max_in_flight.max(1)),
        }
    }

    /// Waits for an in-flight slot, then for a rate slot: for a request
    /// that leaves at once.
    pub async fn enter(&self) -> tokio::sync::SemaphorePermit<'_> {
        let permit = self.slot().await;
        self.pace().await;
        permit
    }

    /// Waits for an in-flight slot.
    pub async fn slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.slots
            .acquire()
            .await
            .expect("provider semaphores are never closed")
    }

    /// Waits for a rate slot. Call it just before the request leaves:
    /// slots taken earlier, with work of varying length between (a second
    /// read, the store), let requests leave bunched up, above the rate.
    pub(crate) async fn pace(&self) {
        if let Some(rate) = &self.rate {
            rate.acquire().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_pauses_until_a_probe_pays() {
        let g = Gate::new(Duration::from_secs(600));
        assert_eq!(g.admit(0), Admission::Open);
        assert!(g.apply(GateEffect::PauseUntilProbe, "10022 balance", 0));
        assert!(matches!(g.admit(10), Admission::Closed { .. }));
        assert_eq!(g.admit(600), Admission::Probe);
        assert!(
            matches!(g.admit(601), Admission::Closed { .. }),
            "one probe per interval"
        );
        assert!(!g.apply(GateEffect::PauseUntilProbe, "10022 again", 601));
        assert!(matches!(g.admit(1000), Admission::Closed { .. }));
        assert_eq!(g.admit(1201), Admission::Probe);
        g.apply(GateEffect::Resume, "", 1201);
        assert_eq!(g.admit(1202), Admission::Open);
    }

    #[test]
    fn config_pauses_until_reload() {
        let g = Gate::new(Duration::from_secs(1));
        assert!(g.apply(GateEffect::PauseUntilReload, "10003 sign", 0));
        g.apply(GateEffect::Resume, "", 5);
        assert!(matches!(g.admit(1_000_000), Admission::Closed { why } if why.contains("reload")));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_requests() {
        let r = RateLimiter::new(Duration::from_millis(100));
        let start = Instant::now();
        for _ in 0..5 {
            r.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
