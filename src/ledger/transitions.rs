//! An order's transitions after it is planned: sent, replies, settlements,
//! refutes, overdue callbacks, verification, recovery. What each does to
//! the budget is what its attempts say (see `derived.rs`).

use super::*;
use crate::model::OutcomeClass;

impl Ledger {
    /// Reads, changes and writes one order, under the write lock. Its
    /// budget effects and vendor ids follow from the order itself (see
    /// `derived.rs`), so this is one insert, never a batch.
    fn modify<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut Order) -> Result<R, LedgerError>,
    ) -> Result<(Order, R), LedgerError> {
        let _guard = self.lock();
        let mut order = self
            .get(key)?
            .ok_or_else(|| LedgerError::NotFound(key.to_owned()))?;
        let was = Share::of(&order);
        if order.attempts > 0 {
            // An order written before attempts were recorded gets them made
            // up first, while its hold still says where its money counts.
            order.attempt_mut(order.attempts);
        }
        let added = order.history.len();
        let r = f(&mut order)?;
        order.spent = Fen(order.attempt_log.iter().map(|a| a.spent.0).sum());
        order.stamp_from(added, self.clock.unix_ms());
        self.write_order(Some(&was), &order)?;
        Ok((order, r))
    }

    /// `planned` → `sent`, just before the request leaves. The caller must
    /// await [`Ledger::durable`] before sending: after a crash, `sent`
    /// means "may have left" and becomes `unknown`.
    pub fn mark_sent(&self, key: &str, now: i64) -> Result<Order, LedgerError> {
        self.modify(key, |o| {
            expect_state(o, &[OrderState::Planned], OrderState::Sent)?;
            o.attempt_mut(o.attempts).state = AttemptState::Sent;
            o.enter(OrderState::Sent, now, "request leaving");
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// Records what the current attempt's reply means.
    ///
    /// The attempt must be `sent`. The order follows it while the order is
    /// `sent` too; if a callback for an earlier attempt settled the order
    /// meanwhile (the vendor billed that one after all), only the attempt
    /// is recorded, and a billed reply is counted as a second payment.
    pub fn record_attempt(
        &self,
        key: &str,
        now: i64,
        outcome: OutcomeClass,
        detail: &str,
        result: AttemptResult,
    ) -> Result<Recorded, LedgerError> {
        self.modify(key, |o| {
            let to = match &result {
                AttemptResult::Succeeded { .. } => OrderState::Succeeded,
                AttemptResult::Pending { .. } => OrderState::Pending,
                AttemptResult::Unknown => OrderState::Unknown,
                AttemptResult::Failed { .. } => OrderState::Failed,
            };
            let n = o.attempts;
            if o.attempt_mut(n).state != AttemptState::Sent {
                return Err(LedgerError::Illegal {
                    key: o.key.clone(),
                    from: o.state,
                    to,
                });
            }
            let follows = o.state == OrderState::Sent;
            let mut conflict = None;
            o.last_outcome = Some(outcome.as_str().to_owned());
            match result {
                AttemptResult::Succeeded {
                    price,
                    vendor_orderid,
                    verify_deadline,
                } => {
                    charge(o, n, price);
                    index_vendor(o, n, vendor_orderid);
                    o.attempt_mut(n).state = AttemptState::Paid;
                    conflict = billed_twice(o, n);
                    if follows {
                        o.verification = Verification::Waiting {
                            deadline: verify_deadline,
                        };
                    }
                }
                AttemptResult::Pending {
                    price,
                    vendor_orderid,
                } => {
                    charge(o, n, price);
                    index_vendor(o, n, vendor_orderid);
                    o.attempt_mut(n).state = AttemptState::Pending;
                }
                AttemptResult::Unknown => o.attempt_mut(n).state = AttemptState::Unknown,
                AttemptResult::Failed { retry_at } => {
                    refund(o, n);
                    o.attempt_mut(n).state = AttemptState::NotPaid;
                    if follows {
                        o.retry_at = retry_at;
                    }
                }
            }
            if follows {
                o.enter(to, now, format!("{outcome}: {detail}"));
            } else {
                let state = o.state;
                o.enter(
                    state,
                    now,
                    format!(
                        "attempt {n} answered after the order was settled: {outcome}: {detail}"
                    ),
                );
            }
            Ok(conflict)
        })
        .map(|(order, conflict)| Recorded { order, conflict })
    }

    /// Settles the current attempt by evidence (the membership end moved)
    /// or an operator. Returns `None` (and changes nothing) when the order
    /// was already settled.
    pub fn settle(
        &self,
        key: &str,
        now: i64,
        settlement: Settlement,
    ) -> Result<Option<Order>, LedgerError> {
        Ok(match self.settle_attempt(key, None, now, settlement)? {
            Settled::Changed { order, .. } => Some(order),
            Settled::Repeated | Settled::Contradicted { .. } => None,
        })
    }

    /// Settles one attempt of an order: `attempt` names it (a callback
    /// names it through the vendor's order id), `None` means the current
    /// one.
    ///
    /// - A payment for an attempt already paid, or a refusal for one
    ///   already not paid, is a repeat: nothing changes.
    /// - A payment is always recorded and counted in the budget, whatever
    ///   the order's state: money the vendor took is money spent. When the
    ///   ledger had that attempt as not paid, or another attempt is paid
    ///   too, the result says so ([`Settled::Changed::conflict`]).
    /// - A refusal changes the order only when it names the current
    ///   attempt of an open order; for an earlier attempt it is recorded
    ///   on that attempt alone. A refusal for a paid attempt is a
    ///   contradiction: nothing changes, and the caller alerts.
    pub fn settle_attempt(
        &self,
        key: &str,
        attempt: Option<u32>,
        now: i64,
        settlement: Settlement,
    ) -> Result<Settled, LedgerError> {
        let (order, result) = self.modify(key, |o| {
            let current = o.attempts;
            let n = attempt.unwrap_or(current);
            if n == 0 || n > current {
                return Ok(Err(format!(
                    "attempt {n} does not exist (the order has {current})"
                )));
            }
            let was = o.attempt_mut(n).state;
            match &settlement {
                Settlement::Paid {
                    price,
                    verify_deadline,
                    why,
                } => {
                    if was == AttemptState::Paid {
                        // The order itself may still be open when the
                        // current attempt was answered 10000 earlier.
                        return Ok(Ok(None));
                    }
                    if matches!(was, AttemptState::Planned) {
                        return Ok(Err(format!("attempt {n} was never sent")));
                    }
                    charge(o, n, *price);
                    o.attempt_mut(n).state = AttemptState::Paid;
                    let conflict = if let Some(twice) = billed_twice(o, n) {
                        Some(twice)
                    } else if was == AttemptState::NotPaid {
                        Some(format!(
                            "the vendor billed attempt {n}, which the ledger had as not paid; counted in the budget"
                        ))
                    } else {
                        None
                    };
                    if o.state != OrderState::Succeeded {
                        o.retry_at = None;
                        if o.verification == Verification::None {
                            o.verification = Verification::Waiting {
                                deadline: *verify_deadline,
                            };
                        }
                        let why = if n == current {
                            why.clone()
                        } else {
                            format!("{why}; for attempt {n} of {current}")
                        };
                        o.enter(OrderState::Succeeded, now, why);
                    } else {
                        o.enter(
                            OrderState::Succeeded,
                            now,
                            format!("{why}; attempt {n} paid as well"),
                        );
                    }
                    Ok(Ok(Some(conflict)))
                }
                Settlement::NotPaid { retry_at, why } => match was {
                    AttemptState::NotPaid | AttemptState::Planned => Ok(Ok(None)),
                    AttemptState::Paid => Ok(Err(format!(
                        "attempt {n} is recorded as paid; the vendor now says: {why}"
                    ))),
                    AttemptState::Sent | AttemptState::Pending | AttemptState::Unknown => {
                        refund(o, n);
                        o.attempt_mut(n).state = AttemptState::NotPaid;
                        if n == current && o.state.is_open() {
                            o.retry_at = *retry_at;
                            o.enter(OrderState::Failed, now, why.clone());
                        } else {
                            let state = o.state;
                            o.enter(state, now, format!("attempt {n}: {why}"));
                        }
                        Ok(Ok(Some(None)))
                    }
                },
            }
        })?;
        Ok(match result {
            Ok(Some(conflict)) => Settled::Changed { order, conflict },
            Ok(None) => Settled::Repeated,
            Err(why) => Settled::Contradicted { order, why },
        })
    }

    /// An operator says a paid order whose renewal never showed was in
    /// fact not delivered: it becomes `failed`, its spending is refunded to
    /// the budget, and its key may be retried. Only for `unverified` orders.
    pub fn refute_unverified(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        self.modify(key, |o| {
            if o.state != OrderState::Succeeded
                || !matches!(o.verification, Verification::Unverified { .. })
            {
                return Err(LedgerError::Illegal {
                    key: o.key.clone(),
                    from: o.state,
                    to: OrderState::Failed,
                });
            }
            for n in o.paid_attempts() {
                refund(o, n);
                o.attempt_mut(n).state = AttemptState::NotPaid;
            }
            o.retry_at = Some(now);
            o.enter(OrderState::Failed, now, why);
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// A `pending` order whose callback did not come in time becomes
    /// `unknown`: possibly paid (its money stays counted), never re-sent,
    /// resolved by evidence, a late callback, or an operator.
    pub fn callback_overdue(&self, key: &str, now: i64, why: &str) -> Result<Order, LedgerError> {
        self.modify(key, |o| {
            expect_state(o, &[OrderState::Pending], OrderState::Unknown)?;
            let n = o.attempts;
            o.attempt_mut(n).state = AttemptState::Unknown;
            o.enter(OrderState::Unknown, now, why);
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// Records the verification of a paid order.
    pub fn set_verification(&self, key: &str, v: Verification) -> Result<Order, LedgerError> {
        self.modify(key, |o| {
            o.verification = v;
            Ok(())
        })
        .map(|(o, ())| o)
    }

    /// The attempt a vendor order id names: `(key, attempt)`. Orders
    /// written before attempts were recorded name only the key; it stands
    /// for the order's current attempt.
    pub fn attempt_of_vendor_order(
        &self,
        provider: &str,
        vendor_orderid: &str,
    ) -> Result<Option<(String, Option<u32>)>, LedgerError> {
        Ok(self.derived.vendor_order(provider, vendor_orderid))
    }

    /// Binds a vendor order id to the current attempt of `key` (a callback
    /// matched by its target, whose reply was lost), so that the same
    /// callback delivered again finds the same attempt.
    pub fn bind_vendor_order(&self, key: &str, vendor_orderid: &str) -> Result<u32, LedgerError> {
        self.modify(key, |o| {
            let n = o.attempts;
            index_vendor(o, n, Some(vendor_orderid.to_owned()));
            Ok(n)
        })
        .map(|(_, n)| n)
    }

    /// Start-up recovery: `sent` orders may have left, so they become
    /// `unknown`; `planned` orders never left, so they become `failed` and
    /// may be retried at once. Returns the orders changed.
    pub fn recover(&self, now: i64) -> Result<Vec<Order>, LedgerError> {
        let mut changed = Vec::new();
        for o in self.orders(None)? {
            match o.state {
                OrderState::Sent => {
                    let (o, ()) = self.modify(&o.key, |o| {
                        o.attempt_mut(o.attempts).state = AttemptState::Unknown;
                        o.enter(
                            OrderState::Unknown,
                            now,
                            "the daemon stopped while the request was in flight; it may have been paid",
                        );
                        Ok(())
                    })?;
                    changed.push(o);
                }
                OrderState::Planned => {
                    let (o, ()) = self.modify(&o.key, |o| {
                        let n = o.attempts;
                        refund(o, n);
                        o.attempt_mut(n).state = AttemptState::NotPaid;
                        o.retry_at = Some(now);
                        o.enter(
                            OrderState::Failed,
                            now,
                            "the daemon stopped before the request left; not paid",
                        );
                        Ok(())
                    })?;
                    changed.push(o);
                }
                _ => {}
            }
        }
        Ok(changed)
    }
}

/// When attempt `n`, just paid, is not the only paid attempt of its
/// order: the period was billed twice. One rule for replies and callbacks.
fn billed_twice(o: &Order, n: u32) -> Option<String> {
    let other = o.paid_attempts().into_iter().find(|m| *m != n)?;
    Some(format!(
        "the period is billed twice: attempt {n} and attempt {other} are both paid"
    ))
}

fn expect_state(o: &Order, from: &[OrderState], to: OrderState) -> Result<(), LedgerError> {
    if from.contains(&o.state) {
        Ok(())
    } else {
        Err(LedgerError::Illegal {
            key: o.key.clone(),
            from: o.state,
            to,
        })
    }
}

/// Attempt `n` was billed at `price` (or, when the vendor did not say, at
/// what it was counted at already, else the held maximum). The current
/// attempt's hold, if still there, becomes spending (in the same periods).
fn charge(o: &mut Order, n: u32, price: Option<Fen>) {
    let hold = if n == o.attempts { o.hold.take() } else { None };
    let a = o.attempt_mut(n);
    let counted = a.spent;
    let paid = price.unwrap_or(if counted > Fen::ZERO {
        counted
    } else {
        a.periods.amount
    });
    a.spent = paid;
    if let Some(h) = hold {
        o.charged_to = Some(h);
    }
    o.price = Some(paid);
}

/// Attempt `n` was not billed (or was refunded): its hold and spending go
/// back to the budget.
fn refund(o: &mut Order, n: u32) {
    if n == o.attempts {
        o.hold = None;
    }
    o.attempt_mut(n).spent = Fen::ZERO;
}

fn index_vendor(o: &mut Order, n: u32, vendor_orderid: Option<String>) {
    if let Some(id) = vendor_orderid.filter(|s| !s.is_empty()) {
        o.vendor_orderid = Some(id.clone());
        o.attempt_mut(n).vendor_orderid = Some(id);
    }
}
