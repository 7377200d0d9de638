//! Throughput through a three-node NATS JetStream cluster, beside mosquitto (a load-test
//! command that prints its figures, not a timed test): `cargo bench --bench nats [N]`
//! (default 30 000 readings, 50 sites).
//!
//! Three scenarios in the same run, each on a fresh PostgreSQL store and fresh brokers:
//! - **mosquitto → 1 instance**: devices publish QoS 1 to one mosquitto; one
//!   aq-ingest reads them with its MQTT client;
//! - **NATS ×3 → 1 instance**: devices publish QoS 1 to the three nodes' MQTT
//!   listeners (the stream is replicated three times before each PUBACK); one
//!   aq-ingest reads the durable consumer;
//! - **NATS ×3 → 3 instances**: the same with three instances sharing the consumer.
//!
//! For each it prints, **live**, the devices' rate (all PUBACKs received) and the
//! end-to-end rate (every reading committed in PostgreSQL, from the first publish);
//! and **backlog**: with the instances stopped (SIGTERM), another N readings are
//! published and then drained by the restarted instances (from their start to the last
//! commit) — the consumer side alone. Everything shares
//! the machine's cores: the figures say what the path costs on one box, not what a
//! cluster of machines does.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::{publish_failover, NatsCluster};
use common::pg::Postgres;
use common::*;

const SITES: usize = 50;
/// Device connections publishing (`AQ_BENCH_DEVICES`, default 12): nats-server answers
/// one connection's QoS 1 publishes one replicated store at a time, so the cluster's
/// intake grows with the number of devices.
fn devices() -> usize {
    std::env::var("AQ_BENCH_DEVICES")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(12)
}

/// Device `d`'s share of the `n` readings: its sites, interleaved by time.
fn device_stream(d: usize, n: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .filter(|k| (k % SITES) % devices() == d)
        .map(|k| reading_msg(k % SITES, k / SITES, base))
        .collect()
}

/// Starts an aq-ingest binary with `source` (a `[mqtt]` or `[nats]` section) on `pg`
/// and waits for `ready` in its log.
fn instance(dir: &Path, name: &str, source: &str, pg: &Postgres, ready: &str) -> Proc {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "{source}\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nlisten = \"127.0.0.1:{}\"\n",
            pg.url(),
            free_port()
        ),
    )
    .unwrap();
    let p = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("RUST_LOG", "info"),
        dir.join(format!("{name}.log")),
    );
    wait_until(&format!("{name}: {ready}"), Duration::from_secs(60), || {
        p.log_text().contains(ready)
    });
    p
}

/// Publishes `n` readings from `base` with [`devices`] devices (device d to
/// `ports[d % len]`): the seconds until every PUBACK.
async fn publish(ports: &[u16], n: usize, base: i64) -> f64 {
    let start = Instant::now();
    let devices: Vec<_> = (0..devices())
        .map(|d| {
            tokio::spawn(publish_failover(
                ports.to_vec(),
                d % ports.len(),
                format!("bench-device-{d}"),
                device_stream(d, n, base),
                Arc::default(),
            ))
        })
        .collect();
    for d in devices {
        d.await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// Waits until `pg` holds `n` readings.
async fn stored(pg: &Postgres, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while pg.count("SELECT count(*) FROM readings") < n as i64 {
        assert!(Instant::now() < deadline, "not every reading stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The live run, then the backlog run: (devices' s, end-to-end s, drain s).
async fn scenario(
    ports: Vec<u16>,
    n: usize,
    pg: &Postgres,
    mut start: impl FnMut() -> Vec<Proc>,
) -> (f64, f64, f64) {
    let mut procs = start();
    let t = Instant::now();
    let published = publish(&ports, n, base_ts_ms()).await;
    stored(pg, n).await;
    let live = t.elapsed().as_secs_f64();
    for p in &mut procs {
        p.terminate();
    }
    publish(&ports, n, base_ts_ms() - 30 * 86_400_000).await;
    let t = Instant::now();
    let _procs = start();
    stored(pg, 2 * n).await;
    (published, live, t.elapsed().as_secs_f64())
}

fn print(name: &str, n: usize, (published, live, drain): (f64, f64, f64)) {
    println!(
        "{name:<24} live: devices {:>6.0}/s, end to end {:>6.0} readings/s   backlog drained at {:>6.0} readings/s",
        n as f64 / published,
        n as f64 / live,
        n as f64 / drain
    );
}

async fn nats(n: usize, instances: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let cluster = NatsCluster::start(dir.path(), 3);
    let source = format!(
        "[nats]\nurls = [{}]\nmqtt_url = \"mqtt://127.0.0.1:{}\"\n",
        cluster.urls_toml(),
        cluster.nodes[0].mqtt_port
    );
    let start = || -> Vec<Proc> {
        (0..instances)
            .map(|i| {
                instance(
                    dir.path(),
                    &format!("aq-{i}"),
                    &source,
                    &pg,
                    "nats: consumer ready",
                )
            })
            .collect()
    };
    scenario(cluster.mqtt_ports(), n, &pg, start).await
}

async fn mosquitto(n: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let broker = Mosquitto::start(dir.path());
    let source = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"bench\"\n",
        broker.url()
    );
    let start = || vec![instance(dir.path(), "aq", &source, &pg, "mqtt: subscribed")];
    scenario(vec![broker.port], n, &pg, start).await
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("aq-ingest through a three-node NATS JetStream cluster vs mosquitto ({n} QoS 1 readings, {} devices, PostgreSQL store, every process on this machine's {} cores)", devices(), std::thread::available_parallelism().map_or(0, |c| c.get()));
        print("mosquitto → 1 instance", n, mosquitto(n).await);
        print("NATS ×3 → 1 instance", n, nats(n, 1).await);
        print("NATS ×3 → 3 instances", n, nats(n, 3).await);
    });
}
