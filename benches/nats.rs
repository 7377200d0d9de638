//! Throughput through a three-node NATS JetStream cluster, beside mosquitto (a load-test
//! command that prints its figures, not a timed test): `cargo bench --bench nats [N]`
//! (default 30 000 readings, 50 sites).
//!
//! Three scenarios in the same run, each on a fresh PostgreSQL store and fresh brokers:
//! - **mosquitto → 1 instance**: three devices publish QoS 1 to one mosquitto; one
//!   aq-ingest reads them with its MQTT client;
//! - **NATS ×3 → 1 instance**: three devices publish QoS 1 to the three nodes' MQTT
//!   listeners (the stream is replicated three times before each PUBACK); one
//!   aq-ingest reads the durable consumer;
//! - **NATS ×3 → 3 instances**: the same with three instances sharing the consumer.
//!
//! For each it prints the devices' rate (all PUBACKs received) and the end-to-end rate
//! (every reading committed in PostgreSQL, from the first publish). Everything shares
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
const DEVICES: usize = 3;

/// Device `d`'s share of the `n` readings: its sites, interleaved by time.
fn device_stream(d: usize, n: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .filter(|k| (k % SITES) % DEVICES == d)
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
    let bin = std::env::var("AQ_BENCH_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/aq-ingest").to_string()
    });
    let bin = if Path::new(&bin).is_file() {
        bin
    } else {
        // CARGO_TARGET_DIR elsewhere: the release binary beside this bench's.
        let me = std::env::current_exe().unwrap();
        me.parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("aq-ingest")
            .display()
            .to_string()
    };
    let p = spawn_logged(
        Command::new(&bin)
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

/// Publishes with `DEVICES` devices (device d to `ports[d % len]`) and waits until `pg`
/// holds all `n` readings: (devices' seconds, end-to-end seconds).
async fn run(ports: Vec<u16>, n: usize, pg: &Postgres) -> (f64, f64) {
    let base = base_ts_ms();
    let start = Instant::now();
    let devices: Vec<_> = (0..DEVICES)
        .map(|d| {
            tokio::spawn(publish_failover(
                ports.clone(),
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
    let published = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while pg.count("SELECT count(*) FROM readings") < n as i64 {
        assert!(Instant::now() < deadline, "not every reading stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (published, start.elapsed().as_secs_f64())
}

fn print(name: &str, n: usize, (published, stored): (f64, f64)) {
    println!(
        "{name:<26} devices {:>7.0} readings/s   end to end {:>7.0} readings/s  ({n} readings, {stored:.1} s)",
        n as f64 / published,
        n as f64 / stored
    );
}

async fn nats(n: usize, instances: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let cluster = NatsCluster::start(dir.path(), 3);
    let source = format!(
        "[nats]\nurls = [{}]\nmqtt_url = \"mqtt://127.0.0.1:{}\"\n",
        cluster.urls_toml(),
        cluster.nodes[0].mqtt_port
    );
    let _procs: Vec<Proc> = (0..instances)
        .map(|i| {
            instance(
                dir.path(),
                &format!("aq-{i}"),
                &source,
                &pg,
                "nats: consumer ready",
            )
        })
        .collect();
    run(cluster.mqtt_ports(), n, &pg).await
}

async fn mosquitto(n: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let broker = Mosquitto::start(dir.path());
    let source = format!("[mqtt]\nurl = \"{}\"\nclient_id = \"bench\"\n", broker.url());
    let _p = instance(dir.path(), "aq", &source, &pg, "mqtt: subscribed");
    run(vec![broker.port], n, &pg).await
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
        println!("aq-ingest through a three-node NATS JetStream cluster vs mosquitto ({n} QoS 1 readings, {DEVICES} devices, PostgreSQL store, every process on this machine's {} cores)", std::thread::available_parallelism().map_or(0, |c| c.get()));
        print("mosquitto → 1 instance", n, mosquitto(n).await);
        print("NATS ×3 → 1 instance", n, nats(n, 1).await);
        print("NATS ×3 → 3 instances", n, nats(n, 3).await);
    });
}
