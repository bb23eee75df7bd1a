//! Reload: build a new configuration and its plugins beside the running
//! ones, and swap them in only when all of it is valid; triggered by
//! SIGHUP, by a file change (debounced) or by `POST /api/reload` (the admin
//! router holds this as an [`http::Reload`](crate::http::Reload)).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StateDirFrom};
use crate::engine::{Engine, ReloadReport};
use crate::plugins::{Host, LuaHooks, Plugins};
use crate::systemd::Notifier;

/// How long file changes settle before a reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads the plugins of `config` off the async threads: a script's top
/// level runs under the limits, up to the time limit.
pub(super) async fn load_plugins(
    config: &Arc<Config>,
    host: &Arc<Host>,
) -> anyhow::Result<Plugins> {
    let (config, host) = (config.clone(), host.clone());
    tokio::task::spawn_blocking(move || Plugins::load(&config, host))
        .await
        .context("plugin loading panicked")?
        .map_err(anyhow::Error::new)
}

/// Builds new configurations and plugins beside the running ones and
/// swaps them in when they are valid (README "Running it as a service", Reload).
pub struct Reloader {
    pub(super) engine: Arc<Engine>,
    /// What every generation's plugins reach outside Lua.
    pub(super) host: Arc<Host>,
    /// Tells systemd about reloads.
    pub(super) notifier: Arc<Notifier>,
    /// The in-process sandbox's address (it keeps running across reloads).
    pub(super) sandbox_url: Option<String>,
    /// The bound callback address (listeners are not rebound by a reload).
    pub(super) callback_listen: std::net::SocketAddr,
    /// The bound admin address, for the same reason.
    pub(super) admin_listen: std::net::SocketAddr,
    /// One reload at a time.
    pub(super) lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reads the configuration file and the scripts again; swaps them in
    /// only if all of it is valid. Returns the generation in force.
    pub async fn reload(&self, trigger: &str) -> Result<u64, String> {
        let _one = self.lock.lock().await;
        self.notifier.reloading();
        let current = self.engine.runtime();
        let path = current.config.path.clone();
        let result = self.candidate(&path, &current.config).await;
        let (generation, error) = match result {
            Ok((config, plugins)) => {
                let names = plugins.names().to_vec();
                let generation = self.engine.reload(config, LuaHooks::new(plugins));
                tracing::info!(trigger, generation, plugins = ?names, "configuration reloaded");
                (generation, None)
            }
            Err(e) => {
                // One record per cause, each with its level: a journal
                // splits a multi-line message into records without one.
                for cause in e.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::error!(
                        trigger,
                        generation = current.generation,
                        "reload refused; generation {} stays in force: {cause}",
                        current.generation
                    );
                }
                (current.generation, Some(e))
            }
        };
        self.engine.note_reload(ReloadReport {
            at: self.engine.clock().unix(),
            trigger: trigger.to_owned(),
            generation,
            error: error.clone(),
        });
        self.notifier.ready(&self.engine.status_line().await);
        match error {
            None => Ok(generation),
            Some(e) => Err(e),
        }
    }

    async fn candidate(
        &self,
        path: &Path,
        current: &Config,
    ) -> Result<(Arc<Config>, Plugins), String> {
        let mut config = Config::load(path).map_err(|e| e.to_string())?;
        // `--state-dir` holds for the daemon's whole life.
        if current.daemon.state_dir_from == StateDirFrom::CommandLine {
            config.set_state_dir(current.daemon.state_dir.clone());
        }
        if let Some(url) = &self.sandbox_url {
            config.point_providers_at(url);
        }
        for (what, old, new) in [
            (
                "daemon.admin_listen",
                current.daemon.admin_listen.to_string(),
                config.daemon.admin_listen.to_string(),
            ),
            (
                "daemon.state_dir",
                current.daemon.state_dir.display().to_string(),
                config.daemon.state_dir.display().to_string(),
            ),
            (
                "daemon.sandbox",
                current.daemon.sandbox.to_string(),
                config.daemon.sandbox.to_string(),
            ),
        ] {
            if old != new {
                tracing::warn!(
                    "{}: {what} changed ({old} → {new}); that takes effect at the next restart",
                    path.display()
                );
            }
        }
        if !config.daemon.guarded() && !self.admin_listen.ip().is_loopback() {
            return Err(format!(
                "{}: daemon.admin_token: removed, but the admin API listens on {}, which other hosts reach: keep a token (or restart on a loopback admin_listen)",
                path.display(),
                self.admin_listen
            ));
        }
        config.daemon.admin_listen = current.daemon.admin_listen;
        config.daemon.state_dir = current.daemon.state_dir.clone();
        config.daemon.sandbox = current.daemon.sandbox;
        config.daemon.callback_listen = self.callback_listen;
        config.daemon.admin_listen = self.admin_listen;
        let config = Arc::new(config);
        load_plugins(&config, &self.host)
            .await
            .map_err(|e| e.to_string())
            .map(|plugins| (config, plugins))
    }

    /// Reloads on SIGHUP until `stop`.
    pub(crate) fn on_sighup(
        self: Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload with POST /api/reload");
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hup.recv() => { let _ = self.reload("SIGHUP").await; }
                }
            }
        })
    }

    /// Watches the configuration file's folder and `scripts_dir`; reloads
    /// once changes have settled for [`DEBOUNCE`].
    ///
    /// Only changes count: the watcher also reports files being opened and
    /// closed after reading, and a reload reads the very files it watches,
    /// so counting those made every reload trigger the next one.
    pub fn watch(self: Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        use notify::{EventKind, RecursiveMode, Watcher};
        let rt = self.engine.runtime();
        let config_path = rt.config.path.clone();
        let config_dir = rt.config.base_dir.clone();
        let scripts_dir = rt.config.daemon.scripts_dir.clone();
        // Named at start: a file named later by a reload is read at each
        // reload, and watched from the next start.
        let accounts_file = rt.config.accounts_file.as_ref().map(|f| f.path.clone());
        drop(rt);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let relevant = {
            let config_path = config_path.clone();
            let scripts_dirs = spellings(&scripts_dir);
            let accounts_file = accounts_file.clone();
            let named = |p: &Path, f: &Path| {
                p.file_name() == f.file_name() && p.parent() == f.parent() || same_file(p, f)
            };
            move |p: &Path| {
                named(p, &config_path)
                    || scripts_dirs.iter().any(|d| p.starts_with(d))
                        && p.extension().is_some_and(|x| x == "lua")
                    || accounts_file.as_deref().is_some_and(|f| named(p, f))
            }
        };
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res {
                let change = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                );
                if change && event.paths.iter().any(|p| relevant(p)) {
                    let _ = tx.send(());
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for file changes; reload with SIGHUP or POST /api/reload");
                return tokio::spawn(async {});
            }
        };
        let accounts_dir = accounts_file
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty() && *d != config_dir.as_path())
            .map(Path::to_path_buf);
        for (dir, mode) in [
            (Some(&config_dir), RecursiveMode::NonRecursive),
            (Some(&scripts_dir), RecursiveMode::Recursive),
            (accounts_dir.as_ref(), RecursiveMode::NonRecursive),
        ]
        .into_iter()
        .filter_map(|(d, m)| Some((d?, m)))
        {
            // No scripts folder is no plugins, not a problem worth a
            // warning at every start (create it and reload to add some).
            if !dir.exists() {
                tracing::debug!(dir = %dir.display(), "not watched: the folder does not exist");
                continue;
            }
            if let Err(e) = watcher.watch(dir, mode) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this folder for changes");
            }
        }
        tokio::spawn(async move {
            let _keep = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(()) = rx.recv() => {}
                }
                // Debounce: an editor's save is several events; wait until
                // none has come for DEBOUNCE.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                let _ = self.reload("file change").await;
            }
        })
    }
}

impl crate::http::Reload for Reloader {
    fn reload<'a>(
        &'a self,
        trigger: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'a>> {
        Box::pin(Reloader::reload(self, trigger))
    }
}

/// The ways the watcher may spell paths under `dir`: as configured, made
/// absolute (the watcher reports a relative folder's files under the
/// working directory), and with its symlinks resolved.
fn spellings(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    all.extend(std::path::absolute(dir).ok());
    all.extend(dir.canonicalize().ok());
    all.dedup();
    all
}

/// Whether two paths name the same file (the watcher reports canonical
/// paths; the configuration may have been named through a symlink).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
