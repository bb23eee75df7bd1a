//! Real PostgreSQL servers for tests and benchmarks (not for production):
//! a fresh cluster in a temporary folder (`initdb`), listening on
//! 127.0.0.1 on a free port, run as the `postgres` user when we are root
//! (PostgreSQL refuses root). The binaries are Debian's
//! (`/usr/lib/postgresql/N/bin`, the newest N), or `$VIPD_PG_BIN`.
//!
//! [`database`] gives each test a database of its own on one server per
//! test process: `initdb` runs once, not once a test. That server dies
//! with the process (its parent-death signal), and the next process
//! removes the folders of servers whose process is gone. A test that stops
//! and starts its database (a partition) starts a [`Server`] of its own.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIPD_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            Some((n, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/N").1
}

fn root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `postgres` user's uid and gid, from `id`.
fn server_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a postgres user")
    };
    (id("-u"), id("-g"))
}

/// A command run as `postgres` when we are root (the process itself, not
/// a wrapper, so that signals reach it).
fn as_server_user(program: &Path) -> Command {
    let mut c = Command::new(program);
    if root() {
        let (uid, gid) = server_user();
        c.uid(uid).gid(gid);
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

const PREFIX: &str = "vipd-pg-";

/// Removes the folders of servers whose test process is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// One PostgreSQL server: its folder, port and process.
pub struct Server {
    dir: PathBuf,
    port: u16,
    process: Option<Child>,
    /// `fsync` on (PostgreSQL's default): for benchmarks that compare
    /// with sled's fsync'd commits. Tests run without it.
    fsync: bool,
    /// Dies with the thread that started it (`PR_SET_PDEATHSIG`): only
    /// for the shared server, started on a thread that lives as long as
    /// the process.
    dies_with_parent: bool,
}

impl Server {
    /// A new cluster, started (without fsync: for tests).
    pub fn start() -> Server {
        Server::init(false, false)
    }

    /// A new cluster with PostgreSQL's durable defaults (`fsync` on), for
    /// benchmarks.
    pub fn start_durable() -> Server {
        Server::init(false, true)
    }

    fn init(dies_with_parent: bool, fsync: bool) -> Server {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let dir = std::env::temp_dir().join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if root() {
            let (uid, gid) = server_user();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let out = as_server_user(&bin_dir().join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "vipd", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Server {
            dir,
            port: free_port(),
            process: None,
            fsync,
            dies_with_parent,
        };
        server.resume();
        server
    }

    /// Starts the server (again, after [`Server::stop`]) on its port and
    /// waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.process.is_none(), "already running");
        let mut cmd = as_server_user(&bin_dir().join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", if self.fsync { "fsync=on" } else { "fsync=off" }])
            .args(["-c", "max_connections=300"])
            // Counts statements for the cluster benchmark (the extension
            // is created only where it is asked for).
            .args(["-c", "shared_preload_libraries=pg_stat_statements"])
            .args(["-c", "pg_stat_statements.track=all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.dies_with_parent {
            // SAFETY: prctl is async-signal-safe; nothing else runs
            // between fork and exec. Set after the uid change, which
            // would clear it.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                    Ok(())
                });
            }
        }
        self.process = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (SIGQUIT: no checkpoint), as a database
    /// that goes away does.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            unsafe { libc::kill(p.id() as i32, libc::SIGQUIT) };
            let _ = p.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// A connection string for database `db` (no password: trust on
    /// loopback).
    pub fn url(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=vipd dbname={db}", self.port)
    }

    /// A new, empty database on this server.
    pub async fn database(&self) -> TestDb {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}", SERIAL.fetch_add(1, Ordering::Relaxed));
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            url: self.url(&name),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server this test process shares: started once, on a thread that
/// lives until the process ends, so that the server dies with it.
pub fn shared() -> &'static Server {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(Server::init(true, false)).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap()
    })
}

/// A new, empty database on the shared server.
pub async fn database() -> TestDb {
    shared().database().await
}

/// A database of one test.
pub struct TestDb {
    url: String,
}

impl TestDb {
    /// A new database with vipd's schema applied.
    #[cfg(test)]
    pub(crate) async fn migrated() -> TestDb {
        let db = database().await;
        super::migrate(&mut db.connect().await).await.unwrap();
        db
    }

    /// A pool of at most `size` connections to it, as a node keeps.
    pub fn pool(&self, size: usize) -> deadpool_postgres::Pool {
        let config: tokio_postgres::Config = self.url.parse().unwrap();
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .build()
            .unwrap()
    }

    /// Its connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}
