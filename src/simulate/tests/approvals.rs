//! Approvals under `vipd test`: a renewal that waits for a person is
//! escalated as the end comes closer, paid once approved, never paid
//! when declined or left unanswered, and approved only at its price.

use super::{RULES, failures, one, passes};

/// `RULES` with renewals above 10.00 (the product is 20.00) waiting for
/// approval, escalated 36 h and 12 h before the end (alice's is at 48 h).
fn approving() -> String {
    RULES.replace(
        "    budget: { per_day: 100.00 }",
        "    budget: { per_day: 100.00, approve_above: 10.00 }\n    escalate: [12h, 36h]",
    )
}

#[test]
fn an_approved_renewal_is_paid_once_after_escalating() {
    let rules = approving();
    passes(
        &one("    rules: approving.yaml
    timeline:
      - advance: 30m
      - expect:
          orders: [{ account: alice, state: awaiting_approval, count: 1 }]
          billed: { alice: 0 }
          events:
            - { kind: approval_required, account: alice, count: 1 }
            - { kind: approval_escalated, count: 0 }
      - advance: 13h
      - expect:
          events: [{ kind: approval_escalated, account: alice, count: 1 }]
          billed: { alice: 0 }
      - approve: { account: alice, reason: invoice checked }
      - advance: 5m
      - expect:
          orders: [{ account: alice, state: succeeded, count: 1, price: 15.00 }]
          billed: { alice: 1 }
          events: [{ kind: renewal_approved, account: alice, count: 1 }]
    run_for: 3d
    expect:
      billed: { alice: 1, bob: 0 }
      events:
        - { kind: approval_escalated, count: 1 }
        - { kind: renewal_unapproved, count: 0 }
        - { kind: membership_lapsed, count: 0 }
")
        .replace("    rules: rules.yaml\n", ""),
        &[("approving.yaml", &rules)],
    );
}

#[test]
fn a_renewal_nobody_approves_escalates_at_each_step_then_expires_unpaid() {
    let rules = approving();
    passes(
        &one("    rules: approving.yaml
    run_for: 3d
    expect:
      orders: [{ account: alice, state: failed, count: 1 }]
      billed: { alice: 0 }
      spend: [{ rule: keep, total: 0.00 }]
      events:
        - { kind: approval_required, account: alice, count: 1 }
        - { kind: approval_escalated, account: alice, count: 2 }
        - { kind: renewal_unapproved, account: alice, count: 1, within: 2d1m }
        - { kind: membership_lapsed, account: alice, count: 1 }
")
        .replace("    rules: rules.yaml\n", ""),
        &[("approving.yaml", &rules)],
    );
}

#[test]
fn a_declined_renewal_is_never_paid_nor_planned_again() {
    let rules = approving();
    passes(
        &one("    rules: approving.yaml
    timeline:
      - advance: 30m
      - decline: { account: alice, reason: account closing }
      - advance: 1d
      - expect:
          orders: [{ account: alice, count: 1, state: failed }]
          events:
            - { kind: renewal_declined, account: alice, count: 1 }
            - { kind: approval_required, count: 1 }
          billed: { alice: 0 }
")
        .replace("    rules: rules.yaml\n", ""),
        &[("approving.yaml", &rules)],
    );
}

/// Approving twice, or a declined order, is refused (a failed step names
/// why); the first answer stands.
#[test]
fn a_second_answer_is_refused_and_the_first_stands() {
    let rules = approving();
    let got = failures(
        &one("    rules: approving.yaml
    timeline:
      - advance: 30m
      - decline: { account: alice, reason: no }
      - approve: { account: alice, reason: changed my mind }
      - advance: 1d
      - expect:
          billed: { alice: 0 }
")
        .replace("    rules: rules.yaml\n", ""),
        &[("approving.yaml", &rules)],
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("approve: alice has no order awaiting approval"),
        "{}",
        got[0]
    );
}

/// The price went up after the renewal was planned: the approval is
/// refused with the new price; the next check plans it at that price,
/// and an approval of it pays it.
#[test]
fn an_approval_after_the_price_changed_is_refused_with_the_new_price() {
    let rules = approving();
    let dearer = rules.replace("max_price: 20.00", "max_price: 25.00");
    let got = failures(
        &one("    rules: approving.yaml
    timeline:
      - advance: 30m
      - reload: dearer.yaml
      - approve: { account: alice, reason: ok at 20 }
      - advance: 1h
      - expect:
          orders: [{ account: alice, state: awaiting_approval, count: 1 }]
          billed: { alice: 0 }
      - approve: { account: alice, reason: ok at 25 }
      - advance: 5m
      - expect:
          billed: { alice: 1 }
          orders: [{ account: alice, state: succeeded, count: 1 }]
")
        .replace("    rules: rules.yaml\n", ""),
        &[("approving.yaml", &rules), ("dearer.yaml", &dearer)],
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("price changed from 20.00 to 25.00"),
        "{}",
        got[0]
    );
}

/// A plugin's `before_recharge` asks for approval instead of vetoing.
#[test]
fn a_plugin_can_ask_for_approval() {
    let ask = r#"
vipd.on("before_recharge", function(ev)
  if ev.account == "alice" then return { approve = "first renewal of a new account" } end
end)
"#;
    passes(
        &one("    scripts_dir: lua
    run_for: 6h
    expect:
      orders: [{ account: alice, state: awaiting_approval, count: 1 }]
      billed: { alice: 0 }
      events: [{ kind: approval_required, account: alice, count: 1 }]
"),
        &[("lua/ask.lua", ask)],
    );
}
