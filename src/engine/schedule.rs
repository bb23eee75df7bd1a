//! The scheduler: every (rule, account) pair woken at its next check
//! (spread over the window so that 10,000 accounts do not fire in one
//! second), follow-ups after payments, and dispatch bounded by
//! `max_concurrent_checks`.

use super::*;

impl Engine {
    /// Asks for a check of (rule, account) after `delay`.
    pub(super) fn follow_up(&self, rule: &str, account: &str, delay: Duration) {
        self.wake(rule, account, delay, None);
    }

    /// Asks for the quick checks after a payment, at each of
    /// [`super::check::FOLLOW_UPS`] from now. The heap holds one wake of
    /// the series at a time (each pushes the next as it fires), not all of
    /// them: at 10,000 payments, 10,000 wakes instead of 80,000.
    pub(super) fn follow_up_series(&self, rule: &str, account: &str) {
        let first = Duration::from_secs(super::check::FOLLOW_UPS[0]);
        self.wake(rule, account, first, Some(0));
    }

    fn wake(&self, rule: &str, account: &str, delay: Duration, series: Option<u8>) {
        // Fails only once the scheduler has stopped (shutdown): then no
        // check is to run.
        let _ = self.wake_tx.send(Wake {
            at: tokio::time::Instant::now() + delay,
            rule: rule.into(),
            account: account.into(),
            regular: false,
            series,
        });
    }

    /// Runs the scheduler until `stop` is cancelled, then stops taking new
    /// work and waits for checks in flight to finish (orders in flight
    /// settle or are recorded before this returns).
    pub async fn run(self: &Arc<Self>, stop: CancellationToken) {
        let Some(mut rx) = self
            .wake_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            tracing::error!("the engine is already running");
            return;
        };
        let mut heap: BinaryHeap<Reverse<Wake>> = BinaryHeap::new();
        // Generations start at 1, so the first pass builds the schedule.
        let mut generation = 0;
        'wake: loop {
            // At start, and after a reload (which may add or drop pairs):
            // every pair's first check, spread over `startup_spread`.
            let rt = self.runtime();
            if rt.generation != generation {
                generation = rt.generation;
                heap.retain(|Reverse(w)| !w.regular);
                let now = tokio::time::Instant::now();
                for rule in &rt.config.rules {
                    for account in &rule.accounts {
                        let offset = spread(&rule.name, account, rt.config.daemon.startup_spread);
                        heap.push(Reverse(Wake {
                            at: now + offset,
                            rule: rule.name.clone(),
                            account: account.clone(),
                            regular: true,
                            series: None,
                        }));
                    }
                }
            }
            drop(rt);
            let mono = tokio::time::Instant::now();
            self.next_wake.store(
                heap.peek().map_or(0, |Reverse(w)| {
                    self.clock.unix_ms() + w.at.saturating_duration_since(mono).as_millis() as i64
                }),
                std::sync::atomic::Ordering::Relaxed,
            );
            let sleep_for = heap.peek().map_or(Duration::from_secs(3600), |Reverse(w)| {
                w.at.saturating_duration_since(mono)
            });
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(sleep_for) => {}
                Some(w) = rx.recv() => { heap.push(Reverse(w)); continue; }
            }
            let now = tokio::time::Instant::now();
            while heap.peek().is_some_and(|Reverse(w)| w.at <= now) {
                // A free slot first, then the wake: pairs waiting for a
                // slot wait here as wakes in the heap (tens of bytes each),
                // not as spawned tasks (hundreds). With a million accounts
                // due in one `startup_spread`, that is 0.6 GB.
                // Follow-ups sent meanwhile move into the heap as they come,
                // so that a burst of payments does not pile them up in the
                // channel's blocks. A wake pushed cannot displace the due
                // one on top: the heap's top only moves earlier.
                let acquire = self.checks.clone().acquire_owned();
                tokio::pin!(acquire);
                let permit = loop {
                    tokio::select! {
                        _ = stop.cancelled() => break 'wake,
                        permit = &mut acquire => match permit {
                            Ok(p) => break p,
                            Err(_) => break 'wake,
                        },
                        Some(w) = rx.recv() => heap.push(Reverse(w)),
                    }
                };
                let Reverse(wake) = heap.pop().expect("peeked");
                if wake.regular {
                    if let Some(next) = self.next_regular(&wake, now) {
                        heap.push(Reverse(next));
                    }
                }
                if let Some(next) = wake.next_in_series() {
                    heap.push(Reverse(next));
                }
                self.dispatch(wake.rule, wake.account, permit);
            }
        }
        // Checks waiting for a slot give up before paying; checks whose
        // request has left run to the end, within a bound.
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "checks still in flight after {SHUTDOWN_GRACE:?}; their orders stay `sent` and become `unknown` at the next start"
            );
        }
    }

    /// The next regular wake of a pair: its rule's schedule shifted by the
    /// pair's spread offset, so the phase stays the same from cycle to cycle.
    /// Intervals count on the monotonic clock; a cron time is found on the
    /// wall clock and turned into a delay from `now`.
    fn next_regular(&self, wake: &Wake, now: tokio::time::Instant) -> Option<Wake> {
        let rt = self.runtime();
        // A pair dropped by a reload needs no check here: the reload makes
        // the next pass of `run` drop every regular wake and rebuild them,
        // and the wake pushed now lies at least one interval ahead.
        let rule = rt.config.rule(&wake.rule)?;
        let tz = rt.config.daemon.timezone;
        let at = match &rule.check {
            crate::config::Check::Every(d) => now + *d,
            crate::config::Check::Cron { .. } => {
                let wall = self.clock.unix_ms() / 1000;
                let interval = rule.check.interval(wall, tz);
                let offset = spread(&rule.name, &wake.account, interval).as_secs() as i64;
                let next = rule.check.next_after(wall - offset, tz)? + offset;
                now + Duration::from_secs((next - wall).max(1) as u64)
            }
        };
        Some(Wake {
            at,
            rule: wake.rule.clone(),
            account: wake.account.clone(),
            regular: true,
            series: None,
        })
    }

    /// Runs one check in a tracked task, holding its `max_concurrent_checks`
    /// slot (until it ends, or a renewal it decides has its in-flight
    /// slot), unless that pair is already being checked.
    fn dispatch(
        self: &Arc<Self>,
        rule: Arc<str>,
        account: Arc<str>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let pair = (rule, account);
        if !self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pair.clone())
        {
            return;
        }
        let engine = self.clone();
        self.tasks.spawn(async move {
            // A stop while the slot was being given: no new check.
            if !engine.cancel.is_cancelled() {
                let rt = engine.runtime();
                // Boxed: the check-and-pay state machine is large, and the
                // task is spawned by value; boxed, it moves a pointer.
                Box::pin(engine.check(&rt, &pair.0, &pair.1, Some(permit))).await;
            }
            engine
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pair);
        });
    }
}
