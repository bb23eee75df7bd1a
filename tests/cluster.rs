//! Several `vipd run` nodes on one PostgreSQL ledger (issue 14), each a
//! real process, against one real sandbox and a real PostgreSQL server
//! this test process starts (`vipd::ledger::pg::throwaway`).

mod common;

use std::time::{Duration, Instant};

use common::cluster::Node;
use common::stack::{Stack, StackConfig};
use serde_json::Value;
use vipd::ledger::pg::throwaway;

/// Pairs each node holds, by `status` from `node`.
async fn claims(node: &Node) -> Vec<(String, i64, f64)> {
    let s = node.get("/api/status").await;
    s["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n: &Value| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["claims"].as_i64().unwrap(),
                n["lease_left"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Two nodes share 40 due accounts: each account is paid once, both
/// nodes check some, and `status` on either names both. Node a is then
/// killed: its pairs go to b within a lease period and a few checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_work_and_one_takes_over_when_the_other_dies() {
    const N: usize = 40;
    let db = throwaway::database().await;
    let stack = Stack::sandbox_only(&StackConfig::due(N)).await;
    let mut a = Node::new(&stack, "a", db.url(), "3s");
    let mut b = Node::new(&stack, "b", db.url(), "3s");
    a.start().await;
    b.start().await;
    stack
        .wait_for("every account paid", Duration::from_secs(60), || async {
            (stack.billed().await.len() == N).then_some(())
        })
        .await;
    // A moment for b to be known to a and for pairs to settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let billed = stack.billed().await;
    assert!(billed.values().all(|n| *n == 1), "{billed:?}");
    let seen = claims(&b).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (on_a, on_b) = (seen[0].1, seen[1].1);
    assert!(on_a > 0 && on_b > 0, "both nodes check: {seen:?}");
    assert_eq!(on_a + on_b, N as i64, "{seen:?}");
    let orders = b.get("/api/orders").await;
    assert_eq!(orders.as_array().unwrap().len(), N, "one ledger");

    a.kill();
    let killed = Instant::now();
    stack
        .wait_for("b to hold every pair", Duration::from_secs(15), || async {
            let seen = claims(&b).await;
            seen.iter()
                .any(|(name, n, _)| name == "b" && *n == N as i64)
                .then_some(())
        })
        .await;
    let took = killed.elapsed();
    println!(
        "failover: b held all {N} pairs {took:.1?} after a was killed (lease 3s, checks every 1s)"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(stack.billed().await, billed, "nothing paid again");
    assert!(!b.log().contains("panicked"), "{}", b.log());
}
