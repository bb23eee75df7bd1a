//! The `vipd` binary: `sign` against the vendor's Python sample, `check`
//! exit codes and messages, every example parsed, and `sandbox` +
//! `vip-info` as two real processes.

use std::path::Path;

use crate::common::*;

const DOC_PARAMS: [&str; 5] = [
    "appid=1",
    "debug=1",
    "format=json",
    "notify_url=https://www.wapi.cn/notify_url",
    "qq_number=5666857",
];

/// The vendor's Python 3 sample's signing steps, run by python3 itself.
fn python_sample_sign(params: &[&str], secret: &str) -> String {
    let script = r#"
import hashlib, sys
secret = sys.argv[1]
data = dict(p.split('=', 1) for p in sys.argv[2:])
keysArr = list(data.keys())
keysArr.sort()
md5String = ''
for key in keysArr:
    if data[key]:
        md5String += key + str(data[key])
md5String += secret
m = hashlib.md5()
m.update(md5String.encode(encoding='utf-8'))
print(m.hexdigest())
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(secret)
        .args(params)
        .output()
        .expect("python3 is on the machine (the vendor's sample is Python 3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn sign_matches_the_vendor_python_sample() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let (code, out, err) = run(vipd()
        .arg("sign")
        .arg("--secret-file")
        .arg(&secret_file)
        .args(DOC_PARAMS));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), python_sample_sign(&DOC_PARAMS, SECRET));
    let tricky = [
        "Zeta=1",
        "alpha=a b&c=d",
        "empty=",
        "uni=会员 ✓",
        "plus=1+1%",
    ];
    let (_, out, _) = run(vipd().args(["sign", "--secret", SECRET]).args(tricky));
    assert_eq!(out.trim(), python_sample_sign(&tricky, SECRET));
    let (_, out, _) = run(vipd()
        .args(["sign", "--secret", SECRET, "--mode", "hash"])
        .args(DOC_PARAMS));
    assert_eq!(out.trim(), SECRET);
}

#[test]
fn sign_usage_errors() {
    let (code, _, err) = run(vipd().args(["sign", "--secret", "x", "novalue"]));
    assert_eq!(code, 1);
    assert!(err.contains("\"novalue\" is not KEY=VALUE"), "{err}");
    let (code, _, _) = run(vipd().args(["sign", "appid=1"]));
    assert_eq!(code, 2, "no secret given is a usage error");
}

#[test]
fn check_reports_file_line_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("    sign_mdoe: md5", "");
    let path = write_config(dir.path(), &text);
    let (code, _, err) = run(vipd().arg("check").arg("--config").arg(&path));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("rules.yaml:") && err.contains("did you mean `sign_mode`?"),
        "{err}"
    );
    let (code, out, _) = run(vipd()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .args(["--format", "json"]));
    assert_eq!(code, 78);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["valid"], false);
    assert!(report["errors"][0]["line"].as_u64().unwrap() > 0);
}

#[test]
fn literal_secrets_in_a_readable_file_warn() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        config_text("", "").replace("daemon: { sandbox: true }", "daemon: { sandbox: false }");
    let path = write_config(dir.path(), &text);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, _, err) = run(vipd().arg("check").arg("--config").arg(&path));
        assert_eq!(code, 0);
        // At the secret's own line and column (warnings had none).
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("secret:"))
            .unwrap()
            + 1;
        let col = text.lines().nth(line - 1).unwrap().find("secret:").unwrap() + 1;
        assert!(
            err.contains(&format!(
                "rules.yaml:{line}:{col}: warning: providers.wapi.secret is written literally"
            )),
            "{err}"
        );
        assert!(!err.contains(SECRET), "a warning never shows the value");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, _, err) = run(vipd().arg("check").arg("--config").arg(&path));
        assert!(!err.contains("written literally"), "{err}");
    }
}

/// The `${credential:NAME}` names a configuration uses.
fn credential_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split("${credential:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(n, _)| n.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_example_and_the_default_config_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("rules.yaml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let creds = tempfile::tempdir().unwrap();
        for name in credential_names(&std::fs::read_to_string(&file).unwrap()) {
            std::fs::write(creds.path().join(&name), format!("test-value-{name}\n")).unwrap();
        }
        let (code, out, err) = run(vipd()
            .args(["check", "--strict", "--config"])
            .arg(&file)
            .env("CREDENTIALS_DIRECTORY", creds.path()));
        assert_eq!(code, 0, "{}: {out}{err}", file.display());
    }
}

/// The production example is complete: it has rules, every secret is a
/// credential, and the names it uses are the ones its header lists (the
/// files an operator puts in /etc/vipd/credentials, which the unit hands
/// over as a folder).
#[test]
fn the_production_example_is_complete() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/production.yaml")).unwrap();
    assert!(
        !text.contains("${env:") && !text.contains("${file:"),
        "credentials only"
    );
    let names = credential_names(&text);
    let header: String = text
        .lines()
        .skip_while(|l| !l.contains("Credentials it names:"))
        .take_while(|l| l.starts_with('#'))
        .collect();
    for name in &names {
        let per_account = ["_token", "_refresh"]
            .iter()
            .any(|kind| name.ends_with(kind) && header.contains(&format!("<name>{kind}")));
        assert!(
            header.contains(name.as_str()) || per_account,
            "{name} is not in the header: {header}"
        );
    }
    let unit = std::fs::read_to_string(root.join("packaging/vipd.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "LoadCredential=vipd:/etc/vipd/credentials"),
        "the unit hands over the whole credentials folder"
    );
    let (code, out, err) = run(vipd()
        .args(["check", "--config"])
        .arg(root.join("examples/production.yaml"))
        .env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 rule"), "{out}");
}

/// Outside the unit (an operator's shell, no $CREDENTIALS_DIRECTORY) a
/// credential only the service can read is a located warning, and an
/// error with --strict; under the unit a missing one is an error.
#[test]
fn missing_credentials_are_warnings_outside_the_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let production = root.join("examples/production.yaml");
    let (code, _, err) = run(vipd()
        .args(["check", "--config"])
        .arg(&production)
        .env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("production.yaml:30:5: warning: provider wapi: secret: credential wapi_secret cannot be read here"),
        "{err}"
    );
    let (code, _, err) = run(vipd()
        .args(["check", "--strict", "--config"])
        .arg(&production)
        .env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("production.yaml:30:5: provider wapi: secret"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run(vipd()
        .args(["check", "--config"])
        .arg(&production)
        .env("CREDENTIALS_DIRECTORY", empty.path()));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("credential alice_token not found"), "{err}");
}

#[test]
fn sandbox_and_vip_info_as_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_text("", ""));
    let (mut sandbox, url) = sandbox_process::spawn_sandbox(&path, "info");
    let (code, out, err) = run(vipd().arg("vip-info").arg("--config").arg(&path).args([
        "--account",
        "alice",
        "--json",
        "--base-url",
        &url,
    ]));
    let (text_code, text, _) = run(vipd().arg("vip-info").arg("--config").arg(&path).args([
        "--account",
        "bob",
        "--base-url",
        &url,
    ]));
    let (missing_code, _, missing) = run(vipd().arg("vip-info").arg("--config").arg(&path).args([
        "--account",
        "alcie",
        "--base-url",
        &url,
    ]));
    sandbox.kill().unwrap();
    sandbox.wait().unwrap();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["account"], "alice");
    assert_eq!(v["is_qq_vip"], true);
    let end = v["memberships"]["qq_vip"]["end"].as_i64().unwrap();
    let now = crate::common::now();
    assert!((end - now - 2 * 86_400).abs() < 30, "{end} vs {now}");
    assert_eq!(text_code, 0);
    assert!(
        text.contains("qq_vip        ends") && text.contains(" ago)"),
        "{text}"
    );
    assert!(text.contains("qq_haohua     none"), "{text}");
    assert_eq!(missing_code, 1);
    assert!(
        missing.contains("no account named alcie (did you mean alice?)"),
        "{missing}"
    );
}

/// Every file in tests/fixtures/invalid starts with `# expect L:C: TEXT`:
/// the check must fail with exit 78 and say TEXT at exactly line L,
/// column C of that file (the offending key's own position).
#[test]
fn invalid_fixtures_fail_with_their_message_at_their_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let (at, expect) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect "))
            .and_then(|l| l.split_once(": "))
            .unwrap_or_else(|| panic!("{} lacks a `# expect L:C: TEXT` line", path.display()));
        let (code, _, err) = run(vipd()
            .arg("check")
            .arg("--config")
            .arg(&path)
            .env("VIPD_FIXTURE_SECRET", "fixture-secret-value")
            .env_remove("VIPD_FIXTURE_MISSING"));
        assert_eq!(code, 78, "{}: {err}", path.display());
        let located = format!("{}:{at}: ", path.display());
        assert!(
            err.lines()
                .any(|l| l.starts_with(&located) && l.contains(expect)),
            "{}: expected {expect:?} at {at} in:\n{err}",
            path.display()
        );
        assert!(
            !err.contains("fixture-secret-value"),
            "errors never show secrets: {err}"
        );
        seen += 1;
    }
    assert!(seen >= 19, "only {seen} fixtures");
}

/// Three mistakes in three places are three errors in one run, each at
/// its own line (serde stopped at the first; a bad value was reported at
/// the start of its rule).
#[test]
fn every_error_of_a_file_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml"))
        .unwrap()
        .replacen("renew_before: 3d", "renew_before: 3x", 1)
        .replacen("max_price: 20.00", "max_price: 20.005", 1)
        .replacen("tags: [staff]", "tagz: [staff]", 1);
    let path = write_config(dir.path(), &text);
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let (code, _, err) = run(vipd().arg("check").arg("--config").arg(&path));
    assert_eq!(code, 78, "{err}");
    for (needle, says) in [
        ("renew_before: 3x", "invalid duration \"3x\""),
        ("max_price: 20.005", "more than two decimals"),
        ("tagz: [staff]", "unknown field `tagz`"),
    ] {
        let at = format!("rules.yaml:{}:", line_of(needle));
        assert!(
            err.lines().any(|l| l.contains(&at) && l.contains(says)),
            "{says} not at {at}:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn check_loads_the_scripts_and_names_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_text("", ""));
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/ok.lua"),
        "vipd.on('order_settled', function() end)",
    )
    .unwrap();
    let (code, out, err) = run(vipd().arg("check").arg("--config").arg(&path));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 plugin: ok"), "{out}");
    // Loading has no side effects: a plugin that would write at load time
    // fails `check` instead of writing.
    std::fs::write(
        dir.path().join("scripts/writes.lua"),
        "\nvipd.kv.set('x', 1)\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("scripts/syntax.lua"), "local x = = 1").unwrap();
    let (code, _, err) = run(vipd().arg("check").arg("--config").arg(&path));
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("syntax.lua:1:"), "{err}");
    assert!(err.contains("writes.lua:2:"), "{err}");
    assert!(err.contains("not while the plugin loads"), "{err}");
    let (_, out, _) = run(vipd()
        .arg("check")
        .args(["--format", "json"])
        .arg("--config")
        .arg(&path));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"].as_array().unwrap().len(), 2, "{report:#}");
    assert_eq!(report["errors"][0]["line"], 1, "{report:#}");
}

/// A plugin that cannot be read (a dangling or looping symlink, a pipe)
/// fails `check` with its path, never passes as "no such plugin"; a folder
/// named `*.lua` and a `*.d.lua` declaration file are not plugins.
#[test]
fn an_unreadable_plugin_fails_check_with_its_path() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_text("", ""));
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(scripts.join("folder.lua")).unwrap();
    std::fs::write(
        scripts.join("ok.lua"),
        "vipd.on('order_settled', function() end)",
    )
    .unwrap();
    std::fs::write(scripts.join("types.d.lua"), "---@meta").unwrap();
    let (code, out, err) = run(vipd().arg("check").arg("--config").arg(&path));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 plugin: ok"), "{out}");
    symlink(dir.path().join("gone.lua"), scripts.join("veto.lua")).unwrap();
    symlink(scripts.join("loop.lua"), scripts.join("loop.lua")).unwrap();
    let fifo = std::ffi::CString::new(scripts.join("pipe.lua").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (code, out, err) = run(vipd().arg("check").arg("--config").arg(&path));
    assert_eq!(code, 78, "{out}{err}");
    for (file, why) in [
        ("veto.lua", "No such file or directory"),
        ("loop.lua", "symbolic links"),
        ("pipe.lua", "not a regular file"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("scripts/{file}")))
            .unwrap_or_else(|| panic!("{file} is not named: {err}"));
        assert!(line.contains(why), "{line}");
    }
    assert!(err.contains("gone.lua"), "the symlink's target: {err}");
}

/// `status` and `plan` with no daemon and no store (the wrong folder, or
/// before the first start) never create one: `status` says where it
/// looked, `plan` plans on a throwaway store and says so.
#[test]
fn status_and_plan_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml"),
        dir.path().join("rules.yaml"),
    )
    .unwrap();
    let path = dir.path().join("rules.yaml");
    let (code, _, err) = run(vipd().args(["status", "--config"]).arg(&path));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no store at"), "{err}");
    assert!(err.contains("--state-dir"), "{err}");
    let (code, out, err) = run(vipd().args(["plan", "--config"]).arg(&path));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("planning as if no order was ever made"),
        "{err}"
    );
    assert!(out.contains("DUE   keep-staff-vip / alice"), "{out}");
    // A past time is a question like any other (it once gave exit 1).
    let (code, out, err) = run(vipd()
        .args(["plan", "--at", "2026-01-01T00:00:00Z", "--config"])
        .arg(&path));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("keep-staff-vip / alice"), "{out}");
    let (code, _, err) = run(vipd().args(["orders", "--config"]).arg(&path));
    assert_eq!(code, 1, "{err}");
    assert!(
        !dir.path().join("state").exists(),
        "a store was created beside the configuration"
    );
}

/// Shell completions and a man page from clap's own generators, and
/// `VIPD_CONFIG` as the default for `--config`.
#[test]
fn completions_man_page_and_vipd_config() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(vipd().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            out.contains("recharge") && out.contains("config"),
            "{shell}: {out}"
        );
    }
    let (code, man, _) = run(vipd().arg("man"));
    assert_eq!(code, 0);
    assert!(man.starts_with(".ie") || man.contains(".TH vipd"), "{man}");
    assert!(man.contains("Keeps paid memberships from lapsing"), "{man}");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules.yaml");
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out, err) = run(vipd()
        .arg("check")
        .current_dir(elsewhere.path())
        .env("VIPD_CONFIG", rules));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rules.yaml: valid"), "{out}");
    // lua-types names a place `check` does not load as a plugin.
    let (_, help, _) = run(vipd().args(["lua-types", "--help"]));
    assert!(help.contains("scripts/types/vipd.d.lua"), "{help}");
}
