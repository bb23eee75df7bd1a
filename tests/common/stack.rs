//! A real stack for end-to-end tests: `vipd sandbox` and `vipd run` as two
//! child processes over loopback, with a temp state folder.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{SECRET, vipd};

/// `StackConfig::sandbox` for a vendor that answers "pending", takes 60 s
/// to extend and never calls back: the test plays the vendor.
pub const SILENT_VENDOR: &str =
    "  mode: async\n  callback_delay: 60s\n  faults: { recharge: { drop_callback_rate: 1.0 } }";

/// What to put in the generated configuration.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// (name, qq_vip end relative to start, e.g. `1d` or `-2h`; `None` = no membership)
    pub accounts: Vec<(String, Option<String>)>,
    /// Extra lines under `daemon:` (2-space indent).
    pub daemon: String,
    /// Extra lines under the recharge provider (4-space indent).
    pub provider: String,
    /// Extra lines under the rule (4-space indent).
    pub rule: String,
    /// Extra lines under `sandbox:` (2-space indent).
    pub sandbox: String,
    /// Files to write beside the configuration first (path, content).
    pub files: Vec<(String, String)>,
    /// Extra top-level YAML (e.g. a `plugins:` section).
    pub top: String,
    /// Text replacements applied to the rendered file (from, to).
    pub rewrite: Vec<(String, String)>,
}

impl StackConfig {
    /// `n` accounts `a0..`, all due (qq_vip ends in 1 day).
    pub fn due(n: usize) -> StackConfig {
        StackConfig {
            accounts: (0..n)
                .map(|i| (format!("a{i}"), Some("1d".to_owned())))
                .collect(),
            daemon: String::new(),
            provider: String::new(),
            rule: String::new(),
            sandbox: String::new(),
            files: Vec::new(),
            top: String::new(),
            rewrite: Vec::new(),
        }
    }

    /// One account, a0, whose qq_vip ends `end` from now, with a refresh
    /// token beside its access token; the reader has the app's client
    /// secret, so vipd can rotate the pair.
    pub fn refreshable(end: &str) -> StackConfig {
        let mut cfg = StackConfig::due(0);
        cfg.accounts.push(("a0".into(), Some(end.into())));
        cfg.rewrite = vec![
            (
                "oauth_consumer_key: \"101234567\",".into(),
                "oauth_consumer_key: \"101234567\", client_secret: app-key,".into(),
            ),
            (
                "access_token: tok-a0".into(),
                "access_token: tok-a0, refresh_token: rt-a0".into(),
            ),
        ];
        cfg
    }

    /// The YAML, with providers pointing at `upstream`.
    pub fn render(&self, upstream: &str) -> String {
        let mut text = self.render_plain(upstream);
        for (from, to) in &self.rewrite {
            assert!(text.contains(from.as_str()), "nothing to rewrite: {from}");
            text = text.replace(from.as_str(), to);
        }
        text
    }

    fn render_plain(&self, upstream: &str) -> String {
        let mut accounts = String::new();
        let mut memberships = String::new();
        for (i, (name, end)) in self.accounts.iter().enumerate() {
            let _ = writeln!(
                accounts,
                "  - {{ name: {name}, qq_number: \"{}\", openid: OPENID-{name}, access_token: tok-{name} }}",
                20_000 + i
            );
            if let Some(end) = end {
                let _ = writeln!(memberships, "    {name}: {{ qq_vip: \"{end}\" }}");
            }
        }
        format!(
            r#"daemon:
  state_dir: ./state
  admin_listen: 127.0.0.1:0
  callback_listen: 127.0.0.1:0
  sandbox: false
  startup_spread: 300ms
  retry_base: 1s
{daemon}
providers:
  qq: {{ kind: qq_connect, base_url: "{upstream}", oauth_consumer_key: "101234567", timeout: 2s }}
  wapi:
    kind: recharge
    base_url: "{upstream}"
    appid: "1"
    secret: "{SECRET}"
    timeout: 2s
{provider}
products:
  qq_vip_month: {{ provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }}
accounts:
{accounts}
rules:
  - name: keep
    accounts: all
    check: {{ every: 1s }}
    membership: qq_vip
    renew_before: 3d
    product: qq_vip_month
{rule}
sandbox:
  prices: {{ qq_vip_month: 15.00 }}
  memberships:
{memberships}
{sandbox}
{top}
"#,
            daemon = self.daemon,
            provider = self.provider,
            rule = self.rule,
            sandbox = self.sandbox,
            top = self.top,
        )
    }
}

/// A running sandbox and (usually) a running daemon.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub sandbox_url: String,
    sandbox: Child,
    daemon: Option<Child>,
    pub admin: String,
    pub callbacks: String,
    /// Extra environment for `vipd run` (e.g. `NOTIFY_SOCKET`).
    pub daemon_env: Vec<(String, String)>,
    /// Extra arguments for `vipd run` (e.g. `--accept-damaged-store`).
    pub daemon_args: Vec<String>,
    /// A file-handle limit (soft and hard) for `vipd run`.
    pub daemon_nofile: Option<u64>,
    /// The umask `vipd run` starts with (the test's own otherwise).
    pub daemon_umask: Option<libc::mode_t>,
    /// Run `vipd run --config rules.yaml` from the configuration's folder
    /// (the README's layout: every path in it relative), not by its
    /// absolute path.
    pub relative_config: bool,
    http: reqwest::Client,
}

impl Stack {
    /// Starts the sandbox, then the daemon.
    pub async fn start(cfg: &StackConfig) -> Stack {
        let mut stack = Stack::sandbox_only(cfg).await;
        stack.start_daemon().await;
        stack
    }

    /// Starts only the sandbox; the config file is written for the daemon.
    pub async fn sandbox_only(cfg: &StackConfig) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rules.yaml");
        for (name, content) in &cfg.files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        std::fs::write(&config, cfg.render("http://127.0.0.1:1")).unwrap();
        let (sandbox, sandbox_url) = super::sandbox_process::spawn_sandbox(&config, "warn");
        std::fs::write(&config, cfg.render(&sandbox_url)).unwrap();
        Stack {
            dir,
            config,
            sandbox_url,
            sandbox,
            daemon: None,
            admin: String::new(),
            callbacks: String::new(),
            daemon_env: Vec::new(),
            daemon_args: Vec::new(),
            daemon_nofile: None,
            daemon_umask: None,
            relative_config: false,
            http: reqwest::Client::new(),
        }
    }

    fn daemon_log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon_log()).unwrap_or_default()
    }

    /// Starts `vipd run` and waits until its admin API answers.
    pub async fn start_daemon(&mut self) {
        let state = self.dir.path().join("state");
        let _ = std::fs::remove_file(state.join("daemon.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log())
            .unwrap();
        let mut cmd = vipd();
        let (nofile, umask) = (self.daemon_nofile, self.daemon_umask);
        if nofile.is_some() || umask.is_some() {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit and umask are async-signal-safe; nothing
            // else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if let Some(n) = nofile {
                        let lim = libc::rlimit {
                            rlim_cur: n,
                            rlim_max: n,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if let Some(mask) = umask {
                        libc::umask(mask);
                    }
                    Ok(())
                });
            }
        }
        if self.relative_config {
            cmd.current_dir(self.dir.path());
        }
        let config = match self.relative_config {
            true => PathBuf::from("rules.yaml"),
            false => self.config.clone(),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(&self.daemon_args)
            .env("VIPD_LOG", "info,vipd=debug")
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let log = self.daemon_log();
        (self.admin, self.callbacks) = await_ready(&self.http, &state, &log).await;
    }

    /// `kill -9` the daemon: no shutdown, no flush.
    pub fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill().unwrap();
            d.wait().unwrap();
        }
    }

    /// Waits up to `limit` for the daemon to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let d = self.daemon.as_mut()?;
        loop {
            if let Some(status) = d.try_wait().unwrap() {
                self.daemon = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM the daemon and wait; returns its exit code.
    pub fn stop_daemon(&mut self) -> Option<i32> {
        let mut d = self.daemon.take()?;
        sigterm(d.id());
        d.wait().unwrap().code()
    }

    /// Sends SIGHUP to the daemon (reload).
    pub fn sighup(&self) {
        let d = self.daemon.as_ref().expect("daemon running");
        let _ = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(d.id().to_string())
            .status();
    }

    /// `POST /api/reload`: status code and body.
    pub async fn reload(&self) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/reload", self.admin))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The ledger, through the admin API.
    pub async fn orders(&self) -> Vec<Value> {
        self.get(&format!("{}/api/orders", self.admin))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The first order to reach `pending`, waiting up to `limit`.
    pub async fn pending_order(&self, limit: Duration) -> Value {
        self.wait_for("a pending order", limit, || async {
            self.orders()
                .await
                .into_iter()
                .find(|o| o["state"] == "pending")
        })
        .await
    }

    /// The daemon's status.
    pub async fn status(&self) -> Value {
        self.get(&format!("{}/api/status", self.admin)).await
    }

    /// Every recharge request the sandbox received.
    pub async fn sandbox_orders(&self) -> Vec<Value> {
        self.get(&format!("{}/_sandbox/orders", self.sandbox_url))
            .await
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Billed sandbox orders per account.
    pub async fn billed(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for o in self.sandbox_orders().await {
            if o["billed"] == true {
                *out.entry(o["account"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
        }
        out
    }

    pub async fn get(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn control(&self, body: Value) {
        let s = super::post_json(&format!("{}/_sandbox/control", self.sandbox_url), body).await;
        assert!(s.is_success(), "sandbox control: {s}");
    }

    /// Membership reads the daemon has made, by result (`ok`, `error`,
    /// `auth_error`; `None`: all), from `/metrics`.
    pub async fn reads(&self, result: Option<&str>) -> u64 {
        super::reads_at(&self.admin, result).await
    }

    /// Waits until the daemon has read memberships `n` more times (with
    /// `result`, when given): for "nothing more happens" assertions, which
    /// then hold over that many checks rather than over a guessed time.
    pub async fn after_reads(&self, n: u64, result: Option<&str>) {
        let from = self.reads(result).await;
        let what = format!("{n} more membership reads ({result:?})");
        self.wait_for(&what, Duration::from_secs(30), || async {
            (self.reads(result).await >= from + n).then_some(())
        })
        .await;
    }

    /// Polls `probe` until it returns `Some`, or panics with the log.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, limit: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- daemon log ---\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.kill_daemon();
        let _ = self.sandbox.kill();
        let _ = self.sandbox.wait();
    }
}

/// Sends SIGTERM through the `kill` command (no libc dependency).
fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Waits up to 20 s until the daemon whose state folder is `state` has
/// written its `daemon.json` and answers `/healthz`; its admin and
/// callback URLs. Panics with the daemon's log (`log`) if it does not.
pub async fn await_ready(
    http: &reqwest::Client,
    state: &std::path::Path,
    log: &std::path::Path,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read(state.join("daemon.json")) {
            let v: Value = serde_json::from_slice(&text).unwrap();
            let admin = v["admin"].as_str().unwrap().to_owned();
            let callbacks = v["callbacks"].as_str().unwrap().to_owned();
            if http.get(format!("{admin}/healthz")).send().await.is_ok() {
                return (admin, callbacks);
            }
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
