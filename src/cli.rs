//! The `vipd` command line: arguments, logging, and one function per
//! command. Exit codes: 0 ok, 1 runtime failure, 2 usage, 78 invalid
//! configuration (EX_CONFIG).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::config::{Config, ConfigErrors, Secret};
use crate::model::sign::{SignMode, Signer};
use crate::upstream::vipinfo::{Membership, VipInfo};
use crate::{sandbox, timefmt, upstream};

/// Exit code for an invalid configuration (sysexits EX_CONFIG).
pub(crate) const EXIT_CONFIG: u8 = 78;

mod admin;
mod args;
mod config_file;
mod explain;
mod forecast;
mod logging;
mod render;
mod store;
mod test;

pub use args::Cli;
use args::{Command, ModeArg, OrdersAction, OutputFormat, StoreAction};
use config_file::ConfigFile;

/// Parses arguments, runs the command, and maps the result to an exit code.
pub fn main() -> ExitCode {
    // Everything vipd creates is its user's alone, as under the unit's
    // `UMask=0077`: the state folder (rotated tokens, the ledger), backups,
    // daemon.json. Set before any thread starts.
    // SAFETY: umask(2) cannot fail and touches only the process's mask.
    unsafe { libc::umask(0o077) };
    crate::metrics::process_start();
    crate::service::one_malloc_arena();
    let cli = Cli::parse();
    let format = cli.log_format;
    // A simulation's engine logs what a daemon would; `vipd test` reports
    // its own results, and shows only errors unless `VIPD_LOG` says more.
    let level = match cli.command {
        Command::Test { .. } => "error",
        _ => "info",
    };
    if let Err(e) = logging::init(format, level) {
        logging::fatal(format, &[format!("vipd: {e}")]);
        return ExitCode::from(2);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // tokio's own variable, when set, chooses instead.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        runtime.worker_threads(worker_threads(cores));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            logging::fatal(
                format,
                &[format!("vipd: cannot start the async runtime: {e}")],
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cli.state_dir)) {
        Ok(code) => code,
        Err(e) => {
            if let Some(errors) = e.downcast_ref::<ConfigErrors>() {
                let lines: Vec<String> = errors.to_string().lines().map(str::to_owned).collect();
                logging::fatal(format, &lines);
                return ExitCode::from(EXIT_CONFIG);
            }
            logging::fatal(format, &[format!("vipd: {e:#}")]);
            ExitCode::FAILURE
        }
    }
}

/// The wall clock, read here at the command line's edge; everything below
/// is given the time (the engine through its `Clock` port).
fn now() -> i64 {
    use crate::model::{Clock, SystemClock};
    SystemClock.unix()
}

/// How many tokio workers run checks and renewals on `cores` cores: one
/// fewer than the cores, at least one. Every renewal also needs threads
/// outside the runtime (sled's IO threads, the group-commit thread that
/// fsyncs): a worker on every core leaves them none, and idle workers
/// woken to steal work from a busy one cost more than they give. On two
/// cores one worker renews as fast as two at about a quarter less CPU
/// (BENCHMARKS.md, "Workers").
fn worker_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

async fn run(command: Command, state_dir: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let conf = |config| ConfigFile::new(config, state_dir.clone());
    match command {
        Command::Run {
            config,
            dry_run,
            accept_damaged_store,
        } => run_daemon(&conf(config), dry_run, accept_damaged_store).await,
        Command::Store { config, action } => match action {
            StoreAction::Verify => store::store_verify(&conf(config)).await,
            StoreAction::Backup { file } => store::store_backup(&conf(config), &file).await,
            StoreAction::Restore { file, reason } => {
                store::store_restore(&conf(config), &file, &reason).await
            }
            StoreAction::Copy { from, to } => store::store_copy(&conf(config), from, to).await,
            StoreAction::Release {
                account,
                all: _,
                reason,
            } => store::store_release(&conf(config), account.as_deref(), &reason).await,
        },
        Command::Check {
            config,
            format,
            strict,
        } => Ok(check(&conf(config), format, strict)),
        Command::Sign {
            secret_file,
            secret,
            mode,
            params,
        } => sign(secret_file.as_deref(), secret, mode, &params),
        Command::Explain {
            config,
            what,
            last,
            json,
        } => {
            explain::explain(explain::Explain {
                config: &conf(config),
                what: &what,
                last,
                json,
            })
            .await
        }
        Command::VipInfo {
            config,
            account,
            json,
            base_url,
        } => vip_info(&conf(config), &account, json, base_url).await,
        Command::Sandbox { listen, config } => serve_sandbox(&conf(config), listen).await,
        Command::Schema { tests } => {
            if tests {
                print!("{}", crate::simulate::schema());
            } else {
                print!("{}", crate::config::schema());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { paths, junit } => test::run(paths, junit).await,
        Command::LuaTypes => {
            print!("{}", crate::plugins::types::lua_types());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "vipd", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json } => admin::status(&conf(config), json).await,
        Command::Orders {
            config,
            state,
            json,
            action,
        } => match action {
            None => admin::orders(&conf(config), state, json).await,
            Some(OrdersAction::Resolve {
                key,
                as_state,
                reason,
            }) => admin::resolve(&conf(config), &key, as_state == "succeeded", &reason).await,
            Some(OrdersAction::Approve { key, reason }) => {
                admin::answer(&conf(config), &key, true, &reason).await
            }
            Some(OrdersAction::Decline { key, reason }) => {
                admin::answer(&conf(config), &key, false, &reason).await
            }
        },
        Command::Plan {
            config,
            account,
            at,
            json,
        } => admin::plan(&conf(config), account.as_deref(), at.as_deref(), json).await,
        Command::Forecast { config, days, json } => {
            crate::cli::forecast::forecast(&conf(config), days, json).await
        }
        Command::Recharge {
            config,
            account,
            product,
            dry_run,
            ahead,
            reason,
        } => {
            let by = admin::unix_user();
            let order = crate::engine::ManualOrder {
                account: &account,
                product: &product,
                dry_run,
                ahead,
                who: crate::engine::Operator {
                    by: &by,
                    why: &reason,
                },
            };
            admin::recharge(&conf(config), order).await
        }
    }
}

/// `vipd check`: the configuration, then its plugins (loaded into a
/// throwaway state with no store and no engine, so nothing happens).
fn check(conf: &ConfigFile, format: OutputFormat, strict: bool) -> ExitCode {
    // Outside the service its credentials cannot be read: a warning here,
    // an error with --strict (and under the unit, which sets
    // $CREDENTIALS_DIRECTORY, where a missing one is always an error).
    let load = if strict {
        ConfigFile::load
    } else {
        ConfigFile::load_outside
    };
    let result = load(conf).map_err(|e| e.0).and_then(|config| {
        let config = std::sync::Arc::new(config);
        let plugins = crate::plugins::Plugins::load(&config, crate::plugins::Host::new(None))
            .map_err(|e| e.0.into_iter().map(Into::into).collect::<Vec<_>>())?;
        Ok((config, plugins))
    });
    // (line:column, message): a credential only the service can read is
    // located; the other warnings are about the whole file or a rule.
    let warnings: Vec<(Option<(usize, usize)>, String)> = result
        .as_ref()
        .map(|(c, _)| {
            let unavailable = c.unavailable.iter().map(|u| &u.error).map(|e| {
                (
                    e.line.zip(e.column),
                    format!("{} (vipd run and check --strict need it)", e.message),
                )
            });
            unavailable.chain(c.located_warnings(now())).collect()
        })
        .unwrap_or_default();
    let shown = |(at, w): &(Option<(usize, usize)>, String)| match at {
        Some((l, c)) => format!("{}:{l}:{c}: warning: {w}", conf.path().display()),
        None => format!("{}: warning: {w}", conf.path().display()),
    };
    match format {
        OutputFormat::Json => {
            let report = serde_json::json!({
                "file": conf.path(),
                "valid": result.is_ok(),
                "errors": result.as_ref().err(),
                "warnings": warnings.iter().map(shown).collect::<Vec<_>>(),
                "plugins": result.as_ref().ok().map(|(_, p)| p.names()),
            });
            println!("{report:#}");
        }
        OutputFormat::Text => {
            for w in &warnings {
                eprintln!("{}", shown(w));
            }
            match &result {
                Ok((c, p)) => println!(
                    "{}: valid ({}, {}, {}, {}, {}{})",
                    conf.path().display(),
                    count(c.providers.len(), "provider"),
                    count(c.products.len(), "product"),
                    count(c.accounts.len(), "account"),
                    count(c.rules.len(), "rule"),
                    count(p.names().len(), "plugin"),
                    if p.names().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.names().join(", "))
                    }
                ),
                Err(errors) => {
                    for e in errors {
                        eprintln!("{e}");
                    }
                }
            }
        }
    }
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

/// `1 rule`, `2 rules`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn sign(
    secret_file: Option<&Path>,
    secret: Option<String>,
    mode: ModeArg,
    params: &[String],
) -> anyhow::Result<ExitCode> {
    let secret = match (secret_file, secret) {
        (Some(path), _) => {
            let (s, _) = crate::config::secret::resolve(
                &format!("${{file:{}}}", path.display()),
                Path::new("."),
            )?;
            s
        }
        (None, Some(s)) => Secret::new(s),
        (None, None) => bail!("give --secret-file or --secret"),
    };
    let mut pairs = Vec::with_capacity(params.len());
    for p in params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("parameter {p:?} is not KEY=VALUE"))?;
        pairs.push((k, v));
    }
    let mode = match mode {
        ModeArg::Md5 => SignMode::Md5,
        ModeArg::Hash => SignMode::Hash,
    };
    println!("{}", Signer::new(mode, secret).sign(pairs));
    Ok(ExitCode::SUCCESS)
}

/// Loads the configuration and, when it asks for the sandbox, starts one
/// in-process and points every provider at it.
async fn load_with_sandbox(
    conf: &ConfigFile,
) -> anyhow::Result<(Config, Option<sandbox::SandboxHandle>)> {
    let mut config = conf.load()?;
    if !config.daemon.sandbox {
        return Ok((config, None));
    }
    let sb = crate::service::start_sandbox(&mut config).await?;
    Ok((config, Some(sb)))
}

async fn vip_info(
    conf: &ConfigFile,
    account: &str,
    json: bool,
    base_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (config, sandbox) = match base_url {
        Some(url) => {
            let mut c = conf.load()?;
            c.point_providers_at(url.trim_end_matches('/'));
            (c, None)
        }
        None => load_with_sandbox(conf).await?,
    };
    if sandbox.is_some() {
        eprintln!("note: daemon.sandbox is true; reading from a fresh in-process sandbox");
    }
    let Some(acct) = config.account(account) else {
        let names = config.accounts.iter().map(|a| a.name.as_str());
        let hint = crate::config::error::closest(account, names)
            .map(|h| format!(" (did you mean {h}?)"))
            .unwrap_or_default();
        bail!(
            "{}: no account named {account}{hint}",
            conf.path().display()
        );
    };
    let client = crate::engine::clients::vip_info(config.reader_of(acct), &upstream::http_client());
    let result = client.fetch(&acct.openid, &acct.access_token).await;
    if let Some(sb) = sandbox {
        sb.shutdown().await;
    }
    let info = result.with_context(|| format!("account {account}: membership read failed"))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&vip_info_json(account, &info))?
        );
    } else {
        print!("{}", vip_info_text(account, &acct.qq_number, &info));
    }
    Ok(ExitCode::SUCCESS)
}

fn vip_info_json(account: &str, info: &VipInfo) -> serde_json::Value {
    let terms: serde_json::Map<String, serde_json::Value> = Membership::ALL
        .iter()
        .map(|m| {
            (
                m.as_str().to_owned(),
                serde_json::to_value(info.term(*m)).unwrap_or_default(),
            )
        })
        .collect();
    serde_json::json!({
        "account": account,
        "is_lost": info.is_lost,
        "is_qq_vip": info.is_qq_vip,
        "is_qq_year_vip": info.is_qq_year_vip,
        "qq_vip_level": info.qq_vip_level,
        "memberships": terms,
        "history_pay_time": info.history_pay_time,
        "history_end_time": info.history_end_time,
    })
}

fn vip_info_text(account: &str, qq: &str, info: &VipInfo) -> String {
    use std::fmt::Write;
    let now = now();
    let mut out = format!(
        "account {account} (qq {qq}): member={} yearly={} level={}\n",
        yes_no(info.is_qq_vip),
        yes_no(info.is_qq_year_vip),
        info.qq_vip_level.map_or("-".into(), |l| l.to_string())
    );
    for m in Membership::ALL {
        let t = info.term(m);
        let _ = match t.end {
            Some(end) => writeln!(
                out,
                "  {:<13} ends {} ({}){}",
                m.as_str(),
                timefmt::utc(end),
                timefmt::relative(end - now),
                t.payway
                    .map(|p| format!(", last paid via {}", p.name()))
                    .unwrap_or_default()
            ),
            None => writeln!(out, "  {:<13} none", m.as_str()),
        };
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

async fn serve_sandbox(conf: &ConfigFile, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let config = conf.load()?;
    let sb = sandbox::start(&config, listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // The first line on stdout is the address, for scripts and tests.
    println!("sandbox listening on {}", sb.base_url());
    tracing::info!(url = %sb.base_url(), accounts = config.accounts.len(), mode = ?config.sandbox.mode, "sandbox ready");
    shutdown_signal().await;
    sb.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn run_daemon(
    conf: &ConfigFile,
    dry_run: bool,
    accept_damaged: bool,
) -> anyhow::Result<ExitCode> {
    let config = conf.load()?;
    for (at, w) in config.located_warnings(now()) {
        match at {
            Some((line, col)) => tracing::warn!("{}:{line}:{col}: {w}", conf.path().display()),
            None => tracing::warn!("{}: {w}", conf.path().display()),
        }
    }
    let store = if accept_damaged {
        crate::ledger::OpenMode::AcceptDamaged { at: now() }
    } else {
        crate::ledger::OpenMode::Normal
    };
    match crate::service::run(config, dry_run, store, shutdown_signal()).await? {
        crate::service::Ended::Stopped => Ok(ExitCode::SUCCESS),
        // At once: the runtime would otherwise wait on writers the failed
        // store blocks.
        crate::service::Ended::StoreFailed(_) => std::process::exit(1),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// A core is left to the threads outside the runtime, never the last.
    #[test]
    fn workers_are_one_fewer_than_the_cores() {
        let workers: Vec<usize> = [0, 1, 2, 4, 16].map(super::worker_threads).to_vec();
        assert_eq!(workers, [1, 1, 1, 3, 15]);
    }

    /// Every flag and argument of every command says what it is for.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "vipd", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        super::Cli::command().debug_assert();
    }
}
