//! Memory at scale (issue 16 item 6; a load-test command that prints its figures, not a
//! timed test): `cargo bench --bench scale [SITES] [MINUTES]` (default 10 000 sites, 30
//! minutes).
//!
//! The release binary runs on the shipped defaults (embedded broker, power-loss
//! durability, the API on; ports moved to free ones, the store in a temporary
//! directory). Three phases, each printing the service's peak RSS (`VmHWM` in
//! `/proc/PID/status`, which only grows, so each figure is the peak so far):
//!
//! 1. **ingest**: each of SITES sites sends MINUTES minute-cadence readings (the last
//!    MINUTES minutes), compressed in time — `SITES × MINUTES` QoS 1 messages from 4
//!    connections, as fast as the broker takes them (what `benches/scale/publish.py`
//!    does, without Python). Printed: messages acknowledged per second, peak RSS.
//! 2. **whole-fleet pages**: at that size, the site list (`/api/v1/sites`) and then the
//!    day's bulletin (`/api/v1/bulletin/{date}`), [`REQUESTS`] times each, one at a
//!    time. Printed: p50 and max latency, body size, peak RSS after each.
//! 3. **array uploads**: a second service process on a fresh store takes `ARRAY_READINGS`
//!    readings in arrays of [`ARRAY_PER_MESSAGE`] (devices' backlog uploads), published
//!    at QoS 1 from 4 connections with 200 in flight each (up to 800 messages, 80 000
//!    readings, waiting for one commit). Printed: readings/s committed and
//!    acknowledged, peak RSS.
//!
//! Environment variables reach the service unchanged, so allocator experiments are
//! `MALLOC_ARENA_MAX=2 cargo bench --bench scale`; `AQ_SCALE_BIN=PATH` runs another
//! build of the service (e.g. a copy of an earlier one, for before/after in one run).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Requests of each whole-fleet page.
const REQUESTS: usize = 15;
/// Connections the ingest phase publishes from (as `publish.py` does).
const PUBLISHERS: usize = 4;
/// Readings per message in the array phase, and readings in all.
const ARRAY_PER_MESSAGE: usize = 100;
const ARRAY_READINGS: usize = 300_000;
/// Sites the array phase's messages come from (3 uploads each at the default size).
const ARRAY_SITES: usize = 1000;

/// The release binary on the shipped defaults in `d`; returns it with its MQTT and API
/// ports once both listen.
fn start(d: &Path) -> (Proc, u16, u16) {
    let (mqtt_port, api_port) = (free_port(), free_port());
    let cfg = shipped_config_in(d, mqtt_port, api_port);
    // No registry: every site is an unregistered one, accepted (the shipped default).
    std::fs::write(d.join("sites.toml"), "").unwrap();
    std::fs::write(d.join("aq.toml"), toml::to_string(&cfg).unwrap()).unwrap();
    let svc = spawn_logged(
        Command::new(
            std::env::var_os("AQ_SCALE_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_aq-ingest").into()),
        )
        .current_dir(d)
        .args(["--config", "aq.toml"])
        .env_remove("RUST_LOG"),
        d.join("service.log"),
    );
    wait_until_alive(
        "the MQTT and API ports",
        &svc,
        Duration::from_secs(30),
        || port_open(mqtt_port) && port_open(api_port),
    );
    (svc, mqtt_port, api_port)
}

fn stop(mut svc: Proc) {
    unsafe_sigterm(svc.pid());
    let st = svc.exit_within(Duration::from_secs(90));
    assert!(
        st.is_some_and(|s| s.success()),
        "the service did not stop cleanly"
    );
}

/// Publishes `msgs` from `PUBLISHERS` connections at once, round-robin; returns when the
/// broker (the service: acks after commit) acknowledged all of them.
fn publish(rt: &tokio::runtime::Runtime, port: u16, msgs: Vec<(String, Vec<u8>)>) {
    let mut parts: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); PUBLISHERS];
    for (k, m) in msgs.into_iter().enumerate() {
        parts[k % PUBLISHERS].push(m);
    }
    rt.block_on(async {
        let tasks: Vec<_> = parts
            .into_iter()
            .map(|p| tokio::spawn(publish_all(port, p)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// `n` requests of `path`, one at a time: p50 and max in ms, and the body's bytes.
fn requests(api_port: u16, path: &str, n: usize) -> (f64, f64, usize) {
    let url = format!("http://127.0.0.1:{api_port}{path}");
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = http("GET", &url, "").unwrap();
        times.push(t.elapsed());
        assert_eq!(status, 200, "{path}: {body}");
        bytes = body.len();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(times[n / 2]), ms(times[n - 1]), bytes)
}

fn main() {
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sites = nums.first().copied().unwrap_or(10_000);
    let minutes = nums.get(1).copied().unwrap_or(30);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let arena = std::env::var("MALLOC_ARENA_MAX").map_or("unset".into(), |v| v);
    let bin = std::env::var("AQ_SCALE_BIN").unwrap_or_else(|_| "this build's".into());
    println!("Memory at scale: {bin} release binary on the shipped defaults (embedded broker, power-loss durability, API on); MALLOC_ARENA_MAX {arena}");

    // 1. Ingest: SITES × MINUTES single-reading messages, the last MINUTES minutes.
    let dir = tempfile::tempdir().unwrap();
    let (svc, mqtt_port, api_port) = start(dir.path());
    let now_min = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000;
    let first_ts = now_min - minutes as i64 * 60_000;
    let msgs: Vec<(String, Vec<u8>)> = (0..minutes)
        .flat_map(|m| {
            let ts = first_ts + m as i64 * 60_000;
            (0..sites).map(move |s| {
                let pm25 = 20 + (s * 7 + m) % 60;
                (
                    format!("aq/s{s:05}/readings"),
                    format!(
                        r#"{{"ts":{ts},"pm25":{pm25},"pm10":{:.1},"interval_secs":60}}"#,
                        pm25 as f64 * 1.8
                    )
                    .into_bytes(),
                )
            })
        })
        .collect();
    let n = msgs.len();
    let t0 = Instant::now();
    publish(&rt, mqtt_port, msgs);
    let took = t0.elapsed().as_secs_f64();
    println!(
        "  ingest: {sites} sites × {minutes} readings = {n} QoS 1 messages from {PUBLISHERS} connections, acknowledged in {took:.1} s ({:.0} msg/s); peak RSS {:.1} MiB",
        n as f64 / took,
        peak_rss_mib(svc.pid())
    );

    // 2. Whole-fleet pages at that size.
    let day = (chrono::Utc::now() + chrono::Duration::hours(8) - chrono::Duration::minutes(1))
        .date_naive();
    for (name, path) in [
        ("site list", "/api/v1/sites".to_string()),
        ("bulletin", format!("/api/v1/bulletin/{day}")),
    ] {
        let (p50, max, bytes) = requests(api_port, &path, REQUESTS);
        println!(
            "  {name} ({path}, {:.2} MB): {REQUESTS} requests, p50 {p50:.0} ms, max {max:.0} ms; peak RSS since start {:.1} MiB",
            bytes as f64 / 1e6,
            peak_rss_mib(svc.pid())
        );
    }
    stop(svc);

    // 3. Array uploads, on a fresh service and store.
    let dir = tempfile::tempdir().unwrap();
    let (svc, mqtt_port, _) = start(dir.path());
    let messages = ARRAY_READINGS / ARRAY_PER_MESSAGE;
    let base = now_min - ((messages / ARRAY_SITES + 1) * ARRAY_PER_MESSAGE) as i64 * 60_000;
    let msgs = array_messages(
        ARRAY_READINGS,
        ARRAY_PER_MESSAGE,
        ARRAY_SITES,
        base,
        |site| format!("aq/a{site:04}/readings"),
    );
    let t0 = Instant::now();
    publish(&rt, mqtt_port, msgs);
    let took = t0.elapsed().as_secs_f64();
    let stored = count(
        &db(&dir.path().join("data")),
        "SELECT count(*) FROM readings",
    );
    assert_eq!(stored as usize, ARRAY_READINGS, "readings stored");
    println!(
        "  array uploads: {ARRAY_READINGS} readings in {messages} messages of {ARRAY_PER_MESSAGE} from {PUBLISHERS} connections, committed and acknowledged in {took:.1} s ({:.0} readings/s); peak RSS {:.1} MiB",
        ARRAY_READINGS as f64 / took,
        peak_rss_mib(svc.pid())
    );
    stop(svc);
}
