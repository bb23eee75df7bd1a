//! The state folder as an operator finds it: private to vipd's user
//! whatever the umask it was started with (it holds rotated tokens), and a
//! folder vipd cannot write in said to be that, never "damaged".
//!
//! The read-only cases bind-mount the folder read-only in a mount namespace
//! of the child's own (`unshare -m`), and the permission case runs vipd as
//! another user (`setpriv`): both need root, as CI has.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::run;
use crate::common::stack::{Stack, StackConfig};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file and folder under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        all.push((p.display().to_string(), mode(&p)));
        if p.is_dir() {
            all.extend(modes(&p));
        }
    }
    all
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn the_state_folder_is_private_whatever_the_umask() {
    // a0 carries a refresh token; its configured token is refused later,
    // so the daemon stores a rotated pair.
    let mut cfg = StackConfig::refreshable("1d");
    cfg.sandbox = "  mode: sync".into();
    let mut stack = Stack::sandbox_only(&cfg).await;
    stack.daemon_umask = Some(0o022);
    stack.start_daemon().await;
    let s = crate::common::post_json(
        &format!("{}/_sandbox/accounts/a0", stack.sandbox_url),
        serde_json::json!({ "expire_tokens": true }),
    )
    .await;
    assert!(s.is_success());
    stack
        .wait_for("a refresh", Duration::from_secs(15), || async {
            stack.log().contains("access token refreshed").then_some(())
        })
        .await;
    stack
        .wait_for("a0 billed", Duration::from_secs(15), || async {
            (stack.billed().await.get("a0") == Some(&1)).then_some(())
        })
        .await;
    let state = stack.dir.path().join("state");
    assert_eq!(mode(&state), 0o700, "the folder vipd created");
    let files = modes(&state);
    assert!(files.iter().any(|(p, _)| p.ends_with("/db")), "{files:?}");
    for (path, m) in &files {
        // The control socket holds nothing: its mode says who may use it.
        let want = match path {
            p if p.ends_with("/control.sock") => 0o660,
            p if Path::new(p).is_dir() => 0o700,
            _ => 0o600,
        };
        assert_eq!(*m, want, "{path} is {m:04o} under umask 022: {files:?}");
    }
    assert!(!stack.log().contains("open to other users"));
    assert_eq!(stack.stop_daemon(), Some(0));

    // A folder the operator opened up is named in a warning, and left as
    // it is; the files in it stay private.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    stack.start_daemon().await;
    let warning = stack
        .log()
        .lines()
        .find(|l| l.contains("open to other users"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no warning:\n{}", stack.log()));
    assert!(
        warning.contains("0755") && warning.contains("state"),
        "{warning}"
    );
    assert_eq!(mode(&state), 0o755);
    assert_eq!(mode(&state.join("db")), 0o600);
}

/// `vipd ARGS` run as the user nobody, from a copy of the binary in `dir`
/// (which must be open to others, as must the configuration).
fn as_nobody(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let bin = dir.join("vipd");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_vipd"), &bin).unwrap();
    }
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .current_dir("/"))
}

/// `cmd` with the state folder `state` bind-mounted read-only over itself,
/// in a mount namespace of the child's own.
fn read_only(state: &Path, cmd: &[&str]) -> (i32, String, String) {
    let bin = env!("CARGO_BIN_EXE_vipd");
    run(Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind -o ro \"$1\" \"$1\" && shift && exec \"$@\"",
        ])
        .args(["sh", state.to_str().unwrap(), bin])
        .args(cmd))
}

/// What every refusal of an unwritable folder says, and never says.
fn says_not_writable(what: &str, code: i32, err: &str, cause: &str) {
    assert_eq!(code, 1, "{what}: {err}");
    assert!(err.contains("is not writable"), "{what}: {err}");
    assert!(err.contains(cause), "{what}: {err}");
    assert!(err.contains("This is not damage"), "{what}: {err}");
    assert!(!err.contains("is damaged"), "{what}: {err}");
}

#[tokio::test]
async fn a_folder_vipd_cannot_write_is_not_called_damaged() {
    if !is_root() {
        panic!("needs root: a read-only bind mount, and another user (CI runs as root)");
    }
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let mut stack = Stack::start(&cfg).await;
    stack
        .wait_for("a0 billed", Duration::from_secs(15), || async {
            (stack.billed().await.get("a0") == Some(&1)).then_some(())
        })
        .await;
    assert_eq!(stack.stop_daemon(), Some(0));
    let config = stack.config.to_str().unwrap().to_owned();
    let state = stack.dir.path().join("state");

    // A populated store on a read-only mount: run and verify both say so.
    let (code, _, err) = read_only(&state, &["run", "--config", &config]);
    says_not_writable("run, populated", code, &err, "Read-only file system");
    let (code, _, err) = read_only(&state, &["store", "verify", "--config", &config]);
    says_not_writable("verify, populated", code, &err, "Read-only file system");

    // An empty folder on a read-only mount.
    let empty = stack.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_arg = format!("--state-dir={}", empty.display());
    let (code, _, err) = read_only(&empty, &["run", "--config", &config, &empty_arg]);
    says_not_writable("run, empty", code, &err, "Read-only file system");

    // The store owned by root, vipd run as nobody: permission denied.
    let dir = stack.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&stack.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = as_nobody(dir, &["run", "--config", &config]);
    says_not_writable("run as another user", code, &err, "Permission denied");

    // Nothing was changed by any of it: the daemon starts on the store.
    stack.start_daemon().await;
    assert_eq!(stack.orders().await.len(), 1);
}

/// Beside a daemon whose admin token only the service can read (a systemd
/// credential), root's `vipd status` and `vipd orders` answer through the
/// control socket with no token; another user is refused, told why.
#[tokio::test]
async fn the_control_socket_serves_root_without_the_token_and_refuses_others() {
    if !is_root() {
        panic!("needs root: the daemon's folder is root's, and another user is refused");
    }
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("admin"), "only-the-service-reads-this").unwrap();
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    let mut stack = Stack::sandbox_only(&cfg).await;
    // Only the daemon is given the credential (the sandbox, started first,
    // reads the file without it).
    let text = std::fs::read_to_string(&stack.config).unwrap().replacen(
        "  state_dir: ./state\n",
        "  state_dir: ./state\n  admin_token: \"${credential:admin}\"\n",
        1,
    );
    std::fs::write(&stack.config, text).unwrap();
    stack.daemon_env = vec![(
        "CREDENTIALS_DIRECTORY".into(),
        creds.path().display().to_string(),
    )];
    stack.start_daemon().await;
    stack
        .wait_for("a0 billed", Duration::from_secs(15), || async {
            (stack.billed().await.get("a0") == Some(&1)).then_some(())
        })
        .await;
    let state = stack.dir.path().join("state");
    let socket = state.join("control.sock");
    assert_eq!(mode(&socket), 0o660);
    let config = stack.config.to_str().unwrap().to_owned();

    // Root, with no credential in its environment.
    let (code, out, err) = run(Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["status", "--json", "--config", &config])
        .env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["generation"], 1, "answered by the live daemon");
    let (code, out, err) = run(Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["orders", "--json", "--config", &config])
        .env_remove("CREDENTIALS_DIRECTORY"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"succeeded\""), "{out}");
    // The TCP admin API still wants the token.
    let r = reqwest::get(format!("{}/api/status", stack.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Another user: the folder (0700, root's) keeps it from the socket.
    let dir = stack.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&stack.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = as_nobody(dir, &["status", "--config", &config]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("control socket"), "{err}");
    assert!(err.contains("ermission denied"), "{err}");
    assert!(!out.contains("generation"), "{out}");

    // A stopped daemon leaves no socket behind.
    assert_eq!(stack.stop_daemon(), Some(0));
    assert!(!socket.exists());
}

/// `--state-dir` wins over the file's `state_dir` for the daemon's whole
/// life (a reload reads the file again, and keeps the folder it was given)
/// and for the commands run beside it.
#[tokio::test]
async fn the_command_lines_state_folder_holds_across_a_reload() {
    let mut cfg = StackConfig::due(1);
    cfg.sandbox = "  mode: sync".into();
    cfg.rewrite = vec![(
        "state_dir: ./state".into(),
        "state_dir: ./from-the-file".into(),
    )];
    let mut stack = Stack::sandbox_only(&cfg).await;
    let given = stack.dir.path().join("state");
    stack.daemon_args = vec!["--state-dir".into(), given.display().to_string()];
    stack.start_daemon().await;
    let (code, _) = stack.reload().await;
    assert_eq!(code, 200);
    assert!(
        !stack.log().contains("daemon.state_dir changed"),
        "{}",
        stack.log()
    );
    let (code, out, err) = run(crate::common::vipd()
        .args(["status", "--json", "--state-dir"])
        .arg(&given)
        .arg("--config")
        .arg(&stack.config));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!stack.dir.path().join("from-the-file").exists());
}
