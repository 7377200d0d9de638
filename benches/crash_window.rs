//! The crash window of the one-command default (a load-test command that prints its
//! figures, not a timed test): `cargo bench --bench crash_window [KILLS]` (default 5).
//!
//! The release binary runs on the shipped defaults (embedded broker, power-loss
//! durability; ports moved to free ones). A device streams QoS 1 readings as fast as
//! its in-flight window allows (100), recording each reading whose PUBACK arrived. The
//! service is SIGKILLed mid-stream — no shutdown at all — and the store is then read
//! directly: every reading the device was told is safe must be in it. Repeated KILLS
//! times on the same store, restarting the service after each kill while the device
//! reconnects at once and re-sends what was not acknowledged.
//!
//! It prints, per kill and in all, the readings acknowledged, the acknowledged ones
//! missing from the store (the crash window in readings: zero when the PUBACK follows
//! the commit) and the PUBACK latency a device sees (p50/p99/max: the time from its
//! publish to the commit's acknowledgement, i.e. how long a reading is "in flight").

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Acknowledged readings (their minute index) and the latency of each PUBACK.
#[derive(Default)]
struct Device {
    acked: Vec<i64>,
    latencies: Vec<Duration>,
}

fn start(dir: &std::path::Path) -> Proc {
    spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .current_dir(dir)
            .args(["--config", "aq.toml"])
            .env_remove("RUST_LOG"),
        dir.join("service.log"),
    )
}

/// Streams readings `from..` until `stop` is set, reconnecting at once; pending
/// (unacknowledged) readings are re-sent after a reconnect.
async fn stream(
    port: u16,
    from: i64,
    device: Arc<Mutex<Device>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let base = 1_470_009_600_000i64; // 2016-08-01T00:00Z
    let mut next = from;
    let mut pending: Vec<i64> = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut o = MqttOptions::new("crash-window-device", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30)).set_inflight(100);
        let (client, mut el) = AsyncClient::new(o, 200);
        // pkid → (reading, sent at); in the order rumqttc assigns pkids.
        let mut in_flight: HashMap<u16, (i64, Instant)> = HashMap::new();
        let mut queue: std::collections::VecDeque<i64> = pending.drain(..).collect();
        let mut sent_order: std::collections::VecDeque<(i64, Instant)> = Default::default();
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            // At most 100 readings outstanding: the device's in-flight window.
            while sent_order.len() + in_flight.len() < 100 {
                let i = queue.pop_front().unwrap_or_else(|| {
                    next += 1;
                    next
                });
                let payload = format!(
                    r#"{{"ts":{},"pm25":{},"pm10":{}}}"#,
                    base + i * 60_000,
                    i % 97,
                    i % 89 + 100
                );
                if client
                    .try_publish("aq/crash-1/readings", QoS::AtLeastOnce, false, payload)
                    .is_err()
                {
                    queue.push_front(i);
                    break;
                }
                sent_order.push_back((i, Instant::now()));
            }
            match el.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(s) = sent_order.pop_front() {
                        in_flight.insert(pkid, s);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    if let Some((i, t)) = in_flight.remove(&a.pkid) {
                        let mut d = device.lock().unwrap();
                        d.acked.push(i);
                        d.latencies.push(t.elapsed());
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    // Connection lost: what was not acknowledged is sent again.
                    pending.extend(in_flight.drain().map(|(_, (i, _))| i));
                    pending.extend(sent_order.drain(..).map(|(i, _)| i));
                    pending.extend(queue.drain(..));
                    pending.sort_unstable();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    break;
                }
            }
        }
    }
}

fn stored(dir: &std::path::Path) -> std::collections::HashSet<i64> {
    let c = db(&dir.join("data"));
    let mut s = c
        .prepare("SELECT ts_ms FROM readings WHERE site = 'crash-1'")
        .unwrap();
    let base = 1_470_009_600_000i64;
    s.query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|t| (t.unwrap() - base) / 60_000)
        .collect()
}

fn percentile(v: &mut [Duration], p: usize) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let kills: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = shipped_config(port, free_port())
        .replace("stats_interval_secs = 60", "stats_interval_secs = 0");
    std::fs::write(dir.path().join("aq.toml"), cfg).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let device = Arc::new(Mutex::new(Device::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut svc = start(dir.path());
    let streamer = rt.spawn(stream(port, 0, Arc::clone(&device), Arc::clone(&stop)));
    println!("crash window of the embedded broker: SIGKILL mid-stream, {kills} times (power-loss durability)");
    println!(
        "{:>5} {:>12} {:>22}",
        "kill", "acknowledged", "acknowledged, missing"
    );
    let mut missing_total = 0;
    for k in 1..=kills {
        let before = device.lock().unwrap().acked.len();
        wait_until("readings acknowledged", Duration::from_secs(60), || {
            device.lock().unwrap().acked.len() >= before + 2000
        });
        svc.kill();
        let acked = device.lock().unwrap().acked.clone();
        let have = stored(dir.path());
        let missing = acked.iter().filter(|i| !have.contains(i)).count();
        missing_total += missing;
        println!("{k:>5} {:>12} {missing:>22}", acked.len());
        svc = start(dir.path());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = rt.block_on(streamer);
    svc.terminate();
    let mut d = device.lock().unwrap();
    let n = d.acked.len();
    let (p50, p99, max) = (
        percentile(&mut d.latencies, 50),
        percentile(&mut d.latencies, 99),
        percentile(&mut d.latencies, 100),
    );
    println!(
        "in all: {n} readings acknowledged, {missing_total} of them missing after a SIGKILL (the crash window in readings)"
    );
    println!("PUBACK latency (publish → commit → PUBACK): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
}
