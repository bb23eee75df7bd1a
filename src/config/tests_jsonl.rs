//! `accounts_file:`: accounts from JSON Lines, and their located errors.

use super::*;

const BASE: &str = r#"
providers:
  qq: { kind: qq_connect, base_url: "https://graph.qq.com", oauth_consumer_key: 101234567 }
  wapi: { kind: recharge, base_url: "https://vendor.example/", appid: 1, secret: "${env:VIPD_TEST_JSONL_SECRET}" }
products:
  qq_vip_month: { provider: wapi, path: /api/164/310, extends: qq_vip, adds: 30d, max_price: 20.00 }
accounts:
  - { name: alice, qq_number: 5666857, openid: OPENID1, access_token: tok, tags: [staff] }
accounts_file: more/accounts.jsonl
rules:
  - { name: staff, accounts: { tags: [staff] }, check: { every: 1h }, membership: qq_vip, renew_before: 3d, product: qq_vip_month }
"#;

/// rules.yaml (BASE) and `more/accounts.jsonl` holding `lines`.
fn files(lines: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    // SAFETY: set before any thread of this test reads it; every test
    // here sets the same value.
    unsafe { std::env::set_var("VIPD_TEST_JSONL_SECRET", "s3cret") };
    unsafe { std::env::set_var("VIPD_TEST_JSONL_TOKEN", "tok-from-env") };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("more")).unwrap();
    std::fs::write(dir.path().join("more/accounts.jsonl"), lines).unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, BASE).unwrap();
    (dir, path)
}

#[test]
fn accounts_come_from_a_json_lines_file_too() {
    let (_dir, path) = files(concat!(
        r#"{"name": "bob", "qq_number": 10002, "openid": "O2", "access_token": "${env:VIPD_TEST_JSONL_TOKEN}", "tags": ["staff"]}"#,
        "\n\n",
        r#"{"name": "carol", "qq_number": "10003", "openid": "O3", "access_token": "tok3", "refresh_token": "rt3"}"#,
        "\n",
    ));
    let c = Config::load(&path).unwrap();
    let names: Vec<&str> = c.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["alice", "bob", "carol"],
        "YAML first, then line order"
    );
    let bob = c.account("bob").unwrap();
    assert_eq!(bob.qq_number, "10002", "a number reads as text");
    assert_eq!(bob.access_token.expose(), "tok-from-env");
    assert_eq!(bob.provider, "qq", "the only reader");
    let carol = c.account("carol").unwrap();
    assert_eq!(carol.refresh_token.as_ref().unwrap().expose(), "rt3");
    // A rule selects them like any account.
    let staff: Vec<&str> = c
        .accounts_of(&c.rules[0])
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(staff, ["alice", "bob"]);
    let file = c.accounts_file.as_ref().unwrap();
    assert_eq!(
        file.path,
        path.parent().unwrap().join("more/accounts.jsonl")
    );
    assert_eq!((file.accounts, file.literal_secrets), (2, 2));
    // Literal secrets of the file are counted, never listed one by one.
    assert_eq!(c.literal_secrets, ["accounts.alice.access_token"]);
}

#[test]
fn each_bad_line_is_an_error_at_its_file_and_line() {
    let (_dir, path) = files(concat!(
        r#"{"name": "bob", "qq_number": 10002, "openid": "O2", "access_token": "t"}"#,
        "\n",
        r#"{"name": "dave", "qq_number": "12x", "openid": "O4", "access_token": "t"}"#,
        "\n",
        "not json at all\n",
        r#"{"name": "alice", "qq_number": 1, "openid": "O", "access_token": "t"}"#,
        "\n",
        r#"{"name": "erin", "qq_number": 5, "openid": "O5", "access_token": "t", "colour": "red"}"#,
        "\n",
        r#"{"name": "fay", "qq_number": 6, "openid": "O6", "access_token": "${env:VIPD_TEST_JSONL_UNSET}"}"#,
        "\n",
    ));
    let errors = Config::load(&path).unwrap_err().0;
    let file = path.parent().unwrap().join("more/accounts.jsonl");
    let at = |line: usize| {
        errors
            .iter()
            .find(|e| e.line == Some(line))
            .unwrap_or_else(|| panic!("nothing at line {line}: {errors:#?}"))
    };
    for e in &errors {
        assert_eq!(e.file, file, "{e}");
    }
    assert_eq!(errors.len(), 5, "{errors:#?}");
    for (line, says) in [
        (2, "account dave: qq_number"),
        (3, "not an account: expected"),
        (4, "account alice: the name is used twice"),
        (5, "unknown field `colour`"),
        (6, "VIPD_TEST_JSONL_UNSET"),
    ] {
        assert!(at(line).message.contains(says), "{}", at(line));
    }
    assert!(at(3).column.is_some(), "a JSON error has its column");
    // The error text names file and line as the YAML's errors do.
    assert!(at(4).to_string().contains("accounts.jsonl:4"), "{}", at(4));
}

#[test]
fn a_missing_file_is_an_error_at_its_key_and_many_bad_lines_are_summed_up() {
    let (dir, path) = files("");
    std::fs::remove_file(dir.path().join("more/accounts.jsonl")).unwrap();
    let errors = Config::load(&path).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].file, path);
    assert_eq!(errors[0].line, Some(9), "{}", errors[0]);
    assert!(errors[0].message.contains("cannot read"), "{}", errors[0]);

    let mut at_dev = std::fs::read_to_string(&path).unwrap();
    at_dev = at_dev.replace("more/accounts.jsonl", "/dev/zero");
    std::fs::write(&path, at_dev).unwrap();
    let errors = Config::load(&path).unwrap_err().0;
    assert!(
        errors[0]
            .message
            .contains("/dev/zero is not a regular file"),
        "read without end: {}",
        errors[0]
    );
    std::fs::write(&path, BASE).unwrap();

    let junk = "{\n".repeat(1000);
    std::fs::write(dir.path().join("more/accounts.jsonl"), junk).unwrap();
    let errors = Config::load(&path).unwrap_err().0;
    assert_eq!(errors.len(), 21, "twenty, then one line for the rest");
    assert!(
        errors[20].message.starts_with("980 more lines"),
        "{}",
        errors[20]
    );
}

/// A line holding a secret in clear, in a file others can read, is
/// warned about once for the file.
#[test]
fn literal_tokens_in_a_readable_file_warn_once() {
    use std::os::unix::fs::PermissionsExt;
    let line = |i: usize| {
        format!(r#"{{"name": "u{i}", "qq_number": {i}, "openid": "O", "access_token": "t{i}"}}"#)
    };
    let (dir, path) = files(&(1..=50).map(line).collect::<Vec<_>>().join("\n"));
    let file = dir.path().join("more/accounts.jsonl");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = |c: &Config| {
        c.warnings(1_780_000_000)
            .into_iter()
            .filter(|w| w.contains("accounts_file"))
            .collect::<Vec<_>>()
    };
    let c = Config::load(&path).unwrap();
    let w = warned(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("holds 50 secrets"), "{}", w[0]);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(warned(&Config::load(&path).unwrap()).is_empty());
}
