//! `vipd test FILE|DIR...`: run test files on simulated time (see
//! `simulate`). Exit 0 when every test passed, 1 when one failed, 78 when
//! a test file or the rules it names are invalid.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::ConfigErrors;
use crate::simulate;

pub async fn run(paths: Vec<PathBuf>, junit: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || blocking(&paths, junit.as_deref()))
        .await
        .context("the test run stopped")?
}

fn blocking(paths: &[PathBuf], junit: Option<&Path>) -> anyhow::Result<ExitCode> {
    let files = simulate::files(paths).context("cannot list the test files")?;
    if files.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ConfigErrors::one(
            Path::new(&named.join(" ")),
            "no test files here (a folder's tests are its *.test.yaml files)",
        )
        .into());
    }
    let ready = simulate::load(&files)?;
    let outcomes = simulate::run_all(&ready);
    for o in &outcomes {
        print!("{}", o.text());
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    println!(
        "{} test{}: {} passed, {failed} failed",
        outcomes.len(),
        if outcomes.len() == 1 { "" } else { "s" },
        outcomes.len() - failed
    );
    if let Some(path) = junit {
        std::fs::write(path, simulate::junit(&outcomes))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::from(if failed == 0 {
        simulate::PASSED
    } else {
        simulate::FAILED
    }))
}
