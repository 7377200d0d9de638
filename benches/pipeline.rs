//! End-to-end throughput benchmark (a load-test command that prints its figures, not a
//! timed test): `scripts/bench [N]`.
//!
//! Two scenarios, each measured for (a) a bare rumqttc subscriber that acknowledges and
//! discards every message (the broker's QoS 1 delivery rate to one subscriber: the
//! ceiling) and (b) the aq-ingest binary end to end (decode, validate, SQLite commit,
//! ack after commit, forwarding to VictoriaMetrics over the v2 write API):
//! - **live**: the subscriber is connected while a publisher sends N QoS 1 messages as
//!   fast as mosquitto takes them — the same stream for (a) and (b);
//! - **backlog**: N messages wait in the subscriber's persistent session (the service
//!   was down) and are drained at reconnect.
//!
//! It prints the rates, their ratios, aq-ingest's CPU seconds per 100k readings and its
//! peak RSS. The broker runs with `max_inflight_messages 1000` (see README).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const SITES: usize = 238;

fn messages(n: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|k| reading_msg(k % SITES, k / SITES, base))
        .collect()
}

fn bare_client(port: u16, clean: bool) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new("bench-bare", "127.0.0.1", port);
    o.set_clean_session(clean)
        .set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, 1000)
}

async fn subscribed(c: &AsyncClient, el: &mut EventLoop) {
    c.subscribe("aq/+/readings", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.unwrap() {
            return;
        }
    }
}

async fn leave(c: AsyncClient, mut el: EventLoop) {
    c.disconnect().await.unwrap();
    while el.poll().await.is_ok() {}
}

/// Receives until `n` publishes arrived; returns when the last one did.
async fn receive(el: &mut EventLoop, n: usize) -> Instant {
    let mut got = 0;
    while got < n {
        if let Event::Incoming(Packet::Publish(_)) = el.poll().await.unwrap() {
            got += 1;
        }
    }
    Instant::now()
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

fn proc_peak_rss_mib(pid: u32) -> f64 {
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

fn spawn_service(dir: &Path, cfg: &Path, run: usize) -> Proc {
    let log = dir.join(format!("aq-{run}.log"));
    let f = std::fs::File::create(&log).unwrap();
    // AQ_BENCH_PERF=FILE profiles the service with `perf record` (figures then include
    // perf's own overhead; use for finding hot spots, not for the numbers).
    let mut cmd = match std::env::var("AQ_BENCH_PERF") {
        Ok(out) => {
            let mut c = std::process::Command::new("perf");
            c.args(["record", "-F", "1999", "-g", "-o"])
                .arg(format!("{out}.{run}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_aq-ingest"));
            c
        }
        Err(_) => std::process::Command::new(env!("CARGO_BIN_EXE_aq-ingest")),
    };
    let child = cmd
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    proc_from(child, log)
}

struct Measured {
    stored: Duration,
    forwarded: Duration,
    cpu_secs: f64,
}

/// Waits (from `t0`) until `total` readings are stored, then until the outbox is empty.
fn measure(db_path: &Path, pid: u32, t0: Instant, total: usize) -> Measured {
    let cpu0 = proc_cpu_secs(pid);
    let c = db(db_path);
    // Cheap probes (index lookups, not table scans) so that polling does not steal
    // CPU from the service: with no duplicates in the stream, max(seq) is the count.
    let max_seq = "SELECT coalesce(max(seq), 0) FROM readings";
    wait_until("all stored", Duration::from_secs(600), || {
        count(&c, max_seq) as usize >= total
    });
    let stored = t0.elapsed();
    let cursor = "SELECT coalesce((SELECT seq FROM sink_cursors WHERE sink = 'influx'), 0)";
    let sink = std::env::var_os("AQ_BENCH_NO_SINK").is_none();
    wait_until("outbox drained", Duration::from_secs(600), || {
        !sink || count(&c, cursor) >= count(&c, max_seq)
    });
    Measured {
        stored,
        forwarded: t0.elapsed(),
        cpu_secs: proc_cpu_secs(pid) - cpu0,
    }
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

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let vm = Victoria::start(dir.path());
    let base = base_ts_ms() - 30 * 86_400_000;
    let port = broker.port;
    println!("{n} messages, {SITES} sites, mosquitto max_inflight_messages 1000");

    // Live (a): bare subscriber connected while the stream is published.
    let live_bare = rt.block_on(async {
        let (c, mut el) = bare_client(port, true);
        subscribed(&c, &mut el).await;
        let t0 = Instant::now();
        let publisher = tokio::spawn(publish_all(port, messages(n, base)));
        let t1 = receive(&mut el, n).await;
        publisher.await.unwrap();
        leave(c, el).await;
        t1 - t0
    });

    // Backlog (a): the same stream queued in a persistent session, drained at reconnect.
    let backlog_bare = rt.block_on(async {
        let (c, mut el) = bare_client(port, false);
        subscribed(&c, &mut el).await;
        leave(c, el).await;
        publish_all(port, messages(n, base + 86_400_000)).await;
        let (c, mut el) = bare_client(port, false);
        let t0 = Instant::now();
        let t1 = receive(&mut el, n).await;
        // Clean the session away so it stops queueing the next runs' streams.
        drop(c);
        let (c, el) = bare_client(port, true);
        leave(c, el).await;
        t1 - t0
    });

    // (b) aq-ingest.
    // AQ_BENCH_NO_SINK=1 measures ingest alone (no [influx] section, no outbox).
    let sink = match std::env::var_os("AQ_BENCH_NO_SINK") {
        Some(_) => String::new(),
        None => format!("[influx]\nurl = \"{}\"\nbucket = \"aq\"\n", vm.url()),
    };
    // AQ_BENCH_DURABILITY=process_crash measures without an fsync per commit.
    let durability = std::env::var("AQ_BENCH_DURABILITY").unwrap_or_else(|_| "power_loss".into());
    println!(
        "aq-ingest: durability {durability}, sink: {}\n",
        if sink.is_empty() {
            "none"
        } else {
            "VictoriaMetrics v2"
        }
    );
    let cfg = dir.path().join("aq.toml");
    let db_dir = dir.path().to_path_buf();
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nurl = \"{}\"\nclient_id = \"bench-aq\"\n[store]\npath = \"{}\"\ndurability = \"{durability}\"\n[log]\nstats_interval_secs = 0\n{sink}",
            broker.url(),
            dir.path().join("aq.db").display(),
        ),
    )
    .unwrap();
    let mut svc = spawn_service(dir.path(), &cfg, 0);
    wait_until("aq-ingest subscribed", Duration::from_secs(20), || {
        svc.log_text().contains("mqtt: subscribed")
    });
    let t0 = Instant::now();
    let publisher = rt.spawn(publish_all(port, messages(n, base + 2 * 86_400_000)));
    let live = measure(&db_dir, svc.pid(), t0, n);
    rt.block_on(publisher).unwrap();
    unsafe_sigterm(svc.pid());
    assert!(svc.wait().success());
    let live_commits = counter(&svc.log_text(), "store_commits");

    // Backlog (b): the service is down while the stream is queued, then starts.
    rt.block_on(publish_all(port, messages(n, base + 3 * 86_400_000)));
    let mut svc = spawn_service(dir.path(), &cfg, 1);
    let pid = svc.pid();
    wait_until("aq-ingest connected", Duration::from_secs(20), || {
        svc.log_text().contains("mqtt: connected")
    });
    let backlog = measure(&db_dir, pid, Instant::now(), 2 * n);
    let rss = proc_peak_rss_mib(pid);
    unsafe_sigterm(pid);
    assert!(svc.wait().success());
    let acked = svc.log_text().contains(&format!("messages_acked={n}"));
    let backlog_commits = counter(&svc.log_text(), "store_commits");

    for (name, bare, m, commits) in [
        ("live", live_bare, &live, live_commits),
        ("backlog", backlog_bare, &backlog, backlog_commits),
    ] {
        let a = rate(n, bare);
        let s = rate(n, m.stored);
        let f = rate(n, m.forwarded);
        println!("{name}:");
        println!(
            "  (a) mosquitto → bare QoS 1 subscriber     {a:>9.0} msg/s  ({:.2} s)",
            bare.as_secs_f64()
        );
        println!(
            "  (b) aq-ingest stored, committed and acked {s:>9.0} msg/s  ({:.2} s)  ratio {:.2}",
            m.stored.as_secs_f64(),
            s / a
        );
        println!(
            "      … and forwarded to VictoriaMetrics    {f:>9.0} msg/s  ({:.2} s)  ratio {:.2}",
            m.forwarded.as_secs_f64(),
            f / a
        );
        println!(
            "      CPU {:.2} s per 100k readings; {commits} commits, {:.0} messages per commit",
            m.cpu_secs * 100_000.0 / n as f64,
            n as f64 / commits.max(1) as f64
        );
    }
    println!("aq-ingest peak RSS {rss:.1} MiB; backlog run acknowledged all {n}: {acked}");
}
