//! `vipd test` as an operator runs it: exit codes, the report, JUnit XML,
//! the schema of test files, and a broken rule caught with its story.

mod common;

use std::path::Path;

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A folder holding a copy of rules.yaml (with `broken` applied) and of
/// the shipped test file for it, laid out as in the repository.
fn copy_of_the_default_rules_test(broken: Option<(&str, &str)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = std::fs::read_to_string(root().join("rules.yaml")).unwrap();
    if let Some((from, to)) = broken {
        assert!(rules.contains(from), "{from}");
        rules = rules.replace(from, to);
    }
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    std::fs::create_dir_all(dir.path().join("examples/tests")).unwrap();
    std::fs::copy(
        root().join("examples/tests/default-rules.test.yaml"),
        dir.path().join("examples/tests/default-rules.test.yaml"),
    )
    .unwrap();
    dir
}

/// The shipped test passes (exit 0) and its JUnit XML says so; with the
/// product's `adds` broken, it fails (exit 1) at the step's line, saying
/// what was expected and what was found, with the order's story.
#[test]
fn a_broken_rule_fails_its_test_with_the_step_and_the_trace() {
    let dir = copy_of_the_default_rules_test(None);
    let junit = dir.path().join("out.xml");
    let (code, out, err) = run(vipd()
        .current_dir(dir.path())
        .args(["test", "examples/tests", "--junit"])
        .arg(&junit));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 tests: 5 passed, 0 failed"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"5\" failures=\"0\""), "{xml}");

    let dir = copy_of_the_default_rules_test(Some(("adds: 30d", "adds: 10d")));
    let junit = dir.path().join("out.xml");
    let (code, out, err) = run(vipd()
        .current_dir(dir.path())
        .args(["test", "examples/tests", "--junit"])
        .arg(&junit));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL  examples/tests/default-rules.test.yaml: alice is renewed at once"),
        "{out}"
    );
    assert!(
        out.contains("examples/tests/default-rules.test.yaml:10:9: expected alice's qq_vip to end 32d after the start"),
        "{out}"
    );
    assert!(
        out.contains("got 2027-01-27T08:00:00Z (12d after the start)"),
        "{out}"
    );
    assert!(
        out.contains("transition   succeeded          callback: success"),
        "{out}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<failure message=\"examples/tests/default-rules.test.yaml:10:9: expected alice&apos;s qq_vip"), "{xml}");
}

/// A test file with a mistake is exit 78 naming its line, before anything
/// runs; so is a folder with no test file.
#[test]
fn an_invalid_test_file_is_exit_78_at_its_line() {
    let dir = copy_of_the_default_rules_test(None);
    let bad = dir.path().join("bad.test.yaml");
    std::fs::write(
        &bad,
        "tests:\n  - name: t\n    rules: rules.yaml\n    timeline:\n      - advance: soon\n",
    )
    .unwrap();
    let (code, out, err) = run(vipd().arg("test").arg(&bad));
    assert_eq!(code, 78, "{out}{err}");
    assert!(err.contains("bad.test.yaml:5:"), "{err}");
    assert!(err.contains("invalid duration \"soon\""), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run(vipd().arg("test").arg(empty.path()));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no test files"), "{err}");
}

/// `vipd schema --tests` is the committed `vipd-test.schema.json`, and
/// every shipped test file is valid against it.
#[test]
fn the_test_schema_is_committed_and_fits_the_shipped_tests() {
    let (code, out, _) = run(vipd().args(["schema", "--tests"]));
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(root().join("vipd-test.schema.json")).unwrap();
    assert_eq!(
        committed, out,
        "run `vipd schema --tests > vipd-test.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut seen = 0;
    for e in std::fs::read_dir(root().join("examples/tests")).unwrap() {
        let path = e.unwrap().path();
        let doc: serde_json::Value =
            yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        seen += 1;
    }
    assert!(seen >= 3);
    let two_keys = serde_json::json!({"tests": [{"name": "t", "rules": "r.yaml",
        "timeline": [{"advance": "1h", "reload": "x.yaml"}]}]});
    assert!(!validator.is_valid(&two_keys));
}
