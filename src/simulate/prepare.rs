//! Everything a test needs, read and checked before any test runs: the
//! rules (with the test's `sandbox:` keys in place of the file's), the
//! start, each reload's rules and each clock step. A mistake anywhere is
//! an error naming the file, line and column (exit 78), never a failed
//! test.

use yaml_serde::{Mapping, Value};

use super::file::{Expect, Loaded, Step};
use crate::config::{Config, ConfigError};
use crate::units::HumanDuration;

/// 2027-01-15T08:00:00Z: a test starts here unless it says otherwise.
pub(crate) const DEFAULT_START: i64 = 1_800_000_000;

/// One test, ready to run.
pub struct Prepared {
    /// The rules under test, the vendor's start included.
    pub config: Config,
    /// Unix seconds at the start.
    pub start: i64,
    /// By timeline step: a `reload:`'s rules.
    pub reloads: Vec<Option<Config>>,
    /// By timeline step: a `clock_step:` in seconds.
    pub clock_steps: Vec<i64>,
}

/// Every test of `loaded`, or every error found in them.
pub fn all(loaded: &Loaded) -> Result<Vec<Prepared>, Vec<ConfigError>> {
    let mut ready = Vec::new();
    let mut errors = Vec::new();
    for (i, case) in loaded.file.tests.iter().enumerate() {
        let at = |rest: &[&str]| {
            let mut path = vec!["tests".to_owned(), i.to_string()];
            path.extend(rest.iter().map(|s| (*s).to_owned()));
            path
        };
        let err = |path: Vec<String>, msg: String| {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            loaded.error_at(&refs, format!("test {:?}: {msg}", case.name))
        };
        let vendor = loaded.raw["tests"][i].get("sandbox").cloned();
        let config = match rules(loaded, &case.rules, vendor.as_ref()) {
            Ok(c) => Some(c),
            Err(Where::Rules(e)) => {
                errors.extend(e);
                None
            }
            Err(Where::Here(key, msg)) => {
                errors.push(err(at(&[key]), msg));
                None
            }
        };
        let start = match &case.start {
            None => Some(DEFAULT_START),
            Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => Some(t.timestamp()),
                Err(e) => {
                    errors.push(err(
                        at(&["start"]),
                        format!(
                            "start {s:?}: {e} (expected RFC 3339 such as 2027-01-15T08:00:00Z)"
                        ),
                    ));
                    None
                }
            },
        };
        let mut reloads = Vec::new();
        let mut clock_steps = Vec::new();
        for (j, step) in case.timeline.iter().enumerate() {
            let j_s = j.to_string();
            let mut reload = None;
            let mut clock_step = 0;
            match step {
                Step::Reload(name) => match rules(loaded, name, None) {
                    Ok(c) => reload = Some(c),
                    Err(Where::Rules(e)) => errors.extend(e),
                    Err(Where::Here(_, msg)) => {
                        errors.push(err(at(&["timeline", &j_s, "reload"]), msg));
                    }
                },
                Step::ClockStep(s) => match HumanDuration::parse_signed_secs(s) {
                    Ok(secs) => clock_step = secs,
                    Err(e) => {
                        errors.push(err(at(&["timeline", &j_s, "clock_step"]), e.to_string()))
                    }
                },
                Step::Forecast(d) => {
                    let secs = d.get().as_secs();
                    if secs < 86_400 || secs % 86_400 != 0 {
                        errors.push(err(
                            at(&["timeline", &j_s, "forecast"]),
                            format!("forecast: {d} is not a whole number of days (1d or more)"),
                        ));
                    }
                }
                Step::Expect(e) => {
                    for (k, m) in durations(e) {
                        errors.push(err(
                            at(&[
                                "timeline",
                                &j_s,
                                "expect",
                                "memberships",
                                &k.to_string(),
                                "ends",
                            ]),
                            m,
                        ));
                    }
                }
                _ => {}
            }
            reloads.push(reload);
            clock_steps.push(clock_step);
        }
        for (k, m) in durations(&case.expect) {
            errors.push(err(
                at(&["expect", "memberships", &k.to_string(), "ends"]),
                m,
            ));
        }
        let scripts = case.scripts_dir.as_deref().map(|d| loaded.beside(d));
        let mut config = config;
        for c in config.iter_mut().chain(reloads.iter_mut().flatten()) {
            if let Some(dir) = &scripts {
                c.daemon.scripts_dir = dir.clone();
            }
            errors.extend(plugins_load(c));
        }
        if let (Some(config), Some(start)) = (config, start) {
            ready.push(Prepared {
                config,
                start,
                reloads,
                clock_steps,
            });
        }
    }
    if errors.is_empty() {
        Ok(ready)
    } else {
        Err(errors)
    }
}

/// Whether `config`'s plugins load, as `vipd check` asks: their errors
/// name the script and line.
fn plugins_load(config: &Config) -> Vec<ConfigError> {
    let config = std::sync::Arc::new(config.clone());
    match crate::plugins::Plugins::load(&config, crate::plugins::Host::new(None)) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(ConfigError::from).collect(),
    }
}

/// The memberships' `ends` that are not durations.
fn durations(e: &Expect) -> Vec<(usize, String)> {
    e.memberships
        .iter()
        .enumerate()
        .filter_map(|(k, m)| {
            HumanDuration::parse_signed_secs(&m.ends)
                .err()
                .map(|err| (k, format!("ends: {err}")))
        })
        .collect()
}

/// Where a rules file's trouble is.
enum Where {
    /// In the rules file itself: its own located errors.
    Rules(Vec<ConfigError>),
    /// At this key of the test.
    Here(&'static str, String),
}

/// The rules file `name` (beside the test file), with `vendor`'s keys in
/// place of those of its `sandbox:` section and a fixed seed for the
/// fault dice unless one is given.
fn rules(loaded: &Loaded, name: &str, vendor: Option<&Value>) -> Result<Config, Where> {
    let path = loaded.beside(name);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Where::Here("rules", format!("cannot read {}: {e}", path.display())))?;
    // The file as written first, so that its errors name its own lines.
    Config::parse_outside(&text, &path).map_err(|e| Where::Rules(e.0))?;
    let mut value: Value = yaml_serde::from_str(&text)
        .map_err(|e| Where::Here("rules", format!("{}: {e}", path.display())))?;
    let mut sandbox = match value.get("sandbox") {
        Some(Value::Mapping(m)) => m.clone(),
        _ => Mapping::new(),
    };
    if let Some(Value::Mapping(over)) = vendor {
        for (k, v) in over {
            sandbox.insert(k.clone(), v.clone());
        }
    }
    if !sandbox.contains_key("seed") {
        sandbox.insert("seed".into(), 0.into());
    }
    if let Value::Mapping(top) = &mut value {
        top.insert("sandbox".into(), Value::Mapping(sandbox));
    }
    let merged =
        yaml_serde::to_string(&value).map_err(|e| Where::Here("sandbox", e.to_string()))?;
    let merged = stand_in_credentials(&merged);
    Config::parse_outside(&merged, &path).map_err(|e| {
        let messages: Vec<String> = e.0.into_iter().map(|e| e.message).collect();
        Where::Here("sandbox", messages.join("; "))
    })
}

/// `${credential:NAME}` (a secret only the service is handed) becomes
/// `test-credential-NAME`: each its own value, so that two accounts'
/// tokens are not the same empty string, and the sandbox, built from the
/// same text, knows them.
fn stand_in_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${credential:") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "${credential:".len()..];
        match after.find('}') {
            Some(end) => {
                out.push_str("test-credential-");
                out.push_str(&after[..end]);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_credential_gets_a_stand_in_of_its_own() {
        assert_eq!(
            super::stand_in_credentials("a: ${credential:x}\nb: \"${credential:y}\" ${credential:"),
            "a: test-credential-x\nb: \"test-credential-y\" ${credential:"
        );
    }
}
