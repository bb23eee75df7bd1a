//! Vendor callbacks (README "Renewals: decisions, the ledger, callbacks"): verify, find the order, settle it once.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use super::check::log_transition;
use super::decide::retry_after_refusal;
use super::events::{Event, EventKind};
use crate::ledger::{OrderState, Settled, Settlement};
use crate::units::Fen;

/// How a callback was answered: HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReply {
    /// 200, 400, 403, 404, or 503 (the store did not answer: call again).
    pub status: u16,
    /// The configured reply on success; a reason otherwise.
    pub body: String,
}

impl CallbackReply {
    fn err(status: u16, body: impl Into<String>) -> Self {
        CallbackReply {
            status,
            body: body.into(),
        }
    }

    /// The ledger could not be read: 503, so that the vendor calls again
    /// (a 404 would tell it the order is not ours).
    fn unreadable(e: &crate::ledger::LedgerError) -> Self {
        tracing::error!(error = %e, "cannot read the ledger for a callback");
        CallbackReply::err(503, "store unavailable")
    }
}

impl Engine {
    /// Handles one callback for `provider` with its fields (query, form or
    /// JSON, flattened). Nothing changes unless the signature verifies.
    pub async fn handle_callback(
        self: &Arc<Self>,
        provider: &str,
        fields: &[(String, String)],
    ) -> CallbackReply {
        let rt = self.runtime();
        let Some(seller) = rt.sellers.get(provider) else {
            return CallbackReply::err(404, "unknown provider");
        };
        let map = &seller.callback;
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let Some(sign) = get(&map.sign_field) else {
            tracing::warn!(provider, "callback without a signature refused");
            self.metrics.signature_failure(provider);
            return CallbackReply::err(403, "missing signature");
        };
        let signed = fields
            .iter()
            .filter(|(k, _)| *k != map.sign_field)
            .map(|(k, v)| (k.as_str(), v.as_str()));
        if !seller.signer.verify(signed, sign) {
            tracing::warn!(provider, "callback with a wrong signature refused");
            self.metrics.signature_failure(provider);
            return CallbackReply::err(403, "bad signature");
        }
        let builtin = || -> Result<(String, bool, String), String> {
            let vendor_id = get(&map.order_field)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("no {} field", map.order_field))?;
            let status = get(&map.status_field).unwrap_or("");
            if map.success_values.iter().any(|v| v == status) {
                Ok((vendor_id.to_owned(), true, status.to_owned()))
            } else if map.failure_values.iter().any(|v| v == status) {
                Ok((vendor_id.to_owned(), false, status.to_owned()))
            } else {
                Err(format!("unrecognised {} {status:?}", map.status_field))
            }
        };
        // A signed callback the mapping does not understand goes to the
        // `parse_callback` handlers before it is refused.
        let (vendor_id, success, status, plugin_price, by_plugin) = match builtin() {
            Ok((id, success, status)) => (id, success, status, None, false),
            Err(reason) => {
                let mut ev = Event::new(
                    EventKind::ParseCallback,
                    self.clock.unix(),
                    format!("callback for {provider}: {reason}"),
                );
                ev.provider = Some(provider.to_owned());
                ev.fields = Some(fields.iter().cloned().collect());
                match rt.hooks.parse_callback(ev).await {
                    Some(m) => {
                        let status = format!(
                            "{} as mapped by plugin {}",
                            if m.success { "success" } else { "failed" },
                            m.plugin
                        );
                        (m.order, m.success, status, m.price, true)
                    }
                    None => {
                        tracing::warn!(provider, "callback refused: {reason}; order left as it is");
                        return CallbackReply::err(400, reason);
                    }
                }
            }
        };
        let vendor_id = vendor_id.as_str();
        let status = status.as_str();
        let now = self.clock.unix();
        if let Err(why) = fresh(get(&map.time_field), now, map.max_age.as_secs() as i64) {
            tracing::warn!(
                provider,
                vendor_order = vendor_id,
                "callback refused: {why}"
            );
            return CallbackReply::err(403, why);
        }
        let (key, attempt) = match self
            .store
            .attempt_of_vendor_order(provider, vendor_id)
            .await
        {
            Ok(Some(found)) => (found.key, found.attempt),
            Ok(None) => 'found: {
                // A plugin may name our own order key instead of the
                // vendor's.
                if by_plugin {
                    match self.store.get(vendor_id).await {
                        Ok(Some(o)) if o.provider == provider => {
                            break 'found (vendor_id.to_owned(), None);
                        }
                        Ok(_) => {}
                        Err(e) => return CallbackReply::unreadable(&e),
                    }
                }
                match self
                    .match_by_target(provider, get(&seller.target_param))
                    .await
                {
                    // The store cannot say whose it is: the vendor is to
                    // try again, not be told the order is not ours.
                    Err(e) => return CallbackReply::unreadable(&e),
                    // Bound to that attempt for good: the same callback
                    // delivered again finds it through the index.
                    Ok(Some(key)) => match self.store.bind_vendor_order(&key, vendor_id).await {
                        Ok(n) => (key, Some(n)),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot bind a callback to its order");
                            return CallbackReply::err(503, "store unavailable");
                        }
                    },
                    Ok(None) => {
                        tracing::warn!(
                            provider,
                            vendor_order = vendor_id,
                            "callback for an order we do not know"
                        );
                        return CallbackReply::err(404, "unknown order");
                    }
                }
            }
            Err(e) => return CallbackReply::unreadable(&e),
        };
        // A price that is not one (a garbled field, a plugin's NaN) is
        // no price: the attempt is counted at what it was counted at
        // already, else at the `max_price` held for it, and the vendor's
        // text is logged. Money is never counted at less than the hold.
        let price = match plugin_price {
            Some(yuan) => Fen::from_f64_yuan(yuan)
                .inspect_err(|e| tracing::warn!(key, error = %e, "callback price ignored"))
                .ok(),
            None => get(&map.price_field).and_then(|p| {
                Fen::parse_yuan(p)
                    .inspect_err(|e| tracing::warn!(key, error = %e, "callback price ignored"))
                    .ok()
            }),
        };
        let before = match self.store.get(&key).await {
            Ok(Some(o)) => o,
            Ok(None) => return CallbackReply::err(404, "unknown order"),
            Err(e) => return CallbackReply::unreadable(&e),
        };
        let verify_within = rt.config.verify_within(&before.rule).as_secs() as i64;
        let settlement = if success {
            Settlement::Paid {
                price,
                verify_deadline: now + verify_within,
                why: format!("callback: {status} (vendor order {vendor_id})"),
            }
        } else {
            Settlement::NotPaid {
                retry_at: Some(retry_after_refusal(
                    before.attempts,
                    now,
                    before.observed_end,
                    rt.config.daemon.retry_base_secs,
                )),
                why: format!("callback: {status} (vendor order {vendor_id}); not paid"),
            }
        };
        match self
            .store
            .settle_attempt(&key, attempt, now, settlement)
            .await
        {
            Ok(Settled::Changed { order: o, conflict }) => {
                log_transition(&o);
                if let Some(why) = conflict {
                    self.emit(
                        Event::new(
                            EventKind::BillingConflict,
                            now,
                            format!("{why} (callback: {status}, vendor order {vendor_id})"),
                        )
                        .order(&o),
                    )
                    .await;
                }
                if o.state != before.state {
                    self.emit(
                        Event::new(
                            EventKind::OrderSettled,
                            now,
                            format!("{} by callback ({status})", o.state),
                        )
                        .order(&o),
                    )
                    .await;
                }
                if o.state == OrderState::Succeeded {
                    self.follow_up(&o.rule, &o.account, Duration::from_secs(1));
                } else if let Some(at) = o.retry_at.filter(|_| o.state == OrderState::Failed) {
                    self.follow_up(
                        &o.rule,
                        &o.account,
                        Duration::from_secs((at - now).max(1) as u64),
                    );
                }
            }
            Ok(Settled::Repeated) => {
                tracing::debug!(
                    key,
                    vendor_order = vendor_id,
                    "repeated callback; nothing changes"
                );
                if self.repeats.first_in_a_while(&key, now) {
                    let record = crate::ledger::EventRecord {
                        at: now,
                        kind: REPEATED.into(),
                        account: Some(before.account.clone()),
                        rule: Some(before.rule.clone()),
                        key: Some(key.clone()),
                        detail: format!(
                            "callback: {status} (vendor order {vendor_id}) delivered again; nothing changed"
                        ),
                    };
                    if let Err(e) = self.store.record_event(&record).await {
                        tracing::warn!(key, error = %e, "cannot note a repeated callback");
                    }
                }
            }
            Ok(Settled::Contradicted { order: o, why }) => {
                self.emit(
                    Event::new(
                        EventKind::BillingConflict,
                        now,
                        format!("callback not applied: {why} (vendor order {vendor_id})"),
                    )
                    .order(&o),
                )
                .await;
            }
            Err(e) => {
                tracing::error!(key, error = %e, "cannot settle the order from its callback");
                return CallbackReply::err(503, "store unavailable");
            }
        }
        // Acknowledge only what is on disk: the vendor stops calling back
        // once we say the configured reply. Only this order's writes: the
        // reply need not wait for other orders' (PostgreSQL: plans made
        // meanwhile, not yet durable).
        if let Err(e) = self.store.durable_order(&key).await {
            tracing::error!(key, error = %e, "settlement not durable; asking the vendor to call again");
            return CallbackReply::err(503, "store unavailable");
        }
        CallbackReply {
            status: 200,
            body: map.reply.clone(),
        }
    }

    /// A callback whose vendor id we never saw (its reply was lost): match
    /// it to the one `unknown` order of the account it names, if exactly
    /// one. (A `sent` order is still being answered; the vendor will call
    /// again once its reply is recorded.)
    async fn match_by_target(
        &self,
        provider: &str,
        target: Option<&str>,
    ) -> Result<Option<String>, crate::ledger::LedgerError> {
        let rt = self.runtime();
        let Some(account) = rt
            .config
            .accounts
            .iter()
            .find(|a| Some(a.qq_number.as_str()) == target)
        else {
            return Ok(None);
        };
        let open: Vec<_> = self
            .store
            .orders_of(&account.name)
            .await?
            .into_iter()
            .filter(|o| {
                o.provider == provider
                    && o.vendor_orderid.is_none()
                    && o.state == OrderState::Unknown
            })
            .collect();
        Ok(match open.as_slice() {
            [only] => Some(only.key.clone()),
            _ => None,
        })
    }
}

/// Refuses a callback whose `time` is older than `max_age` or more than
/// the vendor's own skew tolerance (10 minutes) ahead: a replayed old
/// callback carries its old time, and the signature covers it. A callback
/// without the field (or with an unreadable one) is let through: the
/// vendor does not publish its callback fields.
pub(crate) fn fresh(time: Option<&str>, now: i64, max_age: i64) -> Result<(), String> {
    let Some(at) = time.and_then(|t| t.trim().parse::<i64>().ok()) else {
        return Ok(());
    };
    // Saturating: a signed `time` of i64::MIN must not wrap into "fresh"
    // (or panic a debug build).
    if now.saturating_sub(at) > max_age {
        Err(format!(
            "callback signed at {} is older than the provider's callback max_age ({max_age} s)",
            crate::timefmt::utc(at)
        ))
    } else if at.saturating_sub(now) > 600 {
        Err(format!(
            "callback signed at {} is more than 10 minutes ahead of our clock",
            crate::timefmt::utc(at)
        ))
    } else {
        Ok(())
    }
}

/// The event log's name for a callback delivered again that changed
/// nothing. It is written down for the order's story (`vipd explain`),
/// not an event plugins or alerts hear.
pub(crate) const REPEATED: &str = "callback_repeated";

/// How often one order's repeated callbacks are written down: a vendor
/// that replays a callback a thousand times a second writes one line a
/// minute, not a thousand a second.
const REPEAT_EVERY: i64 = 60;

/// When each order's last repeated callback was written down (this node's
/// memory; forgotten entries only mean one more line).
#[derive(Debug, Default)]
pub(crate) struct Repeats(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl Repeats {
    /// Whether a repeat of `key`'s callback at `now` is to be written
    /// down (and, if so, notes it).
    pub(crate) fn first_in_a_while(&self, key: &str, now: i64) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen
            .get(key)
            .is_some_and(|&at| (now - at).abs() < REPEAT_EVERY)
        {
            return false;
        }
        if seen.len() >= 10_000 {
            seen.retain(|_, at| (now - *at).abs() < REPEAT_EVERY);
            if seen.len() >= 10_000 {
                seen.clear();
            }
        }
        seen.insert(key.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{REPEAT_EVERY, Repeats, fresh};

    #[test]
    fn callback_time_window() {
        let now = 1_800_000_000;
        assert!(fresh(None, now, 3600).is_ok());
        assert!(fresh(Some("not a time"), now, 3600).is_ok());
        assert!(fresh(Some(&(now - 3600).to_string()), now, 3600).is_ok());
        assert!(fresh(Some(&(now - 3601).to_string()), now, 3600).is_err());
        assert!(fresh(Some(&(now + 600).to_string()), now, 3600).is_ok());
        assert!(fresh(Some(&(now + 601).to_string()), now, 3600).is_err());
        // Seen while writing the callback fuzz target: these overflowed.
        assert!(fresh(Some(&i64::MIN.to_string()), now, 3600).is_err());
        assert!(fresh(Some(&i64::MAX.to_string()), now, 3600).is_err());
        assert!(fresh(Some(&i64::MIN.to_string()), -now, i64::MAX).is_ok());
    }

    #[test]
    fn one_repeat_an_order_a_minute_is_written_down() {
        let r = Repeats::default();
        assert!(r.first_in_a_while("a", 1_000));
        assert!(!r.first_in_a_while("a", 1_000 + REPEAT_EVERY - 1));
        assert!(r.first_in_a_while("b", 1_001), "another order");
        assert!(r.first_in_a_while("a", 1_000 + REPEAT_EVERY));
        // A clock stepped back does not silence an order for good.
        assert!(!r.first_in_a_while("a", 1_000 + 1));
        assert!(r.first_in_a_while("a", 1_000 - REPEAT_EVERY));
    }

    #[test]
    fn the_memory_stays_bounded() {
        let r = Repeats::default();
        for i in 0..25_000 {
            assert!(r.first_in_a_while(&i.to_string(), 5));
        }
        assert!(r.0.lock().unwrap().len() < 10_000);
    }
}
