//! A covered membership never lapses in silence, whatever its renewal's
//! state: for each way a renewal can stall, the membership ends 3 minutes
//! after start (rule `at_risk: 60s`), `renewal_at_risk` fires once when
//! 60 s are left, naming the order's state, and `membership_lapsed` once
//! when the end passes.

use super::*;
use vipd::ledger::EventRecord;

/// The membership's end, relative to the start.
const ENDS: i64 = 180;

/// Every recorded event of `kind` (the event log, not only the latest).
fn events(w: &World, kind: &str) -> Vec<EventRecord> {
    w.ledger
        .events(10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// Runs `cfg` past the end and checks both alerts: each once, at their
/// moments, naming `state` and, in their words, `says`.
async fn lapses_with_alerts(cfg: StackConfig, state: &str, says: &str) {
    lapses_with_alerts_after(cfg, state, says, async |_: &World| {}).await
}

async fn lapses_with_alerts_after(
    mut cfg: StackConfig,
    state: &str,
    says: &str,
    meanwhile: impl AsyncFnOnce(&World),
) {
    cfg.accounts = vec![("a0".into(), Some(format!("{ENDS}s")))];
    cfg.rule.push_str("\n    at_risk: 60s");
    let w = World::start(&cfg).await;
    let start = w.now();
    meanwhile(&w).await;
    w.until("membership_lapsed", LONG, async || {
        (!events(&w, "membership_lapsed").is_empty()).then_some(())
    })
    .await;
    // Checks go on after the end: neither alert repeats.
    w.pass(Duration::from_secs(30)).await;
    let end = start + ENDS;
    for (kind, due) in [("renewal_at_risk", end - 60), ("membership_lapsed", end)] {
        let seen = events(&w, kind);
        assert_eq!(seen.len(), 1, "{state}: {kind} once: {seen:#?}");
        let e = &seen[0];
        assert!(
            (due..=due + 2).contains(&e.at),
            "{state}: {kind} at {} (due at {due})",
            e.at - start
        );
        assert_eq!(e.account.as_deref(), Some("a0"));
        let named = match state {
            "none" => "no order".to_owned(),
            s => format!(" is {s} "),
        };
        assert!(e.detail.contains(&named), "{state}: {kind}: {}", e.detail);
        assert!(e.detail.contains(says), "{state}: {kind}: {}", e.detail);
    }
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pending_whose_refund_callback_is_lost() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox = "  mode: async\n  callback_delay: 5s\n  faults: { recharge: { fail_rate: 1.0, drop_callback_rate: 1.0 } }".into();
    lapses_with_alerts(cfg, "pending", "waiting for the vendor's callback").await;
}

#[tokio::test(start_paused = true)]
async fn awaiting_a_retry_then_given_up() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox = "  mode: sync\n  faults: { recharge: { transient_rate: 1.0 } }".into();
    cfg.rule = "    max_attempts: 2".into();
    lapses_with_alerts(cfg, "failed", "attempts failed").await;
}

#[tokio::test(start_paused = true)]
async fn stopped_by_a_budget() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox = "  mode: sync".into();
    cfg.rule = "    budget: { per_day: 1.00 }".into();
    lapses_with_alerts(cfg, "none", "budget exceeded").await;
}

#[tokio::test(start_paused = true)]
async fn held_after_a_restore() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox = "  mode: sync".into();
    cfg.accounts = vec![("a0".into(), Some(format!("{ENDS}s")))];
    cfg.rule = "    at_risk: 60s".into();
    let w = World::start_with(&cfg, |ledger| {
        ledger
            .hold_all(crate::common::inproc::EPOCH, "a backup was restored")
            .unwrap();
        ledger
    })
    .await;
    w.until("membership_lapsed", LONG, async || {
        (!events(&w, "membership_lapsed").is_empty()).then_some(())
    })
    .await;
    for kind in ["renewal_at_risk", "membership_lapsed"] {
        let seen = events(&w, kind);
        assert_eq!(seen.len(), 1, "{kind}: {seen:#?}");
        assert!(seen[0].detail.contains("held"), "{}", seen[0].detail);
    }
    assert!(w.billed().is_empty());
    w.stop().await;
}

/// Paid (the test plays the vendor's success callback), but the vendor
/// extends only after the end: unverified, then lapsed.
#[tokio::test(start_paused = true)]
async fn paid_but_unverified() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox =
        "  mode: async\n  callback_delay: 10m\n  faults: { recharge: { drop_callback_rate: 1.0 } }"
            .into();
    cfg.rule = "    verify_within: 5s".into();
    lapses_with_alerts_after(cfg, "unverified", "no renewal", async |w: &World| {
        let pending = w
            .order_where("one pending", LONG, |o| o.state == OrderState::Pending)
            .await;
        assert_eq!(w.success_callback(&pending).await, 200);
    })
    .await;
}

/// A healthy renewal moves the end long before `at_risk`: no alert.
#[tokio::test(start_paused = true)]
async fn a_renewal_that_shows_raises_neither() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    cfg.rule = "    at_risk: 23h".into();
    let w = World::start(&cfg).await;
    w.settled_and_verified(1, LONG).await;
    w.pass(Duration::from_secs(60)).await;
    assert!(events(&w, "renewal_at_risk").is_empty());
    assert!(events(&w, "membership_lapsed").is_empty());
    w.stop().await;
}

/// Checked hourly, the end's moments fall between regular checks: a check
/// is woken at each, so neither alert waits for the next hour.
#[tokio::test(start_paused = true)]
async fn stopped_by_a_budget_under_an_hourly_check() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox = "  mode: sync".into();
    cfg.rule = "    budget: { per_day: 1.00 }".into();
    cfg.rewrite = vec![("check: { every: 1s }".into(), "check: \"0 * * * *\"".into())];
    lapses_with_alerts(cfg, "none", "budget exceeded").await;
}

/// The membership reads start failing after the renewal stalled: the end
/// seen last is watched, and both alerts still come.
#[tokio::test(start_paused = true)]
async fn reads_that_fail_before_the_end() {
    let mut cfg = StackConfig::due(0);
    cfg.sandbox = "  mode: sync".into();
    cfg.rule = "    budget: { per_day: 1.00 }".into();
    lapses_with_alerts_after(cfg, "none", "membership read failing", async |w: &World| {
        w.until("a check", LONG, async || {
            (!w.events_of("budget_exceeded").is_empty()).then_some(())
        })
        .await;
        let control = format!("{}/_sandbox/control", w.sandbox.base_url());
        let failing = serde_json::json!({ "vip_info": { "transient_rate": 1.0 } });
        assert!(
            crate::common::post_json(&control, failing)
                .await
                .is_success()
        );
    })
    .await;
}
