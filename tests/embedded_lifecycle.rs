//! The embedded broker's lifecycle, black box: the built binary on the shipped default
//! config (ports moved to free ones, the store in a temporary directory) with real device
//! clients. What a device is told must be true: a QoS 1 PUBACK means the reading is
//! committed to the store — across SIGTERM restarts, while the store's disk is full
//! (back-pressure, bounded memory, nothing acknowledged dropped), and for MQTT 5 devices.
//!
//! Every wait is on an observable fact (a TCP connect, a PUBACK, rows in the store, a
//! process exit), never on log wording.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

// ---------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------

/// Ports and paths of one service directory.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
}

impl Setup {
    /// The shipped `config/default.toml` with only the two listen ports moved to free
    /// ones, `edit` applied, written to `aq.toml` in a fresh temporary directory. The
    /// store path stays the shipped relative `data/aq-ingest.db`.
    fn new(edit: impl FnOnce(String) -> String) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = shipped_config(port, free_port());
        for key in ["path = \"data/aq-ingest.db\"", "[broker]\n"] {
            assert!(cfg.contains(key), "config/default.toml has no `{key}`");
        }
        std::fs::write(dir.path().join("aq.toml"), edit(cfg)).unwrap();
        Setup { dir, port }
    }

    /// The directory holding the store (`data/`, relative to the service's directory).
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the built binary in the directory (run `run`'s log is `service-{run}.log`).
    fn start(&self, run: usize) -> Proc {
        spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
                .current_dir(self.dir.path())
                .args(["--config", "aq.toml"])
                .env_remove("RUST_LOG"),
            self.dir.path().join(format!("service-{run}.log")),
        )
    }

    /// Waits until a device can open a TCP connection to the MQTT port (the service
    /// accepts devices only once it can commit what they send).
    fn wait_listening(&self, svc: &Proc) {
        let port = self.port;
        wait_alive(
            svc,
            "the MQTT port to accept",
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }
}

/// True while `pid` runs (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The last lines of a service log, for failure messages.
fn tail(svc: &Proc) -> String {
    let text = svc.log_text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// [`wait_until`] that fails at once, with the log, when the service process is gone.
fn wait_alive(svc: &Proc, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let pid = svc.pid();
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            alive(pid),
            "the service exited while waiting for {what}; its log ends:\n{}",
            tail(svc)
        );
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; the service log ends:\n{}",
            tail(svc)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then the process must exit by itself, successfully, within the shutdown
/// deadline (60 s in the shipped config) plus margin.
fn stop_cleanly(svc: &mut Proc, what: &str) {
    unsafe_sigterm(svc.pid());
    let status = svc.exit_within(Duration::from_secs(90));
    let text = tail(svc);
    let status: ExitStatus = status.unwrap_or_else(|| {
        panic!("{what}: the service did not exit within 90 s of SIGTERM (killed); log:\n{text}")
    });
    assert!(
        status.success(),
        "{what}: the service exited with {status:?} after SIGTERM; log:\n{text}"
    );
}

/// A `VmHWM`/`VmRSS`-style line of `/proc/PID/status`, in KiB.
fn proc_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------------------
// Readings and the store
// ---------------------------------------------------------------------------------------

/// Base time of this file's readings: ten days ago on a whole minute, so that a device
/// can send 8.6 million readings 100 ms apart before reaching the present.
fn base_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now - 10 * 86_400_000) / 60_000 * 60_000
}

/// Reading `j` of a device: its time and the exact JSON text of its values (one
/// decimal, PM10 under the alert level so the stream raises no alerts).
fn reading(base: i64, j: usize) -> (i64, String, String) {
    let pm25 = format!("{:.1}", (j % 1000) as f64 / 10.0);
    let pm10 = format!("{:.1}", (j % 1000) as f64 / 10.0 + 20.0);
    (base + j as i64 * 100, pm25, pm10)
}

fn reading_json(base: i64, j: usize) -> String {
    let (ts, pm25, pm10) = reading(base, j);
    format!(r#"{{"ts":{ts},"pm25":{pm25},"pm10":{pm10}}}"#)
}

/// Message `m` of a device sending `per_msg` readings per message: one object, or an
/// array (a backlog upload) of readings `m * per_msg ..`.
fn message(base: i64, m: usize, per_msg: usize) -> String {
    if per_msg == 1 {
        return reading_json(base, m);
    }
    let items: Vec<String> = (m * per_msg..(m + 1) * per_msg)
        .map(|j| reading_json(base, j))
        .collect();
    format!("[{}]", items.join(","))
}

/// Every stored reading of `site`: ts_ms -> (rows with that ts, pm25, pm10).
fn stored(data: &Path, site: &str) -> HashMap<i64, (usize, Option<f64>, Option<f64>)> {
    let mut out = HashMap::new();
    if !data.join("aq-ingest.db").exists() {
        return out;
    }
    let c = db(data);
    // The file exists a moment before its schema does.
    let Ok(mut stmt) = c.prepare("SELECT ts_ms, pm25, pm10 FROM readings WHERE site = ?1") else {
        return out;
    };
    let rows = stmt
        .query_map([site], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<f64>>(1)?,
                r.get::<_, Option<f64>>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (ts, pm25, pm10) = row.unwrap();
        let e = out.entry(ts).or_insert((0, pm25, pm10));
        e.0 += 1;
    }
    out
}

/// The time of the latest stored reading of `site`.
fn latest(data: &Path, site: &str) -> Option<i64> {
    if !data.join("aq-ingest.db").exists() {
        return None;
    }
    db(data)
        .query_row(
            "SELECT max(ts_ms) FROM readings WHERE site = ?1",
            [site],
            |r| r.get(0),
        )
        .unwrap_or(None)
}

/// How the acknowledged readings `acked` (reading indices) of `site` compare with the
/// store: (missing, stored more than once, stored with other values), each with the
/// first few examples.
#[derive(Debug, Default)]
struct Audit {
    acked: usize,
    missing: Vec<i64>,
    duplicated: Vec<i64>,
    wrong: Vec<String>,
}

impl Audit {
    fn of(data: &Path, site: &str, base: i64, acked: impl IntoIterator<Item = usize>) -> Audit {
        let rows = stored(data, site);
        let mut a = Audit::default();
        for j in acked {
            a.acked += 1;
            let (ts, pm25, pm10) = reading(base, j);
            let want = (pm25.parse::<f64>().ok(), pm10.parse::<f64>().ok());
            match rows.get(&ts) {
                None => a.missing.push(ts),
                Some((n, p25, p10)) => {
                    if *n != 1 {
                        a.duplicated.push(ts);
                    }
                    if (*p25, *p10) != want {
                        a.wrong
                            .push(format!("ts {ts}: stored {p25:?}/{p10:?}, sent {want:?}"));
                    }
                }
            }
        }
        a
    }

    fn ok(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.wrong.is_empty()
    }

    fn summary(&self, site: &str) -> String {
        format!(
            "{site}: {} acknowledged, {} stored exactly once with their values, {} missing \
             (first: {:?}), {} stored more than once (first: {:?}), {} with other values (first: {:?})",
            self.acked,
            self.acked - self.missing.len() - self.duplicated.len() - self.wrong.len(),
            self.missing.len(),
            &self.missing[..self.missing.len().min(5)],
            self.duplicated.len(),
            &self.duplicated[..self.duplicated.len().min(5)],
            self.wrong.len(),
            &self.wrong[..self.wrong.len().min(3)],
        )
    }
}

// ---------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------

/// Runs `cmd` with its output captured; kills it (by its pid) when it has not exited
/// within `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let pid = child.id();
    // One result, then the thread ends.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let _ = rx.recv();
            Err(format!("no exit within {limit:?} (killed)"))
        }
    }
}

/// Progress of a device, shared with the test.
#[derive(Default)]
struct Progress {
    stop: AtomicBool,
    /// Messages acknowledged (PUBACK / mosquitto_pub exit 0).
    acked: AtomicUsize,
    /// Publish attempts that ended without an acknowledgement (failed runs, lost
    /// connections): what a device retries.
    failures: AtomicUsize,
    /// Connections opened (persistent device).
    connects: AtomicUsize,
    /// Publishes written to a connection (persistent device).
    written: AtomicUsize,
    /// Messages the device may create (a persistent device waits beyond this).
    allowed: AtomicUsize,
    /// Acknowledged message indices, in the order of their acknowledgement.
    acked_list: Mutex<Vec<usize>>,
    /// When the last acknowledgement and the last publish write happened.
    last_ack: Mutex<Option<Instant>>,
    last_write: Mutex<Option<Instant>>,
}

impl Progress {
    fn new(allowed: usize) -> Arc<Progress> {
        let p = Progress::default();
        p.allowed.store(allowed, Ordering::SeqCst);
        Arc::new(p)
    }
    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }
    fn ack(&self, m: usize) {
        self.acked_list.lock().unwrap().push(m);
        *self.last_ack.lock().unwrap() = Some(Instant::now());
        self.acked.fetch_add(1, Ordering::SeqCst);
    }
    fn acked_messages(&self) -> Vec<usize> {
        self.acked_list.lock().unwrap().clone()
    }
    fn since(t: &Mutex<Option<Instant>>) -> Duration {
        t.lock().unwrap().map_or(Duration::MAX, |t| t.elapsed())
    }
}

/// Stops the devices when the test ends, also when it fails.
struct StopOnDrop(Vec<Arc<Progress>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            p.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Device (a): one reading per connection with `mosquitto_pub -q 1`, retried at once
/// until mosquitto_pub exits 0 (= the broker acknowledged it), then the next reading.
fn one_per_connection(
    port: u16,
    site: &'static str,
    base: i64,
    p: Arc<Progress>,
) -> std::thread::JoinHandle<()> {
    let bin = require("mosquitto_pub");
    std::thread::spawn(move || {
        let topic = format!("aq/{site}/readings");
        let mut j = 0;
        while !p.stop.load(Ordering::SeqCst) {
            let out = run_bounded(
                Command::new(&bin).args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-q",
                    "1",
                    "-i",
                    &format!("{site}-{j}"),
                    "-t",
                    &topic,
                    "-m",
                    &reading_json(base, j),
                ]),
                Duration::from_secs(30),
            );
            if out.is_ok_and(|o| o.status.success()) {
                p.ack(j);
                j += 1;
            } else {
                p.failures.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

/// How a persistent device connects and streams.
#[derive(Clone)]
struct Streamer {
    site: &'static str,
    base: i64,
    per_msg: usize,
    /// Most unacknowledged publishes on the connection.
    window: u16,
    keep_alive: Duration,
    /// SO_SNDBUF of the device's socket (None: the kernel's autotuning).
    send_buffer: Option<u32>,
}

/// The readings a persistent device still has to deliver: unacknowledged ones first
/// (its backlog, in order), then new ones.
struct Source {
    backlog: VecDeque<usize>,
    next: usize,
}

/// Device (b): one persistent connection (clean session, QoS 1) publishing as fast as
/// its in-flight window allows; a message counts as acknowledged when the PUBACK with
/// its packet id arrives. After a disconnect it reconnects at once and re-publishes
/// every unacknowledged message first (its backlog upload).
fn persistent(port: u16, s: Streamer, p: Arc<Progress>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(stream(port, s, p));
    })
}

async fn stream(port: u16, s: Streamer, p: Arc<Progress>) {
    let source = Arc::new(Mutex::new(Source {
        backlog: VecDeque::new(),
        next: 0,
    }));
    let mut conn = 0usize;
    while !p.stop.load(Ordering::SeqCst) {
        conn += 1;
        let mut o = MqttOptions::new(format!("{}-{conn}", s.site), "127.0.0.1", port);
        o.set_clean_session(true)
            .set_inflight(s.window)
            .set_keep_alive(s.keep_alive)
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut el) = AsyncClient::new(o, 16);
        if let Some(b) = s.send_buffer {
            let mut n = el.network_options();
            n.set_tcp_send_buffer_size(b);
            el.set_network_options(n);
        }
        // Messages handed to the client whose packet id is not known yet, in order.
        let queued: Arc<Mutex<VecDeque<usize>>> = Arc::default();
        let feeder = tokio::spawn(feed(
            client,
            s.clone(),
            Arc::clone(&p),
            Arc::clone(&source),
            Arc::clone(&queued),
        ));
        let mut inflight: HashMap<u16, usize> = HashMap::new();
        let mut connected = false;
        let ended = loop {
            // A stopped device drops its connection at once, also when it is held back
            // in the middle of a write (the event loop is dropped, not resumed).
            let event = tokio::select! {
                event = el.poll() => event,
                () = stopped(&p) => break true,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    p.connects.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let m = queued.lock().unwrap().pop_front();
                    let m = m.expect("a publish the device did not queue");
                    inflight.insert(pkid, m);
                    p.written.fetch_add(1, Ordering::SeqCst);
                    *p.last_write.lock().unwrap() = Some(Instant::now());
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(m) = inflight.remove(&ack.pkid) {
                        p.ack(m);
                    }
                }
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        feeder.abort();
        let _ = feeder.await;
        if ended {
            return;
        }
        // Lost the connection: what was not acknowledged goes to the backlog, in order.
        let mut unacked: Vec<usize> = inflight.into_values().collect();
        unacked.extend(queued.lock().unwrap().drain(..));
        if !unacked.is_empty() {
            p.failures.fetch_add(unacked.len(), Ordering::SeqCst);
        }
        {
            let mut src = source.lock().unwrap();
            unacked.extend(src.backlog.drain(..));
            unacked.sort_unstable();
            unacked.dedup();
            src.backlog = unacked.into();
        }
        if !connected {
            // Refused: the service is not accepting devices. Retry after a few
            // milliseconds (a device's minimum retry interval; not synchronisation).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Returns once the device is told to stop.
async fn stopped(p: &Progress) {
    while !p.stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hands the device's messages to its client: backlog first, then new ones, while
/// `allowed` permits.
async fn feed(
    client: AsyncClient,
    s: Streamer,
    p: Arc<Progress>,
    source: Arc<Mutex<Source>>,
    queued: Arc<Mutex<VecDeque<usize>>>,
) {
    let topic = format!("aq/{}/readings", s.site);
    loop {
        if p.stop.load(Ordering::SeqCst) {
            return;
        }
        let next = {
            let mut src = source.lock().unwrap();
            match src.backlog.pop_front() {
                Some(m) => Some(m),
                None if src.next < p.allowed.load(Ordering::SeqCst) => {
                    src.next += 1;
                    Some(src.next - 1)
                }
                None => None,
            }
        };
        let Some(m) = next else {
            // Nothing allowed yet: look again shortly (a pacing poll, not a wait on the
            // service).
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        // Queued before the request is sent, so the event loop finds it by order.
        queued.lock().unwrap().push_back(m);
        let payload = message(s.base, m, s.per_msg);
        if client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The reading indices of acknowledged messages.
fn readings_of(messages: &[usize], per_msg: usize) -> impl Iterator<Item = usize> + '_ {
    messages
        .iter()
        .flat_map(move |m| m * per_msg..(m + 1) * per_msg)
}

// ---------------------------------------------------------------------------------------
// 1. SIGTERM restarts
// ---------------------------------------------------------------------------------------

#[test]
fn every_acknowledged_reading_survives_three_sigterm_restarts() {
    require("mosquitto_pub");
    let setup = Setup::new(|c| c);
    let data = setup.data();
    let base = base_ms();
    let a = Progress::new(0);
    let b = Progress::new(usize::MAX);
    let _stop = StopOnDrop(vec![Arc::clone(&a), Arc::clone(&b)]);

    // The service starts and the devices start with it: field devices do not wait for
    // the service, they retry until it takes their readings.
    let mut svc = setup.start(0);
    let dev_a = one_per_connection(setup.port, "dev-a", base, Arc::clone(&a));
    let dev_b = persistent(
        setup.port,
        Streamer {
            site: "dev-b",
            base,
            per_msg: 1,
            window: 100,
            keep_alive: Duration::from_secs(30),
            send_buffer: None,
        },
        Arc::clone(&b),
    );

    // Each phase: both devices acknowledged (10 one-shot readings, 1000 streamed) and
    // the service took readings created in this phase into the store (so each run of
    // the service reaches steady state, and each SIGTERM hits a busy service).
    let mut phases = Vec::new();
    for phase in 0..4 {
        let (a0, b0) = (a.acked(), b.acked());
        let a_new = reading(base, a0).0;
        let b_new = reading(base, b.acked_messages().iter().max().map_or(0, |m| m + 1)).0;
        wait_alive(
            &svc,
            &format!("both devices acknowledged and stored in phase {phase} (run {phase} of the service)"),
            Duration::from_secs(90),
            || {
                a.acked() >= a0 + 10
                    && b.acked() >= b0 + 1000
                    && latest(&data, "dev-a") >= Some(a_new)
                    && latest(&data, "dev-b") >= Some(b_new)
            },
        );
        if phase < 3 {
            // The devices go on publishing through the restart.
            stop_cleanly(&mut svc, &format!("restart {}", phase + 1));
            svc = setup.start(phase + 1);
        }
        phases.push((a.acked() - a0, b.acked() - b0));
    }
    for p in [&a, &b] {
        p.stop.store(true, Ordering::SeqCst);
    }
    dev_a.join().unwrap();
    dev_b.join().unwrap();

    let acked_a = a.acked_messages();
    let acked_b = b.acked_messages();
    // A PUBACK means committed: with the service still running, every acknowledged
    // reading is already in the store...
    let live_a = Audit::of(&data, "dev-a", base, acked_a.iter().copied());
    let live_b = Audit::of(&data, "dev-b", base, acked_b.iter().copied());
    // ...and after a last orderly shutdown too.
    stop_cleanly(&mut svc, "final stop");
    let final_a = Audit::of(&data, "dev-a", base, acked_a.iter().copied());
    let final_b = Audit::of(&data, "dev-b", base, acked_b.iter().copied());
    let report = format!(
        "acknowledged per phase (dev-a, dev-b), each until its SIGTERM exited: {phases:?}\n\
         dev-a: {} failed mosquitto_pub runs retried; dev-b: {} connections, {} publishes re-sent after a lost connection\n\
         while running: {}\n                {}\n\
         after the final SIGTERM: {}\n                         {}",
        a.failures.load(Ordering::SeqCst),
        b.connects.load(Ordering::SeqCst),
        b.failures.load(Ordering::SeqCst),
        live_a.summary("dev-a"),
        live_b.summary("dev-b"),
        final_a.summary("dev-a"),
        final_b.summary("dev-b"),
    );
    eprintln!("{report}");
    assert!(
        final_a.ok() && final_b.ok(),
        "acknowledged readings lost across SIGTERM restarts:\n{report}"
    );
    assert!(
        live_a.ok() && live_b.ok(),
        "a PUBACK arrived before its reading was committed:\n{report}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Store disk full
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted on a directory; unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run `mount`: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(format!(
                "`mount -t tmpfs` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem of `path` with the file `path` until a write fails with
/// ENOSPC; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0xA5u8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    written
}

const MIB: u64 = 1 << 20;

#[test]
fn a_full_store_disk_holds_devices_back_and_loses_nothing() {
    const TMPFS_MIB: u64 = 16;
    const MAX_PENDING: u64 = MIB;
    // 200 readings (~9 KiB) per message, 16 384 messages while the disk is full, all of
    // them allowed unacknowledged at once: the device can push ~150 MiB at a service
    // that keeps reading its socket — far above the memory bound below, so a service
    // that buffers instead of holding the device back fails it — and far more than the
    // 16 MiB disk could take, so a correct service cannot acknowledge them all.
    const PER_MSG: usize = 200;
    const WINDOW: u16 = 16_384;
    const BUDGET: usize = 16_384;

    let setup = Setup::new(|c| {
        assert!(
            c.contains("max_pending_bytes = 67108864"),
            "the shipped config sets the cap this test lowers"
        );
        c.replacen(
            "max_pending_bytes = 67108864",
            &format!("max_pending_bytes = {MAX_PENDING}"),
            1,
        )
    });
    let data = setup.data();
    let _disk = match Tmpfs::mount(&data, &format!("{TMPFS_MIB}m")) {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_store_disk_holds_devices_back_and_loses_nothing: it needs a \
                 small tmpfs for the store (run as root with CAP_SYS_ADMIN), and {why}"
            );
            return;
        }
    };
    let mut svc = setup.start(0);
    setup.wait_listening(&svc);
    let pid = svc.pid();
    let base = base_ms();
    let dev = Progress::new(10);
    let _stop = StopOnDrop(vec![Arc::clone(&dev)]);
    let device = persistent(
        setup.port,
        Streamer {
            site: "dev-full",
            base,
            per_msg: PER_MSG,
            window: WINDOW,
            // Longer than this test: a device held back by TCP cannot send PINGREQ.
            keep_alive: Duration::from_secs(300),
            // A small device-side socket buffer, so what the device has written sits
            // in the service (or in its socket), not in the device's kernel buffer.
            send_buffer: Some(64 * 1024),
        },
        Arc::clone(&dev),
    );

    // Started, and the first 10 messages acknowledged and committed: the baseline.
    wait_alive(
        &svc,
        "the first 10 messages acknowledged",
        Duration::from_secs(60),
        || dev.acked() >= 10,
    );
    let first = || {
        Audit::of(
            &data,
            "dev-full",
            base,
            readings_of(&dev.acked_messages(), PER_MSG),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !first().ok() {
        assert!(
            Instant::now() < deadline,
            "the first 10 acknowledged messages are not in the store 20 s later: {}\nservice log:\n{}",
            first().summary("dev-full"),
            tail(&svc)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let baseline_kib = proc_kib(pid, "VmRSS");

    // The store's disk fills up; the device streams as fast as it is let: BUDGET
    // messages, far more than the disk could take.
    let filler = data.join("filler");
    let filled = fill(&filler);
    let acked_at_full = dev.acked();
    dev.allowed.store(10 + BUDGET, Ordering::SeqCst);

    // Acknowledgements stop: nothing can be committed. (The WAL may still have room
    // for a few commits; those are acknowledged, and stored.) "Stopped" = none for 3 s.
    wait_alive(
        &svc,
        "acknowledgements to stop (none for 3 s) with the disk full",
        Duration::from_secs(120),
        || Progress::since(&dev.last_ack) >= Duration::from_secs(3),
    );
    // Back-pressure: the device stops getting its publishes out (no write for 3 s), or
    // it has its whole window out — the service kept reading; the memory bound below
    // then tells whether it held that in memory.
    wait_alive(
        &svc,
        "the device to be held back (no publish written for 3 s) or to have its whole window out",
        Duration::from_secs(60),
        || {
            Progress::since(&dev.last_write) >= Duration::from_secs(3)
                || dev.written.load(Ordering::SeqCst) - dev.acked() >= usize::from(WINDOW)
        },
    );
    let acked_full = dev.acked();
    let out_full = dev.written.load(Ordering::SeqCst) - acked_full;
    // No PUBACK for what could not be committed: every acknowledged reading is in the
    // store now, with the disk still full.
    let during = Audit::of(
        &data,
        "dev-full",
        base,
        readings_of(&dev.acked_messages(), PER_MSG),
    );
    let hwm_full_kib = proc_kib(pid, "VmHWM");

    // The bound: the resident set after start-up and a first commit (baseline), plus
    // max_pending_bytes (payload taken from devices, not yet committed), plus slack:
    // 16 MiB for SQLite's page cache (the store cannot hold more pages than its 16 MiB
    // disk) and 16 MiB for per-connection buffers, the runtime and allocator
    // fragmentation. A service that keeps reading the device's socket instead of
    // holding it back would be ~100 MiB or more over it.
    let bound_kib = baseline_kib + (MAX_PENDING + TMPFS_MIB * MIB + 16 * MIB) / 1024;
    let mem = format!(
        "memory: baseline VmRSS {baseline_kib} KiB, VmHWM {hwm_full_kib} KiB with the disk full \
         and {out_full} messages ({} KiB of payload) unacknowledged at the device, bound {bound_kib} KiB",
        out_full * message(base, 0, PER_MSG).len() / 1024
    );
    eprintln!(
        "disk full ({filled} filler bytes): {} messages acknowledged before, {} while full; {mem}",
        acked_at_full,
        acked_full - acked_at_full
    );
    assert!(
        during.ok(),
        "PUBACKs for readings that are not in the store while its disk is full: {}",
        during.summary("dev-full")
    );
    assert!(
        acked_full < 10 + BUDGET,
        "the device's whole stream ({BUDGET} messages, {} MiB of readings) was acknowledged while \
         the store's {TMPFS_MIB} MiB disk was full",
        (BUDGET * message(base, 0, PER_MSG).len()) >> 20
    );
    assert!(
        hwm_full_kib <= bound_kib,
        "memory over the bound while the disk was full: {mem}"
    );

    // Space returns: the stream resumes (20 more messages, 4000 readings, acknowledged;
    // the device has 100 more to send in case all it had was acknowledged).
    std::fs::remove_file(&filler).unwrap();
    dev.allowed.fetch_add(100, Ordering::SeqCst);
    wait_alive(
        &svc,
        "the stream to resume after the disk was freed",
        Duration::from_secs(60),
        || dev.acked() >= acked_full + 20,
    );
    dev.stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
    let hwm_end_kib = proc_kib(pid, "VmHWM");
    let end = Audit::of(
        &data,
        "dev-full",
        base,
        readings_of(&dev.acked_messages(), PER_MSG),
    );
    eprintln!(
        "after the disk was freed: {} messages acknowledged in all, {} connections; {}; VmHWM {hwm_end_kib} KiB",
        dev.acked(),
        dev.connects.load(Ordering::SeqCst),
        end.summary("dev-full")
    );
    assert!(
        end.ok(),
        "acknowledged readings lost: {}",
        end.summary("dev-full")
    );
    assert!(
        hwm_end_kib <= bound_kib,
        "memory over the bound while the backlog was committed: VmHWM {hwm_end_kib} KiB, bound {bound_kib} KiB"
    );
    svc.kill();
}

// ---------------------------------------------------------------------------------------
// 3. MQTT 5
// ---------------------------------------------------------------------------------------

fn mosquitto(bin: &str, args: &[&str]) -> Output {
    let bin = require(bin);
    run_bounded(Command::new(bin).args(args), Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn v5_pub(port: u16, site: &str, payload: &str) {
    let topic = format!("aq/{site}/readings");
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            &topic,
            "-m",
            payload,
        ],
    );
    assert!(
        out.status.success(),
        "an MQTT 5 device could not publish a QoS 1 reading ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mqtt5_devices_publish_and_subscribe() {
    require("mosquitto_sub");
    let setup = Setup::new(|c| c);
    let data = setup.data();
    let mut svc = setup.start(0);
    setup.wait_listening(&svc);

    // A reading published by an MQTT 5 device is stored.
    v5_pub(
        setup.port,
        "v5-device",
        r#"{"ts":"2016-08-01T08:58:57+08:00","pm25":35.2,"pm10":80.1}"#,
    );
    let ts = 1_470_013_137_000i64;
    wait_alive(
        &svc,
        "the MQTT 5 reading in the store",
        Duration::from_secs(20),
        || stored(&data, "v5-device").contains_key(&ts),
    );
    assert_eq!(stored(&data, "v5-device")[&ts], (1, Some(35.2), Some(80.1)));

    // An hour over the alert level (the device's own hourly mean, PM10 400 > 300).
    let hour = (chrono::Utc::now().timestamp_millis() - 2 * 3_600_000) / 3_600_000 * 3_600_000;
    v5_pub(
        setup.port,
        "dusty-v5",
        &format!(r#"{{"ts":{hour},"pm25":150,"pm10":400,"period":"hour"}}"#),
    );
    wait_alive(
        &svc,
        "the hourly reading in the store",
        Duration::from_secs(20),
        || stored(&data, "dusty-v5").contains_key(&hour),
    );

    // An MQTT 5 subscriber gets the alert (retained, or live if it is still on its way).
    let port = setup.port.to_string();
    let sub = |extra: &[&str]| {
        let mut args = vec![
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "aq/alerts/#",
            "-C",
            "1",
            "-W",
            "20",
            "-F",
            "%r %t %p",
        ];
        args.extend_from_slice(extra);
        let out = mosquitto("mosquitto_sub", &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "an MQTT 5 subscriber to aq/alerts/# got no alert ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    for (what, text) in [("first", sub(&[])), ("retained", sub(&["--retained-only"]))] {
        let mut parts = text.trim().splitn(3, ' ');
        let (retain, topic, payload) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        assert_eq!(topic, "aq/alerts/dusty-v5", "{what} message: {text}");
        let alert: serde_json::Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("{what} message is not JSON ({e}): {text}"));
        assert_eq!(alert["state"], "alert", "{what} message: {text}");
        assert_eq!(alert["site"], "dusty-v5", "{what} message: {text}");
        assert_eq!(alert["pm10"], 400.0, "{what} message: {text}");
        if what == "retained" {
            // Subscribing afterwards, a client still sees the site's current state.
            assert_eq!(retain, "1", "{what} message: {text}");
        }
    }
    stop_cleanly(&mut svc, "stop");
}
