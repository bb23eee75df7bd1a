//! A real PostgreSQL server for one test: a fresh cluster in a temporary
//! folder (`initdb`), listening on 127.0.0.1 on a free port, killed and
//! removed when dropped. Run as the `postgres` user when the tests run as
//! root (PostgreSQL refuses root). The binaries are Debian's
//! (`/usr/lib/postgresql/N/bin`, the newest N), or `$VIPD_PG_BIN`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Throwaway {
    server: Child,
    port: u16,
    // Dropped last: the server is gone before its folder is.
    _dir: tempfile::TempDir,
}

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
    use std::os::unix::process::CommandExt;
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

impl Throwaway {
    pub async fn start() -> Throwaway {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        if root() {
            let (uid, gid) = server_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "vipd", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let server = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let db = Throwaway {
            server,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                if client.simple_query("SELECT 1").await.is_ok() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        db
    }

    /// A server with vipd's schema applied.
    pub async fn migrated() -> Throwaway {
        let db = Throwaway::start().await;
        super::migrate(&mut db.connect().await).await.unwrap();
        db
    }

    /// A pool of at most `size` connections to it, as a node keeps.
    pub fn pool(&self, size: usize) -> deadpool_postgres::Pool {
        let config: tokio_postgres::Config = self.url().parse().unwrap();
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .build()
            .unwrap()
    }

    /// A connection string for this server (no password: trust on loopback).
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=vipd dbname=postgres",
            self.port
        )
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for Throwaway {
    /// An immediate shutdown (SIGQUIT): the server ends its backends and
    /// frees its shared memory, without a checkpoint.
    fn drop(&mut self) {
        unsafe { libc::kill(self.server.id() as i32, libc::SIGQUIT) };
        let _ = self.server.wait();
    }
}
