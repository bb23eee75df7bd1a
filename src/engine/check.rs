//! One check of one account under one rule: read the membership, settle
//! open orders by evidence, decide, and pay when due (`pay.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::decide::{self, BudgetView, Decision, Facts};
use std::collections::BTreeMap;

use super::events::{Event, EventKind, TermView};
use super::terms::{Decided, Terms};
use super::time::{Now, Source};
use super::{Engine, Runtime, lapse, period};
use crate::config::{Account, Product, Rule};
use crate::ledger::{
    CheckState, LedgerError, Order, OrderState, Standing, Verification, decision_key,
};
use crate::upstream::vipinfo::{Membership, VipInfo, VipInfoError};

/// Follow-up checks after a payment, to catch the new end quickly.
pub(super) const FOLLOW_UPS: [u64; 8] = [2, 5, 15, 30, 60, 120, 300, 900];

impl Engine {
    /// Reads an account's memberships through its reader's traffic control,
    /// with the freshest token (see `token.rs`): a token the API refuses
    /// is refreshed once and the read retried.
    pub(super) async fn read(
        &self,
        rt: &Runtime,
        account: &Account,
    ) -> Result<VipInfo, VipInfoError> {
        // One read of the stored token per membership read.
        let creds = self.credentials(account).await;
        let seen = creds.rotated_at;
        let refreshable = self.can_refresh(rt, account, &creds);
        let token = self.access_token(rt, account, creds).await;
        match self.fetch(rt, account, &token).await {
            Err(e) if e.is_token_problem() && refreshable => {
                match self.refresh(rt, account, seen, &e.to_string()).await {
                    Ok(token) => self.fetch(rt, account, &token).await,
                    Err(why) => {
                        tracing::warn!(account = %account.name, "token refused ({e}) and refresh failed: {why}");
                        Err(e)
                    }
                }
            }
            other => other,
        }
    }

    async fn fetch(
        &self,
        rt: &Runtime,
        account: &Account,
        token: &crate::config::Secret,
    ) -> Result<VipInfo, VipInfoError> {
        let reader = rt.reader_of(account);
        let _slot = reader.traffic.enter().await;
        let started = std::time::Instant::now();
        let result = reader.client.fetch(&account.openid, token).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.is_token_problem() => "auth_error",
            Err(_) => "error",
        };
        self.metrics.poll(
            &account.provider,
            outcome,
            started.elapsed(),
            self.clock.unix(),
        );
        result
    }

    /// One check; never fails (every problem is logged, counted or recorded).
    /// `slot` is its `max_concurrent_checks` slot: held until it ends, or
    /// handed to the renewal it decides (see [`Engine::renew`]).
    pub(super) async fn check(
        self: &Arc<Self>,
        rt: &Arc<Runtime>,
        rule_name: &str,
        account_name: &str,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        // On a shared store each pair is one node's to check at a time.
        match self.store.claim(rule_name, account_name).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(rule = rule_name, account = account_name, error = %e, "cannot claim the pair on the shared store; not checked");
                return;
            }
        }
        if rule_name == super::MANUAL_RULE {
            if let Some(account) = rt.config.account(account_name) {
                self.check_manual(rt, account).await;
            }
            return;
        }
        let (Some(rule), Some(account)) =
            (rt.config.rule(rule_name), rt.config.account(account_name))
        else {
            return;
        };
        let product = &*rule.product;
        let read = self.read(rt, account).await;
        let read_at = tokio::time::Instant::now();
        let info = match read {
            Ok(info) => {
                self.note_read_ok(account).await;
                if rt.hooks.listens(EventKind::VipInfo) {
                    let mut ev = Event::new(
                        EventKind::VipInfo,
                        self.clock.unix(),
                        format!("read {}'s memberships", account.name),
                    )
                    .about(&account.name, &rule.name);
                    ev.memberships = Some(VipView::of(&info).memberships);
                    self.emit_to(rt, ev).await;
                }
                info
            }
            Err(e) => {
                self.note_read_error(rule, account, &e).await;
                self.watch_unread(rt, rule, account).await;
                return;
            }
        };
        let end = info.end(rule.membership);
        let Some(now) = self.trusted_now(&rule.name, account).await else {
            return;
        };
        let orders = match self
            .settle_by_evidence(rt, account, rule.membership, end, now)
            .await
        {
            Ok(unchanged) => unchanged,
            Err(e) => {
                tracing::error!(account = %account.name, error = %e, "could not apply evidence to open orders");
                None
            }
        };
        let terms = Terms::of(rule);
        let decision = match self
            .decide_now(rt, &terms, account, product, end, now, orders.as_deref())
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(account = %account.name, rule = %rule.name, error = %e, "cannot read the ledger; no decision");
                return;
            }
        };
        let previous = self
            .store
            .check_state(&rule.name, &account.name)
            .await
            .unwrap_or_default();
        // A standing veto lasts while the renewal stays due.
        let veto = match decision {
            Decision::Renew { .. } => previous.veto.clone(),
            _ => None,
        };
        let mut state = CheckState {
            checked_at: Some(now),
            observed_end: end,
            decision: decision.describe(),
            veto,
            standing: decision.standing(),
            ..CheckState::default()
        };
        let next_check = rule
            .check
            .next_after(now, rt.config.daemon.timezone)
            .unwrap_or(i64::MAX);
        self.watch_approvals(
            rule,
            account,
            end,
            now,
            orders.as_deref(),
            next_check,
            &previous,
            &mut state,
        )
        .await;
        let renewing = matches!(decision, Decision::Renew { .. });
        let mut alarm = lapse::assess(end, now, rule.at_risk, renewing, &previous, &mut state);
        // The same alert as last time (same reason; same period, cap and
        // spend): the operator has heard about it already.
        let standing = state.standing.is_some() && previous.standing == state.standing;
        self.put_check(rule, account, &state).await;
        tracing::debug!(account = %account.name, rule = %rule.name, decision = %state.decision, "checked");
        match decision {
            Decision::Renew { why } => {
                let decided = Decided {
                    observed_end: end,
                    why,
                    check_slot: slot,
                    read_at,
                };
                if self
                    .renew(rt, &terms, account, product, decided)
                    .await
                    .is_none()
                {
                    // Nothing was paid (a veto, a gate, the clock): the end
                    // is as much at risk as it was. The renewal may have
                    // written the check (a veto recorded): only the
                    // markers change.
                    let mut again = self
                        .store
                        .check_state(&rule.name, &account.name)
                        .await
                        .unwrap_or_else(|_| state.clone());
                    alarm = lapse::assess(end, now, rule.at_risk, false, &previous, &mut again);
                    if alarm.is_some() {
                        self.put_check(rule, account, &again).await;
                        state.decision = again.decision;
                    }
                }
            }
            // Said once when an account starts being left alone (the
            // text names how long ago it lapsed, so it changes each time).
            Decision::Skip { why } if previous.standing != Some(Standing::Skipped) => {
                tracing::info!(account = %account.name, rule = %rule.name, "left alone: {why}");
            }
            Decision::GaveUp { .. } if standing => {}
            Decision::GaveUp { why } => {
                // No order can progress and the membership is inside its
                // window: it lapses unless an operator steps in.
                self.emit(
                    Event::new(
                        EventKind::Error,
                        now,
                        format!(
                            "{} is due and will not be renewed: {why}; it ends {}",
                            rule.membership,
                            end.map_or("now (lapsed)".into(), crate::timefmt::utc)
                        ),
                    )
                    .about(&account.name, &rule.name),
                )
                .await;
            }
            Decision::Held { .. } if standing => {}
            Decision::Held { why } => {
                let mut ev = Event::new(
                    EventKind::RenewalHeld,
                    now,
                    format!(
                        "not renewing {}: new orders are held: {why}",
                        rule.membership
                    ),
                )
                .about(&account.name, &rule.name);
                ev.reason = Some(why);
                self.emit(ev).await;
            }
            Decision::BudgetExceeded { .. } if standing => {
                tracing::debug!(account = %account.name, rule = %rule.name, "budget still exceeded; alerted already");
            }
            Decision::BudgetExceeded { period, cap, used } => {
                let mut ev = Event::new(
                    EventKind::BudgetExceeded,
                    now,
                    format!(
                        "not renewing {}: {used} of {cap} per {period} used; {} more would pass it",
                        rule.membership, product.max_price
                    ),
                )
                .about(&account.name, &rule.name);
                ev.period = Some(period.to_string());
                ev.cap = Some(cap.as_yuan_f64());
                ev.used = Some(used.as_yuan_f64());
                ev.price = Some(product.max_price.as_yuan_f64());
                self.emit(ev).await;
            }
            _ => {}
        }
        // After the decision's own steps, so the alert names the order as
        // it now stands.
        if let Some(alarm) = alarm {
            self.raise(rule, account, alarm, &state.decision, now).await;
        }
        self.wake_for_end(rule, account, end, now, rt.config.daemon.timezone);
    }

    /// Records what a check saw and decided (a failure is logged: the next
    /// check writes it again).
    async fn put_check(&self, rule: &Rule, account: &Account, state: &CheckState) {
        if let Err(e) = self
            .store
            .put_check_state(&rule.name, &account.name, state)
            .await
        {
            tracing::warn!(error = %e, "could not record the check");
        }
    }

    /// A check whose read failed still watches the end it saw last.
    async fn watch_unread(&self, rt: &Runtime, rule: &Rule, account: &Account) {
        let now = self.clock.unix();
        let Ok(previous) = self.store.check_state(&rule.name, &account.name).await else {
            return;
        };
        let mut state = previous.clone();
        let Some(alarm) = lapse::assess(None, now, rule.at_risk, false, &previous, &mut state)
        else {
            self.wake_for_end(
                rule,
                account,
                previous.observed_end,
                now,
                rt.config.daemon.timezone,
            );
            return;
        };
        self.put_check(rule, account, &state).await;
        let why = format!(
            "membership read failing; last decision: {}",
            previous.decision
        );
        self.raise(rule, account, alarm, &why, now).await;
    }

    /// The decision for (rule, account) given the end just read; `orders`
    /// are the account's orders when just read (else its order for the
    /// period is read).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn decide_now(
        &self,
        rt: &Runtime,
        terms: &Terms<'_>,
        account: &Account,
        product: &Product,
        end: Option<i64>,
        now: i64,
        orders: Option<&[Order]>,
    ) -> Result<Decision, LedgerError> {
        let key = decision_key(terms.name, &account.name, terms.membership, end);
        let existing = match orders {
            Some(orders) => orders.iter().find(|o| o.key == key).cloned(),
            None => self.store.get(&key).await?,
        };
        let (day, month) = period::periods(now, rt.config.daemon.timezone);
        // Spend is read only under a cap: the decision weighs nothing else
        // (and on PostgreSQL each read is a query).
        let used = |cap: Option<crate::units::Fen>, period: String| async move {
            match cap {
                Some(_) => self
                    .store
                    .spend(terms.name, &period)
                    .await
                    .map(|s| s.used()),
                None => Ok(crate::units::Fen::ZERO),
            }
        };
        let budget = BudgetView {
            per_day: terms.budget.per_day,
            used_day: used(terms.budget.per_day, day).await?,
            per_month: terms.budget.per_month,
            used_month: used(terms.budget.per_month, month).await?,
        };
        let admission = rt.seller_of(product).gate.peek(now);
        let held = self.store.held(&account.name).await?;
        Ok(decide::decide(&Facts {
            now,
            end,
            renew_before: terms.renew_before,
            when_lapsed: terms.when_lapsed,
            max_attempts: terms.max_attempts,
            existing: existing.as_ref(),
            admission,
            budget,
            max_price: product.max_price,
            held: held.as_deref(),
        }))
    }

    async fn note_read_ok(&self, account: &Account) {
        match self.store.account_state(&account.name).await {
            Ok(s) if s.auth_failing || s.last_error.is_some() => {
                // Not written: the next good read clears it again.
                if let Err(e) = self
                    .store
                    .put_account_state(&account.name, &Default::default())
                    .await
                {
                    tracing::warn!(account = %account.name, error = %e, "cannot clear the account's read errors");
                }
                tracing::info!(account = %account.name, "membership reads work again");
            }
            _ => {}
        }
    }

    /// A failed read makes no decision. Token problems fire
    /// `account_auth_failed` once per failure streak.
    async fn note_read_error(&self, rule: &Rule, account: &Account, e: &VipInfoError) {
        let now = self.clock.unix();
        // A state that cannot be read is taken as a fresh one: the alert
        // may come twice, never not at all.
        let mut state = self
            .store
            .account_state(&account.name)
            .await
            .unwrap_or_default();
        let first_of_streak = e.is_token_problem() && !state.auth_failing;
        state.auth_failing |= e.is_token_problem();
        state.last_error = Some(e.to_string());
        if let Err(err) = self.store.put_account_state(&account.name, &state).await {
            tracing::warn!(account = %account.name, error = %err, "cannot note the account's read error");
        }
        if first_of_streak {
            let mut ev = Event::new(
                EventKind::AccountAuthFailed,
                now,
                format!("credentials need attention: {e}"),
            )
            .about(&account.name, &rule.name);
            ev.message = Some(e.to_string());
            self.emit(ev).await;
        } else {
            tracing::warn!(account = %account.name, rule = %rule.name, error = %e, "membership read failed; no decision this time");
        }
    }

    /// The memberships an account's manual orders are open or unverified
    /// for.
    async fn open_manual(&self, account: &Account) -> Vec<Membership> {
        let mut open: Vec<Membership> = self
            .store
            .orders_of(&account.name)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|o| &*o.rule == super::MANUAL_RULE)
            .filter(|o| {
                matches!(o.state, OrderState::Pending | OrderState::Unknown)
                    || o.state == OrderState::Succeeded
                        && matches!(o.verification, Verification::Waiting { .. })
            })
            .map(|o| o.membership)
            .collect();
        open.sort_by_key(|m| m.as_str());
        open.dedup();
        open
    }

    /// Follows up an account's manual orders, which no rule checks: reads
    /// the account, applies the evidence to each membership a manual order
    /// of it is open or unverified for, and comes back in 30 s while one
    /// still is (a callback settling one also brings a follow-up).
    async fn check_manual(self: &Arc<Self>, rt: &Arc<Runtime>, account: &Account) {
        const AGAIN: Duration = Duration::from_secs(30);
        let memberships = self.open_manual(account).await;
        if memberships.is_empty() {
            return;
        }
        let info = match self.read(rt, account).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(account = %account.name, error = %e, "membership read for a manual order failed; trying again in 30s");
                self.follow_up(super::MANUAL_RULE, &account.name, AGAIN);
                return;
            }
        };
        self.note_read_ok(account).await;
        let Now::Trusted { now } = self
            .time
            .observe(self.clock.unix(), tokio::time::Instant::now())
        else {
            self.follow_up(super::MANUAL_RULE, &account.name, AGAIN);
            return;
        };
        for m in memberships {
            if let Err(e) = self
                .settle_by_evidence(rt, account, m, info.end(m), now)
                .await
            {
                tracing::error!(account = %account.name, error = %e, "could not apply evidence to manual orders");
            }
        }
        if !self.open_manual(account).await.is_empty() {
            self.follow_up(super::MANUAL_RULE, &account.name, AGAIN);
        }
    }
}

/// An account's memberships as plugins see them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VipView {
    pub is_lost: bool,
    pub is_qq_vip: bool,
    pub is_qq_year_vip: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qq_vip_level: Option<i64>,
    pub memberships: BTreeMap<String, TermView>,
}

impl VipView {
    /// The view of one read.
    pub fn of(info: &VipInfo) -> VipView {
        VipView {
            is_lost: info.is_lost,
            is_qq_vip: info.is_qq_vip,
            is_qq_year_vip: info.is_qq_year_vip,
            qq_vip_level: info.qq_vip_level,
            memberships: Membership::ALL
                .into_iter()
                .zip(&info.terms)
                .map(|(m, t)| {
                    (
                        m.as_str().to_owned(),
                        TermView {
                            start: t.start,
                            end: t.end,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl Engine {
    /// The time decisions use (see `time.rs`), or `None` while the wall
    /// clock is disputed: then nothing is decided or paid, one alert fires
    /// per step, and the pair is checked again in 30 s.
    pub(super) async fn trusted_now(&self, rule: &str, account: &Account) -> Option<i64> {
        match self
            .time
            .observe(self.clock.unix(), tokio::time::Instant::now())
        {
            Now::Trusted { now } => Some(now),
            Now::Disputed {
                now,
                by,
                source,
                first,
            } => {
                let whose = match source {
                    Source::Vendor => "the vendor's clock",
                    Source::Wall => "the time since the last agreement",
                };
                let detail = format!(
                    "the wall clock is {} {} {whose}; not paying until they agree",
                    crate::units::HumanDuration(Duration::from_secs(by.unsigned_abs())),
                    if by > 0 { "ahead of" } else { "behind" },
                );
                if first {
                    self.emit(Event::new(EventKind::Error, now, detail)).await;
                } else {
                    tracing::debug!(account = %account.name, rule = %rule, "{detail}");
                }
                self.follow_up(rule, &account.name, Duration::from_secs(30));
                None
            }
        }
    }
}

/// How long a provider's `pending` orders wait for their callback.
pub(super) fn callback_within(rt: &Runtime, provider: &str) -> i64 {
    match rt.config.providers.get(provider) {
        Some(crate::config::Provider::Recharge(r)) => r.callback.within.as_secs() as i64,
        _ => crate::config::CallbackMapping::default().within.as_secs() as i64,
    }
}

/// Every order transition is logged once with account, rule, key, state.
pub(super) fn log_transition(o: &Order) {
    tracing::info!(account = %o.account, rule = %o.rule, key = %o.key, state = %o.state, attempt = o.attempts, "order {}: {}", o.state, o.last_why());
}
