//! One aq-ingest process of a multi-instance test (several instances on PostgreSQL,
//! instances behind a NATS cluster): the built binary on a config file, restartable
//! after a kill, with its log, `/readyz`, `/metrics` and the `report` command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{free_port, http, spawn_logged, Proc};

/// How long a start may take before the test fails with the instance's log.
const START_WITHIN: Duration = Duration::from_secs(60);

pub struct Instance {
    pub name: String,
    pub config: PathBuf,
    pub api: u16,
    proc: Option<Proc>,
    runs: usize,
    dir: PathBuf,
    /// The log line that says the instance is taking messages.
    ready: &'static str,
}

impl Instance {
    /// Writes `name.toml` in `dir` — `config` plus an `[api]` listener on a free port —
    /// and starts the instance (see [`Instance::start`]).
    pub fn new(dir: &Path, name: &str, config: &str, ready: &'static str) -> Self {
        let path = dir.join(format!("{name}.toml"));
        let api = free_port();
        std::fs::write(
            &path,
            format!("{config}\n[api]\nlisten = \"127.0.0.1:{api}\"\n"),
        )
        .unwrap();
        let mut i = Instance {
            name: name.into(),
            config: path,
            api,
            proc: None,
            runs: 0,
            dir: dir.to_owned(),
            ready,
        };
        i.start();
        i
    }

    /// Starts the binary (a new log file per run) and waits for its `ready` line.
    pub fn start(&mut self) {
        let log = self.dir.join(format!("{}-{}.log", self.name, self.runs));
        self.runs += 1;
        let p = spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
                .arg("--config")
                .arg(&self.config)
                .arg("serve")
                .env("RUST_LOG", "info"),
            log,
        );
        let deadline = Instant::now() + START_WITHIN;
        while !p.log_text().contains(self.ready) {
            assert!(
                Instant::now() < deadline,
                "{} did not log {:?} within {START_WITHIN:?}; its log:\n{}",
                self.name,
                self.ready,
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc = Some(p);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc.take().unwrap().kill();
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }

    /// `GET /readyz`: its status and body (status 0 when nothing answers).
    pub fn ready(&self) -> (u16, String) {
        http("GET", &format!("http://127.0.0.1:{}/readyz", self.api), "")
            .unwrap_or((0, String::new()))
    }

    /// A counter or gauge from `/metrics`; fails the test when the instance does not
    /// answer or does not export it (a missing figure must never read as 0).
    pub fn metric(&self, name: &str) -> u64 {
        let (s, body) = http("GET", &format!("http://127.0.0.1:{}/metrics", self.api), "")
            .unwrap_or((0, String::new()));
        assert_eq!(s, 200, "{}: /metrics: {body}", self.name);
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} not in {}'s /metrics", self.name)) as u64
    }

    /// `aq-ingest report --format json` for `from..=to` on this instance's config.
    pub fn report(&self, from: &str, to: &str) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .arg("--config")
            .arg(&self.config)
            .args(["report", "--from", from, "--to", to, "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} report: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}
