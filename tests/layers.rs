//! Dependencies point one way (issue 12): `cli → service → {http, plugins}
//! → engine → {ledger, upstream, config} → model → units`, with the
//! sandbox beside the engine. Read from
//! the code's own `crate::` paths, each top-level module may name only
//! modules of a lower layer (never its own layer's siblings, never a
//! higher one).
//!
//! This checks top-level modules; circles inside one (`plugins::api` and
//! `plugins::http`, `upstream::outcome` and `upstream::recharge`) are not
//! seen here.
//!
//! The layering is being reached step by step, so the imports that break
//! it today are listed in `KNOWN`: a ratchet. A new one fails this test;
//! so does a listed one that is gone (strike it from the list, so that it
//! cannot come back).

use std::collections::BTreeSet;
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
    ("cli", 6),
    ("fuzz", 6),
];

/// `(from, to)` imports that break the layering today, to be removed as
/// issue 12 proceeds. Never add to this list.
const KNOWN: &[(&str, &str)] = &[("engine", "plugins")];

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
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    let new: Vec<_> = broken.difference(&known).collect();
    let gone: Vec<_> = known.difference(&broken).collect();
    assert!(
        new.is_empty(),
        "imports against the layering (a lower or same layer naming a higher or sibling one): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "fixed, so strike them from KNOWN: {gone:?}"
    );
}
