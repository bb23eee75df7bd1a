//! Several `vipd run` nodes on one PostgreSQL ledger, each a
//! real process, against one real sandbox and a real PostgreSQL server
//! this test process starts (`vipd::ledger::pg::throwaway`).
//!
//! The scenarios run one after another in one test: each runs several
//! nodes, a sandbox and a database on the same cores, and leases are
//! timed, so two at once would measure the machine; and as one test, no
//! test thread waits idle for another's cluster to finish.
//!
//! ```text
//! cargo test --release --test suite cluster:: -- --nocapture          # chaos: 3 nodes, 500 accounts, 5 kills
//! CLUSTER_KILLS=50 cargo test --release --test suite cluster:: -- --nocapture # the long run
//! ```
//! `CLUSTER_ACCOUNTS` and `CLUSTER_SEED` change the rest.

use std::time::{Duration, Instant};

use crate::common::chaos::{Verdict, chaos_config, done, env, true_callbacks};
use crate::common::cluster::Node;
use crate::common::stack::{Stack, StackConfig};
use serde_json::{Value, json};
use vipd::ledger::pg::throwaway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios() {
    scenario(
        "two nodes share the work, and one takes over when the other dies",
        two_nodes_share_the_work_and_one_takes_over_when_the_other_dies(),
    )
    .await;
    scenario("chaos across nodes", chaos_across_nodes()).await;
    scenario(
        "a node cut off from the database pays nothing, and resumes",
        a_node_cut_off_from_the_database_pays_nothing_and_resumes(),
    )
    .await;
    scenario(
        "a single node moves to PostgreSQL with its history",
        a_single_node_moves_to_postgres_with_its_history(),
    )
    .await;
}

/// Runs one scenario, named on stderr (which a failing test shows).
async fn scenario(name: &str, run: impl std::future::Future<Output = ()>) {
    eprintln!("cluster scenario: {name}");
    let started = Instant::now();
    run.await;
    eprintln!("cluster scenario: {name}: ok in {:.1?}", started.elapsed());
}

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
    // Until each node knows the other and every pair is held.
    let seen = stack
        .wait_for(
            "both nodes checking, every pair held",
            Duration::from_secs(20),
            || async {
                let seen = claims(&b).await;
                let held: i64 = seen.iter().map(|c| c.1).sum();
                let both = seen.len() == 2 && seen.iter().all(|c| c.1 > 0);
                (both && held == N as i64).then_some(seen)
            },
        )
        .await;
    let billed = stack.billed().await;
    assert!(billed.values().all(|n| *n == 1), "{billed:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (on_a, on_b) = (seen[0].1, seen[1].1);
    assert!(on_a > 0 && on_b > 0, "both nodes check: {seen:?}");
    assert_eq!(on_a + on_b, N as i64, "{seen:?}");
    let orders = b.get("/api/orders").await;
    assert_eq!(orders.as_array().unwrap().len(), N, "one ledger");
    let metrics = reqwest::get(format!("{}/metrics", a.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!("vipd_orders{{state=\"succeeded\"}} {N}"),
        format!("vipd_node_pairs{{node=\"a\"}} {on_a}"),
        format!("vipd_node_pairs{{node=\"b\"}} {on_b}"),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

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

/// The chaos suite across nodes: three nodes on one database, 500 due
/// accounts, the sandbox in async mode with every fault on, true old
/// callbacks re-delivered to any node, and a node killed with `kill -9`
/// at random moments and restarted after a random pause (sometimes past
/// its lease, so that others take over). Then the same verdict as the
/// one-node suite, from the sandbox's records and the shared ledger.
async fn chaos_across_nodes() {
    let accounts = env("CLUSTER_ACCOUNTS", 500) as usize;
    let kills = env("CLUSTER_KILLS", 5);
    let mut rng = fastrand::Rng::with_seed(env("CLUSTER_SEED", 14));
    let (cfg, cap) = chaos_config(accounts);
    let db = throwaway::database().await;
    let stack = Stack::sandbox_only(&cfg).await;
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::new(&stack, n, db.url(), "3s"))
        .collect();
    for n in &mut nodes {
        n.start().await;
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut replays = 0;
    let mut down: Option<(usize, Instant)> = None;
    for _ in 0..kills {
        let life = Instant::now() + Duration::from_millis(rng.u64(300..2500));
        while Instant::now() < life {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some((i, at)) = down
                && Instant::now() >= at
            {
                nodes[i].start().await;
                down = None;
            }
            let old = true_callbacks(&stack.sandbox_orders().await);
            let up: Vec<&Node> = nodes.iter().filter(|n| n.running()).collect();
            for _ in 0..3 {
                if old.is_empty() {
                    break;
                }
                let to = up[rng.usize(..up.len())];
                let _ = http
                    .post(format!("{}/notify/wapi", to.callbacks))
                    .form(&old[rng.usize(..old.len())])
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                replays += 1;
            }
        }
        if let Some((i, _)) = down.take() {
            nodes[i].start().await;
        }
        let victim = rng.usize(..nodes.len());
        nodes[victim].kill();
        down = Some((
            victim,
            Instant::now() + Duration::from_millis(rng.u64(0..5000)),
        ));
    }
    if let Some((i, _)) = down {
        nodes[i].start().await;
    }

    // Calm: faults off, every node running.
    stack.control(json!({"recharge": {}})).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (orders, unsettled) = loop {
        for n in &mut nodes {
            if let Some(code) = n.exited() {
                panic!("{} exited ({code:?}):\n{}", n.name, n.log());
            }
        }
        let orders = nodes[0].get("/api/orders").await;
        let orders = orders.as_array().cloned().unwrap_or_default();
        let unsettled = accounts.saturating_sub(done(&orders));
        if unsettled == 0 || Instant::now() > deadline {
            break (orders, unsettled);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let logs: String = nodes.iter().map(Node::log).collect();
    let verdict = Verdict::of(&stack, accounts, &orders, &logs).await;
    println!(
        "cluster chaos: 3 nodes, {accounts} accounts, {kills} kills, {replays} re-delivered callbacks, {verdict} (cap {cap:.2}), unsettled after 120 s: {unsettled}, in {:.1} s",
        started.elapsed().as_secs_f64(),
    );
    if let Ok(dir) = std::env::var("CLUSTER_KEEP") {
        std::fs::write(format!("{dir}/logs.txt"), &logs).unwrap();
        std::fs::write(
            format!("{dir}/orders.json"),
            serde_json::to_string_pretty(&orders).unwrap(),
        )
        .unwrap();
        std::fs::write(
            format!("{dir}/sandbox.json"),
            serde_json::to_string_pretty(&stack.sandbox_orders().await).unwrap(),
        )
        .unwrap();
    }
    verdict.assert_sound(cap);
    assert!(!logs.contains("panicked"), "a node panicked");
    for n in &mut nodes {
        assert_eq!(n.exited(), None, "{} exited:\n{}", n.name, n.log());
    }
}

/// A partition: the database stops under two nodes while they pay. While
/// it is gone nothing reaches the vendor and `/healthz` says why; a short
/// outage (within the lease) is ridden out without a restart; after a
/// long one each node finds its lease gone and exits, and, restarted as
/// the service manager would, finishes the work. No period paid twice.
async fn a_node_cut_off_from_the_database_pays_nothing_and_resumes() {
    const N: usize = 200;
    let mut server = tokio::task::spawn_blocking(throwaway::Server::start)
        .await
        .unwrap();
    let db = server.database().await;
    let mut cfg = StackConfig::due(N);
    cfg.sandbox =
        "  mode: async\n  callback_delay: 200ms\n  faults: { recharge: { latency: 150ms } }".into();
    cfg.provider = "    max_in_flight: 2\n    callback: { within: 5s }".into();
    let cap = N as f64 * 20.0;
    cfg.rule = format!("    budget: {{ per_day: {cap:.2} }}");
    let stack = Stack::sandbox_only(&cfg).await;
    let mut nodes = [
        Node::new(&stack, "a", db.url(), "6s"),
        Node::new(&stack, "b", db.url(), "6s"),
    ];
    for n in &mut nodes {
        n.start().await;
    }
    let requests = || async { stack.sandbox_orders().await.len() };
    stack
        .wait_for("some payments", Duration::from_secs(30), || async {
            (stack.billed().await.len() >= 20).then_some(())
        })
        .await;
    let http = reqwest::Client::new();
    for (outage, lease_outlived) in [
        (Duration::from_secs(3), false),
        (Duration::from_secs(9), true),
    ] {
        server.stop();
        let stopped = Instant::now();
        // Requests already marked sent may still leave; none after.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = requests().await;
        let health = http
            .get(format!("{}/healthz", nodes[0].admin))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status().as_u16(), 503, "healthz while cut off");
        let why = health.text().await.unwrap();
        assert!(why.contains("PostgreSQL"), "{why}");
        assert!(!why.contains("vipd@") && !why.contains("password"), "{why}");
        tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
        assert_eq!(
            requests().await,
            before,
            "nothing reached the vendor while cut off"
        );
        tokio::task::block_in_place(|| server.resume());
        if lease_outlived {
            for n in &mut nodes {
                let deadline = Instant::now() + Duration::from_secs(10);
                let code = loop {
                    if let Some(code) = n.exited() {
                        break code;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} kept running without its lease",
                        n.name
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                assert_eq!(code, Some(1), "{}", n.log());
                assert!(n.log().contains("lost its lease"));
                n.start().await;
            }
        } else {
            // Within its lease: each node answers healthy again, unrestarted.
            for n in &mut nodes {
                stack
                    .wait_for("healthy again", Duration::from_secs(15), || async {
                        let r = http.get(format!("{}/healthz", n.admin)).send().await.ok()?;
                        r.status().is_success().then_some(())
                    })
                    .await;
                assert_eq!(n.exited(), None, "{} rode out a short outage", n.name);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let orders = loop {
        let orders = nodes[0].get("/api/orders").await;
        let orders = orders.as_array().cloned().unwrap_or_default();
        if done(&orders) == N || Instant::now() > deadline {
            break orders;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let logs: String = nodes.iter().map(Node::log).collect();
    let verdict = Verdict::of(&stack, N, &orders, &logs).await;
    println!("partition: 2 nodes, {N} accounts, outages of 3 s and 9 s (lease 6 s): {verdict}");
    verdict.assert_sound(cap);
    assert!(!logs.contains("panicked"));
}

/// A single node moves to PostgreSQL with its history: `vipd store copy
/// --from sled --to postgres` after it stopped, then a node on the
/// database finds every order, pays nothing again, and a second copy is
/// refused.
async fn a_single_node_moves_to_postgres_with_its_history() {
    const N: usize = 10;
    let mut stack = Stack::start(&StackConfig::due(N)).await;
    stack
        .wait_for("every account paid", Duration::from_secs(30), || async {
            (stack.billed().await.len() == N).then_some(())
        })
        .await;
    let history = stack.orders().await;
    assert_eq!(stack.stop_daemon(), Some(0));
    let billed = stack.billed().await;

    let db = throwaway::database().await;
    let text = std::fs::read_to_string(&stack.config).unwrap().replace(
        "  state_dir: ./state\n",
        "  state_dir: ./state\n  store: { kind: postgres, url: \"${env:VIPD_PG_URL}\", node: mover }\n",
    );
    let copy_config = stack.dir.path().join("copy.yaml");
    std::fs::write(&copy_config, text).unwrap();
    let copy = || {
        crate::common::vipd()
            .args([
                "store", "copy", "--from", "sled", "--to", "postgres", "--config",
            ])
            .arg(&copy_config)
            .env("VIPD_PG_URL", db.url())
            .output()
            .unwrap()
    };
    let out = copy();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("copied {N} orders")), "{said}");
    let again = copy();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let mut node = Node::new(&stack, "a", db.url(), "3s");
    node.start().await;
    // Three rounds of checks in which it could pay again.
    stack
        .wait_for(
            "three rounds of checks",
            Duration::from_secs(30),
            || async {
                (crate::common::reads_at(&node.admin, None).await >= 3 * N as u64).then_some(())
            },
        )
        .await;
    let orders = node.get("/api/orders").await;
    let keys = |v: &[Value]| {
        let mut k: Vec<String> = v
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(orders.as_array().unwrap()), keys(&history));
    assert_eq!(
        stack.billed().await,
        billed,
        "nothing paid again after the move"
    );
}
