//! The generated files and the schema: `vipd.schema.json` and the Lua
//! types committed current, every shipped YAML valid against the schema
//! and naming it with a modeline that resolves, every key described.

use std::path::{Path, PathBuf};

use crate::common::*;

/// The YAML files the project ships: `rules.yaml` and `examples/*.yaml`.
fn shipped_yaml() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("rules.yaml")];
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            files.push(p);
        }
    }
    files
}

fn yaml_as_json(path: &Path) -> serde_json::Value {
    yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn schema_accepts_every_example_and_rejects_bad_keys() {
    let (code, out, _) = run(vipd().arg("schema"));
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for f in &shipped_yaml() {
        let doc = yaml_as_json(f);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
    for bad in [
        "unknown-key",
        "unknown-kind",
        "bad-duration",
        "rule-without-accounts",
        "bad-knob",
    ] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = yaml_as_json(&root.join(format!("tests/fixtures/invalid/{bad}.yaml")));
        assert!(!validator.is_valid(&doc), "{bad} should not validate");
    }
}

#[test]
fn committed_schema_file_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_, out, _) = run(vipd().arg("schema"));
    let committed = std::fs::read_to_string(root.join("vipd.schema.json")).unwrap();
    assert_eq!(committed, out, "run `vipd schema > vipd.schema.json`");
}

#[test]
fn committed_lua_types_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, _) = run(vipd().arg("lua-types"));
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(root.join("scripts/types/vipd.d.lua")).unwrap();
    assert_eq!(
        committed, out,
        "run `vipd lua-types > scripts/types/vipd.d.lua`"
    );
}

/// Every shipped YAML names the schema with a modeline that resolves from
/// where the file is (examples/plugins.yaml pointed at ./vipd.schema.json,
/// which is not in examples/).
#[test]
fn every_yaml_has_a_schema_modeline_that_resolves() {
    for f in shipped_yaml() {
        let text = std::fs::read_to_string(&f).unwrap();
        let target = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{}: no schema modeline on line 1", f.display()));
        let resolved = f.parent().unwrap().join(target);
        assert!(
            resolved.is_file(),
            "{}: {target} does not resolve",
            f.display()
        );
    }
}

/// The schema is generated from the configuration types: every key has a
/// description (tag discriminators excepted), objects refuse unknown keys,
/// money is a multiple of 0.01, defaults are stated, and it has a real $id.
#[test]
fn the_schema_describes_every_key() {
    let (code, out, _) = run(vipd().arg("schema"));
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(schema["$id"].as_str().unwrap().starts_with("https://"));
    fn walk(
        node: &serde_json::Value,
        path: &str,
        keys: &mut usize,
        missing: &mut Vec<String>,
        open: &mut Vec<String>,
        defaults: &mut usize,
    ) {
        let Some(obj) = node.as_object() else { return };
        if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
            // Free-form maps (plugin settings) aside, objects with keys
            // refuse others.
            if obj.get("additionalProperties") != Some(&serde_json::Value::Bool(false)) {
                open.push(path.to_owned());
            }
            for (k, v) in props {
                *keys += 1;
                if v.get("default").is_some() {
                    *defaults += 1;
                }
                if v.get("description").is_none() && v.get("const").is_none() {
                    missing.push(format!("{path}.{k}"));
                }
                walk(v, &format!("{path}.{k}"), keys, missing, open, defaults);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(v) = obj.get(key) {
                walk(v, path, keys, missing, open, defaults);
            }
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            for v in obj
                .get(key)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                walk(v, path, keys, missing, open, defaults);
            }
        }
    }
    let (mut keys, mut missing, mut open, mut defaults) = (0, Vec::new(), Vec::new(), 0);
    walk(
        &schema,
        "",
        &mut keys,
        &mut missing,
        &mut open,
        &mut defaults,
    );
    for (name, def) in schema["$defs"].as_object().unwrap() {
        walk(
            def,
            &format!("#{name}"),
            &mut keys,
            &mut missing,
            &mut open,
            &mut defaults,
        );
    }
    assert!(keys > 100, "{keys} keys");
    assert!(
        missing.is_empty(),
        "keys without a description: {missing:#?}"
    );
    assert!(
        open.is_empty(),
        "objects that accept unknown keys: {open:#?}"
    );
    assert!(defaults >= 50, "only {defaults} defaults stated");
    assert_eq!(
        schema["$defs"]["money"]["oneOf"][0]["multipleOf"],
        serde_json::json!(0.01)
    );
}
