//! End-to-end throughput benchmark (a load-test command that prints its figures, not a
//! timed test): `scripts/bench [N]` (default 200 000 messages).
//!
//! For the same stream of N QoS 1 messages it measures (a) mosquitto's bare delivery
//! rate to one subscriber that discards them (a rumqttc client in its own process that
//! acknowledges automatically, in batches: the cheapest consumer) and (b)
//! the aq-ingest binary end to end: decode, validate, SQLite commit, PUBACK after the
//! commit, forwarding to VictoriaMetrics over the InfluxDB v2 write API. Two scenarios:
//! - **live**: the subscriber is connected while the publisher sends as fast as the
//!   broker takes them;
//! - **backlog**: the stream waits in the subscriber's persistent session (it was down)
//!   and is drained at reconnect.
//!
//! And two CPU layouts, because on a 2-core machine everything competes for the same
//! cores:
//! - **pinned** (the headline): core 0 runs the broker and the publisher, core 1 runs
//!   the subscriber under test — for (b) aq-ingest *and* VictoriaMetrics. The broker side
//!   gets the same CPU in (a) and (b), so the ratio says whether the service keeps up
//!   with what the broker delivers, i.e. whether it is the bottleneck;
//! - **shared**: no pinning; every process competes for both cores, so (b) also pays
//!   for the CPU its SQLite commits take from the broker.
//!
//! It prints rates, ratios, CPU seconds per 100k readings (aq-ingest, and the broker),
//! messages per commit and aq-ingest's peak RSS — and for the live stream one table
//! with (c), the peer: a hand-written Python bridge (`benches/bridge/bridge.py`:
//! paho-mqtt + influxdb-client, 5 000-point batches, no durability) on the same stream
//! into the same VictoriaMetrics, with its CPU and peak RSS; and (d) aq-ingest as shipped,
//! the publishers connected to its embedded broker instead of mosquitto (the one-command
//! default). Environment knobs for experiments:
//! `AQ_BENCH_BIN=PATH` (measure another build of the service), `AQ_BENCH_PUBLISHERS=P` (publisher connections, default 20), `AQ_BENCH_ARRAY=100` (instead: N readings in arrays of 100 per message, committed
//! readings/s), `AQ_BENCH_PERF=FILE` (profile the service with perf: FILE.0 live, .1 backlog, .2 embedded;
//! CPU and RSS are then perf's, not the service's), `AQ_BENCH_NO_SINK=1`,
//! `AQ_BENCH_DURABILITY=process_crash`, `AQ_BENCH_SINK_EXTRA="derived = false"` (more
//! `[influx]` settings), `AQ_BENCH_ROUNDS=R` (the live rows R times in turn, with the
//! medians of each round's ratios: one round on a shared machine is noise-prone),
//! `AQ_BENCH_HISTORY_DAYS=D` (the service's store starts with D days of history, as a
//! long-running one; see `history`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "fixture.rs"]
mod fixture;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SITES: usize = 238;

/// Publisher connections (`AQ_BENCH_PUBLISHERS`, default 20: issue 16 measured with 20
/// parallel publishers, as a fleet of devices is many connections, not one).
fn publishers() -> usize {
    std::env::var("AQ_BENCH_PUBLISHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1)
}

/// Publishes `msgs` from [`publishers`] connections at once, each with the messages of
/// its sites in order (a site's readings stay in order, as from one device); returns
/// when the broker has acknowledged them all.
async fn publish_from_many(port: u16, msgs: Vec<(String, Vec<u8>)>) {
    let p = publishers();
    let mut shares: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); p];
    for (k, m) in msgs.into_iter().enumerate() {
        // Message k is site k % SITES's (both message builders): sites to connections.
        shares[(k % SITES) % p].push(m);
    }
    let tasks: Vec<_> = shares
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| tokio::spawn(publish_all(port, s)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn messages(n: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|k| reading_msg(k % SITES, k / SITES, base))
        .collect()
}

fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime (fields 14 and 15 of stat; 12th and 13th after the name), in ticks.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// The whole machine's CPU time (every process, every core) from `/proc/stat`: what a
/// consumer costs the machine it shares with the broker, the publishers and
/// VictoriaMetrics, beyond its own process.
#[derive(Clone, Copy)]
struct MachineCpu {
    busy: f64,
    total: f64,
    /// CPU seconds of the processes in [`WATCHED`] (the broker, VictoriaMetrics).
    procs: [f64; 2],
}

/// The broker's and VictoriaMetrics' pids, whose share of the machine each row shows
/// (0: none).
static WATCHED: [std::sync::atomic::AtomicU32; 2] = [
    std::sync::atomic::AtomicU32::new(0),
    std::sync::atomic::AtomicU32::new(0),
];

/// What the machine spent over one measurement: busy CPU seconds of all processes,
/// the busy share of all cores' time, and the broker's and VictoriaMetrics' seconds.
#[derive(Clone, Copy)]
struct Used {
    busy: f64,
    share: f64,
    broker: f64,
    vm: f64,
}

impl MachineCpu {
    fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let f: Vec<f64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap())
            .collect();
        // user nice system idle iowait irq softirq steal, in ticks of 1/100 s. Steal
        // (the hypervisor running someone else) is neither this machine's work nor idle.
        let idle = f[3] + f[4];
        let total: f64 = f[..7].iter().sum();
        let procs = [0, 1].map(
            |i| match WATCHED[i].load(std::sync::atomic::Ordering::Relaxed) {
                0 => 0.0,
                pid => proc_cpu_secs(pid),
            },
        );
        MachineCpu {
            busy: (total - idle) / 100.0,
            total: total / 100.0,
            procs,
        }
    }

    /// What was used since `self`.
    fn since(self) -> Used {
        let now = MachineCpu::now();
        let busy = now.busy - self.busy;
        Used {
            busy,
            share: busy / (now.total - self.total).max(1e-9),
            broker: now.procs[0] - self.procs[0],
            vm: now.procs[1] - self.procs[1],
        }
    }
}

/// A command, on core 1 when pinned.
fn on_core1(pinned: bool, program: &str) -> Command {
    if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", program]);
        c
    } else {
        Command::new(program)
    }
}

/// Pins this process (every thread) to core 0.
fn pin_self_to_core0() {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "taskset failed (util-linux); run with AQ_BENCH_LAYOUT=shared"
    );
}

/// The bare subscriber: this benchmark binary re-run as `--bare-sub PORT N MODE`, a
/// rumqttc client that acknowledges (automatically, in batches) and discards every
/// message. MODE: `live` (clean session), `session` (create the persistent session and
/// exit), `drain` (resume the persistent session). Prints `subscribed` once it is, and
/// at the end the seconds from its connection to the N-th message.
fn bare_sub_main(port: u16, n: usize, mode: &str) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    // The same runtime flavour as the service (multi-threaded), for a like-for-like
    // client side.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let id = if mode == "live" {
            "bench-live"
        } else {
            "bench-bare"
        };
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(mode == "live")
            .set_keep_alive(Duration::from_secs(60));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (c, mut el) = AsyncClient::new(o, 100);
        let mut got = 0;
        let mut t0 = Instant::now();
        if mode != "drain" {
            c.subscribe("aq/+/readings", QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        loop {
            match el.poll().await.unwrap() {
                Event::Incoming(Packet::ConnAck(_)) => {
                    t0 = Instant::now();
                    if mode == "drain" {
                        println!("subscribed");
                    }
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    println!("subscribed");
                    if mode == "session" {
                        c.disconnect().await.unwrap();
                    }
                }
                Event::Outgoing(rumqttc::Outgoing::Disconnect) => return,
                Event::Incoming(Packet::Publish(_)) => {
                    got += 1;
                    if got == n {
                        println!("{}", t0.elapsed().as_secs_f64());
                        return;
                    }
                }
                _ => {}
            }
        }
    });
}

/// Runs the bare subscriber as a process (on core 1 when pinned). `before` runs once it
/// is subscribed (the publisher, for the live scenario); the result is then the time
/// from `before` starting to the last message. Without `before`, it is the
/// subscriber's own time from connection to the last message.
fn bare_sub(pinned: bool, port: u16, n: usize, mode: &str, before: Option<&dyn Fn()>) -> Duration {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let mut c = on_core1(pinned, exe.to_str().unwrap());
    c.args(["--bare-sub", &port.to_string(), &n.to_string(), mode]);
    let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "subscribed");
    let t0 = Instant::now();
    if let Some(f) = before {
        f();
    }
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success());
    match before {
        Some(_) => t0.elapsed(),
        None => Duration::from_secs_f64(line.trim().parse().unwrap_or(0.0)),
    }
}

/// The issue's baseline, `mosquitto_sub -q 1` (C, discards to a file), on the live
/// stream: subscribed, then `publish` runs, until it has received `n` messages. It
/// knows it is subscribed when a retained sentinel on a second topic arrives (it
/// subscribes to both in one request, the readings first).
fn mosquitto_sub(pinned: bool, port: u16, dir: &Path, n: usize, publish: &dyn Fn()) -> Duration {
    let sentinel = "bench/ready";
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .args(["-t", sentinel, "-m", "ready"])
        .status()
        .expect("mosquitto_pub (Debian package mosquitto-clients; scripts/test installs it)");
    assert!(ok.success());
    let out = dir.join("mosquitto_sub.out");
    let mut c = on_core1(pinned, "mosquitto_sub");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "aq/+/readings", "-t", sentinel])
        .args(["-C", &(n + 1).to_string(), "-F", "%t"])
        .stdout(std::fs::File::create(&out).unwrap());
    let mut child = c
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients)");
    wait_until("mosquitto_sub subscribed", Duration::from_secs(20), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains(sentinel))
    });
    let t0 = Instant::now();
    publish();
    assert!(child.wait().unwrap().success());
    t0.elapsed()
}

/// What the Python bridge took for the live stream: the time from the first publish
/// until its last point was written, its CPU seconds and peak RSS (it reports both).
struct Bridge {
    took: Duration,
    cpu_secs: f64,
    rss_mib: f64,
}

/// The peer (`benches/bridge/bridge.py`, installed by `scripts/bench`) on the live
/// stream: subscribed, then `publish` runs, then it writes every message to
/// VictoriaMetrics (on core 1 when pinned, like the service).
fn python_bridge(pinned: bool, port: u16, vm: &str, n: usize, publish: &dyn Fn()) -> Bridge {
    use std::io::BufRead;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/bridge/bridge.py");
    let mut c = on_core1(pinned, "python3");
    c.args([script, &port.to_string(), vm, &n.to_string()]);
    let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "subscribed",
        "the Python bridge did not start: run scripts/bench (it installs paho-mqtt and influxdb-client)"
    );
    let t0 = Instant::now();
    publish();
    line.clear();
    out.read_line(&mut line).unwrap();
    let took = t0.elapsed();
    assert!(child.wait().unwrap().success());
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 2, "bridge said {line:?}");
    Bridge {
        took,
        cpu_secs: f[0],
        rss_mib: f[1],
    }
}

/// The service binary: this build's, or `AQ_BENCH_BIN` (another build, to compare two
/// in the same conditions).
fn service_bin() -> String {
    std::env::var("AQ_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_aq-ingest").to_owned())
}

/// Writes the service's config for a run: `source` (the `[mqtt]` or `[broker]`
/// section), a store in `dir` with `durability`, no API, and `sink_cfg` (an `[influx]`
/// section or nothing).
fn write_service_config(
    dir: &Path,
    source: &str,
    durability: &str,
    sink_cfg: &str,
) -> std::path::PathBuf {
    let cfg = dir.join("aq.toml");
    std::fs::write(
        &cfg,
        format!(
            "{source}[store]\npath = \"{}\"\ndurability = \"{durability}\"\n[log]\nstats_interval_secs = 0\n[api]\nenabled = false\n{sink_cfg}",
            dir.join("aq.db").display(),
        ),
    )
    .unwrap();
    history(&dir.join("aq.db"));
    cfg
}

/// Readings the service's store held before the stream (`AQ_BENCH_HISTORY_DAYS`): the
/// probes in [`measure`] count past them.
static HISTORY_READINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// With `AQ_BENCH_HISTORY_DAYS=D`, the service's store starts as a long-running one
/// does (as in `benches/cpu.rs`): each site with D days of hourly aggregates and four
/// hours of minute readings, already delivered, ending 120 days before now, before
/// every stream of the bench (the rounds go back 108 days at most). Every site then
/// has pages of its own in the tables keyed by site, as in the bureau's store.
fn history(db: &Path) {
    let Ok(days) = std::env::var("AQ_BENCH_HISTORY_DAYS") else {
        return;
    };
    let days: i64 = days
        .parse()
        .expect("AQ_BENCH_HISTORY_DAYS: a number of days");
    // The schema and the day caches' first refresh, made by the service under test
    // (`AQ_BENCH_BIN`: another build's), on its own broker: as in a long-running
    // store, the history below is then not recomputed in the measured run. (It is not
    // in the day caches either; no run here reads them.)
    let warm = db.with_extension("warmup.toml");
    std::fs::write(
        &warm,
        format!(
            "[broker]\nembedded = true\nlisten = \"127.0.0.1:{}\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nenabled = false\n",
            free_port(),
            db.display()
        ),
    )
    .unwrap();
    let mut svc = spawn_logged(
        Command::new(service_bin()).arg("--config").arg(&warm),
        db.with_extension("warmup.log"),
    );
    wait_until(
        "the day caches' first refresh",
        Duration::from_secs(60),
        || {
            rusqlite::Connection::open(db)
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM district_cache_key", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .is_ok_and(|n| n == 1)
        },
    );
    stop(&mut svc);
    let end = (base_ts_ms() - 120 * 86_400_000) / 3_600_000 * 3_600_000;
    let c = rusqlite::Connection::open(db).unwrap();
    let readings = fixture::history(&c, "site-%03d", SITES, end, days);
    HISTORY_READINGS.store(readings, std::sync::atomic::Ordering::Relaxed);
}

/// The `[mqtt]` section of a run through the mosquitto on `port`, under `client_id`
/// (its persistent session).
fn via(port: u16, client_id: &str) -> String {
    format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{client_id}\"\n")
}

fn spawn_service(pinned: bool, dir: &Path, cfg: &Path, run: usize) -> Proc {
    let log = dir.join(format!("aq-{run}.log"));
    let mut cmd = match std::env::var("AQ_BENCH_PERF") {
        Ok(out) => {
            let mut c = on_core1(pinned, "perf");
            c.args(["record", "-F", "1999", "-g", "-o"])
                .arg(format!("{out}.{run}"))
                .arg("--")
                .arg(service_bin());
            c
        }
        Err(_) => on_core1(pinned, &service_bin()),
    };
    spawn_logged(cmd.arg("--config").arg(cfg).env("RUST_LOG", "info"), log)
}

/// Stops the service with SIGTERM and checks it exited cleanly — unless it runs under
/// `perf record` (`AQ_BENCH_PERF`), whose own exit status after SIGTERM is not the
/// service's.
fn stop(svc: &mut Proc) {
    unsafe_sigterm(svc.pid());
    let status = svc.wait();
    assert!(
        status.success() || std::env::var_os("AQ_BENCH_PERF").is_some(),
        "aq-ingest exited with {status}"
    );
}

/// What one aq-ingest run took. (The child is `taskset`'s exec, so its pid is the
/// service's own.)
struct Measured {
    stored: Duration,
    forwarded: Duration,
    cpu_secs: f64,
    broker_cpu_secs: f64,
    /// The service's context switches (all its threads, voluntary or not): its
    /// wake-ups, which cost kernel time that instruction counts do not show.
    switches: u64,
    /// What the machine used over the same time.
    machine: Used,
}

/// Waits (from `t0`) until `total` readings are stored, then until the sink's cursor
/// has reached the last one.
fn measure(
    db_dir: &Path,
    pid: u32,
    broker: u32,
    t0: Instant,
    total: usize,
    sink: bool,
) -> Measured {
    let (cpu0, b0) = (proc_cpu_secs(pid), proc_cpu_secs(broker));
    let switches0 = context_switches(pid);
    let machine = MachineCpu::now();
    let c = db(db_dir);
    // Cheap probes (index lookups, not table scans) so that polling does not steal
    // CPU from the service: with no duplicates in the stream, max(seq) is the count.
    let max_seq = "SELECT coalesce(max(seq), 0) FROM readings";
    let cursor = "SELECT coalesce((SELECT seq FROM sink_cursors WHERE sink = 'influx'), 0)";
    wait_until("all stored", Duration::from_secs(600), || {
        count(&c, max_seq) as usize
            >= total + HISTORY_READINGS.load(std::sync::atomic::Ordering::Relaxed) as usize
    });
    let stored = t0.elapsed();
    wait_until("outbox drained", Duration::from_secs(600), || {
        !sink || count(&c, cursor) >= count(&c, max_seq)
    });
    Measured {
        stored,
        forwarded: t0.elapsed(),
        cpu_secs: proc_cpu_secs(pid) - cpu0,
        broker_cpu_secs: proc_cpu_secs(broker) - b0,
        switches: context_switches(pid).saturating_sub(switches0),
        machine: machine.since(),
    }
}

/// Context switches of every thread of `pid` so far (`/proc/PID/task/*/status`). A
/// thread that ended before the call is not counted; the service's threads live as
/// long as it does, except idle blocking-pool threads (10 s of idleness).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The last value of `name=` in the service's counter log lines.
fn counter(log: &str, name: &str) -> u64 {
    log.rsplit(&format!("{name}="))
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Batched payloads (`AQ_BENCH_ARRAY=K`): `n` readings in arrays of K, published live
/// to aq-ingest alone; committed (and forwarded) readings per second.
fn arrays(pinned: bool, n: usize, per: usize, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let vm = Victoria::start_on(dir.path(), pinned.then_some(1));
    let sink_cfg = format!("[influx]\nurl = \"{}\"\nbucket = \"aq\"\n", vm.url());
    let cfg = write_service_config(
        dir.path(),
        &via(broker.port, "bench-aq"),
        "power_loss",
        &sink_cfg,
    );
    let mut svc = spawn_service(pinned, dir.path(), &cfg, 0);
    wait_until("aq-ingest subscribed", Duration::from_secs(20), || {
        svc.log_text().contains("mqtt: subscribed")
    });
    let msgs = array_messages(n, per, SITES, base_ts_ms() - 30 * 86_400_000, |site| {
        format!("aq/site-{site:03}/readings")
    });
    let t0 = Instant::now();
    let publisher = rt.spawn(publish_from_many(broker.port, msgs));
    let m = measure(dir.path(), svc.pid(), broker.pid(), t0, n, true);
    rt.block_on(publisher).unwrap();
    let rss = peak_rss_mib(svc.pid());
    stop(&mut svc);
    println!(
        "{} layout, {n} readings in arrays of {per} (power-loss durability, VictoriaMetrics):\n  committed {:.0} readings/s, forwarded {:.0} readings/s; aq-ingest CPU {:.2} s/100k readings, peak RSS {rss:.1} MiB\n",
        if pinned { "pinned" } else { "shared" },
        rate(n, m.stored),
        rate(n, m.forwarded),
        m.cpu_secs * 100_000.0 / n as f64
    );
}

/// (d) aq-ingest as shipped by default: the publishers connect to its embedded broker
/// (no mosquitto in the path; PUBACK after the commit). The same stream, live; time
/// from the first publish until everything is committed and in VictoriaMetrics.
/// Returns that time, the service's CPU seconds and its peak RSS.
fn embedded(
    pinned: bool,
    msgs: Vec<(String, Vec<u8>)>,
    sink_cfg: &str,
    durability: &str,
    rt: &tokio::runtime::Runtime,
) -> (Duration, f64, f64, Used) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = format!("[broker]\nembedded = true\nlisten = \"127.0.0.1:{port}\"\n");
    let cfg = write_service_config(dir.path(), &broker, durability, sink_cfg);
    // Run 2 (the mosquitto runs are 0, live, and 1, backlog): `AQ_BENCH_PERF`'s FILE.2.
    let mut svc = spawn_service(pinned, dir.path(), &cfg, 2);
    wait_until(
        "the embedded broker listening",
        Duration::from_secs(20),
        || svc.log_text().contains("devices can connect"),
    );
    let n = msgs.len();
    let t0 = Instant::now();
    let publisher = rt.spawn(publish_from_many(port, msgs));
    let pid = svc.pid();
    let m = measure(dir.path(), pid, pid, t0, n, !sink_cfg.is_empty());
    rt.block_on(publisher).unwrap();
    let rss = peak_rss_mib(pid);
    stop(&mut svc);
    (m.forwarded, m.cpu_secs, rss, m.machine)
}

fn layout(pinned: bool, n: usize, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let vm = Victoria::start_on(dir.path(), pinned.then_some(1));
    let base = base_ts_ms() - 30 * 86_400_000;
    let port = broker.port;
    let mpid = broker.pid();
    WATCHED[0].store(mpid, std::sync::atomic::Ordering::Relaxed);
    WATCHED[1].store(vm.pid(), std::sync::atomic::Ordering::Relaxed);

    // The machine's CPU from the first publish until the consumer is done.
    let start = std::cell::Cell::new(MachineCpu::now());
    let publish_at = |ts: i64| {
        start.set(MachineCpu::now());
        rt.block_on(publish_from_many(port, messages(n, ts)))
    };

    // (a) live: the bare subscriber connected while the stream is published.
    let m0 = proc_cpu_secs(mpid);
    let live_bare = bare_sub(pinned, port, n, "live", Some(&|| publish_at(base)));
    let live_bare_machine = start.get().since();
    let live_bare_broker = proc_cpu_secs(mpid) - m0;

    // (a') live: mosquitto_sub -q 1, the issue's bare subscriber.
    let publish = || publish_at(base - 2 * 86_400_000);
    let live_mosquitto_sub = mosquitto_sub(pinned, port, dir.path(), n, &publish);
    let mosquitto_sub_machine = start.get().since();

    // (c) live: the Python bridge, on the same stream, into the same VictoriaMetrics.
    let publish = || publish_at(base - 86_400_000);
    let bridge = python_bridge(pinned, port, &vm.url(), n, &publish);
    let bridge_machine = start.get().since();

    // (a) backlog: the same stream queued in a persistent session, drained at reconnect.
    bare_sub(pinned, port, 0, "session", Some(&|| {}));
    rt.block_on(publish_from_many(port, messages(n, base + 86_400_000)));
    let m0 = proc_cpu_secs(mpid);
    let backlog_bare = bare_sub(pinned, port, n, "drain", None);
    let backlog_bare_broker = proc_cpu_secs(mpid) - m0;
    // Left alone, the drained session would make the broker queue (and autosave) a
    // second copy of every later message — during aq-ingest's run, not the others'.
    forget_session(port, "bench-bare");

    // (b) aq-ingest.
    let sink = std::env::var_os("AQ_BENCH_NO_SINK").is_none();
    let sink_cfg = if sink {
        format!(
            "[influx]\nurl = \"{}\"\nbucket = \"aq\"\n{}",
            vm.url(),
            std::env::var("AQ_BENCH_SINK_EXTRA").unwrap_or_default()
        )
    } else {
        String::new()
    };
    let durability = std::env::var("AQ_BENCH_DURABILITY").unwrap_or_else(|_| "power_loss".into());
    let runs = Live {
        pinned,
        n,
        port,
        mpid,
        vm_url: vm.url(),
        sink_cfg,
        durability,
        rt,
    };
    let (sink_cfg, durability) = (&runs.sink_cfg, &runs.durability);
    let cfg = write_service_config(dir.path(), &via(port, "bench-aq"), durability, sink_cfg);
    let msgs = messages(n, base + 2 * 86_400_000);
    let (live, log) = runs.aq_ingest(dir.path(), &cfg, 0, msgs);
    let live_commits = counter(&log, "store_commits");
    // Readings' lines plus the derived series' (a site-hour's line per request it changed in).
    let live_lines = counter(&log, "lines_written");

    rt.block_on(publish_from_many(port, messages(n, base + 3 * 86_400_000)));
    let mut svc = spawn_service(pinned, dir.path(), &cfg, 1);
    let pid = svc.pid();
    wait_until("aq-ingest connected", Duration::from_secs(20), || {
        svc.log_text().contains("mqtt: connected")
    });
    let backlog = measure(dir.path(), pid, mpid, Instant::now(), 2 * n, sink);
    let rss = peak_rss_mib(pid);
    stop(&mut svc);
    let acked = counter(&svc.log_text(), "messages_acked");
    let backlog_commits = counter(&svc.log_text(), "store_commits");
    forget_session(port, "bench-aq");

    // (d) the default deployment: devices straight to aq-ingest's embedded broker.
    let (embedded_took, embedded_cpu, embedded_rss, embedded_machine) = embedded(
        pinned,
        messages(n, base + 4 * 86_400_000),
        sink_cfg,
        durability,
        rt,
    );

    let per100k = |cpu: f64| cpu * 100_000.0 / n as f64;
    println!(
        "{} layout, {n} messages over {SITES} sites from {} publishers, durability {durability}, sink {}:",
        if pinned {
            "pinned (broker+publisher on core 0, subscriber+VictoriaMetrics on core 1)"
        } else {
            "shared (no pinning)"
        },
        publishers(),
        if sink {
            "VictoriaMetrics (v2 API)"
        } else {
            "none"
        }
    );
    for (name, bare, bare_broker, m, commits) in [
        ("live", live_bare, live_bare_broker, &live, live_commits),
        (
            "backlog",
            backlog_bare,
            backlog_bare_broker,
            &backlog,
            backlog_commits,
        ),
    ] {
        let a = rate(n, bare);
        let s = rate(n, m.stored);
        let f = rate(n, m.forwarded);
        println!("  {name}:");
        println!(
            "    (a) mosquitto → bare QoS 1 subscriber      {a:>8.0} msg/s ({:.2} s; broker CPU {:.2} s/100k)",
            bare.as_secs_f64(),
            per100k(bare_broker)
        );
        println!(
            "    (b) aq-ingest committed and acknowledged   {s:>8.0} msg/s ({:.2} s)  (b)/(a) = {:.2}",
            m.stored.as_secs_f64(),
            s / a
        );
        println!(
            "        … and forwarded to VictoriaMetrics     {f:>8.0} msg/s ({:.2} s)  (b)/(a) = {:.2}",
            m.forwarded.as_secs_f64(),
            f / a
        );
        println!(
            "        aq-ingest CPU {:.2} s/100k; broker CPU {:.2} s/100k; {commits} commits, {:.0} messages per commit; {:.0} context switches per 1 000 messages",
            per100k(m.cpu_secs),
            per100k(m.broker_cpu_secs),
            n as f64 / commits.max(1) as f64,
            m.switches as f64 * 1000.0 / n as f64
        );
    }
    println!("  aq-ingest peak RSS {rss:.1} MiB; backlog run acknowledged {acked} of {n}; live run wrote {live_lines} lines to VictoriaMetrics");
    let (a, a2, b, c) = (
        rate(n, live_bare),
        rate(n, live_mosquitto_sub),
        rate(n, live.forwarded),
        rate(n, bridge.took),
    );
    println!("  live, one table (time from the first publish to the last message handled):");
    println!(
        "    | consumer | msg/s | × bare (rumqttc) | × mosquitto_sub | CPU-s / 100k | peak RSS | machine CPU-s / 100k | machine busy | … of it mosquitto | … VictoriaMetrics |"
    );
    println!("    |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let machine = |u: Used| {
        format!(
            "{:.2} | {:.0} % | {:.2} | {:.2}",
            per100k(u.busy),
            u.share * 100.0,
            per100k(u.broker),
            per100k(u.vm)
        )
    };
    println!(
        "    | bare QoS 1 subscriber (rumqttc, discards) | {a:.0} | 1.00 | {:.2} | – | – | {} |",
        a / a2,
        machine(live_bare_machine)
    );
    println!(
        "    | mosquitto_sub -q 1 (discards) | {a2:.0} | {:.2} | 1.00 | – | – | {} |",
        a2 / a,
        machine(mosquitto_sub_machine)
    );
    println!(
        "    | aq-ingest (committed, acked, in VictoriaMetrics) | {b:.0} | {:.2} | {:.2} | {:.2} | {rss:.0} MiB | {} |",
        b / a,
        b / a2,
        per100k(live.cpu_secs),
        machine(live.machine)
    );
    println!(
        "    | Python bridge (paho-mqtt + influxdb-client, in VictoriaMetrics) | {c:.0} | {:.2} | {:.2} | {:.2} | {:.0} MiB | {} |",
        c / a,
        c / a2,
        per100k(bridge.cpu_secs),
        bridge.rss_mib,
        machine(bridge_machine)
    );
    let d = rate(n, embedded_took);
    println!(
        "    | aq-ingest, embedded broker (the default; devices publish to it, no mosquitto) | {d:.0} | {:.2} | {:.2} | {:.2} | {embedded_rss:.0} MiB | {} |",
        d / a,
        d / a2,
        per100k(embedded_cpu),
        machine(embedded_machine)
    );
    println!(
        "    aq-ingest / Python bridge: {:.2}×; with the embedded broker: {:.2}×\n",
        b / c,
        d / c
    );

    let rounds = rounds();
    if rounds > 1 {
        let mut all = vec![[a2, b, c, d]];
        all.extend((1..rounds).map(|r| runs.round(r)));
        print_rounds(&all);
    }
}

/// `AQ_BENCH_ROUNDS` (default 1): how many times the live rows are measured. On a
/// shared machine one round's ratios move by ±30 % with what else runs; the medians
/// of several interleaved rounds do not.
fn rounds() -> usize {
    std::env::var("AQ_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 9)
}

/// Ends a persistent session on the broker (a clean-session connection under its id).
fn forget_session(port: u16, client_id: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", client_id])
        .args(["-t", "bench/forget", "-m", "x"])
        .status()
        .expect("mosquitto_pub");
    assert!(ok.success());
}

/// What aq-ingest's live runs behind mosquitto, and the extra rounds of the live rows,
/// share.
struct Live<'a> {
    pinned: bool,
    n: usize,
    port: u16,
    mpid: u32,
    vm_url: String,
    sink_cfg: String,
    durability: String,
    rt: &'a tokio::runtime::Runtime,
}

impl Live<'_> {
    /// aq-ingest behind mosquitto on the live stream: started with `cfg` (run `run` for
    /// `AQ_BENCH_PERF`), subscribed, then `msgs` published; measured until everything
    /// is stored (and forwarded, with a sink), then stopped. The measurement and the
    /// service's log.
    fn aq_ingest(
        &self,
        dir: &Path,
        cfg: &Path,
        run: usize,
        msgs: Vec<(String, Vec<u8>)>,
    ) -> (Measured, String) {
        let mut svc = spawn_service(self.pinned, dir, cfg, run);
        wait_until("aq-ingest subscribed", Duration::from_secs(20), || {
            svc.log_text().contains("mqtt: subscribed")
        });
        let n = msgs.len();
        let t0 = Instant::now();
        let publisher = self.rt.spawn(publish_from_many(self.port, msgs));
        let sink = !self.sink_cfg.is_empty();
        let m = measure(dir, svc.pid(), self.mpid, t0, n, sink);
        self.rt.block_on(publisher).unwrap();
        stop(&mut svc);
        (m, svc.log_text())
    }

    /// Round `r` (1 …) of `mosquitto_sub`, aq-ingest behind mosquitto (a fresh store and
    /// session), the Python bridge and aq-ingest with its embedded broker, each on its
    /// own stream of the same shape: their rates, msg/s, in that order.
    fn round(&self, r: usize) -> [f64; 4] {
        let (n, port, rt) = (self.n, self.port, self.rt);
        let day = 86_400_000;
        let b = base_ts_ms() - (33 + 8 * r as i64) * day;
        let dir = tempfile::tempdir().unwrap();
        let publish = || rt.block_on(publish_from_many(port, messages(n, b)));
        let msub = mosquitto_sub(self.pinned, port, dir.path(), n, &publish);

        let id = format!("bench-aq-{r}");
        let cfg = write_service_config(
            dir.path(),
            &via(port, &id),
            &self.durability,
            &self.sink_cfg,
        );
        let (aq, _) = self.aq_ingest(dir.path(), &cfg, 2 + r, messages(n, b - day));
        forget_session(port, &id);

        let publish = || rt.block_on(publish_from_many(port, messages(n, b - 2 * day)));
        let bridge = python_bridge(self.pinned, port, &self.vm_url, n, &publish);
        let (embedded, ..) = embedded(
            self.pinned,
            messages(n, b - 3 * day),
            &self.sink_cfg,
            &self.durability,
            rt,
        );
        [msub, aq.forwarded, bridge.took, embedded].map(|d| rate(n, d))
    }
}

/// The medians over the rounds: each consumer's rate, and each round's ratios (taken
/// within the round, so that what the machine was doing then cancels out).
fn print_rounds(all: &[[f64; 4]]) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let k = v.len();
        if k % 2 == 1 {
            v[k / 2]
        } else {
            (v[k / 2 - 1] + v[k / 2]) / 2.0
        }
    };
    let col = |i: usize| all.iter().map(|r| r[i]).collect::<Vec<_>>();
    let ratio = |i: usize, j: usize| all.iter().map(|r| r[i] / r[j]).collect::<Vec<_>>();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    println!(
        "  live, {} rounds (the table above is round 1; each round runs the rows in turn), medians:",
        all.len()
    );
    println!("    | consumer | msg/s | × mosquitto_sub (range) | × Python bridge (range) |");
    println!("    |---|---:|---:|---:|");
    for (name, i) in [
        ("mosquitto_sub -q 1 (discards)", 0),
        (
            "aq-ingest behind mosquitto (committed, acked, in VictoriaMetrics)",
            1,
        ),
        ("Python bridge (paho-mqtt + influxdb-client)", 2),
        ("aq-ingest, embedded broker", 3),
    ] {
        println!(
            "    | {name} | {:.0} | {:.2} ({}) | {:.2} ({}) |",
            median(col(i)),
            median(ratio(i, 0)),
            range(&ratio(i, 0)),
            median(ratio(i, 2)),
            range(&ratio(i, 2)),
        );
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bare-sub") {
        bare_sub_main(args[2].parse().unwrap(), args[3].parse().unwrap(), &args[4]);
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    require("taskset");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let layouts: Vec<bool> = match std::env::var("AQ_BENCH_LAYOUT").as_deref() {
        Ok("shared") => vec![false],
        Ok("pinned") => vec![true],
        _ => vec![true, false],
    };
    for pinned in layouts {
        if pinned {
            pin_self_to_core0();
        } else {
            // Undo the pinning for the shared layout.
            let _ = Command::new("taskset")
                .args(["-a", "-p", "-c", "0-63", &std::process::id().to_string()])
                .stdout(Stdio::null())
                .status();
        }
        match std::env::var("AQ_BENCH_ARRAY")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(per) => arrays(pinned, n, per, &rt),
            None => layout(pinned, n, &rt),
        }
    }
}
