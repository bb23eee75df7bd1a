//! `vipd forecast`: from the running daemon's API, or from the store when
//! none runs; as text or JSON.

use std::process::ExitCode;

use super::ConfigFile;
use super::admin::{Api, Offline, load_outside, offline_engine};
use crate::engine::forecast::Forecast;
use crate::timefmt;
use crate::units::Fen;

pub async fn forecast(conf: &ConfigFile, days: u32, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_outside(conf)?;
    let f: Forecast = match Api::find(&config).await? {
        Some(api) => {
            let url = format!("{}/api/forecast", api.base);
            api.call(api.http.get(url).query(&[("days", days)])).await?
        }
        None => {
            let (engine, sandbox, throwaway) = offline_engine(conf, Offline::Plan).await?;
            let f = engine.forecast(days).await;
            if let Some(sb) = sandbox {
                sb.shutdown().await;
            }
            drop(engine);
            if let Some(dir) = throwaway {
                let _ = std::fs::remove_dir_all(dir);
            }
            f?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        print!("{}", render(&f));
    }
    Ok(ExitCode::SUCCESS)
}

/// The forecast as text: totals, weeks, budgets, then each renewal.
pub fn render(f: &Forecast) -> String {
    use std::fmt::Write;
    let cap = |c: Option<Fen>| c.map_or_else(|| "no cap".to_owned(), |c| c.to_string());
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "forecast from {} for {} days: {} renewals, {} (at max_price; the vendor may bill less)",
        timefmt::utc(f.from),
        f.days,
        f.total_renewals,
        f.total_spend
    );
    if f.renewals.is_empty() {
        let _ = writeln!(
            w,
            "no renewal expected (pairs never checked are not counted)"
        );
        return out;
    }
    let _ = writeln!(w, "\nby week (from Monday):");
    for p in &f.by_week {
        let blocked = if p.blocked > 0 {
            format!(", {} blocked", p.blocked)
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "  {}  {:>4} renewals  {:>10}{blocked}",
            p.from,
            p.renewals,
            p.spend.to_string()
        );
    }
    let _ = writeln!(w, "\nbudgets:");
    for b in &f.budgets {
        let _ = writeln!(
            w,
            "  {}: {} renewals, {}; today {} of {}, this month {} of {}",
            b.rule,
            b.renewals,
            b.spend,
            b.demand_day,
            cap(b.per_day),
            b.demand_month,
            cap(b.per_month)
        );
        if let Some((at, why)) = &b.first_blocked {
            let _ = writeln!(
                w,
                "    {} renewals blocked, the first at {}: {why}",
                b.blocked,
                timefmt::utc(*at)
            );
        }
    }
    let _ = writeln!(w, "\nrenewals:");
    for r in &f.renewals {
        let mut notes = Vec::new();
        if r.needs_approval {
            notes.push("needs approval".to_owned());
        }
        if let Some(why) = &r.blocked {
            notes.push(format!("blocked: {why}"));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("  ({})", notes.join("; "))
        };
        let _ = writeln!(
            w,
            "  {}  {}  {} {}  {} {}{notes}",
            timefmt::utc(r.at),
            r.rule,
            r.account,
            r.membership,
            r.product,
            r.price
        );
    }
    out
}
