//! Lua plugins with the real daemon: `vipd run` and `vipd sandbox` as
//! child processes, scripts on disk, local receivers for webhooks.

use std::time::Duration;

use crate::common::stack::{SILENT_VENDOR, Stack, StackConfig};
use crate::common::{Webhook, events_of, signed};
use serde_json::Value;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/examples/plugins/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn with_plugins(n: usize, files: &[(&str, String)], top: &str) -> StackConfig {
    let mut cfg = StackConfig::due(n);
    cfg.sandbox = "  mode: sync".into();
    cfg.files = files
        .iter()
        .map(|(n, t)| (format!("scripts/{n}"), t.clone()))
        .collect();
    cfg.top = top.into();
    cfg
}

#[tokio::test]
async fn a_vetoed_account_is_not_billed_and_the_veto_is_recorded() {
    let cfg = with_plugins(
        3,
        &[("skip-list.lua", example("skip-list.lua"))],
        "plugins:\n  settings:\n    skip-list: { accounts: { a0: \"left the company\" } }",
    );
    let stack = Stack::start(&cfg).await;
    stack
        .wait_for("a1 and a2 billed", Duration::from_secs(20), || async {
            let b = stack.billed().await;
            (b.get("a1") == Some(&1) && b.get("a2") == Some(&1)).then_some(())
        })
        .await;
    // Three more rounds of checks of a0, a1 and a2.
    stack.after_reads(9, None).await;
    assert_eq!(stack.billed().await.get("a0"), None, "{}", stack.log());
    let status = stack.status().await;
    let a0 = status["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["account"] == "a0")
        .unwrap();
    assert_eq!(
        a0["decision"],
        "vetoed by plugin skip-list: on the skip list: left the company"
    );
    let vetoes = events_of(&status, "renewal_vetoed");
    assert_eq!(vetoes.len(), 1, "one event per standing veto: {vetoes:#?}");
    assert_eq!(vetoes[0]["account"], "a0");
    assert!(
        stack.orders().await.iter().all(|o| o["account"] != "a0"),
        "a vetoed renewal plans no order"
    );
    // a0 ends in a day, within the rule's at_risk (half of renew_before
    // 3d), and nothing will renew it: at risk, once, saying why. The paid
    // accounts are not.
    let at_risk = events_of(&status, "renewal_at_risk");
    assert_eq!(at_risk.len(), 1, "{at_risk:#?}");
    assert_eq!(at_risk[0]["account"], "a0");
    let detail = at_risk[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("no order") && detail.contains("vetoed by plugin skip-list"),
        "{detail}"
    );
}

#[tokio::test]
async fn runaway_handlers_are_stopped_while_other_renewals_go_on() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let script = format!(
        r#"
vipd.on("before_recharge", function(ev)
  if ev.account == "a0" then vipd.http.get("http://{hang}/", {{ timeout = 30 }}) end
  if ev.account == "a1" then while true do end end
  if ev.account == "a2" then
    local t = {{}}
    for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end
  end
end)
"#
    );
    let cfg = with_plugins(
        6,
        &[("runaway.lua", script)],
        &format!(
            "plugins: {{ timeout: 4s, instructions: 20000000, memory_mb: 32, http_allow: [\"{hang}\"] }}"
        ),
    );
    let stack = Stack::start(&cfg).await;
    // a3..a5 renew while a0's handler still waits on the hanging server.
    let billed = stack
        .wait_for("a3..a5 billed", Duration::from_secs(20), || async {
            let b = stack.billed().await;
            ["a3", "a4", "a5"]
                .iter()
                .all(|a| b.contains_key(*a))
                .then_some(b)
        })
        .await;
    assert!(
        !billed.contains_key("a0"),
        "a0 waits for its plugin's time limit, the others do not: {billed:?}"
    );
    // The stopped handlers do not veto: every account renews, once.
    let billed = stack
        .wait_for("all billed", Duration::from_secs(20), || async {
            let b = stack.billed().await;
            (b.len() == 6).then_some(b)
        })
        .await;
    assert!(billed.values().all(|n| *n == 1), "{billed:?}");
    let status = stack.status().await;
    let counts = &status["plugins"]["runaway"];
    assert_eq!(counts["time_limit"], 1, "{status:#}");
    assert_eq!(counts["instruction_limit"], 1, "{status:#}");
    assert_eq!(counts["memory_limit"], 1, "{status:#}");
    let log = stack.log();
    for limit in [
        "time limit exceeded",
        "instruction limit exceeded",
        "memory limit exceeded",
    ] {
        assert!(log.contains(limit), "{limit} not logged:\n{log}");
    }
    assert!(log.contains("runaway.lua:4"), "no script line:\n{log}");
    // The memory limit names its line too (it was `... at  plugin=`): the
    // allocator raises it with no position, so where the hook last saw
    // the loop run.
    let memory = log
        .lines()
        .find(|l| l.contains("memory limit exceeded"))
        .unwrap();
    assert!(memory.contains("at runaway.lua:7"), "{memory}");
}

#[tokio::test]
async fn a_broken_reload_keeps_the_old_generation_and_a_fixed_one_applies() {
    let v1 = r#"vipd.on("vip_info", function(ev) vipd.log.info("v1 saw " .. ev.account) end)"#;
    let cfg = with_plugins(1, &[("watch.lua", v1.to_owned())], "");
    let stack = Stack::start(&cfg).await;
    assert_eq!(stack.status().await["generation"], 1);
    let script = stack.dir.path().join("scripts/watch.lua");

    // A broken script, picked up by the file watcher.
    std::fs::write(&script, "vipd.on(\"vip_info\", function(ev)\n  oops(\n").unwrap();
    let report = stack
        .wait_for("refused reload", Duration::from_secs(10), || async {
            let s = stack.status().await;
            s["last_reload"]["error"].as_str().map(str::to_owned)
        })
        .await;
    assert!(report.contains("watch.lua:3"), "{report}");
    assert_eq!(stack.status().await["generation"], 1);
    // One change, one reload: reading the files to reload must not count
    // as a change (else every reload would trigger the next).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stack.log().matches("reload refused").count(),
        1,
        "{}",
        stack.log()
    );
    // The old generation still runs.
    // A log line without fields carries none (it printed `fields=""`).
    let line = stack
        .log()
        .lines()
        .find(|l| l.contains("v1 saw a0"))
        .unwrap()
        .to_owned();
    assert!(!line.contains("fields="), "{line}");
    let seen = stack.log().matches("v1 saw a0").count();
    stack
        .wait_for("v1 still handling", Duration::from_secs(10), || async {
            (stack.log().matches("v1 saw a0").count() > seen).then_some(())
        })
        .await;

    // A broken rules.yaml, by SIGHUP: the error names the file and line.
    let good_yaml = std::fs::read_to_string(&stack.config).unwrap();
    let bad_yaml = good_yaml.replace("    renew_before: 3d", "    renew_befor: 3d");
    std::fs::write(&stack.config, &bad_yaml).unwrap();
    stack.sighup();
    let line = bad_yaml
        .lines()
        .position(|l| l.contains("renew_befor"))
        .unwrap()
        + 1;
    stack
        .wait_for("refused SIGHUP reload", Duration::from_secs(10), || async {
            let s = stack.status().await;
            let e = s["last_reload"]["error"].as_str()?.to_owned();
            (s["last_reload"]["trigger"] == "SIGHUP").then_some(e)
        })
        .await
        .contains(&format!("rules.yaml:{line}"))
        .then_some(())
        .expect("the error names rules.yaml and the line");
    let (code, body) = stack.reload().await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("did you mean"),
        "{body}"
    );

    // Both fixed: the API reload applies them as generation 2.
    std::fs::write(&stack.config, &good_yaml).unwrap();
    std::fs::write(
        &script,
        r#"vipd.on("vip_info", function(ev) vipd.log.info("v2 saw " .. ev.account) end)"#,
    )
    .unwrap();
    let (code, body) = stack.reload().await;
    assert_eq!(code, 200, "{body}");
    let generation = body["generation"].as_u64().unwrap();
    assert!(generation >= 2, "{body}");
    stack
        .wait_for("v2 handling", Duration::from_secs(10), || async {
            stack.log().contains("v2 saw a0").then_some(())
        })
        .await;
    let s = stack.status().await;
    assert_eq!(s["last_reload"]["error"], Value::Null, "{s:#}");
    assert!(s["generation"].as_u64().unwrap() >= 2);
    // Reloads never paid twice.
    assert_eq!(stack.billed().await.get("a0"), Some(&1));
}

#[tokio::test]
async fn kv_values_survive_a_restart() {
    let script = r#"
vipd.on("vip_info", function(ev)
  vipd.log.info("reads=" .. vipd.kv.incr("reads"))
end)
"#;
    let cfg = with_plugins(1, &[("count.lua", script.to_owned())], "");
    let mut stack = Stack::start(&cfg).await;
    stack
        .wait_for("two reads", Duration::from_secs(15), || async {
            stack.log().contains("reads=2").then_some(())
        })
        .await;
    assert_eq!(stack.stop_daemon(), Some(0));
    let max = |log: &str| {
        log.match_indices("reads=")
            .filter_map(|(i, _)| {
                log[i + 6..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    let before = max(&stack.log());
    let log_len = stack.log().len();
    stack.start_daemon().await;
    let after = stack
        .wait_for("a read after restart", Duration::from_secs(15), || async {
            let log = stack.log();
            let new = &log[log_len..];
            new.contains("reads=").then(|| max(new))
        })
        .await;
    assert!(after > before, "counter restarted: {before} then {after}");
}

#[tokio::test]
async fn chat_webhook_alerts_a_budget_stop_once() {
    let (hook, url) = Webhook::start().await;
    let mut cfg = with_plugins(
        1,
        &[("chat-webhook.lua", example("chat-webhook.lua"))],
        &format!(
            "plugins:\n  http_allow: [\"{}\"]\n  settings:\n    chat-webhook: {{ url: \"{url}\", style: wecom }}",
            Webhook::host_port(&url)
        ),
    );
    cfg.rule = "    budget: { per_day: 10.00 }".into();
    let stack = Stack::start(&cfg).await;
    stack
        .wait_for("a webhook post", Duration::from_secs(15), || async {
            (!hook.bodies().is_empty()).then_some(())
        })
        .await;
    // Three more checks: the alert is not repeated.
    stack.after_reads(3, None).await;
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["msgtype"], "text");
    let text = bodies[0]["text"]["content"].as_str().unwrap();
    assert!(text.contains("Renewal stopped by the budget"), "{text}");
    assert!(text.contains("account a0"), "{text}");
    assert!(stack.billed().await.is_empty());
    assert!(
        !stack.log().contains("hook-key-do-not-log"),
        "the webhook key reached the log"
    );
}

#[tokio::test]
async fn daily_spend_summary_job_reports_what_was_paid() {
    let (hook, url) = Webhook::start().await;
    let cfg = with_plugins(
        2,
        &[("daily-spend.lua", example("daily-spend.lua"))],
        &format!(
            "plugins:\n  http_allow: [\"{}\"]\n  settings:\n    daily-spend: {{ url: \"{url}\", schedule: 1s }}",
            Webhook::host_port(&url)
        ),
    );
    let stack = Stack::start(&cfg).await;
    let text = stack
        .wait_for(
            "a summary with both renewals",
            Duration::from_secs(20),
            || async {
                hook.bodies().iter().rev().find_map(|b| {
                    let t = b["text"]["content"].as_str()?.to_owned();
                    t.contains("2 renewals, 30.00 yuan").then_some(t)
                })
            },
        )
        .await;
    assert!(text.starts_with("[vipd] spend"), "{text}");
}

#[tokio::test]
async fn parse_callback_maps_another_vendors_fields() {
    let mut cfg = with_plugins(
        1,
        &[("vendor-callback.lua", example("vendor-callback.lua"))],
        "",
    );
    cfg.sandbox = SILENT_VENDOR.into();
    let stack = Stack::start(&cfg).await;
    let order = stack.pending_order(Duration::from_secs(15)).await;
    let vendor_id = order["vendor_orderid"].as_str().unwrap().to_owned();
    let url = format!("{}/notify/wapi", stack.callbacks);
    let http = reqwest::Client::new();
    let fields = [
        ("out_trade_no", vendor_id.as_str()),
        ("trade_state", "SUCCESS"),
        ("amount", "1500"),
    ];
    // Forged: the plugin is never asked.
    let forged: Vec<(&str, &str)> = fields.iter().copied().chain([("sign", "00")]).collect();
    let r = http.post(&url).form(&forged).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = http.post(&url).form(&signed(&fields)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", stack.log());
    assert_eq!(r.text().await.unwrap(), "success");
    let order = stack
        .orders()
        .await
        .into_iter()
        .find(|o| o["key"] == order["key"])
        .unwrap();
    assert_eq!(order["state"], "succeeded", "{order:#}");
    assert_eq!(order["price"], "15.00", "{order:#}");
    // A signed callback that no plugin understands is refused.
    let r = http
        .post(&url)
        .form(&signed(&[("something", "else")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Editing a plugin, or adding one, reloads the daemon whether it was
/// started as the README does (`--config rules.yaml` from its folder, with
/// `scripts_dir: ./scripts`) or by absolute path.
#[tokio::test]
async fn script_edits_reload_with_relative_and_absolute_paths() {
    for relative in [true, false] {
        let v1 = r#"vipd.on("vip_info", function(ev) vipd.log.info("v1 saw " .. ev.account) end)"#;
        let mut cfg = with_plugins(1, &[("watch.lua", v1.to_owned())], "");
        cfg.daemon = "  scripts_dir: ./scripts".into();
        let mut stack = Stack::sandbox_only(&cfg).await;
        stack.relative_config = relative;
        stack.start_daemon().await;
        assert_eq!(stack.status().await["generation"], 1);
        let scripts = stack.dir.path().join("scripts");
        let generation = |n: u64| {
            let stack = &stack;
            async move {
                let s = stack.status().await;
                (s["generation"].as_u64() >= Some(n)).then_some(())
            }
        };
        std::fs::write(
            scripts.join("watch.lua"),
            r#"vipd.on("vip_info", function(ev) vipd.log.info("v2 saw " .. ev.account) end)"#,
        )
        .unwrap();
        let what = format!("an edited script reloads (relative: {relative})");
        stack
            .wait_for(&what, Duration::from_secs(10), || generation(2))
            .await;
        std::fs::write(scripts.join("added.lua"), "vipd.log.info(\"added\")\n").unwrap();
        let what = format!("an added script reloads (relative: {relative})");
        stack
            .wait_for(&what, Duration::from_secs(10), || generation(3))
            .await;
        let plugins = stack.status().await["plugins"].clone();
        assert!(plugins.to_string().contains("added"), "{plugins}");
    }
}

/// Signed webhooks as a receiver checks them: the chat-webhook helper
/// posting JSON, signed with a `plugins.webhook_secrets` entry, at a
/// budget stop. The delivery verifies with vipd's own receiver and with
/// the README's Python and shell snippets (examples/webhooks/); the same
/// delivery with its body changed, checked with another secret, or
/// replayed after the window is refused by all three. The event id is
/// the body's own, and the secret is in no log.
#[tokio::test]
async fn signed_webhooks_verify_as_a_receiver_checks_them() {
    let (hook, url) = Webhook::start().await;
    let secret = "whsec-test-0123456789abcdef";
    let mut cfg = with_plugins(
        1,
        &[("chat-webhook.lua", example("chat-webhook.lua"))],
        &format!(
            "plugins:\n  http_allow: [\"{}\"]\n  webhook_secrets: {{ receiver: \"{secret}\" }}\n  settings:\n    chat-webhook: {{ url: \"{url}\", style: json, sign: receiver }}",
            Webhook::host_port(&url)
        ),
    );
    cfg.rule = "    budget: { per_day: 10.00 }".into();
    let stack = Stack::start(&cfg).await;
    stack
        .wait_for("a signed delivery", Duration::from_secs(15), || async {
            (!hook.deliveries().is_empty()).then_some(())
        })
        .await;
    let d = hook.deliveries().remove(0);
    let header = d.signature.clone().expect("a vipd-signature header");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((now - t).abs() < 60, "t={t} now={now}");
    let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["event"], "budget_exceeded");
    assert_eq!(
        body["id"].as_str(),
        d.event_id.as_deref(),
        "the event id in the header is the body's"
    );
    use vipd::model::webhook::{Refused, WINDOW_SECS, verify};
    assert_eq!(verify(secret.as_bytes(), &header, &d.body, now), Ok(()));
    let mut forged = d.body.clone();
    forged.extend_from_slice(b" ");
    assert_eq!(
        verify(secret.as_bytes(), &header, &forged, now),
        Err(Refused::Mismatch)
    );
    assert!(matches!(
        verify(secret.as_bytes(), &header, &d.body, t + WINDOW_SECS + 1),
        Err(Refused::OutsideWindow(_))
    ));

    // The README's snippets, run as a receiver would run them.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let right = write("secret", format!("{secret}\n").as_bytes());
    let wrong = write("other", b"whsec-another-0123456789\n");
    let genuine = write("body", &d.body);
    let changed = write("forged", &forged);
    let snippets = format!("{}/examples/webhooks", env!("CARGO_MANIFEST_DIR"));
    let check = |shell: bool, secret: &std::path::Path, body: &std::path::Path, at: i64| {
        let mut cmd = if shell {
            let mut c = std::process::Command::new("sh");
            c.arg(format!("{snippets}/verify.sh"))
                .arg(secret)
                .arg(&header)
                .arg(body);
            c
        } else {
            let mut c = std::process::Command::new("python3");
            c.arg(format!("{snippets}/verify.py"))
                .arg(secret)
                .arg(&header)
                .stdin(std::fs::File::open(body).unwrap());
            c
        };
        let out = cmd.env("VERIFY_NOW", at.to_string()).output().unwrap();
        out.status.code()
    };
    for shell in [false, true] {
        let which = if shell { "verify.sh" } else { "verify.py" };
        assert_eq!(
            check(shell, &right, &genuine, now),
            Some(0),
            "{which}: genuine"
        );
        assert_eq!(
            check(shell, &right, &changed, now),
            Some(1),
            "{which}: body changed"
        );
        assert_eq!(
            check(shell, &wrong, &genuine, now),
            Some(1),
            "{which}: another secret"
        );
        let replay = t + WINDOW_SECS + 1;
        assert_eq!(
            check(shell, &right, &genuine, replay),
            Some(1),
            "{which}: replayed late"
        );
    }
    assert!(
        !stack.log().contains(secret),
        "the webhook secret reached the log"
    );
}

/// The README shows the receiver snippets exactly as shipped (and so as
/// the test above runs them).
#[test]
fn the_readme_shows_the_receiver_snippets_as_shipped() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for file in ["verify.py", "verify.sh"] {
        let text = std::fs::read_to_string(format!("{root}/examples/webhooks/{file}")).unwrap();
        assert!(
            readme.contains(&text),
            "README does not show examples/webhooks/{file} as it is"
        );
    }
}
