//! The fast path reads what `yaml_serde` reads, or declines.

use super::*;
use serde::Deserialize;

/// `text` read by both; the fast path must agree or decline.
fn same<T: DeserializeOwned + PartialEq + std::fmt::Debug>(text: &str) -> Option<T> {
    let ours = from_str::<T>(text);
    if let Some(ours) = &ours {
        let theirs = yaml_serde::from_str::<T>(text)
            .unwrap_or_else(|e| panic!("yaml_serde refuses what the fast path read ({e}): {text}"));
        assert_eq!(ours, &theirs, "{text}");
    }
    ours
}

#[test]
fn plain_scalars_are_typed_as_yaml_serde_types_them() {
    let scalars = [
        "",
        "~",
        "null",
        "Null",
        "NULL",
        "nULL",
        "true",
        "True",
        "TRUE",
        "tRUE",
        "false",
        "yes",
        "no",
        "on",
        "0",
        "-0",
        "+0",
        "5",
        "+5",
        "-5",
        "+-5",
        "-+5",
        "-",
        "+",
        "0x1F",
        "0X1F",
        "-0x1F",
        "+0x1F",
        "0x",
        "0x-5",
        "0o17",
        "-0o17",
        "0b101",
        "-0b101",
        "0b2",
        "0123",
        "-0123",
        "+0123",
        "00",
        "0.5",
        "-0.5",
        ".5",
        "5.",
        "1e3",
        "1E3",
        "-1.5e-3",
        "1_000",
        ".inf",
        "-.inf",
        "+.inf",
        ".Inf",
        ".INF",
        "inf",
        "infinity",
        ".nan",
        ".NaN",
        "nan",
        "+.nan",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "2026-12-05",
        "12:30",
        "1.2.3",
        "a b",
        "héllo",
        "0x1F.5",
    ];
    for s in scalars {
        let text = format!("k: {s}\n");
        match same::<yaml_serde::Value>(&text) {
            Some(_) => {}
            // Integers wider than 64 bits are left to yaml_serde, and
            // saphyr-parser reads `k: -` as a misplaced list.
            None => assert!(
                s == "-" || s.trim_start_matches(['-', '+']).len() >= 19,
                "declined {s:?}: {:?}",
                read::<yaml_serde::Value>(&text).err()
            ),
        }
    }
}

#[test]
fn quoted_and_block_scalars_are_strings() {
    for text in [
        "k: '5'\n",
        "k: \"true\"\n",
        "k: \"a\\tb\\u00e9\"\n",
        "k: 'it''s'\n",
        "k: |\n  two\n  lines\n",
        "k: >\n  folded\n  text\n",
        "k: ''\n",
        "k: \"~\"\n",
    ] {
        assert!(same::<yaml_serde::Value>(text).is_some(), "{text}");
    }
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed {
    n: u64,
    i: i64,
    f: f64,
    b: bool,
    s: String,
    o: Option<String>,
    none: Option<u32>,
    #[serde(default)]
    list: Vec<String>,
    #[serde(default)]
    empty: Vec<String>,
    unit: Kind,
    #[serde(deserialize_with = "super::super::raw::string_or_number")]
    either: String,
    tagged: Tagged,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    One,
    Two,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Tagged {
    A { x: u32 },
    B { y: String },
}

#[test]
fn typed_fields_read_as_yaml_serde_reads_them() {
    let text = "n: 0x10\ni: -3\nf: 2.50\nb: True\ns: 007\no: ''\nnone: ~\nlist: [a, 'b', 3]\nempty:\nunit: two\neither: 5666857\ntagged: { kind: b, y: twelve }\n";
    let t = same::<Typed>(text).unwrap_or_else(|| panic!("{:?}", read::<Typed>(text).err()));
    assert_eq!(
        (t.n, t.i, t.s.as_str(), t.o.as_deref()),
        (16, -3, "007", Some(""))
    );
    assert_eq!((t.unit, t.either.as_str()), (Kind::Two, "5666857"));
    assert_eq!(t.tagged, Tagged::B { y: "twelve".into() });
    assert!(t.empty.is_empty() && t.list == ["a", "b", "3"]);
}

#[test]
fn what_yaml_serde_refuses_is_declined() {
    for text in [
        // The wrong types, unknown and missing fields, unknown variants.
        "n: -1\ni: 1\nf: 1\nb: true\ns: x\no: x\nnone: 1\nunit: one\neither: 1\ntagged: { kind: a, x: 1 }\n",
        "n: 1\ni: 1\nf: 1\nb: yes\ns: x\no: x\nnone: 1\nunit: one\neither: 1\ntagged: { kind: a, x: 1 }\n",
        "n: 1\ni: 1\nf: 1\nb: true\ns: x\no: x\nnone: 1\nunit: three\neither: 1\ntagged: { kind: a, x: 1 }\n",
        "n: 1\ni: 1\nf: 1\nb: true\ns: x\no: x\nnone: 1\nunit: one\neither: 1\ntagged: { kind: a, x: 1 }\nextra: 1\n",
        "n: 1\n",
        "n: '1'\ni: 1\nf: 1\nb: true\ns: x\no: x\nnone: 1\nunit: one\neither: 1\ntagged: { kind: a, x: 1 }\n",
        // A number where a tagged enum wants text (serde buffers it typed).
        "n: 1\ni: 1\nf: 1\nb: true\ns: x\no: x\nnone: 1\nunit: one\neither: 1\ntagged: { kind: b, y: 12 }\n",
        // Syntax errors.
        "n: [1\n",
        "n: 1\n n: 2\n",
    ] {
        assert!(from_str::<Typed>(text).is_none(), "{text}");
        assert!(yaml_serde::from_str::<Typed>(text).is_err(), "{text}");
    }
}

#[test]
fn anchors_tags_merges_and_document_counts_are_left_to_yaml_serde() {
    for text in [
        "a: &x 1\nb: *x\n",
        "a: !!str 5\n",
        "a: !custom 5\n",
        "base: &b { x: 1 }\nc:\n  <<: *b\n",
        "<<: { x: 1 }\n",
        "a: 1\n---\na: 2\n",
        "",
        "# only a comment\n",
        "- a\n- &y b\n",
    ] {
        assert!(from_str::<yaml_serde::Value>(text).is_none(), "{text:?}");
    }
    // Too deep for yaml_serde is too deep here too.
    let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
    assert!(from_str::<yaml_serde::Value>(&deep).is_none());
    let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    assert!(same::<yaml_serde::Value>(&ok).is_some());
}

#[test]
fn every_shipped_configuration_takes_the_fast_path_and_reads_the_same() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("rules.yaml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    assert!(files.len() > 2, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        // Files that are not configurations (a test timeline, a plugin's
        // settings) are read by other code.
        let Ok(theirs) = yaml_serde::from_str::<crate::config::raw::RawConfig>(&text) else {
            continue;
        };
        let ours = from_str::<crate::config::raw::RawConfig>(&text)
            .unwrap_or_else(|| panic!("{} declined", path.display()));
        assert_eq!(
            format!("{ours:?}"),
            format!("{theirs:?}"),
            "{}",
            path.display()
        );
    }
}

#[test]
fn a_long_accounts_list_takes_the_fast_path() {
    let mut text = String::from(
        "providers:\n  qq: { kind: qq_connect, base_url: \"http://127.0.0.1:1\", oauth_consumer_key: 1 }\naccounts:\n",
    );
    for i in 0..2000 {
        text.push_str(&format!(
            "  - {{ name: a{i}, qq_number: \"{}\", openid: O{i}, access_token: t{i} }}\n",
            100_000 + i
        ));
    }
    let raw = from_str::<crate::config::raw::RawConfig>(&text).expect("fast path");
    assert_eq!(raw.accounts.len(), 2000);
}
