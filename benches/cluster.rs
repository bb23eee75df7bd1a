//! Several nodes on PostgreSQL against one node on sled, side
//! by side in one run: the same due accounts, a fresh sandbox (sync, no
//! latency) and, for PostgreSQL, a fresh database on a server with its
//! durable defaults (`fsync` on) started by this bench.
//!
//! ```text
//! cargo bench --bench cluster -- 10000              # sled, then 1, 2 and 3 nodes on PostgreSQL
//! cargo bench --bench cluster -- 10000 --nodes 1    # sled, then 1 node
//! cargo bench --bench cluster -- 1000 --check       # correctness only, never time
//! cargo bench --bench cluster -- 300 --failover 3s  # kill one of two nodes; time until the other holds every pair
//! ```
//!
//! Prints, for each setup: wall time (spawn to the ledger showing every
//! order succeeded), renewals/s, how busy the machine's cores were, CPU
//! seconds of the vipd processes and of PostgreSQL, and per renewal:
//! their CPU and the sandbox's, and for PostgreSQL the
//! statements (`pg_stat_statements`), transactions (`pg_stat_database`),
//! transactions that wrote (transaction ids used) and WAL flushes
//! (`pg_stat_wal`), all reset before the run; fsyncs for sled are its
//! group commits. Then each PostgreSQL setup's most frequent statements,
//! with the time each call took to execute.
//! The bench polls the sandbox's request count, then the ledger's order
//! counts once every request is sent (one statement every 20 ms, counted).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Kill;
use serde_json::Value;
use vipd::ledger::pg::throwaway::{Server, TestDb};

struct Args {
    n: usize,
    check: bool,
    failover: Option<String>,
    nodes: usize,
}

fn args() -> Args {
    let mut a = Args {
        n: 10_000,
        check: false,
        failover: None,
        nodes: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--check" => a.check = true,
            "--failover" => a.failover = it.next(),
            "--nodes" => a.nodes = it.next().and_then(|n| n.parse().ok()).unwrap_or(3),
            "--bench" => {}
            other => {
                if let Ok(n) = other.parse() {
                    a.n = n;
                }
            }
        }
    }
    a
}

/// The configuration: `n` accounts ending in `end`, checked `every`.
fn config(n: usize, end: &str, every: &str, upstream: &str) -> String {
    let (accounts, memberships) = common::accounts(n, end);
    let daemon = common::rules_yaml(
        upstream,
        &accounts,
        "  startup_spread: 1s\n  max_concurrent_checks: 64\n",
        ", max_in_flight: 64",
    )
    .replace(
        "check: { every: 1h }",
        &format!("check: {{ every: {every} }}"),
    );
    format!(
        "{daemon}sandbox:\n  mode: sync\n  prices: {{ qq_vip_month: 15.00 }}\n  memberships:\n{memberships}"
    )
}

/// Node `i`'s configuration on the database at `$VIPD_PG_URL`.
fn node_config(dir: &Path, base: &Path, i: usize, lease: &str) -> PathBuf {
    let text = std::fs::read_to_string(base).unwrap().replace(
        "  state_dir: ./state\n",
        &format!(
            "  state_dir: ./state-{i}\n  store: {{ kind: postgres, url: \"${{env:VIPD_PG_URL}}\", node: n{i}, lease: {lease} }}\n"
        ),
    );
    let path = dir.join(format!("n{i}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `vipd run` on `path` (with `url` as `$VIPD_PG_URL`) and waits
/// until it answers: the process, its pid, its admin URL.
async fn start(path: &Path, url: Option<&str>) -> (Kill, u32, String) {
    let mut cmd = std::process::Command::new(common::vipd_bin());
    cmd.args(["run", "--config"])
        .arg(path)
        .env("VIPD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(url) = url {
        cmd.env("VIPD_PG_URL", url);
    }
    let daemon = Kill(cmd.spawn().unwrap());
    let pid = daemon.0.id();
    let state = {
        let text = std::fs::read_to_string(path).unwrap();
        let dir = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("state_dir: ./"))
            .unwrap()
            .to_owned();
        path.parent().unwrap().join(dir).join("daemon.json")
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read(&state) {
            let v: Value = serde_json::from_slice(&text).unwrap();
            let admin = v["admin"].as_str().unwrap().to_owned();
            if http.get(format!("{admin}/healthz")).send().await.is_ok() {
                return (daemon, pid, admin);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU seconds of PostgreSQL: the postmaster, its live children, and the
/// children it reaped.
fn pg_cpu(postmaster: u32) -> f64 {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let fields = |pid: u32| -> Vec<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        rest.split_whitespace().map(str::to_owned).collect()
    };
    let ticks =
        |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let own = fields(postmaster);
    // utime, stime, cutime, cstime: fields 14 to 17, 11 to 14 here.
    let mut total = ticks(&own, 11) + ticks(&own, 12) + ticks(&own, 13) + ticks(&own, 14);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let f = fields(pid);
        if ticks(&f, 1) as u32 == postmaster {
            total += ticks(&f, 11) + ticks(&f, 12);
        }
    }
    total / hz
}

/// The machine's CPU time so far (`/proc/stat`): busy and all, in ticks.
struct Machine {
    busy: f64,
    all: f64,
}

impl Machine {
    fn now() -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
        let all: f64 = ticks.iter().take(8).sum();
        Machine {
            busy: all - idle,
            all,
        }
    }

    /// The share of the machine's CPU time since `self` spent busy.
    fn busy_since(&self) -> f64 {
        let now = Machine::now();
        (now.busy - self.busy) / (now.all - self.all).max(1.0)
    }
}

/// What the database did for one run, read from its statistics views.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Statements executed in the run's database (`pg_stat_statements`,
    /// BEGIN and COMMIT included).
    statements: i64,
    /// Transactions, read-only ones and single statements included
    /// (`pg_stat_database`: commits and rollbacks).
    transactions: i64,
    /// Transactions that wrote: transaction ids used (`pg_current_xact_id`;
    /// a read-only transaction takes none).
    write_commits: i64,
    /// WAL flushes of the whole server (`pg_stat_wal`).
    wal_flushes: i64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, b: Counts) -> Counts {
        Counts {
            statements: self.statements - b.statements,
            transactions: self.transactions - b.transactions,
            // The reading itself takes one id.
            write_commits: self.write_commits - b.write_commits - 1,
            wal_flushes: self.wal_flushes - b.wal_flushes,
        }
    }
}

/// Resets the statistics of `db` and of the server, so that a run counts
/// from zero (`pg_stat_statements` only for this database's statements).
async fn reset_counts(db: &TestDb) {
    db.connect()
        .await
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             SELECT pg_stat_statements_reset();
             SELECT pg_stat_reset();
             SELECT pg_stat_reset_shared('wal');",
        )
        .await
        .unwrap();
}

/// The statistics now.
async fn counts(db: &TestDb) -> Counts {
    let c = db.connect().await;
    let row = c
        .query_one(
            "SELECT (SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
                      JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()
                        AND s.query NOT LIKE '%pg_stat%'),
                    (SELECT xact_commit + xact_rollback FROM pg_stat_database
                      WHERE datname = current_database()),
                    pg_current_xact_id()::text::bigint,
                    (SELECT wal_sync FROM pg_stat_wal)",
            &[],
        )
        .await
        .unwrap();
    Counts {
        statements: row.get(0),
        transactions: row.get(1),
        write_commits: row.get(2),
        wal_flushes: row.get(3),
    }
}

/// The statements run most often, with their calls a renewal.
async fn top_statements(db: &TestDb, n: usize) -> Vec<(f64, f64, String)> {
    let rows = db
        .connect()
        .await
        .query(
            "SELECT calls, query, total_exec_time FROM pg_stat_statements s
              JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()
                AND s.query NOT LIKE '%pg_stat%'
              ORDER BY calls DESC LIMIT 20",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let q: &str = r.get(1);
            let q: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
            let q = match q.char_indices().nth(110) {
                Some((i, _)) => format!("{}…", &q[..i]),
                None => q,
            };
            let calls = r.get::<_, i64>(0) as f64;
            let ms: f64 = r.get(2);
            (calls / n as f64, ms * 1e3 / calls.max(1.0), q)
        })
        .collect()
}

/// What one setup did.
struct Run {
    name: String,
    wall: f64,
    vipd_cpu: f64,
    db_cpu: f64,
    /// The sandbox's CPU over the run (it answers every node).
    sandbox_cpu: f64,
    /// How busy the machine's cores were over the run, 0 to 1.
    busy: f64,
    /// PostgreSQL's counts (none for sled).
    counts: Option<Counts>,
    /// fsyncs: sled's group commits, PostgreSQL's WAL flushes.
    fsyncs: f64,
    /// The statements run most often (PostgreSQL): calls a renewal, µs
    /// a call (executing it, as `pg_stat_statements` times it).
    top: Vec<(f64, f64, String)>,
    billed: usize,
    twice: usize,
}

/// Waits until `admin`'s ledger shows `n` orders succeeded. The sandbox's
/// count of requests (a length, free to read) is polled first, so that the
/// bench's own reads of the ledger stay out of the figures it prints.
async fn until_renewed(admin: &str, upstream: &str, n: usize) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let ask = |url: String, field: &'static str| {
        let http = http.clone();
        async move {
            match http.get(url).send().await {
                Ok(r) => r.json::<Value>().await.unwrap_or_default()[field]
                    .as_u64()
                    .unwrap_or(0) as usize,
                Err(_) => 0,
            }
        }
    };
    let mut asked_sandbox = false;
    loop {
        let sent = asked_sandbox
            || ask(format!("{upstream}/_sandbox/stats"), "recharge_requests").await >= n;
        if sent {
            asked_sandbox = true;
            if ask(format!("{admin}/api/orders/count"), "succeeded").await >= n {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "not renewed in 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(if sent { 20 } else { 100 })).await;
    }
}

/// One setup: sled (`nodes` 0) or `nodes` nodes on a fresh database.
async fn run(n: usize, nodes: usize, server: &Server) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("rules.yaml");
    let (sandbox, upstream) = common::sandbox_for(&base, |u| config(n, "1d", "1h", u));
    let sandbox_pid = sandbox.0.id();
    if nodes == 0 {
        let sandbox_before = common::cpu_secs(sandbox_pid);
        let machine = Machine::now();
        let started = Instant::now();
        let (daemon, pid, admin) = start(&base, None).await;
        until_renewed(&admin, &upstream, n).await;
        let wall = started.elapsed().as_secs_f64();
        let busy = machine.busy_since();
        let vipd_cpu = common::cpu_secs(pid);
        let sandbox_cpu = common::cpu_secs(sandbox_pid) - sandbox_before;
        let metrics = reqwest::get(format!("{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let fsyncs = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("vipd_store_commits_total ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(f64::NAN);
        drop(daemon);
        let (billed, twice) = common::billed(&upstream).await;
        return Run {
            name: "sled, 1 node".into(),
            wall,
            vipd_cpu,
            db_cpu: 0.0,
            sandbox_cpu,
            busy,
            counts: None,
            fsyncs,
            top: Vec::new(),
            billed,
            twice,
        };
    }
    let db = server.database().await;
    let postmaster = server.pid().unwrap();
    let paths: Vec<PathBuf> = (0..nodes)
        .map(|i| node_config(dir.path(), &base, i, "15s"))
        .collect();
    reset_counts(&db).await;
    let before = counts(&db).await;
    let db_cpu_before = pg_cpu(postmaster);
    let sandbox_before = common::cpu_secs(sandbox_pid);
    let machine = Machine::now();
    let started = Instant::now();
    // The nodes start together, as a service manager starts them.
    let starting: Vec<_> = paths
        .iter()
        .map(|p| {
            let (p, url) = (p.clone(), db.url().to_owned());
            tokio::spawn(async move { start(&p, Some(&url)).await })
        })
        .collect();
    let mut daemons = Vec::new();
    for s in starting {
        daemons.push(s.await.unwrap());
    }
    until_renewed(&daemons[0].2, &upstream, n).await;
    let wall = started.elapsed().as_secs_f64();
    let busy = machine.busy_since();
    let vipd_cpu: f64 = daemons.iter().map(|d| common::cpu_secs(d.1)).sum();
    let db_cpu = pg_cpu(postmaster) - db_cpu_before;
    let sandbox_cpu = common::cpu_secs(sandbox_pid) - sandbox_before;
    drop(daemons);
    // The statistics reach pg_stat_database within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counted = counts(&db).await - before;
    let top = top_statements(&db, n).await;
    let (billed, twice) = common::billed(&upstream).await;
    Run {
        name: format!(
            "PostgreSQL, {nodes} node{}",
            if nodes > 1 { "s" } else { "" }
        ),
        wall,
        vipd_cpu,
        db_cpu,
        sandbox_cpu,
        busy,
        counts: Some(counted),
        fsyncs: counted.wal_flushes as f64,
        top,
        billed,
        twice,
    }
}

/// Two nodes share `n` accounts (none due, checked every second); one is
/// killed with SIGKILL; the time until the other holds every pair.
async fn failover(n: usize, lease: &str, server: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("rules.yaml");
    let (_sandbox, _) = common::sandbox_for(&base, |u| config(n, "30d", "1s", u));
    let db = server.database().await;
    let a = node_config(dir.path(), &base, 0, lease);
    let b = node_config(dir.path(), &base, 1, lease);
    let mut first = Some(start(&a, Some(db.url())).await);
    let second = start(&b, Some(db.url())).await;
    let http = reqwest::Client::new();
    let claims = |admin: String| {
        let http = http.clone();
        async move {
            let s: Value = http
                .get(format!("{admin}/api/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["claims"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    loop {
        let c = claims(second.2.clone()).await;
        if c.len() == 2 && c.iter().sum::<i64>() == n as i64 && c.iter().all(|&x| x > 0) {
            println!("before: pairs per node {c:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let killed = Instant::now();
    drop(first.take());
    loop {
        let c = claims(second.2.clone()).await;
        if c.get(1) == Some(&(n as i64)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "failover: lease {lease}, checks every 1s, {n} pairs: the survivor held every pair {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    let server = tokio::task::spawn_blocking(Server::start_durable)
        .await
        .unwrap();
    if let Some(lease) = &a.failover {
        failover(a.n, lease, &server).await;
        return;
    }
    println!(
        "cluster: {} due accounts, sandbox sync, no latency; PostgreSQL with fsync on",
        a.n
    );
    let mut runs = Vec::new();
    for nodes in 0..=a.nodes {
        runs.push(run(a.n, nodes, &server).await);
    }
    println!(
        "| store | wall | renewals/s | busy | vipd CPU s | PostgreSQL CPU s | vipd µs a renewal | PostgreSQL µs a renewal | sandbox µs a renewal | statements a renewal | transactions a renewal | write commits a renewal | fsyncs a renewal | billed | twice |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let per = |v: i64| v as f64 / a.n as f64;
    for r in &runs {
        let (statements, transactions, writes) = match r.counts {
            Some(c) => (
                format!("{:.1}", per(c.statements)),
                format!("{:.1}", per(c.transactions)),
                format!("{:.2}", per(c.write_commits)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {:.2} s | {:.0} | {:.0} % | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {statements} | {transactions} | {writes} | {:.2} | {} | {} |",
            r.name,
            r.wall,
            a.n as f64 / r.wall,
            r.busy * 100.0,
            r.vipd_cpu,
            r.db_cpu,
            r.vipd_cpu / a.n as f64 * 1e6,
            r.db_cpu / a.n as f64 * 1e6,
            r.sandbox_cpu / a.n as f64 * 1e6,
            r.fsyncs / a.n as f64,
            r.billed,
            r.twice
        );
    }
    for r in runs.iter().filter(|r| !r.top.is_empty()) {
        println!(
            "\n{}: the statements run most often, calls a renewal, µs a call",
            r.name
        );
        for (calls, us, q) in &r.top {
            println!("  {calls:6.2}  {us:7.1}  {q}");
        }
    }
    let sled = &runs[0];
    for r in &runs[1..] {
        println!(
            "{} / sled: renewals/s {:.2}x, CPU (all) {:.2}x",
            r.name,
            sled.wall / r.wall,
            (r.vipd_cpu + r.db_cpu) / sled.vipd_cpu
        );
    }
    if a.check {
        for r in &runs {
            assert_eq!(r.billed, a.n, "{}: billed {} of {}", r.name, r.billed, a.n);
            assert_eq!(r.twice, 0, "{}: {} billed twice", r.name, r.twice);
        }
        println!("check: every setup renewed every account once, none twice");
    }
}
