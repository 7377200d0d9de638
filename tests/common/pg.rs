//! A private PostgreSQL server for a test: Debian's server binaries, a data directory
//! of its own, a port chosen at run time, stopped and removed on drop. The server
//! refuses to run as root, so under root it runs as the `postgres` user (its data
//! directory then lives outside the test's root-only temporary directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, wait_until, Proc};

/// What installs the server.
pub const INSTALL_PG: &str = "apt-get install -y postgresql";

/// The database the tests use.
pub const DATABASE: &str = "aq";

/// The directory of the server binaries (`/usr/lib/postgresql/<version>/bin`), newest
/// version first; fails with installation advice when there is none.
pub fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").is_file())
        .collect();
    dirs.sort();
    dirs.pop().unwrap_or_else(|| {
        panic!("the PostgreSQL server is not installed (no /usr/lib/postgresql/*/bin/postgres); the PostgreSQL tests need a real server. Install it with: {INSTALL_PG}")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `cmd args…` as the server's user: `postgres` under root (setpriv execs, so the
/// process we start is the server itself and a signal reaches it).
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running private PostgreSQL server.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    proc: Option<Proc>,
}

impl Postgres {
    /// initdb, start, and create the test database.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("aq-pg-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success(), "chown {}", dir.display());
        }
        let out = as_server_user(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: free_port(),
            dir,
            bin,
            proc: None,
        };
        pg.restart();
        let out = Command::new(pg.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {DATABASE}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "CREATE DATABASE: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "already running");
        let proc = super::spawn_logged(
            as_server_user(&self.bin.join("postgres"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", self.dir.display()))
                .args(["-c", "fsync=on", "-c", "max_connections=200"]),
            std::env::temp_dir().join(format!("aq-pg-{}.log", self.port)),
        );
        let ready = self.bin.join("pg_isready");
        let port = self.port.to_string();
        wait_until(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                Command::new(&ready)
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        );
        self.proc = Some(proc);
    }

    /// A fast shutdown (SIGINT: open sessions are ended, nothing committed is lost).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = Command::new("kill")
                .args(["-INT", &p.pid().to_string()])
                .status();
            p.wait();
        }
    }

    /// The service's `[store] url`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Runs `f` with a new client for checks. The synchronous client blocks on a
    /// runtime of its own, which tokio forbids on its threads: it runs on a thread of
    /// its own, whatever runtime the test has.
    pub fn with_client<T: Send>(&self, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
        let url = self.url();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                f(&mut c)
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// The rows of a query.
    pub fn query(&self, sql: &str) -> Vec<postgres::Row> {
        self.with_client(|c| c.query(sql, &[]).unwrap())
    }

    /// `SELECT count(*) …` (or any single bigint).
    pub fn count(&self, sql: &str) -> i64 {
        self.with_client(|c| c.query_one(sql, &[]).unwrap().get(0))
    }

    /// Asserts that the hourly aggregates as stored equal PostgreSQL's own recomputation
    /// from the readings (normal-flag counts and sums), over `hours` site-hours.
    pub fn assert_hours_match_readings(&self, hours: usize) {
        let q = |sql: &str| -> Vec<(String, i64, i64, i64, i64, i64)> {
            self.query(sql)
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                .collect()
        };
        let recomputed = q("SELECT site, (ts_ms / 3600000) * 3600000,
                CAST(count(pm25) AS BIGINT), CAST(sum(round(pm25 * 1000)) AS BIGINT),
                CAST(count(pm10) AS BIGINT), CAST(sum(round(pm10 * 1000)) AS BIGINT)
            FROM readings WHERE flag = 'N' GROUP BY 1, 2 ORDER BY 1, 2");
        let stored = q("SELECT site, hour_ms, n25, sum25, n10, sum10 FROM hourly ORDER BY 1, 2");
        assert_eq!(recomputed.len(), hours);
        assert_eq!(stored, recomputed);
    }

    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
