//! `vipd run`: open the store, recover, bind the listeners, run the
//! engine until the shutdown future resolves, then stop in order.
//!
//! Start-up order: sandbox (if configured) → store → recovery → engine →
//! listeners → `daemon.json` (how `status`/`orders`/`plan` find us) →
//! scheduler. Shutdown: stop scheduling, let checks in flight finish
//! (bounded), stop the listeners, make the store durable.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::engine::events::{EventKind, emit, emit_order};
use crate::ledger::{Ledger, OrderState};
use crate::upstream::Clock;

/// Written to the state folder while the daemon runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonFile {
    /// The daemon's process id.
    pub pid: u32,
    /// Where the admin API listens.
    pub admin: String,
    /// Where callbacks are received.
    pub callbacks: String,
}

/// The path of `daemon.json` for a state folder.
pub fn daemon_file(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.json")
}

/// Starts the in-process sandbox (`daemon.sandbox: true`) and points every
/// provider at it.
pub async fn start_sandbox(config: &mut Config) -> anyhow::Result<crate::sandbox::SandboxHandle> {
    let listen = config.daemon.sandbox_listen;
    let sb = crate::sandbox::start(config, listen)
        .await
        .with_context(|| format!("cannot start the sandbox on {listen}"))?;
    config.point_providers_at(&sb.base_url());
    tracing::info!(url = %sb.base_url(), "sandbox: simulated upstream started; every provider points at it");
    Ok(sb)
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    mut config: Config,
    dry_run: bool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let sandbox = if config.daemon.sandbox {
        Some(start_sandbox(&mut config).await?)
    } else {
        None
    };
    let state_dir = config.daemon.state_dir.clone();
    let ledger = Arc::new(Ledger::open(&state_dir)?);
    let now = Clock::system_unix();
    for o in ledger.recover(now)? {
        let kind = if o.state == OrderState::Unknown {
            EventKind::OrderUnknown
        } else {
            EventKind::RechargeResult
        };
        let detail = format!("recovered at start-up: {} ({})", o.state, o.last_why());
        emit_order(&ledger, kind, now, &o, detail);
    }
    ledger.durable().await.map_err(anyhow::Error::msg)?;

    let admin = TcpListener::bind(config.daemon.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on admin_listen {}",
                config.daemon.admin_listen
            )
        })?;
    let callbacks = TcpListener::bind(config.daemon.callback_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on callback_listen {}",
                config.daemon.callback_listen
            )
        })?;
    let (admin_addr, callback_addr) = (admin.local_addr()?, callbacks.local_addr()?);
    config.daemon.callback_listen = callback_addr;
    let dry_run = dry_run || config.daemon.dry_run;
    let token = config.daemon.admin_token.clone();
    let engine = Engine::new(ledger.clone(), config, dry_run);

    let servers = CancellationToken::new();
    let serve = |listener: TcpListener, router: axum::Router, name: &'static str| {
        let stop = servers.clone();
        tokio::spawn(async move {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "{name} listener stopped");
            }
        })
    };
    let admin_task = serve(
        admin,
        crate::http::admin_router(engine.clone(), token),
        "admin",
    );
    let callback_task = serve(
        callbacks,
        crate::http::callback_router(engine.clone()),
        "callback",
    );

    let file = DaemonFile {
        pid: std::process::id(),
        admin: format!("http://{admin_addr}"),
        callbacks: format!("http://{callback_addr}"),
    };
    std::fs::write(daemon_file(&state_dir), serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("cannot write {}", daemon_file(&state_dir).display()))?;
    let rt = engine.runtime();
    tracing::info!(
        admin = %file.admin,
        callbacks = %file.callbacks,
        accounts = rt.config.accounts.len(),
        rules = rt.config.rules.len(),
        dry_run,
        "vipd ready"
    );
    drop(rt);

    let stop = CancellationToken::new();
    let scheduler = {
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move { engine.run(stop).await })
    };
    shutdown.await;
    tracing::info!("stopping: no new checks; waiting for checks in flight");
    stop.cancel();
    let _ = scheduler.await;
    servers.cancel();
    let _ = tokio::join!(admin_task, callback_task);
    if let Err(e) = ledger.durable().await {
        emit(
            &ledger,
            EventKind::Error,
            Clock::system_unix(),
            None,
            None,
            None,
            format!("final flush failed: {e}"),
        );
    }
    let _ = std::fs::remove_file(daemon_file(&state_dir));
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}
