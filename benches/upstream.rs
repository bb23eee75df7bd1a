//! Hot paths of the upstream layer: signing a request, parsing a
//! membership reply (JSON and XML), classifying a recharge reply.
//!
//! `cargo bench --bench upstream`; figures in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vipd::upstream::outcome::{Wire, classify};
use vipd::upstream::sign::md5_sign;
use vipd::upstream::vipinfo::parse_vip_info;

/// The vendor document's parameter set, plus `time` as real requests carry.
const DOC_PARAMS: [(&str, &str); 6] = [
    ("appid", "1"),
    ("debug", "1"),
    ("format", "json"),
    ("notify_url", "https://www.wapi.cn/notify_url"),
    ("qq_number", "5666857"),
    ("time", "1629017745"),
];
const SECRET: &str = "0123456789abcdef0123456789abcdef";

const SEED_JSON: &str = r#"{"ret":0,"msg":"","is_lost":0,"is_qq_vip":1,"is_qq_year_vip":0,"qq_vip_level":5,"qq_vip_start":1313974842,"qq_vip_end":1359507642,"qq_vip_payway":111,"qq_year_vip_start":1326771509,"qq_year_vip_end":1358912309,"qq_year_vip_payway":0,"qq_zuanhuang_start":0,"qq_zuanhuang_end":0,"qq_zuanhuang_payway":0,"qq_haohua_start":0,"qq_haohua_end":0,"qq_haohua_payway":0,"qq_svip_start":0,"qq_svip_end":0,"qq_svip_payway":0,"history_pay_time":0,"history_end_time":0}"#;

fn seed_xml() -> String {
    let v: serde_json::Value = serde_json::from_str(SEED_JSON).unwrap();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><data>");
    for (k, v) in v.as_object().unwrap() {
        let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        out.push_str(&format!("<{k}>{text}</{k}>"));
    }
    out.push_str("</data>");
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sign");
    g.throughput(Throughput::Elements(1));
    g.bench_function("md5_vendor_doc_params", |b| {
        b.iter(|| md5_sign(black_box(DOC_PARAMS), black_box(SECRET)))
    });
    g.finish();

    let xml = seed_xml();
    let mut g = c.benchmark_group("vip_info_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_seed", |b| {
        b.iter(|| parse_vip_info(black_box(SEED_JSON.as_bytes())).unwrap())
    });
    g.bench_function("xml_seed", |b| {
        b.iter(|| parse_vip_info(black_box(xml.as_bytes())).unwrap())
    });
    g.finish();

    let reply = br#"{"codeid":10000,"message":"ok","orderid":"4B629017745K00002946","price":"12.11","curtime":"1629017745","retdata":[]}"#;
    let mut g = c.benchmark_group("recharge_classify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("accepted_reply", |b| {
        b.iter(|| {
            classify(black_box(&Wire::Reply {
                status: 200,
                body: reply,
            }))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
