//! `vipd store`: verify, back up, restore, release held orders.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::ConfigFile;
use super::admin::{Api, load_outside, open_store};
use crate::ledger::Ledger;

/// `vipd store verify`.
pub(crate) async fn store_verify(conf: &ConfigFile) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    if Api::find(&config).await?.is_some() {
        bail!(
            "a daemon is running on {}: it verified the store when it opened it; stop it to verify again",
            config.daemon.state_dir.display()
        );
    }
    match Ledger::verify(&config.daemon.state_dir) {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("vipd: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `vipd store backup FILE`: written beside FILE, made durable, then
/// renamed into place, so a half-written backup never has FILE's name.
pub(crate) async fn store_backup(conf: &ConfigFile, file: &Path) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    let tmp = file.with_extension("partial");
    let bytes = match Api::find(&config).await? {
        Some(api) => {
            let body = api
                .send(api.http.get(format!("{}/api/store/backup", api.base)))
                .await?;
            std::fs::write(&tmp, &body).with_context(|| format!("writing {}", tmp.display()))?;
            body.len()
        }
        None => {
            let ledger = open_store(&config)?;
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?,
            );
            ledger.backup(&mut out, super::now())?;
            drop(out);
            std::fs::metadata(&tmp)?.len() as usize
        }
    };
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming to {}", file.display()))?;
    println!("backup written to {} ({bytes} bytes)", file.display());
    Ok(ExitCode::SUCCESS)
}

/// `vipd store restore FILE`.
pub(crate) async fn store_restore(
    conf: &ConfigFile,
    file: &Path,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() {
        bail!("a reason is required (--reason TEXT)");
    }
    let config = load_outside(conf)?;
    if let crate::config::StoreKind::Postgres { .. } = config.daemon.store {
        bail!(
            "daemon.store is postgres: a PostgreSQL ledger is restored with PostgreSQL's tools \
             (pg_restore, a base backup); check the vendor's orders since the backup before \
             starting the nodes: the restored ledger does not know them"
        );
    }
    if Api::find(&config).await?.is_some() {
        bail!(
            "a daemon is running on {}: stop it first",
            config.daemon.state_dir.display()
        );
    }
    let input = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let dir = config.daemon.state_dir.clone();
    let now = super::now();
    let summary = tokio::task::spawn_blocking(move || Ledger::restore(&dir, input, now)).await??;
    // Who restored it and why, in the restored store's own event log.
    let restored = Ledger::open(&config.daemon.state_dir)?;
    let record = crate::ledger::EventRecord {
        at: now,
        kind: "store_restored".into(),
        account: None,
        rule: None,
        key: None,
        detail: format!(
            "restored from {} by {}: {}",
            file.display(),
            super::admin::unix_user(),
            reason.trim()
        ),
    };
    restored.record_event(&record)?;
    restored.durable().await?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// `vipd store copy --from sled --to postgres`.
pub(crate) async fn store_copy(
    conf: &ConfigFile,
    from: super::args::StoreKindArg,
    to: super::args::StoreKindArg,
) -> anyhow::Result<ExitCode> {
    use super::args::StoreKindArg;
    if (from, to) != (StoreKindArg::Sled, StoreKindArg::Postgres) {
        bail!("vipd copies from sled to postgres only (--from sled --to postgres)");
    }
    let config = load_outside(conf)?;
    let crate::config::StoreKind::Postgres { url, .. } = &config.daemon.store else {
        bail!(
            "daemon.store in {} is not postgres: set it to the database to copy into \
             (kind: postgres, url: ...), then copy",
            conf.path().display()
        );
    };
    let dir = &config.daemon.state_dir;
    if crate::service::daemon_file(dir).exists() && Api::find(&config).await?.is_some() {
        bail!("a daemon is running on {}: stop it first", dir.display());
    }
    if !dir.join("db").exists() {
        bail!("no sled store at {}: nothing to copy", dir.display());
    }
    let ledger = Ledger::open(dir)?;
    let export = tokio::task::spawn_blocking(move || ledger.export()).await??;
    let settings: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| anyhow::anyhow!("daemon.store.url: {e}"))?;
    let (mut client, conn) = settings
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("{}", crate::ledger::pg::PgError::from(e)))?;
    tokio::spawn(conn);
    let copied = crate::ledger::pg::import(&mut client, &export).await?;
    println!(
        "copied {copied} from {} into PostgreSQL; start the nodes with daemon.store as it is. \
         Keep {} until they run well: it is the history if anything went wrong",
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `vipd store release [--account A | --all]`.
pub(crate) async fn store_release(
    conf: &ConfigFile,
    account: Option<&str>,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    let left: Option<crate::ledger::Hold> = match Api::find(&config).await? {
        Some(api) => {
            api.call(
                api.http
                    .post(format!("{}/api/store/release", api.base))
                    .json(&serde_json::json!({ "account": account, "reason": reason })),
            )
            .await?
        }
        None => {
            let ledger = open_store(&config)?;
            let by = super::admin::unix_user();
            let who = crate::engine::Operator {
                by: &by,
                why: reason,
            };
            crate::engine::release(&ledger, account, who, super::now())
                .await
                .map_err(anyhow::Error::msg)?
        }
    };
    match (account, left) {
        (_, None) => println!("no orders are held"),
        (Some(a), Some(h)) => println!(
            "new orders for {a} are released; the others stay held: {}",
            h.reason
        ),
        (None, Some(_)) => unreachable!("releasing all leaves no hold"),
    }
    Ok(ExitCode::SUCCESS)
}
