//! `status`, `orders`, `plan` and `recharge`: through the running daemon's
//! admin API when it runs (sled allows one process), else on the store.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use super::ConfigFile;
use super::render::status_text;
use crate::config::{Config, StateDirFrom};
use crate::engine::{Engine, ManualOrder, PlanLine, Status};
use crate::ledger::{Ledger, Order, OrderState};
use crate::plugins::{Host, LuaHooks, Plugins};
use crate::service::{DaemonFile, control_socket, daemon_file};
use crate::timefmt;

/// A running daemon's admin API.
pub(super) struct Api {
    pub(super) base: String,
    pub(super) http: reqwest::Client,
    token: Option<String>,
    /// Why the configured admin token is empty here, if it is.
    token_missing: Option<String>,
}

impl Api {
    /// The daemon serving this configuration's state folder, if it answers:
    /// through its control socket when this user may use it (no token
    /// needed), else its admin API.
    ///
    /// A folder this user may not read (the service's, when not root) is an
    /// error that says so, not "no daemon, no store".
    pub(super) async fn find(config: &Config) -> anyhow::Result<Option<Api>> {
        let socket = control_socket(&config.daemon.state_dir);
        let refused = match Api::local(&socket).await {
            Ok(Some(api)) => return Ok(Some(api)),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let text = match std::fs::read(daemon_file(&config.daemon.state_dir)) {
            Ok(text) => text,
            Err(e) if refused.is_some() || e.kind() == std::io::ErrorKind::PermissionDenied => {
                let why = refused.as_ref().unwrap_or(&e);
                bail!(
                    "the daemon's control socket {} refused this user ({why}), and its state folder \
                     is not this user's to read: run this as root (`sudo vipd ...`) or as the \
                     service's user",
                    socket.display()
                );
            }
            Err(_) => return Ok(None),
        };
        let Ok(file) = serde_json::from_slice::<DaemonFile>(&text) else {
            return Ok(None);
        };
        let Some(http) = answering(reqwest::Client::builder(), &file.admin).await else {
            return Ok(None);
        };
        let token_missing = config
            .unavailable
            .iter()
            .find(|u| u.is_at(&["daemon", "admin_token"]))
            .map(|u| match &refused {
                Some(e) => format!(
                    "{}; its control socket {} refused this user ({e})",
                    u.error.message,
                    socket.display()
                ),
                None => u.error.message.clone(),
            });
        Ok(Some(Api {
            base: file.admin,
            http,
            token: config
                .daemon
                .admin_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            token_missing,
        }))
    }

    /// The daemon on its control socket: `None` when there is none (or no
    /// daemon answers on it), an error when this user may not connect.
    async fn local(socket: &Path) -> Result<Option<Api>, std::io::Error> {
        if let Err(e) = std::os::unix::net::UnixStream::connect(socket) {
            return match e.kind() {
                std::io::ErrorKind::PermissionDenied => Err(e),
                _ => Ok(None),
            };
        }
        let base = "http://localhost".to_owned();
        let Some(http) = answering(reqwest::Client::builder().unix_socket(socket), &base).await
        else {
            return Ok(None);
        };
        Ok(Some(Api {
            base,
            http,
            token: None,
            token_missing: None,
        }))
    }

    /// Sends with the bearer token; a non-2xx reply is an error with its body.
    pub(super) async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Vec<u8>> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("admin API: {}", crate::upstream::error_chain(&e)))?;
        let status = resp.status();
        let body = resp.bytes().await.context("admin API: reading the reply")?;
        if status == reqwest::StatusCode::UNAUTHORIZED
            && let Some(why) = &self.token_missing
        {
            bail!(
                "the daemon wants its admin token, and {why}; run this as root, or with --state-dir and a readable token"
            );
        }
        if !status.is_success() {
            bail!("{}", String::from_utf8_lossy(&body));
        }
        Ok(body.to_vec())
    }

    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        serde_json::from_slice(&self.send(req).await?).context("admin API: unreadable reply")
    }

    async fn text(&self, req: reqwest::RequestBuilder) -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(&self.send(req).await?).into_owned())
    }
}

/// A client from `builder` (30 s a call) if a daemon at `base` answers
/// `/healthz` within 2 s.
async fn answering(builder: reqwest::ClientBuilder, base: &str) -> Option<reqwest::Client> {
    let http = builder.timeout(Duration::from_secs(30)).build().ok()?;
    http.get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
        .then_some(http)
}

/// Where a packaged service keeps its store (`StateDirectory=vipd`).
pub(crate) const UNIT_STATE_DIR: &str = "/var/lib/vipd";

/// The configuration as commands run beside the daemon read it: a
/// `${credential:}` only the service can read is left empty (see
/// [`Config::load_outside`]), and the state folder is found in this order:
/// `--state-dir`; `$STATE_DIRECTORY`; the configuration's `state_dir` when
/// a store or a running daemon is there; the unit's `/var/lib/vipd` when
/// one is there; else the configured one (where nothing is created).
pub(crate) fn load_outside(conf: &ConfigFile) -> anyhow::Result<Config> {
    let mut config = conf.load_outside()?;
    config.daemon.state_dir = state_dir(&config, Path::new(UNIT_STATE_DIR));
    Ok(config)
}

pub(super) fn state_dir(config: &Config, unit: &Path) -> std::path::PathBuf {
    let configured = &config.daemon.state_dir;
    if config.daemon.state_dir_from != StateDirFrom::File || has_store(configured) {
        return configured.clone();
    }
    if has_store(unit) {
        return unit.to_path_buf();
    }
    configured.clone()
}

/// A sled store or a running daemon's address file is in `dir`.
pub(super) fn has_store(dir: &Path) -> bool {
    daemon_file(dir).exists() || dir.join("conf").exists() || dir.join("db").exists()
}

/// Opens the store a daemon left, never creating one: a command run in
/// the wrong folder must say so, not answer from a new empty store.
pub(super) fn open_store(config: &Config) -> anyhow::Result<Ledger> {
    let dir = &config.daemon.state_dir;
    if let crate::config::StoreKind::Postgres { node, .. } = &config.daemon.store {
        bail!(
            "daemon.store is postgres and no node answered from {} (node {node}): run this where a node runs, \
             or start one; vipd reads a PostgreSQL ledger only through a running node",
            dir.display()
        );
    }
    if !has_store(dir) {
        bail!(
            "no store at {}: vipd has not run with this state_dir. A service keeps its store in {UNIT_STATE_DIR}; name the folder with --state-dir",
            dir.display()
        );
    }
    Ledger::open(dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(no running daemon answered for {}; if one runs, its admin API is unreachable)",
            dir.display()
        )
    })
}

pub async fn status(conf: &ConfigFile, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    let status: Status = match Api::find(&config).await? {
        Some(api) => {
            api.call(api.http.get(format!("{}/api/status", api.base)))
                .await?
        }
        None => {
            let ledger = open_store(&config)?;
            crate::engine::status(
                &config,
                &ledger,
                0,
                config.daemon.dry_run,
                Default::default(),
                super::now(),
            )
            .await?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn orders(
    conf: &ConfigFile,
    state: Option<OrderState>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    let list: Vec<Order> = match Api::find(&config).await? {
        Some(api) => {
            let mut req = api.http.get(format!("{}/api/orders", api.base));
            if let Some(s) = state {
                req = req.query(&[("state", s.as_str())]);
            }
            api.call(req).await?
        }
        None => open_store(&config)?.orders(state)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!(
            "no orders{}",
            state.map(|s| format!(" in state {s}")).unwrap_or_default()
        );
    }
    for o in &list {
        println!(
            "{}  {:<9}  {} / {} / {}  attempt {}  spent {}  {}",
            o.key,
            o.state.as_str(),
            o.rule,
            o.account,
            o.membership,
            o.attempts,
            o.spent,
            timefmt::utc(o.updated_at)
        );
        for t in &o.history {
            println!(
                "    {} {:<9} {}",
                timefmt::utc(t.at),
                t.state.as_str(),
                t.why
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resolve(
    conf: &ConfigFile,
    key: &str,
    paid: bool,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let state = if paid { "succeeded" } else { "failed" };
    let body = serde_json::json!({ "as": state, "reason": reason });
    write_order(
        conf,
        &format!("orders/{key}/resolve"),
        body,
        |ledger, _, by| async move {
            let who = crate::engine::Operator {
                by: &by,
                why: reason,
            };
            crate::engine::resolve(&ledger, key, paid, who, super::now()).await
        },
    )
    .await
}

/// `vipd orders approve|decline KEY --reason TEXT`: through the running
/// daemon when there is one (which pays an approved order at once; it
/// records the Unix user on its control socket, or the admin token's
/// name), else in the store (paid at the daemon's next check of the
/// pair), recorded as the Unix user's answer.
pub async fn answer(
    conf: &ConfigFile,
    key: &str,
    approve: bool,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let verb = if approve { "approve" } else { "decline" };
    let body = serde_json::json!({ "reason": reason });
    write_order(
        conf,
        &format!("orders/{key}/{verb}"),
        body,
        |ledger, config, by| async move {
            let who = crate::engine::Operator {
                by: &by,
                why: reason,
            };
            let now = super::now();
            crate::engine::answer(&ledger, &config, key, approve, who, now).await
        },
    )
    .await
}

/// An operator's write to one order: `POST /api/{api_path}` with `body`
/// to the running daemon, else `offline` on the store (given the store,
/// the configuration and the Unix user running this); then what the
/// order now is.
async fn write_order<F, Fut>(
    conf: &ConfigFile,
    api_path: &str,
    body: serde_json::Value,
    offline: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Ledger, Config, String) -> Fut,
    Fut: std::future::Future<
            Output = Result<(Order, crate::engine::events::Event), crate::engine::ResolveError>,
        >,
{
    let config = load_outside(conf)?;
    let order: Order = match Api::find(&config).await? {
        Some(api) => {
            let url = format!("{}/api/{api_path}", api.base);
            api.call(api.http.post(url).json(&body)).await?
        }
        None => {
            let ledger = open_store(&config)?;
            offline(ledger, config, unix_user())
                .await
                .map_err(anyhow::Error::msg)?
                .0
        }
    };
    println!(
        "order {} is now {}: {}",
        order.key,
        order.state,
        order.last_why()
    );
    Ok(ExitCode::SUCCESS)
}

/// The name of the Unix user running this command: who a change made
/// in the store (no daemon running) is recorded as made by.
pub(super) fn unix_user() -> String {
    // SAFETY: getuid cannot fail.
    crate::http::serve::user_name(unsafe { libc::getuid() })
}

/// Parses `--at`: unix seconds or RFC 3339.
fn parse_at(at: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = at.parse::<i64>() {
        return Ok(secs);
    }
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.timestamp())
        .with_context(|| {
            format!("--at {at:?}: expected unix seconds or RFC 3339 such as 2026-12-01T00:00:00Z")
        })
}

/// What an engine without a daemon is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Offline {
    /// `plan`: writes nothing; without a store, plans on a throwaway one
    /// (no order was ever made) and says so.
    Plan,
    /// `recharge`: pays, so it records in the store, creating it when
    /// none is anywhere (a first manual renewal).
    Recharge,
}

/// An engine over the store, not scheduling: for `plan` and `recharge`
/// when no daemon runs. Every secret is needed (it reads upstream). The
/// third value is a throwaway store folder to remove after.
pub(super) async fn offline_engine(
    conf: &ConfigFile,
    purpose: Offline,
) -> anyhow::Result<(
    Arc<Engine>,
    Option<crate::sandbox::SandboxHandle>,
    Option<std::path::PathBuf>,
)> {
    let (mut config, sandbox) = super::load_with_sandbox(conf).await?;
    config.daemon.state_dir = state_dir(&config, Path::new(UNIT_STATE_DIR));
    let (ledger, throwaway) = if has_store(&config.daemon.state_dir) {
        (open_store(&config)?, None)
    } else if purpose == Offline::Plan {
        eprintln!(
            "note: no store at {}; planning as if no order was ever made",
            config.daemon.state_dir.display()
        );
        let dir = std::env::temp_dir().join(format!("vipd-plan-{}", std::process::id()));
        (Ledger::open(&dir)?, Some(dir))
    } else {
        (Ledger::open(&config.daemon.state_dir)?, None)
    };
    let ledger = Arc::new(ledger);
    let dry = config.daemon.dry_run;
    // The plugins load too: `vipd recharge` asks `before_recharge` like
    // the daemon does.
    let host = Host::new(Some(ledger.clone()));
    let config = Arc::new(config);
    let plugins = Plugins::load(&config, host.clone())?;
    Ok((
        Engine::new(
            ledger,
            config,
            LuaHooks::new(plugins),
            dry,
            crate::model::clock::system(),
        ),
        sandbox,
        throwaway,
    ))
}

pub async fn plan(
    conf: &ConfigFile,
    account: Option<&str>,
    at: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    let at = at.map(parse_at).transpose()?;
    let lines: Vec<PlanLine> = match Api::find(&config).await? {
        Some(api) => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(a) = account {
                q.push(("account", a.to_owned()));
            }
            if let Some(t) = at {
                q.push(("at", t.to_string()));
            }
            api.call(api.http.get(format!("{}/api/plan", api.base)).query(&q))
                .await?
        }
        None => {
            let (engine, sandbox, throwaway) = offline_engine(conf, Offline::Plan).await?;
            if sandbox.is_some() {
                eprintln!("note: no daemon running; reading from a fresh in-process sandbox");
            }
            let lines = engine.plan(account, at).await.map_err(anyhow::Error::msg);
            if let Some(sb) = sandbox {
                sb.shutdown().await;
            }
            drop(engine);
            if let Some(dir) = throwaway {
                let _ = std::fs::remove_dir_all(dir);
            }
            lines?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        let now = at.unwrap_or_else(super::now);
        for l in &lines {
            println!(
                "{:<5} {} / {} ({}, ends {}): {}",
                if l.due { "DUE" } else { "-" },
                l.rule,
                l.account,
                l.membership,
                l.end.map_or("never".into(), |e| format!(
                    "{} ({})",
                    timefmt::utc(e),
                    timefmt::relative(e - now)
                )),
                l.decision
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn recharge(conf: &ConfigFile, order: ManualOrder<'_>) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    let result = match Api::find(&config).await? {
        Some(api) => {
            let body = serde_json::json!({
                "account": order.account,
                "product": order.product,
                "dry_run": order.dry_run,
                "ahead": order.ahead,
                "reason": order.who.why,
            });
            api.text(
                api.http
                    .post(format!("{}/api/recharge", api.base))
                    .json(&body),
            )
            .await
        }
        None => {
            let (engine, sandbox, _) = offline_engine(conf, Offline::Recharge).await?;
            let r = engine
                .manual_recharge(order)
                .await
                .map_err(anyhow::Error::msg);
            if let Some(sb) = sandbox {
                sb.shutdown().await;
            }
            r
        }
    };
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order host-side commands find the daemon's state folder in: the
    /// configured `state_dir` when a store or daemon is there, else the
    /// unit's folder when one is there, else the configured one (where
    /// nothing is then created).
    #[test]
    fn the_state_folder_is_found_beside_the_config_then_in_the_units() {
        if std::env::var_os("STATE_DIRECTORY").is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("rules.yaml");
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml"),
            &config_path,
        )
        .unwrap();
        let config = Config::load_outside(&config_path).unwrap();
        let configured = dir.path().join("state");
        let unit = dir.path().join("var-lib-vipd");
        // Nothing anywhere: the configured folder (and no store made).
        assert_eq!(state_dir(&config, &unit), configured);
        // The unit's folder holds a running daemon's address file.
        std::fs::create_dir_all(&unit).unwrap();
        std::fs::write(daemon_file(&unit), "{}").unwrap();
        assert_eq!(state_dir(&config, &unit), unit);
        // A store beside the configuration wins.
        std::fs::create_dir_all(&configured).unwrap();
        std::fs::write(configured.join("conf"), "").unwrap();
        assert_eq!(state_dir(&config, &unit), configured);
    }
}
