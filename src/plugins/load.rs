//! Loading a generation's plugins: the files in name order, each run
//! under the limits, every error named with its file and line.

use super::view::config_view;
use super::*;

/// A plugin that failed to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// The script.
    pub file: PathBuf,
    /// The line, when Lua named one.
    pub line: Option<usize>,
    /// What went wrong (with the traceback when there is one).
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every plugin that failed to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl From<LoadError> for crate::config::ConfigError {
    fn from(e: LoadError) -> Self {
        crate::config::ConfigError {
            file: e.file,
            line: e.line,
            column: None,
            message: e.message,
        }
    }
}

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// The plugin files of `dir`, in name order; none when it does not exist.
///
/// Every `*.lua` entry but a folder is one, readable or not: a dangling
/// or looping symlink, or a name that is not a regular file, is listed so
/// that loading it fails with its path (a veto plugin that silently went
/// missing would let renewals through that it exists to stop).
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let path = e?.path();
                // `*.d.lua` are LuaLS declaration files (`vipd lua-types`),
                // never plugins.
                let declaration = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(".d.lua"));
                if path.extension().is_some_and(|x| x == "lua") && !declaration && !path.is_dir() {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    files.sort();
    Ok(files)
}

/// A plugin file's text, or why it cannot be read (naming a symlink's
/// target). Only a regular file is read: a pipe would block the load.
fn read_plugin(file: &Path) -> Result<String, String> {
    let link = || match std::fs::read_link(file) {
        Ok(target) => format!(" (a symlink to {})", target.display()),
        Err(_) => String::new(),
    };
    match std::fs::metadata(file) {
        Err(e) => Err(format!("cannot read: {e}{}", link())),
        Ok(m) if !m.is_file() => Err(format!("cannot read: not a regular file{}", link())),
        Ok(_) => std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}{}", link())),
    }
}

/// The line Lua names in `message` for chunk `chunk` (`notify.lua:12: …`).
fn line_in(message: &str, chunk: &str) -> Option<usize> {
    let rest = message.split(&format!("{chunk}:")).nth(1)?;
    rest.split(':').next()?.trim().parse().ok()
}

impl Plugins {
    /// Loads every plugin of `config` into a new state. Loading runs each
    /// script's top level (registrations) under the per-call limits; host
    /// functions with side effects refuse to run then.
    pub fn load(config: &Arc<Config>, host: Arc<Host>) -> Result<Plugins, LoadErrors> {
        let dir = &config.daemon.scripts_dir;
        let fail = |file: &Path, message: String| {
            LoadErrors(vec![LoadError {
                file: file.to_owned(),
                line: None,
                message,
            }])
        };
        let files =
            plugin_files(dir).map_err(|e| fail(dir, format!("cannot list scripts_dir: {e}")))?;
        let settings = config.plugins.clone();
        let (lua, helpers) = env::new_state(settings.memory)
            .map_err(|e| fail(dir, format!("cannot create the Lua state: {e}")))?;
        let signers = config
            .providers
            .iter()
            .filter_map(|(n, p)| match p {
                Provider::Recharge(r) => Some((
                    n.clone(),
                    settings.sign_with.contains(n).then(|| r.signer()),
                )),
                Provider::QqConnect(_) => None,
            })
            .collect();
        let shared = Arc::new(Shared {
            loading: AtomicBool::new(true),
            registry: Mutex::new(Registry::default()),
            signers,
            webhook_secrets: settings.webhook_secrets.clone(),
            destinations: crate::upstream::guard::Destinations {
                allow: settings.http_allow.clone(),
                own: vec![config.daemon.admin_listen, config.daemon.callback_listen],
            },
        });
        let scripts_dir: Arc<Path> = Arc::from(dir.as_path());
        let freeze: Function = helpers
            .get("freeze")
            .map_err(|e| fail(dir, e.to_string()))?;
        let view = config_view(&lua, &freeze, config)
            .map_err(|e| fail(dir, format!("cannot build vipd.config: {e}")))?;
        let mut errors = Vec::new();
        let mut names = Vec::new();
        for file in &files {
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = file_name.trim_end_matches(".lua").to_owned();
            let shown = dir.join(&file_name);
            let result = (|| -> mlua::Result<()> {
                if !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(mlua::Error::RuntimeError(
                        "a plugin's file name is letters, digits, _ and - (it names its kv namespace and settings)".into(),
                    ));
                }
                let text = read_plugin(file).map_err(mlua::Error::RuntimeError)?;
                let ctx = Arc::new(Ctx {
                    plugin: Arc::from(name.as_str()),
                    kv_quota: KvQuota::of_bytes(settings.kv_bytes),
                    host: host.clone(),
                    shared: shared.clone(),
                });
                let plugin_settings = settings
                    .settings
                    .get(&name)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                let plugin_settings = match plugin_settings {
                    serde_json::Value::Null => Value::Table(lua.create_table()?),
                    v => api::lua_value(&lua, &v)?,
                };
                let plugin_settings: Value = freeze.call((plugin_settings, "vipd.settings"))?;
                let vipd = api::build(&lua, &ctx, &view, plugin_settings)?;
                let slot = lua.create_table()?;
                let require = env::require_fn(&lua, scripts_dir.clone(), slot.clone())?;
                let env = env::plugin_env(&lua, &helpers, vipd, require)?;
                slot.set("env", env.clone())?;
                let budget = Budget::new(settings.instructions, settings.timeout);
                let out = limits::with_budget(&budget, || {
                    lua.load(text)
                        .set_name(format!("@{file_name}"))
                        .set_mode(ChunkMode::Text)
                        .set_environment(env)
                        .exec()
                });
                out.map_err(|e| match (budget.hit(), &e) {
                    (Some(limit), _) => {
                        mlua::Error::RuntimeError(budget.message(limit, settings.memory))
                    }
                    (None, mlua::Error::MemoryError(_)) => {
                        mlua::Error::RuntimeError(budget.message(Limit::Memory, settings.memory))
                    }
                    _ => e,
                })
            })();
            match result {
                Ok(()) => names.push(name),
                Err(e) => {
                    let message = describe_error(&e);
                    let line = line_in(&message, &file_name);
                    // Shown once, as `scripts/x.lua:3:`, not again as
                    // Lua's own `x.lua:3:` prefix.
                    let message = match line {
                        Some(l) => message
                            .strip_prefix(&format!("{file_name}:{l}: "))
                            .map(str::to_owned)
                            .unwrap_or(message),
                        None => message,
                    };
                    errors.push(LoadError {
                        file: shown,
                        line,
                        message,
                    });
                }
            }
        }
        shared.loading.store(false, Ordering::Relaxed);
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let registry = std::mem::take(&mut *shared.registry());
        let mut handlers: HashMap<EventKind, Vec<(Arc<str>, Function)>> = HashMap::new();
        for (kind, plugin, f) in registry.handlers {
            handlers.entry(kind).or_default().push((plugin, f));
        }
        let _ = lua.gc_collect();
        Ok(Plugins {
            lua,
            handlers,
            jobs: registry.jobs,
            names,
            settings,
            timezone: config.daemon.timezone,
            host,
            queue: OnceLock::new(),
            queued: Default::default(),
            stop: CancellationToken::new(),
            finished: CancellationToken::new(),
        })
    }
}

/// An mlua error as one message: the Lua error text (which starts with
/// `script.lua:LINE:`) and its traceback.
pub fn describe_error(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", describe_error(cause))
        }
        mlua::Error::WithContext { context, cause } => {
            format!("{context}: {}", describe_error(cause))
        }
        mlua::Error::RuntimeError(m) | mlua::Error::SyntaxError { message: m, .. } => m.clone(),
        other => other.to_string(),
    }
}
