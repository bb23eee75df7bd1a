//! Dependencies point one way: `cli → service → {http, plugins}
//! → engine → {ledger, upstream, config} → model → units`, with the
//! sandbox beside the engine. Read from
//! the code's own `crate::` paths, each top-level module may name only
//! modules of a lower layer (never its own layer's siblings, never a
//! higher one).
//!
//! Inside a top-level module, its submodules must not form a circle
//! either (`a` naming `b` while `b` names `a`, directly or through
//! others); a module's `mod.rs` is its hub and is not counted.
//!
//! Run it alone: `cargo test --test suite layers::`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and its layer (higher imports lower).
/// The sandbox is the simulated vendor *of a configuration*: it reads a
/// `Config` and nothing else of vipd's above the model, and only the
/// service and the CLI start it.
const LAYERS: &[(&str, u8)] = &[
    ("units", 0),
    ("timefmt", 0),
    ("model", 1),
    ("config", 2),
    ("ledger", 2),
    ("upstream", 2),
    ("metrics", 2),
    ("systemd", 2),
    ("engine", 3),
    ("sandbox", 3),
    ("http", 4),
    ("plugins", 4),
    ("service", 5),
    ("simulate", 5),
    ("cli", 6),
    ("fuzz", 6),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    Some(first.trim_end_matches(".rs").to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn dependencies_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        if from == "lib" || from == "main" {
            continue;
        }
        let Some(from_layer) = layer(&from) else {
            unknown.insert(from);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for part in code.split("crate::").skip(1) {
                let to: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if to.is_empty() || to == from {
                    continue;
                }
                match layer(&to) {
                    Some(l) if l < from_layer => {}
                    Some(_) => {
                        broken.insert((from.clone(), to));
                    }
                    None => {
                        unknown.insert(to);
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules without a layer (add them to LAYERS): {unknown:?}"
    );
    assert!(
        broken.is_empty(),
        "imports against the layering (a lower or same layer naming a higher or sibling one): {broken:?}"
    );
}

/// The submodule of `top` a file belongs to (`upstream/recharge.rs` →
/// `recharge`); `None` for the hub (`mod.rs`) and for files outside `top`.
fn submodule_of(src: &Path, top: &str, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src.join(top)).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs");
    (name != "mod").then(|| name.to_owned())
}

/// The sibling submodules a line of `top/<from>` names: `super::b::…`,
/// `super::{b::…, …}` and `crate::top::b::…`.
fn siblings_named(line: &str, top: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut push_path = |rest: &str| {
        let name = ident(rest);
        if !name.is_empty() && rest[name.len()..].starts_with("::") {
            out.push(name);
        }
    };
    for part in code.split("super::").skip(1) {
        if let Some(group) = part.strip_prefix('{') {
            for item in group.split('}').next().unwrap_or("").split(',') {
                push_path(item.trim());
            }
        } else {
            push_path(part);
        }
    }
    let prefix = format!("crate::{top}::");
    for part in code.split(prefix.as_str()).skip(1) {
        push_path(part);
    }
    out
}

#[test]
fn no_circles_inside_a_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut circles = Vec::new();
    for (top, _) in LAYERS {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(from) = submodule_of(&src, top, file) else {
                continue;
            };
            // Nested files (`a/b.rs`) say `super::` of `a`, not of `top`.
            if file.parent() != Some(src.join(top).as_path()) {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            // A `mod tests` inside the file names `super::` for its own
            // module: stop reading at the tests.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in text.lines() {
                for to in siblings_named(line, top) {
                    if to != from {
                        edges.entry(from.clone()).or_default().insert(to);
                    }
                }
            }
        }
        // A circle: `b` reachable from `a` and `a` from `b`.
        let reach = |start: &str| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![start.to_owned()];
            while let Some(m) = todo.pop() {
                for n in edges.get(&m).into_iter().flatten() {
                    if seen.insert(n.clone()) {
                        todo.push(n.clone());
                    }
                }
            }
            seen
        };
        for a in edges.keys() {
            for b in reach(a) {
                if a < &b && reach(&b).contains(a) {
                    circles.push(format!("{top}::{a} <-> {top}::{b}"));
                }
            }
        }
    }
    assert!(circles.is_empty(), "submodules in a circle: {circles:?}");
}

#[test]
fn the_scanner_sees_sibling_paths() {
    assert_eq!(
        siblings_named(
            "use super::{lenient::int, ReadError, reply::R};",
            "upstream"
        ),
        ["lenient", "reply"]
    );
    assert_eq!(
        siblings_named(
            "let x = super::http::send(crate::plugins::api::f());",
            "plugins"
        ),
        ["http", "api"]
    );
    assert!(siblings_named("// use super::http::x;", "plugins").is_empty());
}

/// The engine, the admin API and the plugins reach the store through the
/// `Store` port only: none of them names the sled `Ledger` outside its
/// tests, so a second backend plugs in behind the same port. Only the
/// service, the CLI and the fuzz harness open a concrete store.
#[test]
fn only_the_wiring_names_the_sled_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for top in ["engine", "http", "plugins"] {
        let mut files = Vec::new();
        rust_files(&src.join(top), &mut files);
        for file in files {
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.contains("/tests/") || rel.ends_with("/tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if names_word(code, "Ledger") {
                    found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "use `ledger::store::Store`, not the sled `Ledger`:\n{}",
        found.join("\n")
    );
}

/// Whether `code` contains `word` as a whole identifier.
fn names_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let before = code[..i].chars().next_back().is_none_or(|c| !ident(c));
        let after = code[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !ident(c));
        before && after
    })
}

#[test]
fn the_word_finder_sees_whole_identifiers_only() {
    assert!(names_word("use crate::ledger::Ledger;", "Ledger"));
    assert!(names_word("Arc<Ledger>", "Ledger"));
    assert!(!names_word("LedgerError", "Ledger"));
    assert!(!names_word("MyLedger", "Ledger"));
}
