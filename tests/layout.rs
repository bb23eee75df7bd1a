//! The README's Layout is the newcomer's map of the code: it must name
//! every source file (a module's `mod.rs` and test files aside), each in
//! the entry of its folder, and every top-level module. ARCHITECTURE.md's
//! "Modules" and `src/lib.rs`'s table must each speak of every top-level
//! module, and of no module that is gone. Every file in `tests/` is part
//! of a test target (Cargo builds only those it names).
//!
//! Run it alone: `cargo test --test suite layout::`.

use std::path::Path;

/// The Layout block's entries: (path, what it says), continuation lines
/// joined.
fn entries(readme: &str) -> Vec<(String, String)> {
    let start = readme.find("## Layout").expect("a Layout section");
    let open = readme[start..].find("```").expect("its block") + start + 3;
    let close = readme[open..].find("```").expect("its end") + open;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in readme[open..close].lines() {
        if let Some(rest) = line.strip_prefix("src/") {
            let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push((format!("src/{path}"), text.trim().to_owned()));
        } else if line.starts_with(' ') {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else {
            // Entries of other folders (tests/, benches/) end src's.
            out.push((String::new(), String::new()));
        }
    }
    out.retain(|(p, _)| !p.is_empty());
    out
}

fn sources(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path.to_string_lossy().into_owned());
        }
    }
}

/// A test file, or a module's hub: not listed one by one.
fn exempt(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name == "mod.rs"
        || name == "tests.rs"
        || name.ends_with("_tests.rs")
        || name.starts_with("tests_")
        || rel.contains("/tests/")
}

/// Whether `entry` (its path and words) names the source file `rel`.
fn names(entry: &(String, String), rel: &str) -> bool {
    let (path, text) = entry;
    let rest = if let Some(dir) = path.strip_suffix('/') {
        match rel.strip_prefix(&format!("{dir}/")) {
            Some(rest) => rest.to_owned(),
            None => return false,
        }
    } else if let Some(stem) = path.strip_suffix(".rs") {
        // `src/cli.rs` names the files of `src/cli/` as `cli/args.rs`.
        match rel.strip_prefix(&format!("{stem}/")) {
            Some(rest) => format!("{}/{rest}", stem.trim_start_matches("src/")),
            None => return rel == path,
        }
    } else {
        return false;
    };
    let folder = rest.split('/').next().unwrap_or("");
    text.contains(&rest) || (rest.contains('/') && text.contains(&format!("{folder}/")))
}

#[test]
fn the_readme_layout_names_every_source_file_and_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let entries = entries(&readme);
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let prefix = format!("{}/", root.display());
    let mut unnamed: Vec<String> = files
        .iter()
        .map(|f| f.trim_start_matches(&prefix).to_owned())
        .filter(|rel| !exempt(rel) && !entries.iter().any(|e| names(e, rel)))
        .collect();
    unnamed.sort();
    assert!(
        unnamed.is_empty(),
        "README's Layout does not name these files; add each to its folder's entry:\n{}",
        unnamed.join("\n")
    );
    // Every top-level module has an entry, and every entry is a module.
    for name in modules(root) {
        let listed = entries
            .iter()
            .any(|(p, _)| *p == format!("src/{name}/") || *p == format!("src/{name}.rs"));
        assert!(listed, "README's Layout has no entry for module {name}");
    }
    for (path, _) in &entries {
        assert!(
            root.join(path).exists(),
            "README's Layout names {path}, which does not exist"
        );
    }
}

/// The top-level modules `src/lib.rs` declares.
fn modules(root: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            line.strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))
                .and_then(|m| m.strip_suffix(';'))
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn the_architecture_and_lib_tables_speak_of_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = modules(root);
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let start = arch.find("\n## Modules").expect("a Modules section");
    let end = arch[start + 1..]
        .find("\n## ")
        .map_or(arch.len(), |e| e + start + 1);
    let section = &arch[start..end];
    // A module's paragraph opens with its name in bold: **`name`**.
    let named: Vec<&str> = section
        .split("**`")
        .skip(1)
        .filter_map(|s| s.split_once("`**").map(|(name, _)| name))
        .collect();
    for m in &modules {
        assert!(
            named.contains(&m.as_str()),
            "ARCHITECTURE.md's Modules has no paragraph for {m}"
        );
    }
    for n in &named {
        assert!(
            modules.iter().any(|m| m == n),
            "ARCHITECTURE.md's Modules speaks of {n}, which src/lib.rs does not declare"
        );
    }
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let rows: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter_map(|row| row.split(" | ").nth(1))
        .collect();
    for m in &modules {
        assert!(
            rows.iter().any(|r| r.contains(&format!("`{m}`"))),
            "src/lib.rs's table has no row for module {m}"
        );
    }
}

/// Cargo builds only the test targets Cargo.toml names (`autotests =
/// false`): a file put in `tests/` must be a module of `suite.rs`, or it
/// would never run.
#[test]
fn every_test_file_is_part_of_the_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = std::fs::read_to_string(root.join("tests/suite.rs")).unwrap();
    let declared: Vec<&str> = suite
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    // Test binaries of their own, in Cargo.toml.
    let alone = ["suite", "redaction"];
    let mut missing = Vec::new();
    for e in std::fs::read_dir(root.join("tests")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let is_module = if path.is_dir() {
            path.join("mod.rs").exists()
        } else {
            path.extension().is_some_and(|x| x == "rs")
        };
        if is_module && !alone.contains(&name.as_str()) && !declared.contains(&name.as_str()) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/suite.rs does not name these, so they never run: {missing:?}"
    );
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for name in alone {
        assert!(
            cargo.contains(&format!("path = \"tests/{name}.rs\"")),
            "Cargo.toml has no test target for tests/{name}.rs"
        );
    }
}
