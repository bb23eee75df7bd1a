//! `vipd status` as text.

use std::fmt::Write as _;

use crate::engine::Status;
use crate::timefmt;

pub(super) fn when(t: Option<i64>, now: i64) -> String {
    t.map_or("-".into(), |t| {
        format!("{} ({})", timefmt::utc(t), timefmt::relative(t - now))
    })
}

pub(super) fn status_text(s: &Status) -> String {
    let mut out = String::new();
    let live = if s.generation == 0 {
        "daemon not running; from the store"
    } else {
        "live"
    };
    let _ = writeln!(
        out,
        "vipd status ({live}, config generation {}, dry run: {})",
        s.generation, s.dry_run
    );
    if let Some(me) = &s.node {
        let _ = writeln!(out, "\nnode {me}, on a shared PostgreSQL ledger:");
        for n in &s.nodes {
            let lease = if n.lease_left > 0.0 {
                format!("lease {:.1}s left", n.lease_left)
            } else {
                format!("lease ran out {:.0}s ago", -n.lease_left)
            };
            let _ = writeln!(
                out,
                "  {:<16} fence {:<6} {lease}, checks {} pairs",
                n.name, n.fence, n.claims
            );
        }
    }
    for c in &s.checks {
        let _ = writeln!(out, "\n{} / {} ({})", c.rule, c.account, c.membership);
        let _ = writeln!(out, "  ends        {}", when(c.observed_end, s.now));
        let _ = writeln!(out, "  checked     {}", when(c.checked_at, s.now));
        let _ = writeln!(
            out,
            "  next check  {}",
            if s.generation == 0 {
                "- (daemon not running)".to_owned()
            } else {
                when(c.next_check, s.now)
            }
        );
        let _ = writeln!(
            out,
            "  decision    {}",
            if c.decision.is_empty() {
                "-"
            } else {
                &c.decision
            }
        );
        if let Some(o) = &c.last_order {
            let _ = writeln!(
                out,
                "  last order  {} {} (attempt {}, spent {}): {}",
                &o.key[..12],
                o.state,
                o.attempts,
                o.spent,
                o.why
            );
        }
    }
    for m in &s.manual {
        let _ = writeln!(
            out,
            "\nmanual / {} ({}, {})\n  order       {} {} (spent {}): {}\n  verified    {}",
            m.account,
            m.membership,
            m.product,
            &m.order.key[..12],
            m.order.state,
            m.order.spent,
            m.order.why,
            match &m.verification {
                crate::ledger::Verification::None => "-".to_owned(),
                crate::ledger::Verification::Waiting { deadline } =>
                    format!("waiting, until {}", when(Some(*deadline), s.now)),
                crate::ledger::Verification::Verified { new_end, .. } =>
                    format!("yes: ends {}", timefmt::utc(*new_end)),
                crate::ledger::Verification::Unverified { .. } =>
                    "NO: paid, and the end has not moved".to_owned(),
            }
        );
    }
    let counts: Vec<String> = s
        .orders
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "\norders: {}",
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    );
    for sp in &s.spend {
        let cap = |c: Option<crate::units::Fen>| c.map_or("no cap".into(), |c| format!("cap {c}"));
        let _ = writeln!(
            out,
            "spend {}: {} on {} ({}), {} in {} ({})",
            sp.rule,
            sp.used_day,
            sp.day,
            cap(sp.per_day),
            sp.used_month,
            sp.month,
            cap(sp.per_month)
        );
    }
    if let Some(r) = &s.last_reload {
        match &r.error {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "RELOAD FAILED at {} ({}); generation {} stays in force:\n  {}",
                    timefmt::utc(r.at),
                    r.trigger,
                    r.generation,
                    e.replace('\n', "\n  ")
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "last reload {} ({}): generation {}",
                    timefmt::utc(r.at),
                    r.trigger,
                    r.generation
                );
            }
        }
    }
    for (name, c) in &s.plugins {
        let _ = writeln!(
            out,
            "plugin {name}: {} calls, {} failed ({} instruction, {} time, {} memory limit)",
            c.calls, c.errors, c.instruction_limit, c.time_limit, c.memory_limit
        );
    }
    for (p, why) in &s.paused {
        let _ = writeln!(out, "PAUSED provider {p}: {why}");
    }
    for (a, err) in &s.attention {
        let _ = writeln!(out, "ATTENTION account {a}: {err}");
    }
    if !s.events.is_empty() {
        let _ = writeln!(out, "\nrecent events:");
        for e in &s.events {
            let who = [e.account.as_deref(), e.rule.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            let _ = writeln!(
                out,
                "  {} {:<19} {:<14} {}",
                timefmt::utc(e.at),
                e.kind,
                who,
                e.detail
            );
        }
    }
    out
}
