//! Every committed fuzz seed and every past finding, run through the same
//! target functions the fuzzers use (`vipd::fuzz`), on stable, in
//! `cargo test`: the short form of the fuzzing suite. The long form is
//! `scripts/fuzz.sh` (README, "Tests"; hours in RELIABILITY.md).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} failed its target", file.display());
            count += 1;
        }
    }
    assert!(count >= 5, "{target}: only {count} inputs; seeds missing?");
}

#[test]
fn callback() {
    replay("callback", vipd::fuzz::callback);
}

#[test]
fn recharge_reply() {
    replay("recharge_reply", vipd::fuzz::recharge_reply);
}

#[test]
fn vip_info() {
    replay("vip_info", vipd::fuzz::vip_info);
}

#[test]
fn config() {
    replay("config", vipd::fuzz::config);
}

#[test]
fn pattern() {
    replay("pattern", vipd::fuzz::pattern);
}

#[test]
fn lua() {
    replay("lua", vipd::fuzz::lua);
}
