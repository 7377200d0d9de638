//! HJ 212 devices end to end, black box: the built binary on the shipped default config
//! (ports moved to free ones, the store in a temporary directory, `[hj212] listen` on a
//! free port, a site registry mapping each device's MN to its site) and real device
//! connections. What a device is told must be true: a CN=9014 answer means the frame's
//! reading is committed, exactly once; a refused frame gets no answer and a `rejects`
//! row; one bad client harms no other.
//!
//! Every wait is on an observable fact (a TCP connect, an answer, rows in the store, a
//! counter at `/metrics`, a process exit) with a deadline, never a sleep and never log
//! wording.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aq_ingest::aqi::zone::Zone;
use aq_ingest::decode::hj212::{decode, encode, flag_value, CrcVariant, Frame, Framer, Version};
use aq_ingest::model::{Flag, UnixMillis};
use aq_ingest::sim::hj212::{mn_of, Answered, Device, DeviceConfig, FrameOptions, SIM_PASSWORD};
use aq_ingest::sim::{SimReading, Simulator};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------

/// Stored readings: (site, ts_ms) → (pm25, pm10).
type Stored = BTreeMap<(String, i64), (f64, f64)>;

/// One service directory: config, registry, store; the running binary.
struct Svc {
    dir: tempfile::TempDir,
    hj212_port: u16,
    api_port: u16,
    proc: Option<Proc>,
    runs: usize,
}

impl Svc {
    /// The shipped `config/default.toml` with the embedded broker and the API on free
    /// ports, the store and the registry in a fresh temporary directory, the HJ 212
    /// listener on a free port (`max_frames_per_sec` raised where a test is not about
    /// it), then `edit` applied. The registry lists `sites` sites `erqi-001`… with the
    /// simulator's MNs (`mn_of`), password `123456`, Appendix A CRC, µg/m³.
    fn new(sites: usize, edit: impl FnOnce(&mut toml::Table, &Svc)) -> Svc {
        let dir = tempfile::tempdir().unwrap();
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
                .unwrap();
        let mut cfg: toml::Table = shipped.parse().unwrap();
        let svc = Svc {
            hj212_port: free_port(),
            api_port: free_port(),
            dir,
            proc: None,
            runs: 0,
        };
        let d = svc.dir.path();
        set(
            &mut cfg,
            "broker",
            "listen",
            format!("127.0.0.1:{}", free_port()),
        );
        set(
            &mut cfg,
            "api",
            "listen",
            format!("127.0.0.1:{}", svc.api_port),
        );
        set(
            &mut cfg,
            "store",
            "path",
            d.join("data/aq-ingest.db").display().to_string(),
        );
        set(&mut cfg, "store", "durability", "process_crash");
        set(&mut cfg, "log", "stats_interval_secs", 0);
        set(
            &mut cfg,
            "sites",
            "file",
            d.join("sites.toml").display().to_string(),
        );
        set(
            &mut cfg,
            "hj212",
            "listen",
            format!("127.0.0.1:{}", svc.hj212_port),
        );
        set(&mut cfg, "hj212", "max_frames_per_sec", 10_000);
        edit(&mut cfg, &svc);
        std::fs::write(d.join("aq.toml"), toml::to_string(&cfg).unwrap()).unwrap();
        let registry: String = (0..sites)
            .map(|s| {
                format!(
                    "[[site]]\nid = \"{}\"\nmn = \"{}\"\nhj212_password = \"{SIM_PASSWORD}\"\nhj212_crc = \"hj212\"\nunit = \"ug/m3\"\n\n",
                    Simulator::site_id(s),
                    mn_of(s)
                )
            })
            .collect();
        std::fs::write(d.join("sites.toml"), registry).unwrap();
        svc
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.hj212_port)
    }

    /// Starts the binary and waits until the HJ 212 port accepts (the listener opens
    /// only once the service can commit what devices send).
    fn start(&mut self) {
        self.start_unwaited();
        let (port, api) = (self.hj212_port, self.api_port);
        self.wait_alive("the HJ 212 port to accept", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.wait_alive("the API to answer", Duration::from_secs(30), || {
            http("GET", &format!("http://127.0.0.1:{api}/metrics"), "")
                .is_some_and(|(s, _)| s == 200)
        });
    }

    fn start_unwaited(&mut self) {
        assert!(self.proc.is_none(), "already running");
        let d = self.dir.path();
        self.proc = Some(spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
                .current_dir(d)
                .args(["--config", "aq.toml"])
                .env_remove("RUST_LOG"),
            d.join(format!("service-{}.log", self.runs)),
        ));
        self.runs += 1;
    }

    /// SIGTERM; the process must exit by itself, successfully, within the shutdown
    /// deadline (60 s) plus margin.
    fn stop(&mut self) {
        let mut p = self.proc.take().expect("running");
        unsafe_sigterm(p.pid());
        let st = p.exit_within(Duration::from_secs(90));
        assert!(
            st.is_some_and(|s| s.success()),
            "the service did not stop cleanly ({st:?}); its log ends:\n{}",
            tail(&p.log_text())
        );
    }

    fn log_tail(&self) -> String {
        self.proc
            .as_ref()
            .map(|p| tail(&p.log_text()))
            .unwrap_or_default()
    }

    /// [`wait_until`] that fails at once, with the log, when the service is gone.
    fn wait_alive(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return;
            }
            if let Some(p) = &self.proc {
                assert!(
                    alive(p.pid()),
                    "the service exited while waiting for {what}; its log ends:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the service log ends:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The store (read-only checks).
    fn db(&self) -> rusqlite::Connection {
        db(&self.dir.path().join("data"))
    }

    /// Every stored reading: (site, ts_ms) → (pm25, pm10), and the number of rows.
    fn readings(&self) -> (Stored, usize) {
        let c = self.db();
        let mut s = c
            .prepare("SELECT site, ts_ms, pm25, pm10 FROM readings")
            .unwrap();
        let rows: Vec<(String, i64, f64, f64)> = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let n = rows.len();
        (
            rows.into_iter()
                .map(|(s, t, a, b)| ((s, t), (a, b)))
                .collect(),
            n,
        )
    }

    fn count(&self, sql: &str) -> i64 {
        count(&self.db(), sql)
    }

    /// The reasons of the `rejects` rows.
    fn reject_reasons(&self) -> Vec<String> {
        let c = self.db();
        let mut s = c.prepare("SELECT reason FROM rejects ORDER BY id").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The sum of the samples of `name` at `/metrics` whose labels include `label`;
    /// 0 when there is none.
    fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        metric_sum(self.api_port, name, |labels| {
            label.is_none_or(|(k, v)| labels.get(k) == Some(v))
        })
    }

    /// The sum of `aq_rejected_total` over the `hj212_…` reasons.
    fn hj212_rejected(&self) -> f64 {
        metric_sum(self.api_port, "aq_rejected_total", |labels| {
            labels
                .get("reason")
                .is_some_and(|r| r.starts_with("hj212_"))
        })
    }
}

fn metric_sum(api_port: u16, name: &str, keep: impl Fn(&prometheus_parse::Labels) -> bool) -> f64 {
    let (status, text) =
        http("GET", &format!("http://127.0.0.1:{api_port}/metrics"), "").unwrap_or_default();
    assert_eq!(status, 200, "/metrics: {text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && keep(&s.labels))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
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

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

fn sim(sites: usize) -> Simulator {
    Simulator {
        sites,
        interval_secs: 60,
        seed: 1,
        zone: Zone::BEIJING,
    }
}

/// Reading `i` of site `site`: one a minute from `base`, values from `reading_values`.
fn reading(site: usize, i: usize, base: i64) -> SimReading {
    let (pm25, pm10) = reading_values(site, i);
    SimReading {
        site,
        ts: UnixMillis(base + i as i64 * 60_000),
        pm25,
        pm10,
        flag: Flag::Normal,
    }
}

/// A frame under test: its QN, bytes, and the stored row it should give.
#[derive(Clone)]
struct TestFrame {
    qn: String,
    bytes: Vec<u8>,
    wants_reply: bool,
    key: (String, i64),
    values: (f64, f64),
}

/// Reading `i` of `site` as a 2017 CN=2011 frame (Appendix A CRC), asking for an answer
/// or not; `tweak` edits the frame before it is encoded.
fn test_frame(
    site: usize,
    i: usize,
    base: i64,
    wants_reply: bool,
    tweak: impl FnOnce(&mut Frame),
) -> TestFrame {
    let s = sim(site + 1);
    let r = reading(site, i, base);
    let mut f = s.hj212_frame(&r, &FrameOptions::default());
    f.flag = Some(flag_value(Version::Hj2017, wants_reply, false));
    tweak(&mut f);
    TestFrame {
        qn: f.qn.clone().unwrap(),
        bytes: encode(&f, CrcVariant::Hj212).unwrap(),
        wants_reply,
        key: (Simulator::site_id(site), r.ts.0),
        values: (r.pm25, r.pm10),
    }
}

/// The CN=9014 answers in `bytes` (Appendix A CRC, checked): their QNs.
fn answers(framer: &mut Framer, bytes: &[u8]) -> Vec<String> {
    framer
        .feed(bytes)
        .map(|f| {
            let f = f.expect("the service sends whole frames");
            let reply = decode(&f, CrcVariant::Hj212).unwrap_or_else(|e| {
                panic!(
                    "an answer that does not decode under the device's CRC: {e}: {}",
                    String::from_utf8_lossy(&f)
                )
            });
            assert_eq!(reply.cn, 9014, "{reply:?}");
            assert!(
                !reply.wants_reply(),
                "an answer must not ask for one: {reply:?}"
            );
            reply.qn.expect("the answer echoes the QN")
        })
        .collect()
}

/// Asserts that nothing arrives on `sock` until `until` (polling reads with a short
/// timeout up to the deadline).
fn assert_silent_until(sock: &mut TcpStream, until: Instant, why: &str) {
    let mut buf = [0u8; 512];
    while Instant::now() < until {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        match sock.read(&mut buf) {
            Ok(0) => panic!("{why}: the service closed the connection"),
            Ok(n) => panic!(
                "{why}: the service sent {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{why}: {e}"),
        }
    }
}

/// Reads until the answers to all of `qns` arrived (deadline `timeout`); returns every
/// answer read, in order.
fn read_answers(
    sock: &mut TcpStream,
    framer: &mut Framer,
    qns: &[&str],
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !qns.iter().all(|q| got.iter().any(|g| g == q)) {
        assert!(
            Instant::now() < deadline,
            "no answer to {qns:?} within {timeout:?}; got {got:?}"
        );
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match sock.read(&mut buf) {
            Ok(0) => panic!("the service closed the connection; answers so far {got:?}"),
            Ok(n) => got.extend(answers(framer, &buf[..n])),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    got
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// 50 devices at once, each streaming 40 frames cut at random points into writes that
/// also hold several frames, a third of them not asking for an answer. Every reading is
/// stored once with its values; every frame that asked is answered once with its QN,
/// and no frame that did not ask is answered (checked after a last asking frame per
/// device, answered only once everything before it was read).
#[test]
fn fifty_devices_with_split_and_coalesced_writes_each_reading_once() {
    const DEVICES: usize = 50;
    const FRAMES: usize = 40;
    let mut svc = Svc::new(DEVICES, |_, _| {});
    svc.start();
    let base = base_ts_ms();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = svc.addr();
    let frames: Vec<Vec<TestFrame>> = (0..DEVICES)
        .map(|s| {
            (0..FRAMES)
                .map(|i| test_frame(s, i, base, i % 3 != 0, |_| {}))
                .collect()
        })
        .collect();
    // Each device: write the stream in random cuts while reading answers; then one last
    // asking frame; return every answer read.
    let tasks: Vec<_> = frames
        .iter()
        .enumerate()
        .map(|(s, fs)| {
            let addr = addr.clone();
            let stream: Vec<u8> = fs.iter().flat_map(|f| f.bytes.clone()).collect();
            let last = test_frame(s, FRAMES, base, true, |_| {});
            rt.spawn(async move {
                let sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
                sock.set_nodelay(true).unwrap();
                let (mut rd, mut wr) = sock.into_split();
                let reader = tokio::spawn(async move {
                    let mut framer = Framer::new();
                    let mut got: Vec<String> = Vec::new();
                    let mut buf = vec![0u8; 4096];
                    while !got.contains(&last.qn) {
                        let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf))
                            .await
                            .expect("answers keep coming")
                            .unwrap();
                        assert!(
                            n > 0,
                            "device {s}: connection closed; answers so far {}",
                            got.len()
                        );
                        got.extend(answers(&mut framer, &buf[..n]));
                    }
                    got
                });
                let mut rng = fastrand::Rng::with_seed(s as u64);
                let mut at = 0;
                while at < stream.len() {
                    let n = rng.usize(1..=600).min(stream.len() - at);
                    wr.write_all(&stream[at..at + n]).await.unwrap();
                    at += n;
                    // Gaps between writes, so that the service's reads end mid-frame.
                    tokio::time::sleep(Duration::from_micros(rng.u64(0..3000))).await;
                }
                (wr, reader, last.bytes)
            })
        })
        .collect();
    let mut writers = Vec::new();
    for t in tasks {
        writers.push(rt.block_on(t).unwrap());
    }
    let want: BTreeMap<(String, i64), (f64, f64)> = frames
        .iter()
        .flatten()
        .map(|f| (f.key.clone(), f.values))
        .collect();
    svc.wait_alive("every reading stored", Duration::from_secs(60), || {
        svc.count("SELECT count(*) FROM readings") >= (DEVICES * FRAMES) as i64
    });
    // Everything before is committed (and its answers sent): now the last frames.
    let mut readers = Vec::new();
    for (mut wr, reader, last) in writers {
        rt.block_on(wr.write_all(&last)).unwrap();
        readers.push((wr, reader));
    }
    let mut asked_total = 0;
    for (s, (wr, reader)) in readers.into_iter().enumerate() {
        let got = rt.block_on(reader).unwrap();
        drop(wr);
        let mut want_qns: Vec<String> = frames[s]
            .iter()
            .filter(|f| f.wants_reply)
            .map(|f| f.qn.clone())
            .collect();
        want_qns.push(test_frame(s, FRAMES, base, true, |_| {}).qn);
        asked_total += want_qns.len();
        let mut sorted = got.clone();
        sorted.sort();
        want_qns.sort();
        assert_eq!(
            sorted, want_qns,
            "device {s}: one answer per asking frame, with its QN, none for the others"
        );
    }
    let (stored, rows) = svc.readings();
    let mut want = want;
    for s in 0..DEVICES {
        let f = test_frame(s, FRAMES, base, true, |_| {});
        want.insert(f.key, f.values);
    }
    assert_eq!(rows, DEVICES * (FRAMES + 1), "each reading stored once");
    assert_eq!(
        stored, want,
        "the readings the devices sent, with their values"
    );
    assert_eq!(
        svc.count("SELECT count(*) FROM rejects"),
        0,
        "{:?}",
        svc.reject_reasons()
    );
    assert_eq!(
        svc.metric("aq_hj212_replies_total", None),
        asked_total as f64
    );
    assert!(svc.metric("aq_hj212_frames_total", None) >= (DEVICES * (FRAMES + 1)) as f64);
    svc.stop();
}

/// The answer follows the commit: with the store's write lock held by the test, a frame
/// gets no answer (the socket is polled for 3 s), and its reading is not stored; once
/// the lock is released the answer arrives and the reading is there.
#[test]
fn the_answer_waits_for_the_commit() {
    let mut svc = Svc::new(1, |_, _| {});
    svc.start();
    let base = base_ts_ms();
    let mut sock = TcpStream::connect(svc.addr()).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut framer = Framer::new();
    // A first frame, answered: the path works and the connection is live.
    let first = test_frame(0, 0, base, true, |_| {});
    sock.write_all(&first.bytes).unwrap();
    read_answers(
        &mut sock,
        &mut framer,
        &[&first.qn],
        Duration::from_secs(30),
    );

    let lock = svc.db();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let second = test_frame(0, 1, base, true, |_| {});
    sock.write_all(&second.bytes).unwrap();
    assert_silent_until(
        &mut sock,
        Instant::now() + Duration::from_secs(3),
        "while the store's write lock is held",
    );
    let ts = second.key.1;
    assert_eq!(
        count(
            &lock,
            &format!("SELECT count(*) FROM readings WHERE ts_ms = {ts}")
        ),
        0
    );
    lock.execute_batch("COMMIT").unwrap();
    let got = read_answers(
        &mut sock,
        &mut framer,
        &[&second.qn],
        Duration::from_secs(30),
    );
    assert_eq!(got, vec![second.qn.clone()]);
    let (stored, rows) = svc.readings();
    assert_eq!(rows, 2);
    assert_eq!(stored.get(&second.key), Some(&second.values));
    svc.stop();
}

/// A client that dies in the middle of a frame and a client that sends garbage are
/// counted (and the dying one's half frame stores nothing) while five simulated devices
/// stream on: every one of their frames answered on its first connection, none re-sent,
/// every reading stored once.
#[test]
fn a_client_killed_mid_frame_and_a_garbage_client_harm_no_other_device() {
    const GOOD: usize = 5;
    const FRAMES: usize = 60;
    // Site GOOD is the client killed mid-frame.
    let mut svc = Svc::new(GOOD + 1, |_, _| {});
    svc.start();
    let base = base_ts_ms();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = sim(GOOD);
    let cfg = DeviceConfig {
        window: 4,
        max_frames_per_sec: 30.0,
        ..DeviceConfig::default()
    };
    let devices: Vec<_> = (0..GOOD)
        .map(|site| {
            let s = s.clone();
            let cfg = cfg.clone();
            let addr = svc.addr();
            rt.spawn(async move {
                let d = Device::spawn(&s, addr, site, cfg);
                for i in 0..FRAMES {
                    assert!(d.send(reading(site, i, base)).await);
                }
                d.finish().await
            })
        })
        .collect();

    // Refusals so far: `hj212_…` rejects plus refused connections.
    let counted = || svc.hj212_rejected() + svc.metric("aq_hj212_refused_total", None);
    // Killed mid-frame: half a frame, then the connection is gone.
    let before = counted();
    let half = test_frame(GOOD, 0, base, true, |_| {});
    {
        let mut k = TcpStream::connect(svc.addr()).unwrap();
        k.write_all(&half.bytes[..half.bytes.len() / 2]).unwrap();
    }
    svc.wait_alive(
        "the frame cut short counted",
        Duration::from_secs(30),
        || counted() > before,
    );
    // Garbage: 64 KiB without a frame start.
    let before = counted();
    let mut g = TcpStream::connect(svc.addr()).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let junk: Vec<u8> = (0..65_536)
        .map(|_| rng.u8(..))
        .map(|b| if b == b'#' { b'x' } else { b })
        .collect();
    // The service may hang up on a garbage sender part-way: that is allowed.
    let _ = g.write_all(&junk);
    svc.wait_alive("the garbage counted", Duration::from_secs(30), || {
        counted() > before
    });

    let mut total = aq_ingest::sim::hj212::DeviceReport::default();
    for d in devices {
        let r = rt.block_on(d).unwrap();
        assert_eq!(
            (r.delivered, r.unanswered, r.resent, r.connections),
            (FRAMES as u64, 0, 0, 1),
            "device {} was disturbed: {r:?}",
            r.site
        );
        total.add(&r);
    }
    drop(g);
    let (stored, rows) = svc.readings();
    assert_eq!(rows, GOOD * FRAMES);
    for site in 0..GOOD {
        for i in 0..FRAMES {
            let r = reading(site, i, base);
            assert_eq!(
                stored.get(&(Simulator::site_id(site), r.ts.0)),
                Some(&(r.pm25, r.pm10))
            );
        }
    }
    assert!(
        !stored.contains_key(&half.key),
        "half a frame stored a reading"
    );
    // Every connection is gone once its peer is: nothing left of the dead client.
    svc.wait_alive("no HJ 212 connection left", Duration::from_secs(30), || {
        svc.metric("aq_hj212_connections", None) == 0.0
    });
    svc.stop();
}

/// Bad CRC, wrong password, unknown MN: no answer, a `rejects` row each with an
/// `hj212_` reason (the CRC one `hj212_bad_crc`), counted; the same connection then
/// has a good frame answered and stored.
#[test]
fn refused_frames_get_no_answer_a_reject_row_and_the_connection_stays_usable() {
    let mut svc = Svc::new(1, |_, _| {});
    svc.start();
    let base = base_ts_ms();
    let mut bad_crc = test_frame(0, 0, base, true, |_| {});
    // The CRC's four hex digits sit before "\r\n": change one.
    let at = bad_crc.bytes.len() - 3;
    bad_crc.bytes[at] = if bad_crc.bytes[at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let wrong_pw = test_frame(0, 1, base, true, |f| f.pw = "654321".into());
    let unknown_mn = test_frame(0, 2, base, true, |f| f.mn = mn_of(999));
    let good = test_frame(0, 3, base, true, |_| {});
    let before = svc.hj212_rejected();

    let mut sock = TcpStream::connect(svc.addr()).unwrap();
    let mut framer = Framer::new();
    for f in [&bad_crc, &wrong_pw, &unknown_mn] {
        sock.write_all(&f.bytes).unwrap();
    }
    svc.wait_alive("three rejects rows", Duration::from_secs(30), || {
        svc.count("SELECT count(*) FROM rejects") >= 3
    });
    sock.write_all(&good.bytes).unwrap();
    let got = read_answers(&mut sock, &mut framer, &[&good.qn], Duration::from_secs(30));
    assert_eq!(got, vec![good.qn.clone()], "answers to refused frames");

    let reasons = svc.reject_reasons();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.starts_with("hj212_")),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"hj212_bad_crc".to_owned()), "{reasons:?}");
    let distinct: HashSet<&String> = reasons.iter().collect();
    assert_eq!(distinct.len(), 3, "a precise reason each: {reasons:?}");
    assert!(svc.hj212_rejected() >= before + 3.0);
    let (stored, rows) = svc.readings();
    assert_eq!(rows, 1);
    assert_eq!(stored.get(&good.key), Some(&good.values));
    svc.stop();
}

/// Ten simulated devices stream while the service is SIGTERMed and restarted twice;
/// they reconnect and re-send what was not answered. Every frame a device got an answer
/// for is stored exactly once with its values, and in the end every frame is answered.
#[test]
fn restart_under_load_loses_nothing_that_was_answered() {
    const DEVICES: usize = 10;
    let mut svc = Svc::new(DEVICES, |_, _| {});
    svc.start();
    let base = base_ts_ms() - 20 * 86_400_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answered: Arc<Mutex<Vec<(usize, i64)>>> = Arc::default();
    let a2 = Arc::clone(&answered);
    let cfg = DeviceConfig {
        window: 8,
        max_frames_per_sec: 40.0,
        // Never give up while the service is away.
        retries: 1000,
        on_reply: Some(Arc::new(move |a: &Answered| {
            a2.lock().unwrap().push((a.site, a.ts.0))
        })),
        ..DeviceConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = sim(DEVICES);
    let devices: Vec<_> = (0..DEVICES)
        .map(|site| {
            let (s, cfg, stop, addr) = (s.clone(), cfg.clone(), Arc::clone(&stop), svc.addr());
            rt.spawn(async move {
                let d = Device::spawn(&s, addr, site, cfg);
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    assert!(d.send(reading(site, sent, base)).await);
                    sent += 1;
                }
                (sent, d.finish().await)
            })
        })
        .collect();
    let n_answered = || answered.lock().unwrap().len();
    for restart in 0..2 {
        let before = n_answered();
        svc.wait_alive("answers flowing", Duration::from_secs(60), || {
            n_answered() >= before + 400
        });
        svc.stop();
        let at_stop = answered.lock().unwrap().clone();
        // What was answered before the stop is in the store the stopped service left.
        let (stored, rows) = svc.readings();
        assert_eq!(rows, stored.len());
        for (site, ts) in &at_stop {
            assert!(
                stored.contains_key(&(Simulator::site_id(*site), *ts)),
                "restart {restart}: answered reading {site}/{ts} missing after the stop"
            );
        }
        svc.start();
    }
    let before = n_answered();
    svc.wait_alive(
        "answers flowing after the restarts",
        Duration::from_secs(60),
        || n_answered() >= before + 400,
    );
    stop.store(true, Ordering::Relaxed);
    let mut sent_total = 0;
    let mut resent = 0;
    for d in devices {
        let (sent, r) = rt.block_on(d).unwrap();
        assert_eq!(r.unanswered, 0, "{r:?}");
        assert_eq!(
            r.delivered, sent as u64,
            "device {}: every frame answered in the end",
            r.site
        );
        assert!(
            r.connections >= 3,
            "device {} reconnected after each restart: {r:?}",
            r.site
        );
        sent_total += sent;
        resent += r.resent;
    }
    let answered = answered.lock().unwrap().clone();
    let distinct: HashSet<(usize, i64)> = answered.iter().copied().collect();
    assert_eq!(distinct.len(), sent_total, "each frame answered once");
    let (stored, rows) = svc.readings();
    assert_eq!(rows, sent_total, "each reading stored once");
    for (site, ts) in &distinct {
        let i = ((ts - base) / 60_000) as usize;
        let want = reading_values(*site, i);
        assert_eq!(stored.get(&(Simulator::site_id(*site), *ts)), Some(&want));
    }
    println!("{sent_total} frames, {resent} re-sent after the restarts");
    svc.stop();
}

/// HJ 212 over MQTT through mosquitto: 3 sites × 20 readings in messages of one to four
/// frames on `hj212/<site>/frames`, each message published twice (QoS 1): every
/// reading stored once with its values, nothing refused.
#[test]
fn the_same_frames_over_mqtt_through_mosquitto_land_once() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(tmp.path());
    let mut svc = Svc::new(3, |cfg, _| {
        set(cfg, "broker", "embedded", false);
        set(cfg, "mqtt", "url", broker.url());
        set(cfg, "mqtt", "client_id", "t-hj212-mqtt");
        set(cfg, "mqtt", "reconnect_min_ms", 50);
        set(
            cfg,
            "hj212",
            "mqtt_topics",
            toml::Value::Array(vec!["hj212/+/frames".into()]),
        );
        // HJ 212 over MQTT only.
        cfg["hj212"].as_table_mut().unwrap().remove("listen");
    });
    svc.start_unwaited();
    svc.wait_alive("the service subscribed", Duration::from_secs(30), || {
        http(
            "GET",
            &format!("http://127.0.0.1:{}/metrics", svc.api_port),
            "",
        )
        .is_some_and(|(s, _)| s == 200)
            && svc.metric("aq_mqtt_subscribed", None) == 1.0
    });
    let base = base_ts_ms();
    let s = sim(3);
    let o = FrameOptions::default();
    let mut msgs = Vec::new();
    let mut want = BTreeMap::new();
    for site in 0..3 {
        let readings: Vec<SimReading> = (0..20).map(|i| reading(site, i, base)).collect();
        for r in &readings {
            want.insert((Simulator::site_id(site), r.ts.0), (r.pm25, r.pm10));
        }
        let mut at = 0;
        let mut k = 0;
        while at < readings.len() {
            let n = (1 + k % 4).min(readings.len() - at);
            msgs.push((
                format!("hj212/{}/frames", Simulator::site_id(site)),
                s.hj212_payload(&readings[at..at + n], &o),
            ));
            at += n;
            k += 1;
        }
    }
    let n_msgs = msgs.len();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Both copies handled: every message acknowledged, or every frame counted.
    let acked_before = svc.metric("aq_messages_acked_total", None);
    rt.block_on(publish_all(broker.port, msgs.clone()));
    rt.block_on(publish_all(broker.port, msgs));
    svc.wait_alive(
        "both copies of every message acknowledged by the service",
        Duration::from_secs(60),
        || {
            svc.metric("aq_messages_acked_total", None) >= acked_before + 2.0 * n_msgs as f64
                || svc.metric("aq_hj212_frames_total", None) >= 120.0
        },
    );
    let (stored, rows) = svc.readings();
    assert_eq!(rows, 60, "each reading once");
    assert_eq!(stored, want);
    assert_eq!(
        svc.count("SELECT count(*) FROM rejects"),
        0,
        "{:?}",
        svc.reject_reasons()
    );
    svc.stop();
}

/// `aq-ingest simulate --protocol hj212 --target tcp://…` replays a period through the
/// listener: the command succeeds (every frame answered) and the store holds exactly
/// the readings `Simulator::site_day` generates for it — the same ones a JSON run of the
/// seed describes — with the flags mapped back.
#[test]
fn the_simulator_over_tcp_stores_the_simulated_period() {
    let (sites, days, seed) = (4usize, 2i64, 9u64);
    let mut svc = Svc::new(sites, |_, _| {});
    svc.start();
    let out = Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
        .args(["--config", "/dev/null", "simulate", "--protocol", "hj212"])
        .args(["--target", &format!("tcp://{}", svc.addr())])
        .args(["--sites", &sites.to_string(), "--interval-secs", "300"])
        .args(["--from", "2016-11-01", "--days", &days.to_string()])
        .args(["--seed", &seed.to_string(), "--device-rate", "500"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "simulate failed: {}{}\nservice log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        svc.log_tail()
    );
    let sim = Simulator {
        sites,
        interval_secs: 300,
        seed,
        zone: Zone::BEIJING,
    };
    let from = chrono::NaiveDate::from_ymd_opt(2016, 11, 1).unwrap();
    let mut want = BTreeMap::new();
    let mut flags: HashMap<(String, i64), Flag> = HashMap::new();
    for d in 0..days {
        for site in 0..sites {
            for r in sim.site_day(site, from + chrono::Duration::days(d)) {
                want.insert((Simulator::site_id(site), r.ts.0), (r.pm25, r.pm10));
                flags.insert((Simulator::site_id(site), r.ts.0), r.flag);
            }
        }
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("published {}", want.len())));
    let (stored, rows) = svc.readings();
    assert_eq!(rows, want.len());
    assert_eq!(stored, want);
    let c = svc.db();
    let mut q = c.prepare("SELECT site, ts_ms, flag FROM readings").unwrap();
    for row in q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap()
    {
        let (site, ts, flag) = row.unwrap();
        assert_eq!(flag, flags[&(site, ts)].code());
    }
    svc.stop();
}

/// A device registered with its own CRC variant (Modbus, as many field devices send)
/// and protocol version (2017): its frames are checked with that CRC, its answers carry
/// it, and a frame in another version or with the standard's CRC is refused, with no
/// answer, under its precise reason.
#[test]
fn a_device_s_own_crc_variant_and_version_are_checked() {
    let mut svc = Svc::new(1, |_, _| {});
    std::fs::write(
        svc.dir.path().join("sites.toml"),
        format!(
            "[[site]]\nid = \"{}\"\nmn = \"{}\"\nhj212_password = \"{SIM_PASSWORD}\"\nhj212_crc = \"modbus\"\nhj212_version = \"2017\"\n",
            Simulator::site_id(0),
            mn_of(0)
        ),
    )
    .unwrap();
    svc.start();
    let base = base_ts_ms();
    let frame = |i: usize, version: Version, crc: CrcVariant| {
        let s = sim(1);
        let r = reading(0, i, base);
        let mut f = s.hj212_frame(&r, &FrameOptions::default());
        f.flag = Some(flag_value(version, true, false));
        (f.qn.clone().unwrap(), encode(&f, crc).unwrap(), r)
    };
    let (qn_ok, ok, r_ok) = frame(0, Version::Hj2017, CrcVariant::Modbus);
    let (_, v2025, _) = frame(1, Version::Hj2025, CrcVariant::Modbus);
    let (_, std_crc, _) = frame(2, Version::Hj2017, CrcVariant::Hj212);
    let mut sock = TcpStream::connect(svc.addr()).unwrap();
    sock.write_all(&v2025).unwrap();
    sock.write_all(&std_crc).unwrap();
    svc.wait_alive("two rejects rows", Duration::from_secs(30), || {
        svc.count("SELECT count(*) FROM rejects") >= 2
    });
    sock.write_all(&ok).unwrap();
    // The one answer, in the device's own CRC variant.
    let mut framer = Framer::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        assert!(Instant::now() < deadline, "no answer to the good frame");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match sock.read(&mut buf) {
            Ok(0) => panic!("the service closed the connection"),
            Ok(n) => {
                let frames: Vec<_> = framer.feed(&buf[..n]).collect();
                if let Some(f) = frames.into_iter().next() {
                    break f.unwrap();
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    };
    let reply = decode(&answer, CrcVariant::Modbus).expect("the answer carries the Modbus CRC");
    assert_eq!(
        (reply.cn, reply.qn.as_deref()),
        (9014, Some(qn_ok.as_str()))
    );
    assert!(decode(&answer, CrcVariant::Hj212).is_err());
    assert_silent_until(
        &mut sock,
        Instant::now() + Duration::from_millis(500),
        "refused frames get no answer",
    );
    let mut reasons = svc.reject_reasons();
    reasons.sort();
    assert_eq!(reasons, vec!["hj212_bad_crc", "hj212_unknown_version"]);
    let (stored, rows) = svc.readings();
    assert_eq!(rows, 1);
    assert_eq!(
        stored.get(&(Simulator::site_id(0), r_ok.ts.0)),
        Some(&(r_ok.pm25, r_ok.pm10))
    );
    svc.stop();
}
