//! `vipd forecast`'s own work, the part a scrape of `/metrics` repeats:
//! 10,000 covered memberships over 90 days (three renewals each), sorted
//! and weighed against a rule's caps. The reads that feed it (a check
//! state and an order per pair) are the store's, measured in `floors`.
//!
//! `cargo bench --bench forecast`; figures in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vipd::engine::forecast::{Caps, Pair, forecast};
use vipd::model::Membership;
use vipd::units::Fen;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn pairs(n: i64) -> Vec<Pair> {
    (0..n)
        .map(|i| Pair {
            rule: "keep".into(),
            account: format!("a{i}"),
            membership: Membership::QqVip,
            product: "month".into(),
            // Ends spread over the next 30 days.
            end: Some(NOW + (i * 2_591) % (30 * DAY)),
            ordered: false,
            renew_before: 3 * DAY,
            adds: 30 * DAY,
            price: Fen(2000),
            renews_lapsed: true,
            provider_closed: None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pairs = pairs(10_000);
    let caps = BTreeMap::from([(
        "keep".to_owned(),
        Caps {
            per_day: Some(Fen(2_000_000)),
            per_month: Some(Fen(40_000_000)),
            ..Caps::default()
        },
    )]);
    let mut g = c.benchmark_group("forecast");
    g.throughput(Throughput::Elements(pairs.len() as u64));
    g.bench_function("10k pairs, 90 days", |b| {
        b.iter(|| forecast(black_box(&pairs), &caps, NOW, 90, chrono_tz::Asia::Shanghai))
    });
    g.bench_function("10k pairs, 32 days (a scrape)", |b| {
        b.iter(|| forecast(black_box(&pairs), &caps, NOW, 32, chrono_tz::Asia::Shanghai))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
