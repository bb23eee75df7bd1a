//! The floors: what each part of a renewal costs alone on this machine,
//! CPU (user + system of this process, `getrusage`) and wall time per
//! operation, so that every line of the per-renewal budget in
//! BENCHMARKS.md has a measured number beside it.
//!
//! `cargo bench --bench floors` (`-- N` for N times the iterations).
//!
//! The HTTP floors run vipd's own client (`upstream::http_client`, the
//! membership client built from a configuration as the engine builds it)
//! against `vipd sandbox` in another process, so only the client's CPU
//! is counted. The store floors run on a sled store in a temporary folder
//! on the same file system the side by side uses.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vipd::config::{Config, Provider, Secret};
use vipd::ledger::{AttemptResult, EventRecord, Ledger, PlanRequest};
use vipd::model::{Budget, Membership};
use vipd::units::Fen;
use vipd::upstream::OutcomeClass;
use vipd::upstream::vipinfo::parse_vip_info;

/// CPU time of this process so far (user + system).
fn cpu() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One measured floor.
struct Floor {
    what: &'static str,
    ops: u64,
    wall: Duration,
    cpu: Duration,
}

impl Floor {
    fn print(&self) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.ops as f64;
        println!(
            "| {} | {} | {:.2} | {:.2} |",
            self.what,
            self.ops,
            per(self.cpu),
            per(self.wall)
        );
    }
}

/// Runs `op` `ops` times and measures it.
fn measure(what: &'static str, ops: u64, mut op: impl FnMut(u64)) -> Floor {
    let (c, w) = (cpu(), Instant::now());
    for i in 0..ops {
        op(i);
    }
    Floor {
        what,
        ops,
        wall: w.elapsed(),
        cpu: cpu() - c,
    }
}

const SEED_JSON: &str = r#"{"ret":0,"msg":"","is_lost":0,"is_qq_vip":1,"is_qq_year_vip":0,"qq_vip_level":5,"qq_vip_start":1313974842,"qq_vip_end":1359507642,"qq_vip_payway":111,"qq_year_vip_start":1326771509,"qq_year_vip_end":1358912309,"qq_year_vip_payway":0,"qq_zuanhuang_start":0,"qq_zuanhuang_end":0,"qq_zuanhuang_payway":0,"qq_haohua_start":0,"qq_haohua_end":0,"qq_haohua_payway":0,"qq_svip_start":0,"qq_svip_end":0,"qq_svip_payway":0,"history_pay_time":0,"history_end_time":0}"#;

fn plan_request(i: u64) -> PlanRequest {
    PlanRequest {
        key: format!("{i:032x}"),
        rule: "keep".into(),
        account: format!("a{i}"),
        membership: Membership::QqVip,
        observed_end: Some(1_800_000_000 + i as i64),
        product: "qq_vip_month".into(),
        provider: "wapi".into(),
        max_price: Fen(2000),
        max_attempts: 3,
        budget: Budget::default(),
        day: "2027-01-15".into(),
        month: "2027-01".into(),
        why: "ends in 2d 0h (renew_before 3d)".into(),
        approval_asked: None,
    }
}

fn main() {
    let scale: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1);
    let n = |base: u64| base * scale;
    let mut floors = Vec::new();

    // Parsing and encoding.
    floors.push(measure("vip_info parse (JSON seed)", n(200_000), |_| {
        black_box(parse_vip_info(black_box(SEED_JSON.as_bytes())).unwrap());
    }));
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("state")).unwrap();
    let now = 1_800_000_000;
    ledger.plan(&plan_request(u64::MAX), now).unwrap().unwrap();
    ledger.mark_sent(&plan_request(u64::MAX).key, now).unwrap();
    let order = ledger
        .record_attempt(
            &plan_request(u64::MAX).key,
            now,
            OutcomeClass::Pending,
            "pending: codeid 10023: 订单提交成功,等待回调结果",
            AttemptResult::Pending {
                vendor_orderid: Some("SB00000001".into()),
                price: Some(Fen(1500)),
            },
        )
        .unwrap()
        .order;
    let encoded = serde_json::to_vec(&order).unwrap();
    floors.push(measure("order encode (JSON, pending)", n(200_000), |_| {
        black_box(serde_json::to_vec(black_box(&order)).unwrap());
    }));
    floors.push(measure("order decode (JSON, pending)", n(200_000), |_| {
        black_box(serde_json::from_slice::<vipd::ledger::Order>(black_box(&encoded)).unwrap());
    }));
    println!(
        "an order pending after one attempt: {} bytes of JSON",
        encoded.len()
    );

    // The store.
    let db = sled::Config::new()
        .path(dir.path().join("raw"))
        .mode(sled::Mode::LowSpace)
        .cache_capacity(16 << 20)
        .open()
        .unwrap();
    let value = vec![7u8; encoded.len()];
    floors.push(measure("sled insert (order-sized value)", n(50_000), |i| {
        db.insert(i.to_be_bytes(), value.as_slice()).unwrap();
    }));
    let file = std::fs::File::create(dir.path().join("fsync")).unwrap();
    floors.push(measure("write 4 KiB + fdatasync", n(500), |i| {
        use std::os::unix::fs::FileExt;
        file.write_at(&[1u8; 4096], (i % 64) * 4096).unwrap();
        file.sync_data().unwrap();
    }));
    floors.push(measure(
        "event write (Ledger::record_event)",
        n(50_000),
        |i| {
            ledger
                .record_event(&EventRecord {
                    at: now + i as i64,
                    kind: "recharge_result".into(),
                    account: Some(format!("a{i}")),
                    rule: Some("keep".into()),
                    key: Some(format!("{i:032x}")),
                    detail: "attempt 1: pending: codeid 10023 → order pending".into(),
                })
                .unwrap();
        },
    ));
    floors.push(measure(
        "plan + mark_sent + record_attempt (3 transitions, no fsync)",
        n(10_000),
        |i| {
            let req = plan_request(i);
            ledger.plan(&req, now).unwrap().unwrap();
            ledger.mark_sent(&req.key, now).unwrap();
            ledger
                .record_attempt(
                    &req.key,
                    now,
                    OutcomeClass::Pending,
                    "pending",
                    AttemptResult::Pending {
                        vendor_orderid: Some(format!("SB{i}")),
                        price: Some(Fen(1500)),
                    },
                )
                .unwrap();
        },
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = Arc::new(ledger);
    floors.push({
        let ledger = ledger.clone();
        measure(
            "a transition made durable (plan + Store::durable)",
            n(500),
            move |i| {
                ledger
                    .plan(&plan_request(1_000_000 + i), now)
                    .unwrap()
                    .unwrap();
                rt.block_on(vipd::ledger::store::OrderStore::durable(&*ledger))
                    .unwrap();
            },
        )
    });

    // One membership read over loopback through vipd's client.
    let cfg_dir = tempfile::tempdir().unwrap();
    let path = cfg_dir.path().join("rules.yaml");
    let (_sandbox, upstream) = common::one_account_sandbox(&path);
    let config = Config::load(&path).unwrap();
    let Some(Provider::QqConnect(qq)) = config.providers.get("qq") else {
        panic!("no qq provider")
    };
    let http = vipd::upstream::http_client();
    let reader = vipd::engine::clients::vip_info(qq, &http);
    let token = Secret::new("t0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm the connection pool.
        reader.fetch("O0", &token).await.unwrap();
    });
    let reads = n(5_000);
    floors.push(measure(
        "membership read over loopback (client only, sequential)",
        reads,
        |_| {
            rt.block_on(reader.fetch("O0", &token)).unwrap();
        },
    ));
    let concurrent = {
        let (c, w) = (cpu(), Instant::now());
        rt.block_on(async {
            let per = reads / 32;
            let tasks: Vec<_> = (0..32)
                .map(|_| {
                    let (reader, token) = (reader.clone(), token.clone());
                    tokio::spawn(async move {
                        for _ in 0..per {
                            reader.fetch("O0", &token).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        Floor {
            what: "membership read over loopback (client only, 32 at once)",
            ops: reads / 32 * 32,
            wall: w.elapsed(),
            cpu: cpu() - c,
        }
    };
    floors.push(concurrent);
    println!("sandbox at {upstream}");

    println!();
    println!("| floor | ops | CPU µs/op | wall µs/op |");
    println!("|---|---|---|---|");
    for f in &floors {
        f.print();
    }
}
