//! Test harness: real mosquitto, VictoriaMetrics and InfluxDB 1.6 processes on ports
//! chosen at run time, each in its own temporary directory, killed on drop; an MQTT
//! publisher that waits for the broker's acknowledgements; and the service, in-process
//! or as the built binary.
//!
//! A missing server binary fails the test with the command that installs it.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aq_ingest::clock::SystemClock;
use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

pub const INSTALL: &str =
    "apt-get update && apt-get install -y mosquitto mosquitto-clients victoria-metrics influxdb openssl chromium";

/// Lowest port [`free_port`] hands out; everything it hands out lies below the kernel's
/// ephemeral range (32768–60999 on Linux), so no outgoing connection and no `bind(0)`
/// can take a port between the moment it is chosen and the moment its server binds it.
const TEST_PORTS: std::ops::Range<u16> = 15_000..32_768;

/// A port that was free a moment ago, chosen at random (never a fixed port) and never
/// handed out twice in this process: asking the OS for port 0 twice can return the same
/// port once the first probe is closed, which once gave the API and the embedded broker
/// the same port in one test.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = fastrand::u16(TEST_PORTS);
        if given.contains(&port) {
            continue;
        }
        // One probe at a time: a listener still open would make the second probe fail.
        let free = |host: &str| TcpListener::bind((host, port)).is_ok();
        if free("127.0.0.1") && free("0.0.0.0") {
            given.push(port);
            return port;
        }
    }
}

/// Fails with installation advice when `bin` is not on PATH.
pub fn require(bin: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{bin}` is not installed; the integration tests need real servers. Install them with: {INSTALL}")
    })
}

/// Polls `cond` until it holds or `timeout` passes; panics naming `what` on timeout.
/// This is synchronisation on a condition with a deadline, not a sleep.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async flavour of [`wait_until`].
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] for a server process: fails at once, with its log, if it exited
/// (a zombie) instead of waiting out the timeout.
pub fn wait_until_alive(
    what: &str,
    svc: &Proc,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) {
    let pid = svc.pid();
    wait_until(what, timeout, || {
        assert!(
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s
                .rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))),
            "the service exited; its log:\n{}",
            svc.log_text()
        );
        ready()
    });
}

/// A process's peak resident memory (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A server child process, killed on drop.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}. Install with: {INSTALL}"));
        Proc {
            child: Some(child),
            log,
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    /// SIGTERM and wait: the server shuts down cleanly (mosquitto saves persistence).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), 15);
            let _ = c.wait();
        }
    }
    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Waits at most `limit` for the process to exit; kills it (and returns `None`)
    /// when it has not.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        let c = self.child.as_mut().unwrap();
        while std::time::Instant::now() < until {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }
    /// Waits for a clean exit; returns the exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.take().unwrap().wait().unwrap()
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cmd` with its output in `log`; killed on drop.
pub fn spawn_logged(cmd: &mut Command, log: PathBuf) -> Proc {
    Proc::spawn(cmd, log)
}

/// Wraps a child started by a test.
pub fn proc_from(child: Child, log: PathBuf) -> Proc {
    Proc {
        child: Some(child),
        log,
    }
}

/// Sends SIGTERM to `pid`.
pub fn unsafe_sigterm(pid: u32) {
    unsafe_kill(pid, 15);
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A real mosquitto with persistence on and a queue large enough that it never drops.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Mosquitto {
    pub fn start(dir: &Path) -> Mosquitto {
        let bin = require("mosquitto");
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            proc: None,
        };
        let _ = bin;
        m.restart();
        m
    }
    /// Starts (again) on the same port and persistence directory.
    pub fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "# As root, stay root: the mosquitto user could not write the persistence file in\n# the test's private temp directory (and persistence would silently not happen).\nuser root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {dir}/\nmax_queued_messages 1000000\nmax_inflight_messages {inflight}\nautosave_interval 1\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n",
                inflight = std::env::var("AQ_TEST_MOSQUITTO_INFLIGHT").unwrap_or_else(|_| "1000".into()),
                port = self.port,
                dir = self.dir.display()
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            Command::new("mosquitto").arg("-c").arg(&conf),
            self.dir.join("mosquitto.log"),
        );
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            port_open(port)
        });
        self.proc = Some(proc);
    }
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").pid()
    }
    /// The broker's log (connections and subscriptions are logged).
    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
    }
}

fn http_get(url: &str) -> Option<(u16, String)> {
    httpc::request("GET", url, "")
}

pub mod instance;
pub mod nats;
pub mod pg;
pub mod store;

mod httpc {
    //! A tiny blocking HTTP/1.0 GET/POST for readiness checks and queries, so the test
    //! harness needs no second HTTP stack.
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn request(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
        request_with(method, url, body, &[])
    }

    /// The same with extra request headers; returns the status and the body.
    pub fn request_with(
        method: &str,
        url: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Option<(u16, String)> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let mut s = TcpStream::connect(host).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    }
}

pub use httpc::request as http;
pub use httpc::request_with as http_with;

/// URL-encodes a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real VictoriaMetrics speaking the InfluxDB v2 write API.
pub struct Victoria {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    core: Option<u8>,
}

impl Victoria {
    pub fn start(dir: &Path) -> Victoria {
        Self::start_on(dir, None)
    }
    /// Starts it pinned to `core` (benchmarks).
    pub fn start_on(dir: &Path, core: Option<u8>) -> Victoria {
        require("victoria-metrics");
        let dir = dir.join("vm");
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = Victoria {
            port: free_port(),
            dir,
            proc: None,
            core,
        };
        v.restart();
        v
    }
    /// The server's process id (benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").pid()
    }
    pub fn restart(&mut self) {
        let mut cmd = match self.core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &core.to_string(), "victoria-metrics"]);
                c
            }
            None => Command::new("victoria-metrics"),
        };
        let proc = Proc::spawn(
            cmd.arg(format!(
                "-storageDataPath={}",
                self.dir.join("data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s"),
            self.dir.join("vm.log"),
        );
        let url = format!("{}/health", self.url());
        wait_until("victoria-metrics /health", Duration::from_secs(20), || {
            http_get(&url).is_some_and(|(s, _)| s == 200)
        });
        self.proc = Some(proc);
    }
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// Every stored sample of measurement `m`: (field, site, ts_ms, value).
    pub fn export(&self, m: &str) -> Vec<(String, String, i64, f64)> {
        let _ = http_get(&format!("{}/internal/force_flush", self.url()));
        let q = enc(&format!("{{__name__=~\"{m}_.*\"}}"));
        let (status, body) = http_get(&format!("{}/api/v1/export?match[]={q}", self.url()))
            .unwrap_or((0, String::new()));
        assert_eq!(status, 200, "export failed: {body}");
        let mut out = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let name = v["metric"]["__name__"].as_str().unwrap().to_string();
            let site = v["metric"]["site"].as_str().unwrap_or("").to_string();
            let ts = v["timestamps"].as_array().unwrap();
            let vals = v["values"].as_array().unwrap();
            for (t, x) in ts.iter().zip(vals) {
                out.push((
                    name.clone(),
                    site.clone(),
                    t.as_i64().unwrap(),
                    x.as_f64().unwrap(),
                ));
            }
        }
        out
    }
}

/// A real InfluxDB 1.6 (v1 API).
pub struct Influx1 {
    pub port: u16,
    proc: Proc,
}

impl Influx1 {
    pub fn start(dir: &Path, database: &str) -> Influx1 {
        require("influxd");
        let dir = dir.join("influx");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let rpc = free_port();
        let conf = dir.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            Command::new("influxd").arg("-config").arg(&conf),
            dir.join("influxd.log"),
        );
        let url = format!("http://127.0.0.1:{port}/ping");
        wait_until("influxd /ping", Duration::from_secs(30), || {
            http_get(&url).is_some_and(|(s, _)| s == 204)
        });
        let i = Influx1 { port, proc };
        let (s, b) = i
            .query_raw(None, &format!("CREATE DATABASE \"{database}\""))
            .unwrap();
        assert_eq!(s, 200, "{b}");
        i
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// Runs an InfluxQL query: the status and the raw JSON body.
    pub fn query_raw(&self, db: Option<&str>, q: &str) -> Option<(u16, String)> {
        let db = db.map(|d| format!("db={}&", enc(d))).unwrap_or_default();
        http(
            "POST",
            &format!("{}/query?{db}q={}", self.url(), enc(q)),
            "",
        )
    }
    /// Runs an InfluxQL query and returns the first series' values.
    pub fn query(&self, db: &str, q: &str) -> Vec<Vec<serde_json::Value>> {
        let (s, body) = self.query_raw(Some(db), q).unwrap();
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| rows.iter().map(|r| r.as_array().unwrap().clone()).collect())
            .unwrap_or_default()
    }
}

/// A deterministic reading for (site index, sample index): unique per pair, with PM2.5
/// below PM10 and values exact in binary up to one decimal's text.
pub fn reading_values(site: usize, i: usize) -> (f64, f64) {
    let pm10 = ((site * 37 + i * 11) % 4000) as f64 / 10.0 + 5.0;
    let pm25 = ((site * 13 + i * 7) % 2000) as f64 / 10.0;
    (pm25, pm10.max(pm25))
}

/// `n` readings as messages of `per` readings each (a device's batch upload) over
/// `sites` sites: message k is site k % sites's (topic `topic(site)`), its readings a
/// minute apart after those of the site's earlier messages.
pub fn array_messages(
    n: usize,
    per: usize,
    sites: usize,
    base: i64,
    topic: impl Fn(usize) -> String,
) -> Vec<(String, Vec<u8>)> {
    (0..n / per)
        .map(|k| {
            let site = k % sites;
            let items: Vec<String> = (0..per)
                .map(|i| {
                    let minute = k / sites * per + i;
                    let (pm25, pm10) = reading_values(site, minute);
                    let ts = base + minute as i64 * 60_000;
                    format!(r#"{{"ts":{ts},"pm25":{pm25},"pm10":{pm10},"interval_secs":60}}"#)
                })
                .collect();
            (topic(site), format!("[{}]", items.join(",")).into_bytes())
        })
        .collect()
}

/// Asserts that the store holds exactly `sites × per_site` readings made by
/// [`reading_msg`] with `base`: each one once, with its published values.
pub fn assert_stored_exactly(dir: &Path, base: i64, sites: usize, per_site: usize) {
    assert_stored_exactly_in(&store::TestStore::sqlite(dir), base, sites, per_site);
}

/// [`assert_stored_exactly`] on either backend.
pub fn assert_stored_exactly_in(
    store: &store::TestStore,
    base: i64,
    sites: usize,
    per_site: usize,
) {
    assert_eq!(
        store.count("SELECT count(*) FROM readings"),
        (sites * per_site) as i64
    );
    for row in store.rows("SELECT site, ts_ms, pm25, pm10 FROM readings") {
        let (site, ts): (&str, i64) = (&row[0], row[1].parse().unwrap());
        let (pm25, pm10): (f64, f64) = (row[2].parse().unwrap(), row[3].parse().unwrap());
        let s: usize = site.trim_start_matches("site-").parse().unwrap();
        let i = ((ts - base) / 60_000) as usize;
        assert!(s < sites && i < per_site, "unexpected reading {site} {ts}");
        assert_eq!((pm25, pm10), reading_values(s, i), "{site} {ts}");
    }
}

/// Base time of test readings: now minus one day, on a whole minute.
pub fn base_ts_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now - 86_400_000) / 60_000 * 60_000
}

/// The (topic, payload) of a reading.
pub fn reading_msg(site: usize, i: usize, base: i64) -> (String, Vec<u8>) {
    let (pm25, pm10) = reading_values(site, i);
    let ts = base + (i as i64) * 60_000;
    (
        format!("aq/site-{site:03}/readings"),
        format!(r#"{{"ts":{ts},"pm25":{pm25},"pm10":{pm10},"interval_secs":60}}"#).into_bytes(),
    )
}

/// Publishes every message at QoS 1 and returns when the broker has acknowledged all
/// of them (so they are in the broker, persisted, whatever the service does).
pub async fn publish_all(port: u16, msgs: Vec<(String, Vec<u8>)>) {
    let n = msgs.len();
    let mut o = MqttOptions::new(format!("pub-{}", fastrand::u64(..)), "127.0.0.1", port);
    o.set_max_packet_size(8 << 20, 8 << 20).set_inflight(200);
    let (client, mut el) = AsyncClient::new(o, 1000);
    let feeder = tokio::spawn(async move {
        for (t, p) in msgs {
            client.publish(t, QoS::AtLeastOnce, false, p).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < n {
        assert!(
            Instant::now() < deadline,
            "publisher: only {acked}/{n} acknowledged"
        );
        match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher connection failed: {e}"),
            Err(_) => panic!("publisher stalled at {acked}/{n}"),
        }
    }
    let client = feeder.await.unwrap();
    client.disconnect().await.unwrap();
    loop {
        match el.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            _ => {}
        }
    }
}

/// The service running in this process.
pub struct Service {
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    /// Starts the service and waits until the broker confirmed its subscription.
    pub async fn start(cfg: Config) -> Service {
        Self::start_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// [`Service::start`] with the service's "now" injected (a pinned `ManualClock`
    /// makes the time-dependent rules — future timestamps, offline sites — exact).
    pub async fn start_with_clock(cfg: Config, clock: Arc<dyn aq_ingest::clock::Clock>) -> Service {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(aq_ingest::app::run(
            cfg,
            clock,
            Arc::clone(&metrics),
            async move {
                let _ = rx.await;
            },
        ));
        let m = Arc::clone(&metrics);
        wait_for("the service to subscribe", Duration::from_secs(20), || {
            m.mqtt_subscribed.load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;
        Service {
            metrics,
            stop: Some(tx),
            task: Some(task),
        }
    }
    /// Ordered shutdown; panics if the service failed.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// A config for tests: the given broker, a store in `dir`, quiet logs.
pub fn config(dir: &Path, mqtt_url: &str, client_id: &str, influx: Option<&str>) -> Config {
    config_on(&store::TestStore::sqlite(dir), mqtt_url, client_id, influx)
}

/// [`config`] on either backend.
pub fn config_on(
    store: &store::TestStore,
    mqtt_url: &str,
    client_id: &str,
    influx: Option<&str>,
) -> Config {
    Config::parse(&config_text(store, mqtt_url, client_id, influx), "test").unwrap()
}

/// The text of [`config_on`] (for the tests that run the binary).
pub fn config_text(
    store: &store::TestStore,
    mqtt_url: &str,
    client_id: &str,
    influx: Option<&str>,
) -> String {
    format!(
        "[mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"{client_id}\"\nreconnect_min_ms = 50\nreconnect_max_secs = 1\n{}[log]\nstats_interval_secs = 0\n[api]\nlisten = \"127.0.0.1:{}\"\n{}",
        store.toml(),
        free_port(),
        influx.unwrap_or("")
    )
}

/// Opens the service's store for checks: `aq.db` in `dir`, or `aq-ingest.db` (the
/// shipped default name) when that is the one there.
pub fn db(dir: &Path) -> rusqlite::Connection {
    let default = dir.join("aq-ingest.db");
    let path = if default.exists() {
        default
    } else {
        dir.join("aq.db")
    };
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c
}

/// Readings the InfluxDB sink has not delivered yet.
pub const OUTBOX_DEPTH: &str = "SELECT count(*) FROM readings WHERE seq > coalesce((SELECT seq FROM sink_cursors WHERE sink = 'influx'), 0)";

pub fn count(c: &rusqlite::Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new(require("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// A CA (`ca.pem`), a server certificate for localhost and 127.0.0.1 (`server.pem`,
/// `server.key`) and a client certificate per name in `clients`, its CN that name
/// (`NAME.pem`, `NAME.key`), made with openssl in `dir`.
pub fn make_pki(dir: &Path, clients: &[&str]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=aq-test-ca",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (who, ext) in
        std::iter::once(("server", "server.ext")).chain(clients.iter().map(|c| (*c, "client.ext")))
    {
        let (key, csr, pem, subj) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("/CN={who}"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
    // mosquitto started as root drops to its own user, which must read these test keys.
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut d = dir.to_path_buf();
    while d.pop() && d.starts_with(std::env::temp_dir()) && d != std::env::temp_dir() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Sets `table.key = value` in a parsed config, creating the table.
pub fn set(cfg: &mut toml::Table, table: &str, key: &str, value: impl Into<toml::Value>) {
    cfg.entry(table)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{table}] is not a table"))
        .insert(key.to_owned(), value.into());
}

/// [`shipped_config`] as a table, for a service whose files live in `d`: the store at
/// `d/data/aq-ingest.db`, the site registry at `d/sites.toml`, no periodic stats line.
pub fn shipped_config_in(d: &Path, mqtt_port: u16, api_port: u16) -> toml::Table {
    let mut cfg: toml::Table = shipped_config(mqtt_port, api_port).parse().unwrap();
    let store = d.join("data/aq-ingest.db").display().to_string();
    set(&mut cfg, "store", "path", store);
    set(&mut cfg, "log", "stats_interval_secs", 0);
    let sites = d.join("sites.toml").display().to_string();
    set(&mut cfg, "sites", "file", sites);
    cfg
}

/// The shipped `config/default.toml` with the embedded broker on `mqtt_port` and the API
/// on `api_port` (tests never use the fixed defaults); fails if the shipped listeners
/// moved, so that no test silently runs on them.
pub fn shipped_config(mqtt_port: u16, api_port: u16) -> String {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
            .unwrap();
    for key in ["listen = \"127.0.0.1:1883\"", "listen = \"127.0.0.1:8080\""] {
        assert!(shipped.contains(key), "config/default.toml has no `{key}`");
    }
    shipped
        .replace(
            "listen = \"127.0.0.1:1883\"",
            &format!("listen = \"127.0.0.1:{mqtt_port}\""),
        )
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{api_port}\""),
        )
}
