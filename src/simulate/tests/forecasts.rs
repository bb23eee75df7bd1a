//! `forecast:` steps: the forecast made on simulated time agrees with
//! what the run then paid, and a disagreement is a failure naming both.

use super::{RULES, failures, invalid, one, passes};

/// alice ends in 2 days and bob in 40. Renewed at once, alice's period is
/// paid when the forecast is made an hour in (the first checks have seen
/// both ends); it foresees alice 29 and 59 days on and bob 37 days on,
/// and the run pays exactly those.
#[test]
fn the_forecast_agrees_with_what_the_run_paid() {
    passes(
        &one("    timeline:
      - advance: 1h
      - forecast: 60d
    run_for: 61d
    expect:
      billed: { alice: 3, bob: 1 }
"),
        &[],
    );
}

/// A cap that lets one renewal a day through: the forecast blocks the
/// second (the day's cap), and the run agrees.
#[test]
fn a_cap_the_forecast_blocks_is_one_the_run_is_refused_by() {
    let rules = RULES
        .replace(
            "budget: { per_day: 100.00 }",
            "budget: { per_month: 30.00 }",
        )
        .replace("bob: { qq_vip: 40d }", "bob: { qq_vip: 2d }");
    passes(
        &one("    rules: capped.yaml
    timeline:
      - advance: 1m
      - forecast: 10d
    run_for: 10d2m
    expect:
      events: [{ kind: budget_exceeded, count: 1 }]
")
        .replace("    rules: rules.yaml\n", ""),
        &[("capped.yaml", &rules)],
    );
}

/// A run that pays what its forecast did not foresee (the rules were
/// reloaded with a wider window: bob is due at once) fails, naming the
/// forecast and what was paid; one whose window outlasts the run cannot
/// be judged.
#[test]
fn a_run_that_differs_from_its_forecast_fails() {
    let eager = RULES.replace("renew_before: 3d", "renew_before: 39d");
    let got = failures(
        &one("    timeline:
      - advance: 1h
      - forecast: 10d
      - reload: eager.yaml
    run_for: 10d
"),
        &[("eager.yaml", &eager)],
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("rule keep: 0 renewals, 0.00 at most")
            && got[0].contains("the run paid 2 (30.00): alice, bob"),
        "{}",
        got[0]
    );
    let got = failures(
        &one("    timeline:\n      - forecast: 30d\n    run_for: 1d\n"),
        &[],
    );
    assert!(
        got.len() == 1 && got[0].contains("to be judged when its window is over"),
        "{got:#?}"
    );
    let e = invalid(&one("    timeline:\n      - forecast: 36h\n"), &[]);
    assert!(e.contains("is not a whole number of days"), "{e}");
}
