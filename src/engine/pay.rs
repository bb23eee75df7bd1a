//! Paying for one renewal: a sequence of small steps, each of which may
//! stop the payment, and whose order is the whole safety story:
//!
//! 1. [`Engine::cleared`]: plugins may veto; a dry run stops here;
//! 2. wait for the provider's in-flight and rate slots, then
//!    [`Engine::admitted`]: not shutting down, provider not paused;
//! 3. [`Engine::still_due`]: re-read the expiry (unless the decision's
//!    read is younger than [`SECOND_LOOK_AFTER`]); stop if it moved since
//!    the decision; ask the clock again ([`Engine::trusted_now`]);
//! 4. [`Engine::plan_order`]: the ledger's guards (key unused or retryable,
//!    no other rule's order in flight, budget held);
//! 5. [`Engine::ready_to_send`]: planned made durable, marked `sent`, and
//!    that made durable;
//! 6. [`Engine::send`]: only then does the request leave;
//! 7. [`Engine::record`]: what the reply means, durably; then
//!    [`Engine::announce`] and [`Engine::follow_ups`].
//!
//! A crash before 5 ends leaves `planned` (never sent, retried after a
//! restart); a crash after leaves `sent`, which a restart turns into
//! `unknown`: possibly paid, never re-sent automatically.

use std::sync::Arc;
use std::time::Duration;

use super::check::log_transition;
use super::decide::{self, Admission, AfterAttempt, GateEffect};
use super::events::{Event, EventKind};
use super::hooks::Veto;
use super::terms::{Decided, SECOND_LOOK_AFTER, Terms};
use super::{Engine, Runtime, Seller, period};
use crate::config::{Account, Product};
use crate::ledger::{
    AttemptResult, Order, OrderState, PlanRequest, Recorded, Refusal, decision_key,
};
use crate::upstream::{Attempt, RechargeRequest};

/// What one payment is about.
struct Renewal<'a> {
    rt: &'a Arc<Runtime>,
    terms: &'a Terms<'a>,
    account: &'a Account,
    product: &'a Product,
    /// The end the decision saw.
    observed_end: Option<i64>,
    /// The order's key: rule, account, membership, period.
    key: String,
}

impl Engine {
    /// Pays for one renewal, through every guard. Returns the order when
    /// one was planned.
    pub(super) async fn renew(
        self: &Arc<Self>,
        rt: &Arc<Runtime>,
        terms: &Terms<'_>,
        account: &Account,
        product: &Product,
        decided: Decided,
    ) -> Option<Order> {
        let Decided {
            observed_end,
            why,
            check_slot,
            read_at,
        } = decided;
        let key = decision_key(terms.name, &account.name, terms.membership, observed_end);
        let r = Renewal {
            rt,
            terms,
            account,
            product,
            observed_end,
            key,
        };
        let approval_asked = self.cleared(&r, &why).await?;
        let seller = rt.seller_of(product);
        // The in-flight slot now; the rate slot when the request leaves.
        let _slot = seller.traffic.slot().await;
        // Paying is bounded by the provider's `max_in_flight` from here:
        // the check's slot goes to the next check. It is held until now,
        // so renewals waiting for an in-flight slot are never more than
        // `max_concurrent_checks`.
        drop(check_slot);
        if !self.admitted(&r, seller) || !self.still_due(&r, read_at).await {
            return None;
        }
        // The clock is asked again: the decision may be minutes old.
        let now = self.trusted_now(terms.name, account).await?;
        let order = self.plan_order(&r, why, approval_asked, now).await?;
        if order.state == OrderState::AwaitingApproval {
            return Some(order);
        }
        let order = match self.ready_to_send(&r, order).await {
            Ok(order) => order,
            Err(order) => return Some(order),
        };
        let attempt = self.send(&r, seller).await;
        let now = self.clock.unix();
        let (after, effect) = decide::after_attempt(
            attempt.outcome.class,
            seller.debug,
            order.attempts,
            now,
            observed_end,
            rt.config.daemon.retry_base_secs,
        );
        let (order, conflict) = match self.record(&r, seller, order, &attempt, after, now).await {
            Ok(recorded) => recorded,
            Err(order) => return Some(order),
        };
        self.announce(&r, seller, effect, &order, &attempt, conflict, now)
            .await;
        self.follow_ups(&r, &order, now);
        Some(order)
    }

    /// Step 1: no plugin vetoes, and this is not a dry run. `Some(why)`
    /// when a plugin asks a person to approve the renewal first.
    async fn cleared(&self, r: &Renewal<'_>, why: &str) -> Option<Option<String>> {
        let mut asked = None;
        match self.ask_plugins(r).await {
            Some(veto) if veto.ask_approval => {
                asked = Some(format!("plugin {} asks: {}", veto.plugin, veto.reason));
            }
            Some(veto) => {
                self.record_veto(r.terms, r.account, &r.key, veto).await;
                return None;
            }
            None => {}
        }
        if self.dry_run {
            tracing::info!(account = %r.account.name, rule = %r.terms.name, product = %r.product.name, "dry run: would renew ({why})");
            return None;
        }
        Some(asked)
    }

    /// Step 2, once a slot is held: not shutting down, and the provider's
    /// gate is open.
    fn admitted(&self, r: &Renewal<'_>, seller: &Seller) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        if let Admission::Closed { why } = seller.gate.admit(self.clock.unix()) {
            tracing::info!(account = %r.account.name, provider = %r.product.provider, "provider paused: {why}");
            return false;
        }
        true
    }

    /// Step 3: the expiry read right before paying is the one decided on:
    /// the decision's own read when it is younger than
    /// [`SECOND_LOOK_AFTER`], else a second look.
    async fn still_due(&self, r: &Renewal<'_>, read_at: tokio::time::Instant) -> bool {
        if read_at.elapsed() < SECOND_LOOK_AFTER {
            return true;
        }
        match self.read(r.rt, r.account).await {
            Ok(info) if info.end(r.terms.membership) != r.observed_end => {
                tracing::info!(account = %r.account.name, rule = %r.terms.name, "expiry moved before paying; deciding again");
                self.follow_up(r.terms.name, &r.account.name, Duration::from_secs(1));
                false
            }
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(account = %r.account.name, error = %e, "re-read before paying failed; not paying");
                false
            }
        }
    }

    /// Step 4: the ledger plans the order under its guards, or says why
    /// not (a budget refusal and a store error are alerts). An order the
    /// ledger plans as awaiting approval is announced and goes no further.
    async fn plan_order(
        &self,
        r: &Renewal<'_>,
        why: String,
        approval_asked: Option<String>,
        now: i64,
    ) -> Option<Order> {
        let (day, month) = period::periods(now, r.rt.config.daemon.timezone);
        let request = PlanRequest {
            key: r.key.clone(),
            rule: r.terms.name.to_owned(),
            account: r.account.name.clone(),
            membership: r.terms.membership,
            observed_end: r.observed_end,
            product: r.product.name.clone(),
            provider: r.product.provider.clone(),
            max_price: r.product.max_price,
            max_attempts: r.terms.max_attempts,
            budget: r.terms.budget,
            day,
            month,
            why,
            approval_asked,
        };
        match self.store.plan(&request, now).await {
            Ok(Ok(order)) if order.state == OrderState::AwaitingApproval => {
                if let Err(e) = self.store.durable_order(&order.key).await {
                    tracing::warn!(order = %order.key, error = %e, "the order awaiting approval is not yet on disk; nothing was sent");
                }
                log_transition(&order);
                let mut ev = Event::new(
                    EventKind::ApprovalRequired,
                    now,
                    format!(
                        "{}; approve with `vipd orders approve {} --reason …` or decline",
                        order.last_why(),
                        order.key
                    ),
                )
                .order(&order);
                ev.price = Some(order.max_price.as_yuan_f64());
                ev.reason = order
                    .last_why()
                    .split_once(": ")
                    .map(|(_, why)| why.to_owned());
                self.emit(ev).await;
                Some(order)
            }
            Ok(Ok(order)) => {
                log_transition(&order);
                Some(order)
            }
            Ok(Err(refusal @ Refusal::Budget { .. })) => {
                self.alert(
                    r,
                    EventKind::BudgetExceeded,
                    format!("not renewing: {refusal}"),
                )
                .await;
                None
            }
            Ok(Err(refusal)) => {
                tracing::info!(account = %r.account.name, rule = %r.terms.name, "not paying: {refusal}");
                None
            }
            Err(e) => {
                self.alert(r, EventKind::Error, format!("cannot plan the order: {e}"))
                    .await;
                None
            }
        }
    }

    /// Step 5: the order marked `sent`, and the plan and the mark made
    /// durable by one commit (the store's log keeps their order: a durable
    /// mark means a durable plan). `Err` carries the order as it stays
    /// (not sent). Were the commit to fail, the order stays `sent` and a
    /// restart makes it `unknown`, though nothing left: an alert and a
    /// resolution, never a second payment. One wait instead of two (one
    /// for the plan, one for the mark) spares every renewal a commit.
    async fn ready_to_send(&self, r: &Renewal<'_>, order: Order) -> Result<Order, Order> {
        let order = match self.store.mark_sent(&order.key, self.clock.unix()).await {
            Ok(o) => o,
            Err(e) => {
                let why = format!("cannot mark the order sent, not sending: {e}");
                self.alert(r, EventKind::Error, why).await;
                return Err(order);
            }
        };
        if let Err(e) = self.store.durable_order(&order.key).await {
            let why =
                format!("the planned order and its sent mark are not durable, not sending: {e}");
            self.alert(r, EventKind::Error, why).await;
            return Err(order);
        }
        log_transition(&order);
        Ok(order)
    }

    /// Step 6: the request leaves. The vendor's `curtime` anchors the time
    /// decisions use (its clock is the one that matters for money).
    async fn send(&self, r: &Renewal<'_>, seller: &Seller) -> Attempt {
        let notify = r.rt.notify_url(&r.product.provider);
        seller.traffic.pace().await;
        let started = std::time::Instant::now();
        let attempt = seller
            .client
            .send(&RechargeRequest {
                path: &r.product.path,
                target: &r.account.qq_number,
                notify_url: Some(&notify),
                extra: &r.product.params,
            })
            .await;
        if let Some(curtime) = attempt.outcome.reply.as_ref().and_then(|r| r.curtime) {
            self.time.vendor(curtime, tokio::time::Instant::now());
        }
        self.metrics.attempt(
            &r.product.provider,
            attempt.outcome.class.as_str(),
            started.elapsed(),
        );
        attempt
    }

    /// Step 7: what the reply means (`after`, decided from its class),
    /// recorded durably. `Err` carries the order when it could not be
    /// recorded: it stays `sent`, and a restart makes it `unknown`.
    async fn record(
        &self,
        r: &Renewal<'_>,
        seller: &Seller,
        order: Order,
        attempt: &Attempt,
        after: AfterAttempt,
        now: i64,
    ) -> Result<(Order, Option<String>), Order> {
        let class = attempt.outcome.class;
        let reply = attempt.outcome.reply.as_ref();
        let price = reply
            .and_then(|r| r.price)
            .or_else(|| seller.debug.then_some(crate::units::Fen::ZERO));
        let vendor_orderid = reply.and_then(|r| r.orderid.clone());
        let result = match after {
            AfterAttempt::Succeeded => AttemptResult::Succeeded {
                price,
                vendor_orderid,
                verify_deadline: now + r.terms.verify_within.as_secs() as i64,
            },
            AfterAttempt::Pending => AttemptResult::Pending {
                price,
                vendor_orderid,
            },
            AfterAttempt::Unknown => AttemptResult::Unknown,
            AfterAttempt::Failed { retry_at } => AttemptResult::Failed { retry_at },
        };
        let recorded = self
            .store
            .record_attempt(&order.key, now, class, &attempt.outcome.detail, result)
            .await;
        let Recorded { order, conflict } = match recorded {
            Ok(recorded) => recorded,
            Err(e) => {
                let why = format!("cannot record the reply ({class}): {e}");
                self.alert(r, EventKind::Error, why).await;
                return Err(order);
            }
        };
        // The reply is recorded. Should it not reach the disk now, a
        // crash before the next sync leaves the attempt `sent`, which
        // start-up makes `unknown` (never sent again): safe, and said.
        if let Err(e) = self.store.durable_order(&order.key).await {
            tracing::warn!(
                order = %order.key,
                error = %e,
                "the vendor's reply is recorded but not yet on disk; a crash now leaves the order unknown, never re-sent"
            );
        }
        log_transition(&order);
        Ok((order, conflict))
    }

    /// What the attempt did, told once: the result, a paused provider, a
    /// billing conflict, and an order that is now unknown or settled.
    #[allow(clippy::too_many_arguments)]
    async fn announce(
        &self,
        r: &Renewal<'_>,
        seller: &Seller,
        effect: GateEffect,
        order: &Order,
        attempt: &Attempt,
        conflict: Option<String>,
        now: i64,
    ) {
        let class = attempt.outcome.class;
        let detail = &attempt.outcome.detail;
        let emit = |kind, text| self.emit(attempt_event(kind, text, order, attempt, now));
        emit(
            EventKind::RechargeResult,
            format!(
                "attempt {}: {class}: {detail} → order {}",
                order.attempts, order.state
            ),
        )
        .await;
        if seller.gate.apply(effect, detail, now) {
            let until = if effect == GateEffect::PauseUntilReload {
                "until the configuration is reloaded"
            } else {
                "until a probe order succeeds"
            };
            emit(
                EventKind::ProviderPaused,
                format!("provider {} paused: {detail} ({until})", r.product.provider),
            )
            .await;
        }
        if let Some(conflict) = conflict {
            emit(EventKind::BillingConflict, conflict).await;
        }
        match order.state {
            OrderState::Unknown => emit(
                EventKind::OrderUnknown,
                format!(
                    "possibly paid, not re-sending: {detail}; resolve by evidence or `vipd orders resolve {}`",
                    order.key
                ),
            ).await,
            OrderState::Succeeded => emit(EventKind::OrderSettled, format!("succeeded: {detail}")).await,
            _ => {}
        }
    }

    /// The next checks: the retry time of a failed attempt, or a series of
    /// quick reads to see the new end.
    fn follow_ups(&self, r: &Renewal<'_>, order: &Order, now: i64) {
        let (rule, account) = (r.terms.name, &r.account.name);
        match order.state {
            OrderState::Failed => {
                if let Some(at) = order
                    .retry_at
                    .filter(|_| order.attempts < r.terms.max_attempts)
                {
                    self.follow_up(rule, account, Duration::from_secs((at - now).max(1) as u64));
                }
            }
            _ => self.follow_up_series(rule, account),
        }
    }

    /// An alert about this renewal's order.
    async fn alert(&self, r: &Renewal<'_>, kind: EventKind, detail: String) {
        self.emit(
            Event::new(kind, self.clock.unix(), detail)
                .about(&r.account.name, r.terms.name)
                .key(&r.key),
        )
        .await;
    }
}

impl Engine {
    /// Asks the `before_recharge` listeners of the renewal's generation.
    async fn ask_plugins(&self, r: &Renewal<'_>) -> Option<Veto> {
        let Renewal {
            rt,
            terms,
            account,
            product,
            key,
            ..
        } = r;
        if !rt.hooks.listens(EventKind::BeforeRecharge) {
            return None;
        }
        let mut ev = Event::new(
            EventKind::BeforeRecharge,
            self.clock.unix(),
            format!("about to renew {} for {}", terms.membership, account.name),
        )
        .about(&account.name, terms.name)
        .key(key);
        ev.membership = Some(terms.membership.as_str().to_owned());
        ev.product = Some(product.name.clone());
        ev.provider = Some(product.provider.clone());
        ev.price = Some(product.max_price.as_yuan_f64());
        ev.dry_run = self.dry_run;
        rt.hooks.veto(ev).await
    }

    /// A veto is recorded in the ledger: in the check state (what
    /// `status` shows) and, once per streak, in the event log.
    async fn record_veto(&self, terms: &Terms<'_>, account: &Account, key: &str, veto: Veto) {
        let decision = format!("vetoed by plugin {}: {}", veto.plugin, veto.reason);
        let mut state = self
            .store
            .check_state(terms.name, &account.name)
            .await
            .unwrap_or_default();
        let repeated = state.veto.as_ref() == Some(&decision);
        state.decision = decision.clone();
        state.veto = Some(decision.clone());
        if let Err(e) = self
            .store
            .put_check_state(terms.name, &account.name, &state)
            .await
        {
            tracing::error!(account = %account.name, error = %e, "could not record a veto");
        }
        if repeated {
            tracing::debug!(account = %account.name, rule = %terms.name, "{decision} (again)");
            return;
        }
        let mut ev = Event::new(EventKind::RenewalVetoed, self.clock.unix(), decision)
            .about(&account.name, terms.name)
            .key(key);
        ev.plugin = Some(veto.plugin);
        ev.reason = Some(veto.reason);
        self.emit(ev).await;
    }
}

/// An event about one attempt: it carries the order and the reply.
fn attempt_event(
    kind: EventKind,
    detail: String,
    order: &Order,
    attempt: &Attempt,
    now: i64,
) -> Event {
    let reply = attempt.outcome.reply.as_ref();
    let mut ev = Event::new(kind, now, detail).order(order);
    ev.class = Some(attempt.outcome.class.as_str().to_owned());
    ev.codeid = reply.map(|r| r.codeid);
    ev.message = Some(reply.map_or_else(|| attempt.outcome.detail.clone(), |r| r.message.clone()));
    ev
}
