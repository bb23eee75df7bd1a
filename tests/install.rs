//! The README's install steps, followed literally into a temporary root;
//! then the unit's own commands (`ExecStartPre`, `ExecStart`), read from
//! packaging/vipd.service, run as an unprivileged UID that owns nothing,
//! with the environment systemd gives them (`CREDENTIALS_DIRECTORY` from
//! `LoadCredential=`, `STATE_DIRECTORY`, `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`); the daemon renews an account against the sandbox and
//! stops cleanly; and the operator's host-side `status` finds it.
//!
//! Real systemd cannot run the unit here (`DynamicUser` and
//! `ProtectSystem` need namespaces this machine refuses: 226/NAMESPACE),
//! so this emulates what systemd does for it. Needs root (to install
//! files as root and drop to the service's UID); it says so and passes
//! without root.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::sandbox_process::spawn_sandbox;

/// The dynamic user systemd would allocate.
const UID: u32 = 61234;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the first ```sh block after `heading` in the README.
fn readme_block(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let from = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading}"));
    let block = readme[from..]
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    block.lines().map(str::to_owned).collect()
}

/// Runs README lines as root, one shell, with the system's paths moved
/// into `root` and `vipd` the binary under test; `skip` lines are left
/// out (the build, and lines the test runs later).
fn run_readme(lines: &[String], root: &Path, skip: impl Fn(&str) -> bool) {
    let mut script = String::from("set -e\n");
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || skip(line) {
            continue;
        }
        let line = rooted(&format!(" {line}"), root)
            .trim()
            .replace("target/release/vipd", env!("CARGO_BIN_EXE_vipd"));
        let line = match line.strip_prefix("vipd ") {
            Some(rest) => format!("{} {rest}", env!("CARGO_BIN_EXE_vipd")),
            None => line,
        };
        script.push_str(&line);
        script.push('\n');
    }
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(repo())
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README steps failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A path of the real system, inside the temporary root.
fn rooted(line: &str, root: &Path) -> String {
    let r = root.display();
    line.replace(" /usr/", &format!(" {r}/usr/"))
        .replace(" /etc/", &format!(" {r}/etc/"))
        .replace(" /var/", &format!(" {r}/var/"))
}

/// The value of every `Key=` line of the unit.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

fn as_service(cmd: &str, root: &Path, env: &[(String, String)]) -> Command {
    let words: Vec<String> = rooted(&format!(" {cmd}"), root)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={UID}"),
        &format!("--regid={UID}"),
        "--clear-groups",
        "--",
    ])
    .args(&words)
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .current_dir("/");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

#[tokio::test]
async fn the_readme_install_runs_as_the_units_dynamic_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to install as root and drop to UID {UID}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["usr/bin", "etc/systemd/system", "var/lib", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }

    // 1. The install steps, literally (the build is the test's own).
    run_readme(&readme_block("**Install by hand**"), &root, |l| {
        l.starts_with("cargo build")
    });
    let etc = root.join("etc/vipd");
    assert!(root.join("usr/bin/vipd").exists());

    // 2. What the operator does by hand: edit rules.yaml (here: point it
    // at the sandbox, use free ports and the temporary root) and write
    // one credential file per secret.
    let config = etc.join("rules.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let names: Vec<String> = {
        let mut n: Vec<String> = text
            .split("${credential:")
            .skip(1)
            .filter_map(|r| r.split_once('}').map(|(n, _)| n.to_owned()))
            .collect();
        n.sort();
        n.dedup();
        n
    };
    // The README's credential lines write some; the operator writes the
    // rest the same way; then its `check --strict` line, as root.
    let credentials = readme_block("**Credentials.**");
    run_readme(&credentials, &root, |l| l.starts_with("vipd check"));
    let mut from_readme = 0;
    for name in &names {
        let path = etc.join("credentials").join(name);
        if path.exists() {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode,
                0o600,
                "{}: the README's umask makes it 0600",
                path.display()
            );
            from_readme += 1;
        } else {
            std::fs::write(&path, format!("value-of-{name}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    assert!(
        from_readme >= 2,
        "the README's credential lines wrote {from_readme}"
    );
    run_readme(&credentials, &root, |l| !l.starts_with("vipd check"));
    let sandbox_config = tmp.path().join("sandbox.yaml");
    // The sandbox must know the accounts' tokens: it reads the same
    // file with the credentials, as root, plus memberships and prices.
    let pointed = |text: &str, upstream: &str| {
        text.replace("https://graph.qq.com", upstream)
            .replace("https://vendor.example", upstream)
            .replace("0.0.0.0:9611", "127.0.0.1:0")
            .replace("127.0.0.1:9610", "127.0.0.1:0")
            .replace("/etc/vipd", &etc.display().to_string())
            .replace(
                "/var/lib/vipd",
                &root.join("var/lib/vipd").display().to_string(),
            )
    };
    let sandbox_text = format!(
        "{}\nsandbox:\n  mode: sync\n  prices: {{ qq_vip_month: 15.00, qq_svip_month: 25.00 }}\n  memberships:\n    alice: {{ qq_vip: \"2d\" }}\n    bob: {{ qq_vip: \"60d\" }}\n",
        pointed(&text, "http://127.0.0.1:1").replace(
            "${credential:",
            &format!("${{file:{}/", etc.join("credentials").display())
        )
    );
    std::fs::write(&sandbox_config, &sandbox_text).unwrap();
    let (mut sandbox, upstream) = spawn_sandbox(&sandbox_config, "warn");
    std::fs::write(&config, pointed(&text, &upstream)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // 3. What systemd does for the unit.
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/vipd.service")).unwrap();
    // LoadCredential=ID:FOLDER: every file, as ID_FILE, readable by the
    // service's user alone.
    let creds = root.join("run/credentials/vipd.service");
    std::fs::create_dir_all(&creds).unwrap();
    for load in unit_values(&unit, "LoadCredential") {
        let (id, from) = load.split_once(':').unwrap();
        let from = PathBuf::from(rooted(&format!(" {from}"), &root).trim());
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            let to = creds.join(format!("{id}_{}", e.file_name().to_string_lossy()));
            std::fs::copy(e.path(), &to).unwrap();
            chown(&to, Some(UID), Some(UID)).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
    }
    chown(&creds, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
    // StateDirectory=vipd with DynamicUser: /var/lib/private/vipd, owned
    // by the user, /var/lib/vipd a link to it.
    let state_name = unit_values(&unit, "StateDirectory").pop().unwrap();
    let private = root.join("var/lib/private");
    std::fs::create_dir_all(private.join(&state_name)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = private.join(&state_name);
    chown(&state, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&state, root.join("var/lib").join(&state_name)).unwrap();
    // The private folder is root's: the service reaches its state through
    // the link (systemd mounts it in the unit's namespace); here the
    // service's user must traverse it.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
    // NOTIFY_SOCKET: a datagram socket the service may write.
    let notify_dir = root.join("run/systemd");
    std::fs::create_dir_all(&notify_dir).unwrap();
    let notify_path = notify_dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The unit's own Environment= lines, then what systemd sets.
    let mut env: Vec<(String, String)> = unit_values(&unit, "Environment")
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, v) in [
        ("CREDENTIALS_DIRECTORY", creds.display().to_string()),
        ("STATE_DIRECTORY", state.display().to_string()),
        ("NOTIFY_SOCKET", notify_path.display().to_string()),
        ("WATCHDOG_USEC", "30000000".to_owned()),
    ] {
        env.push((k.to_owned(), v));
    }

    // 4. ExecStartPre, then ExecStart, as the unit's user.
    for pre in unit_values(&unit, "ExecStartPre") {
        let out = as_service(&pre, &root, &env).output().unwrap();
        assert!(
            out.status.success(),
            "ExecStartPre={pre} failed as UID {UID}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let start = unit_values(&unit, "ExecStart").pop().unwrap();
    let log = tmp.path().join("service.log");
    let mut daemon = as_service(&start, &root, &env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut heard = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !heard.contains("READY=1") {
        assert!(
            Instant::now() < deadline,
            "no READY=1: {heard}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if let Ok(n) = notify.recv(&mut buf) {
            heard.push_str(&String::from_utf8_lossy(&buf[..n]));
            heard.push('\n');
        }
    }
    // alice's membership ends in 2 days and the rule renews 7 days ahead:
    // the first check (within the start-up spread) pays.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let orders: serde_json::Value = http
            .get(format!("{upstream}/_sandbox/orders"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let orders = orders.as_array().cloned().unwrap_or_default();
        if !orders.is_empty() {
            assert_eq!(orders.len(), 1, "{orders:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        std::fs::metadata(state.join("daemon.json")).is_ok(),
        "the store is in the state folder"
    );

    // 5. The operator's host-side status: root, no unit environment; it
    // finds the daemon (--state-dir) and reads the admin token beside the
    // configuration.
    let status = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(root.join("var/lib/vipd"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["generation"], 1, "answered by the live daemon");

    // 6. systemctl stop: SIGTERM, exit 0.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// The unit does not restart-loop on a bad configuration (exit 78), checks
/// the file before a reload signals the daemon, and runs the same check
/// before starting.
#[test]
fn the_unit_stops_on_a_bad_config_and_checks_before_reloading() {
    let unit = std::fs::read_to_string(repo().join("packaging/vipd.service")).unwrap();
    assert_eq!(unit_values(&unit, "RestartPreventExitStatus"), ["78"]);
    assert_eq!(unit_values(&unit, "PrivateMounts"), ["yes"]);
    let check = "/usr/bin/vipd check --strict --config /etc/vipd/rules.yaml";
    assert_eq!(unit_values(&unit, "ExecStartPre"), [check]);
    assert_eq!(
        unit_values(&unit, "ExecReload"),
        [check, "/bin/kill -HUP $MAINPID"],
        "check first: a failing ExecReload= fails `systemctl reload`"
    );
    // And `vipd check` exits 78 on an invalid file, as the unit expects.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("rules.yaml");
    std::fs::write(&bad, "rules: [").unwrap();
    let code = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["check", "--strict", "--config"])
        .arg(&bad)
        .output()
        .unwrap()
        .status
        .code();
    assert_eq!(code, Some(78));
}
