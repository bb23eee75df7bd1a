//! Every type-level error of a file in one run, each at its own key.
//!
//! serde stops at the first error, so three typos took three runs of
//! `vipd check`. When the whole file does not deserialize, each section
//! and each entry (a provider, an account, a rule) is deserialized on its
//! own, with `serde_path_to_error` naming the failing key's path; the path
//! is located in the parser's spans ([`Spans`]). Within one entry, the
//! failing key is taken out and the entry tried again, so every bad key
//! of a rule is named too.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use yaml_serde::Value;

use super::error::{ConfigError, did_you_mean};
use super::raw;
use super::spans::Spans;

/// The top-level sections (`raw::RawConfig`'s fields).
const SECTIONS: [&str; 9] = [
    "$schema",
    "daemon",
    "providers",
    "products",
    "accounts",
    "rules",
    "sandbox",
    "plugins",
    "manual",
];

/// At most this many errors per entry (a file of garbage has thousands).
const PER_ENTRY: usize = 16;

/// The errors of `value` (the whole file, which failed to deserialize as
/// a whole), in file order.
pub fn all(file: &Path, value: Value, spans: &Spans) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let Value::Mapping(root) = value else {
        return out;
    };
    for (key, section) in root {
        let Some(name) = key.as_str() else {
            out.push(error(
                file,
                spans,
                &[],
                "a top-level key must be text".into(),
            ));
            continue;
        };
        match name {
            "$schema" => entry::<String>(file, spans, &[name], section, &mut out),
            "daemon" => entry::<raw::RawDaemon>(file, spans, &[name], section, &mut out),
            "sandbox" => entry::<raw::RawSandbox>(file, spans, &[name], section, &mut out),
            "plugins" => entry::<raw::RawPlugins>(file, spans, &[name], section, &mut out),
            "manual" => entry::<raw::RawManual>(file, spans, &[name], section, &mut out),
            "providers" => each_entry::<raw::RawProvider>(file, spans, name, section, &mut out),
            "products" => each_entry::<raw::RawProduct>(file, spans, name, section, &mut out),
            "accounts" => each_item::<raw::RawAccount>(file, spans, name, section, &mut out),
            "rules" => each_item::<raw::RawRule>(file, spans, name, section, &mut out),
            other => {
                let mut message = format!(
                    "unknown field `{other}`, expected one of {}",
                    SECTIONS.map(|s| format!("`{s}`")).join(", ")
                );
                if let Some(hint) = did_you_mean(&message) {
                    message.push_str(&format!(" (did you mean `{hint}`?)"));
                }
                out.push(error(file, spans, &[other], message));
            }
        }
    }
    out.sort_by_key(|e| (e.line, e.column));
    out
}

/// `name: { key: entry, ... }`: each entry on its own.
fn each_entry<T: DeserializeOwned>(
    file: &Path,
    spans: &Spans,
    name: &str,
    section: Value,
    out: &mut Vec<ConfigError>,
) {
    match section {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().map(str::to_owned).unwrap_or_default();
                entry::<T>(file, spans, &[name, &key], v, out);
            }
        }
        Value::Null => {}
        other => entry::<std::collections::BTreeMap<String, T>>(file, spans, &[name], other, out),
    }
}

/// `name: [item, ...]`: each item on its own.
fn each_item<T: DeserializeOwned>(
    file: &Path,
    spans: &Spans,
    name: &str,
    section: Value,
    out: &mut Vec<ConfigError>,
) {
    match section {
        Value::Sequence(items) => {
            for (i, v) in items.into_iter().enumerate() {
                entry::<T>(file, spans, &[name, &i.to_string()], v, out);
            }
        }
        Value::Null => {}
        other => entry::<Vec<T>>(file, spans, &[name], other, out),
    }
}

/// One entry at `at`: its errors, taking each failing key out and trying
/// again (an error without a key to take out ends the entry).
fn entry<T: DeserializeOwned>(
    file: &Path,
    spans: &Spans,
    at: &[&str],
    mut value: Value,
    out: &mut Vec<ConfigError>,
) {
    // Keys taken out: a later "missing field" for one of them is a result
    // of taking it out, not a second error.
    let mut taken: Vec<Vec<String>> = Vec::new();
    // Keys suggested for unknown ones: `secert` (did you mean `secret`?)
    // makes `secret` missing too, which says nothing new.
    let mut hinted: Vec<String> = Vec::new();
    for _ in 0..PER_ENTRY {
        let Err(e) = serde_path_to_error::deserialize::<_, T>(value.clone()) else {
            return;
        };
        let mut path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Map { key } => Some(key.clone()),
                Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let mut message = e.inner().to_string();
        if let Some(pos) = message.rfind(" at line ") {
            message.truncate(pos);
        }
        let unknown = quoted_after(&message, "unknown field `").map(str::to_owned);
        let missing = quoted_after(&message, "missing field `").map(str::to_owned);
        if let Some(field) = missing {
            let mut key = path.clone();
            key.push(field);
            if taken.contains(&key) || hinted.last() == key.last() {
                return;
            }
        }
        if let Some(hint) = did_you_mean(&message) {
            message.push_str(&format!(" (did you mean `{hint}`?)"));
            hinted.push(hint);
        }
        // An unknown key is shown at itself, not at its mapping.
        let shown_path: Vec<String> = match &unknown {
            Some(field) => path.iter().cloned().chain([field.clone()]).collect(),
            None => path.clone(),
        };
        let full: Vec<&str> = at
            .iter()
            .copied()
            .chain(shown_path.iter().map(String::as_str))
            .collect();
        let shown = dotted(&full);
        out.push(error(file, spans, &full, format!("{shown}: {message}")));
        // Take out what failed: the unknown key, or the bad value.
        if let Some(field) = unknown {
            path.push(field);
        }
        if path.is_empty() || !take_out(&mut value, &path) {
            return;
        }
        taken.push(path);
    }
}

/// `rules.0.renew_before` as `rules[0].renew_before`.
fn dotted(path: &[&str]) -> String {
    let mut s = String::new();
    for p in path {
        if p.parse::<usize>().is_ok() {
            s.push_str(&format!("[{p}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    s
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message
        .split_once(prefix)?
        .1
        .split_once('`')
        .map(|(k, _)| k)
}

/// Removes the mapping key at `path` (a list item is left: removing it
/// would renumber the ones after it).
fn take_out(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for p in parents {
        node = match node {
            Value::Mapping(m) => match m.get_mut(p.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Value::Sequence(s) => match p.parse::<usize>().ok().and_then(|i| s.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            Value::Tagged(t) => &mut t.value,
            _ => return false,
        };
    }
    match node {
        Value::Mapping(m) => m.remove(last.as_str()).is_some(),
        _ => false,
    }
}

fn error(file: &Path, spans: &Spans, at: &[&str], message: String) -> ConfigError {
    let loc = spans.locate(at);
    ConfigError {
        file: file.to_owned(),
        line: loc.map(|l| l.0),
        column: loc.map(|l| l.1),
        message,
    }
}
