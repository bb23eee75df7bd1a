//! `GET /metrics`: Prometheus text format (0.0.4), written by hand.
//!
//! Counters and histograms that happen on the hot path live here as small
//! locked maps; everything that the ledger or the configuration already
//! knows (orders by state, spend, membership ends, generation) is read at
//! scrape time, so the figures always match the ledger.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Cumulative counts per bucket of [`BUCKETS`].
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (b, le) in self.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Hot-path counters. Cheap to share.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// (provider, result) → membership reads.
    polls: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (provider, class) → recharge attempts.
    attempts: Mutex<BTreeMap<(String, String), u64>>,
    /// (provider, api) → request latency.
    latency: Mutex<BTreeMap<(String, &'static str), Histogram>>,
    /// provider → callbacks refused for their signature.
    signature_failures: Mutex<BTreeMap<String, u64>>,
    /// Unix seconds of the last membership read that succeeded (0: none).
    last_ok_read: std::sync::atomic::AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a membership read ends, as counted.
pub(crate) const POLL_RESULTS: [&str; 3] = ["ok", "error", "auth_error"];

impl Metrics {
    /// Every known label value at 0, so that a rate or an alert on a
    /// series works before the first event of its kind: reads of each
    /// `qq_connect` provider by result, and attempts of each `recharge`
    /// provider by class, and its signature failures. Counts already
    /// there are kept (a reload primes again).
    pub(crate) fn prime<'a>(
        &self,
        readers: impl IntoIterator<Item = &'a str>,
        sellers: impl IntoIterator<Item = &'a str>,
        classes: &[&'static str],
    ) {
        let mut polls = lock(&self.polls);
        for p in readers {
            for r in POLL_RESULTS {
                polls.entry((p.to_owned(), r)).or_default();
            }
        }
        drop(polls);
        let mut attempts = lock(&self.attempts);
        let mut failures = lock(&self.signature_failures);
        for p in sellers {
            for c in classes {
                attempts.entry((p.to_owned(), (*c).to_owned())).or_default();
            }
            failures.entry(p.to_owned()).or_default();
        }
    }

    /// One membership read and how it ended (`ok`, `error`, `auth_error`),
    /// at unix second `now`.
    pub fn poll(&self, provider: &str, result: &'static str, took: Duration, now: i64) {
        if result == "ok" {
            self.last_ok_read
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
        *lock(&self.polls)
            .entry((provider.to_owned(), result))
            .or_default() += 1;
        self.observe(provider, "get_vip_rich_info", took);
    }

    /// One recharge attempt and its outcome class.
    pub fn attempt(&self, provider: &str, class: &str, took: Duration) {
        *lock(&self.attempts)
            .entry((provider.to_owned(), class.to_owned()))
            .or_default() += 1;
        self.observe(provider, "recharge", took);
    }

    fn observe(&self, provider: &str, api: &'static str, took: Duration) {
        lock(&self.latency)
            .entry((provider.to_owned(), api))
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// A callback refused for a missing or wrong signature.
    pub(crate) fn signature_failure(&self, provider: &str) {
        *lock(&self.signature_failures)
            .entry(provider.to_owned())
            .or_default() += 1;
    }
}

/// When this process started (unix seconds), taken at the first call:
/// `cli::main` calls it first thing.
pub(crate) fn process_start() -> f64 {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Resident memory of this process in bytes (`/proc/self/statm`).
pub(crate) fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then_some(pages * page as f64)
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes metric families in the text format.
#[derive(Default)]
pub(crate) struct Writer {
    out: String,
}

impl Writer {
    /// Starts a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", esc(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

impl Metrics {
    /// Writes the hot-path families, and the process's own.
    pub fn write(&self, w: &mut Writer) {
        w.family(
            "vipd_build_info",
            "gauge",
            "1, labelled with the version of vipd running.",
        );
        w.sample(
            "vipd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        w.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the unix epoch in seconds.",
        );
        w.sample("process_start_time_seconds", &[], process_start());
        if let Some(rss) = resident_bytes() {
            w.family(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            );
            w.sample("process_resident_memory_bytes", &[], rss);
        }
        // The process start until the first read: an alert on its age
        // then measures from start, not from 1970.
        let last = self.last_ok_read.load(std::sync::atomic::Ordering::Relaxed);
        w.family(
            "vipd_last_successful_read_timestamp_seconds",
            "gauge",
            "When a membership read last succeeded (unix seconds; the process start before the first).",
        );
        w.sample(
            "vipd_last_successful_read_timestamp_seconds",
            &[],
            if last > 0 {
                last as f64
            } else {
                process_start()
            },
        );
        w.family(
            "vipd_polls_total",
            "counter",
            "Membership reads by provider and result.",
        );
        for ((provider, result), n) in lock(&self.polls).iter() {
            w.sample(
                "vipd_polls_total",
                &[("provider", provider), ("result", result)],
                *n as f64,
            );
        }
        w.family(
            "vipd_recharge_attempts_total",
            "counter",
            "Recharge requests by provider and outcome class.",
        );
        for ((provider, class), n) in lock(&self.attempts).iter() {
            w.sample(
                "vipd_recharge_attempts_total",
                &[("provider", provider), ("class", class)],
                *n as f64,
            );
        }
        w.family(
            "vipd_upstream_request_duration_seconds",
            "histogram",
            "Upstream request latency by provider and API.",
        );
        let name = "vipd_upstream_request_duration_seconds";
        for ((provider, api), h) in lock(&self.latency).iter() {
            let labels = [("provider", provider.as_str()), ("api", *api)];
            for (le, n) in BUCKETS.iter().zip(h.buckets) {
                let le = le.to_string();
                w.sample(
                    &format!("{name}_bucket"),
                    &[labels[0], labels[1], ("le", &le)],
                    n as f64,
                );
            }
            w.sample(
                &format!("{name}_bucket"),
                &[labels[0], labels[1], ("le", "+Inf")],
                h.count as f64,
            );
            w.sample(&format!("{name}_sum"), &labels, h.sum);
            w.sample(&format!("{name}_count"), &labels, h.count as f64);
        }
        w.family(
            "vipd_callback_signature_failures_total",
            "counter",
            "Callbacks refused for a missing or wrong signature.",
        );
        for (provider, n) in lock(&self.signature_failures).iter() {
            w.sample(
                "vipd_callback_signature_failures_total",
                &[("provider", provider)],
                *n as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        for ms in [3, 40, 40, 2000, 60_000] {
            m.poll("qq", "ok", Duration::from_millis(ms), 0);
        }
        let mut w = Writer::default();
        m.write(&mut w);
        let text = w.finish();
        let line = |le: &str| {
            let prefix = format!(
                "vipd_upstream_request_duration_seconds_bucket{{provider=\"qq\",api=\"get_vip_rich_info\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le}:\n{text}"))
                .to_owned()
        };
        assert_eq!(line("0.005"), "1");
        assert_eq!(line("0.05"), "3");
        assert_eq!(line("2.5"), "4");
        assert_eq!(line("30"), "4");
        assert_eq!(line("+Inf"), "5");
        assert!(text.contains("vipd_polls_total{provider=\"qq\",result=\"ok\"} 5"));
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
