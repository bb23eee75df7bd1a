//! `vipd test`: rules proven on simulated time before they pay.
//!
//! | file | owns |
//! |---|---|
//! | `file.rs` | the test file's shape (its schema), reading it with positions |
//! | `prepare.rs` | each test's configurations and values checked before any runs |
//! | `world.rs` | one test's engine, ledger, vendor and receiver on a paused clock |
//! | `expect.rs` | expectations, and the promises every check holds vipd to |
//! | `report.rs` | the text report and JUnit XML |
//!
//! Each test runs the daemon's own engine (the same scheduler, decisions,
//! ledger gate, callbacks and verification) against the in-process
//! sandbox, on a current-thread runtime of its own whose clock is paused:
//! time moves only when every task waits, so days pass in milliseconds,
//! and the same file gives the same result. Plugins load as `vipd run`
//! loads them and run on the same clock; nothing they send leaves.

pub mod expect;
pub mod file;
mod forecasts;
mod prepare;
mod report;
mod world;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use expect::{Failure, Seen};
use file::{Loaded, Step};
use prepare::Prepared;
use report::Reported;
pub use report::{Outcome, junit};
pub use world::World;

pub use file::schema;

/// Exit code when every test passed.
pub(crate) const PASSED: u8 = 0;
/// Exit code when a test failed.
pub const FAILED: u8 = 1;

/// The test files among `paths`: a file as given; a folder's `*.test.yaml`
/// and `*.test.yml`, recursively, in name order.
pub fn files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            walk(&path, out)?;
        } else if name.ends_with(".test.yaml") || name.ends_with(".test.yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads and checks every file: the tests ready to run, or every error
/// found (each naming its file, line and column).
pub fn load(
    files: &[PathBuf],
) -> Result<Vec<(Loaded, Vec<Prepared>)>, crate::config::ConfigErrors> {
    let mut ready = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match Loaded::read(path) {
            Ok(loaded) => match prepare::all(&loaded) {
                Ok(cases) => ready.push((loaded, cases)),
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(ready)
    } else {
        Err(crate::config::ConfigErrors(errors))
    }
}

/// Runs every test of `ready`, each on a runtime of its own with a paused
/// clock, as many at once as the machine has cores; the outcomes in the
/// order of the files and their tests.
pub fn run_all(ready: &[(Loaded, Vec<Prepared>)]) -> Vec<Outcome> {
    let jobs: Vec<(&Loaded, usize, &Prepared)> = ready
        .iter()
        .flat_map(|(loaded, cases)| cases.iter().enumerate().map(move |(i, p)| (loaded, i, p)))
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(loaded, i, p)) = jobs.get(k) else {
                        break;
                    };
                    let outcome = run_one(loaded, i, p);
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((k, outcome));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(k, _)| *k);
    done.into_iter().map(|(_, o)| o).collect()
}

/// One test, on a thread and runtime of its own.
pub(crate) fn run_one(loaded: &Loaded, i: usize, prepared: &Prepared) -> Outcome {
    let started = Instant::now();
    let name = loaded.file.tests[i].name.clone();
    let ran = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()?;
            rt.block_on(play(loaded, i, prepared))
        })
        .join()
    });
    let (failures, simulated, orders) = match ran {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => (
            vec![Reported::setup(loaded, i, format!("{e:#}"))],
            0,
            Vec::new(),
        ),
        Err(_) => (
            vec![Reported::setup(loaded, i, "the test's run panicked".into())],
            0,
            Vec::new(),
        ),
    };
    Outcome {
        file: loaded.path.clone(),
        name,
        failures,
        orders,
        simulated: Duration::from_secs(simulated.max(0) as u64),
        wall: started.elapsed(),
    }
}

/// What a played test gives: its failures, how long it ran in simulated
/// seconds, and its ledger at the end.
type Played = (Vec<Reported>, i64, Vec<crate::ledger::Order>);

/// Plays test `i`'s timeline, then its final expectations.
async fn play(loaded: &Loaded, i: usize, p: &Prepared) -> anyhow::Result<Played> {
    let case = &loaded.file.tests[i];
    let world = World::start(p.config.clone(), p.start).await?;
    let mut config = p.config.clone();
    let mut failures = Vec::new();
    let mut forecasts = Vec::new();
    for (j, step) in case.timeline.iter().enumerate() {
        let at = || loaded.where_is(&["tests", &i.to_string(), "timeline", &j.to_string()]);
        let mut refused = |why: String| {
            failures.push(Reported {
                at: at(),
                failure: Failure {
                    expected: "the step to run".into(),
                    actual: why,
                    account: None,
                },
                traces: String::new(),
            });
        };
        match step {
            Step::Advance(d) => tokio::time::sleep(d.get()).await,
            Step::ClockStep(_) => world.clock.step(p.clock_steps[j]),
            Step::Vendor(change) => {
                if let Err(e) = world.sandbox.change(change.clone()) {
                    refused(format!("vendor: {e}"));
                }
            }
            Step::Reload(_) => {
                let new = p.reloads[j].clone().expect("prepared");
                world.reload(new.clone())?;
                config = new;
            }
            Step::RedeliverCallback(account) => {
                if let Err(e) = redeliver(&world, account).await {
                    refused(e);
                }
            }
            Step::Resolve(r) => {
                if let Err(e) = resolve(&world, r).await {
                    refused(e);
                }
            }
            Step::Forecast(d) => {
                let days = (d.get().as_secs() / 86_400) as u32;
                match world.engine.forecast(days).await {
                    Ok(forecast) => forecasts.push(forecasts::Made { at: at(), forecast }),
                    Err(e) => refused(format!("forecast: {e}")),
                }
            }
            Step::Approve(a) | Step::Decline(a) => {
                let approve = matches!(step, Step::Approve(_));
                if let Err(e) = answer(&world, a, approve).await {
                    refused(e);
                }
            }
            Step::Expect(e) => {
                let seen = Seen::read(&world, e).await?;
                for f in expect::check(e, &seen, &world, &config) {
                    failures.push(Reported::of(&world, at(), f).await);
                }
            }
        }
    }
    if let Some(d) = case.run_for {
        tokio::time::sleep(d.get()).await;
    }
    let seen = Seen::read(&world, &case.expect).await?;
    let at = loaded.where_is(&["tests", &i.to_string(), "expect"]);
    for f in expect::check(&case.expect, &seen, &world, &config) {
        failures.push(Reported::of(&world, at.clone(), f).await);
    }
    for made in &forecasts {
        for f in made.differences(&seen.orders, world.now()) {
            failures.push(Reported::of(&world, made.at.clone(), f).await);
        }
    }
    let simulated = world.now() - world.start;
    world.stop().await;
    Ok((failures, simulated, seen.orders))
}

/// `account`'s latest order among those `pick` keeps.
async fn latest_order(
    world: &World,
    account: &str,
    pick: impl Fn(&crate::ledger::Order) -> bool,
) -> Result<Option<crate::ledger::Order>, String> {
    let orders = world
        .store
        .orders_of(account)
        .await
        .map_err(|e| e.to_string())?;
    Ok(orders
        .into_iter()
        .filter(|o| pick(o))
        .max_by_key(|o| (o.created_at, o.key.clone())))
}

/// The vendor delivers `account`'s latest order's last callback again.
async fn redeliver(world: &World, account: &str) -> Result<(), String> {
    let latest = latest_order(world, account, |o| o.vendor_orderid.is_some())
        .await?
        .ok_or_else(|| {
            format!("redeliver_callback: {account} has no order with a vendor order id")
        })?;
    let id = latest.vendor_orderid.as_deref().unwrap_or_default();
    world
        .sandbox
        .redeliver(id)
        .await
        .map(|_| ())
        .map_err(|e| format!("redeliver_callback: {e}"))
}

/// An operator settles `account`'s latest order, as `vipd orders
/// resolve` does.
async fn resolve(world: &World, r: &file::ResolveStep) -> Result<(), String> {
    let (account, as_state) = (&r.account, r.as_state);
    use crate::ledger::OrderState;
    use crate::model::Clock;
    let paid = match as_state {
        OrderState::Succeeded => true,
        OrderState::Failed => false,
        other => return Err(format!("resolve: as succeeded or failed, not {other}")),
    };
    let latest = latest_order(world, account, |_| true)
        .await?
        .ok_or_else(|| format!("resolve: {account} has no order"))?;
    let who = crate::engine::Operator {
        by: "vipd test",
        why: r.reason.as_deref().unwrap_or("resolved in a vipd test"),
    };
    let (_, settled) =
        crate::engine::resolve(&*world.store, &latest.key, paid, who, world.clock.unix())
            .await
            .map_err(|e| format!("resolve: {e}"))?;
    // As the admin API does: plugins hear of it.
    world.engine.runtime().hooks.notify(settled);
    Ok(())
}

/// An operator answers `account`'s latest order awaiting approval, as
/// `vipd orders approve|decline` does through the admin API.
async fn answer(world: &World, a: &file::AnswerStep, approve: bool) -> Result<(), String> {
    let verb = if approve { "approve" } else { "decline" };
    let latest = latest_order(world, &a.account, |o| {
        o.state == crate::ledger::OrderState::AwaitingApproval
    })
    .await?
    .ok_or_else(|| format!("{verb}: {} has no order awaiting approval", a.account))?;
    let who = crate::engine::Operator {
        by: "vipd test",
        why: &a.reason,
    };
    world
        .engine
        .answer_approval(&latest.key, approve, who)
        .await
        .map(|_| ())
        .map_err(|e| format!("{verb}: {e}"))
}

#[cfg(test)]
mod tests;
