//! Committed readings per second with 1, 2 and 3 aq-ingest instances on one PostgreSQL
//! store (mosquitto `$share` subscriptions), beside one instance on SQLite, in the same
//! run on the same machine; with the CPU the service and PostgreSQL spent per 100 000
//! readings. Each configuration gets a fresh broker and a fresh store; the clock runs
//! from the first publish until the store holds every reading (no InfluxDB sink: this
//! measures the commit path the instances share).
//!
//! Run: `cargo bench --bench instances -- [N]` (default 100 000 readings). Prints one
//! table. On two cores the instances, PostgreSQL, mosquitto and the publisher share
//! the same two cores: more instances cannot add CPU, so the table shows what a second
//! and third instance cost, not what they would gain on a larger machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::Postgres;
use common::store::TestStore;
use common::*;

const SITES: usize = 238;

fn messages(n: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|k| reading_msg(k % SITES, k / SITES, base))
        .collect()
}

/// User + system CPU seconds of a process (0 when it is gone).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |x| x.1)
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0
}

/// CPU seconds of every running `postgres` process (the benchmark's server is the only
/// one on the machine; its backends live as long as the instances' connections).
fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_secs)
        .sum()
}

struct Row {
    store: &'static str,
    instances: usize,
    rate: f64,
    service_cpu: f64,
    pg_cpu: Option<f64>,
}

/// One configuration: `instances` services on `store`, `n` readings published.
fn run(
    dir: &Path,
    store: &TestStore,
    instances: usize,
    n: usize,
    rt: &tokio::runtime::Runtime,
) -> Row {
    let broker = Mosquitto::start(dir);
    let share = matches!(store, TestStore::Postgres(_));
    let mut procs: Vec<Proc> = (0..instances)
        .map(|i| {
            let cfg = dir.join(format!("aq-{i}.toml"));
            let mut text = config_text(store, &broker.url(), &format!("bench-{i}"), None)
                .replace("[api]\nlisten", "[api]\nenabled = false\n#listen");
            if share {
                text = text.replacen("[mqtt]\n", "[mqtt]\nshare_group = \"bench\"\n", 1);
            }
            std::fs::write(&cfg, text).unwrap();
            spawn_logged(
                Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
                    .arg("--config")
                    .arg(&cfg)
                    .arg("serve")
                    .env("RUST_LOG", "warn,aq_ingest::source=info"),
                dir.join(format!("aq-{i}.log")),
            )
        })
        .collect();
    for p in &procs {
        wait_until("an instance to subscribe", Duration::from_secs(60), || {
            p.log_text().contains("mqtt: subscribed")
        });
    }
    let msgs = messages(n, base_ts_ms() - 30 * 86_400_000);
    let (cpu0, pg0) = (
        procs.iter().map(|p| cpu_secs(p.pid())).sum::<f64>(),
        postgres_cpu_secs(),
    );
    let t0 = Instant::now();
    rt.block_on(publish_all(broker.port, msgs));
    wait_until("every reading committed", Duration::from_secs(1800), || {
        store.count("SELECT count(*) FROM readings") >= n as i64
    });
    let elapsed = t0.elapsed();
    let service_cpu = procs.iter().map(|p| cpu_secs(p.pid())).sum::<f64>() - cpu0;
    let pg_cpu = share.then(|| postgres_cpu_secs() - pg0);
    for p in &mut procs {
        p.terminate();
    }
    let per_100k = 100_000.0 / n as f64;
    Row {
        store: if share { "postgres" } else { "sqlite" },
        instances,
        rate: n as f64 / elapsed.as_secs_f64(),
        service_cpu: service_cpu * per_100k,
        pg_cpu: pg_cpu.map(|c| c * per_100k),
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    {
        let dir = tempfile::tempdir().unwrap();
        rows.push(run(dir.path(), &TestStore::sqlite(dir.path()), 1, n, &rt));
    }
    for instances in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let pg = TestStore::Postgres(Postgres::start());
        rows.push(run(dir.path(), &pg, instances, n, &rt));
    }
    println!(
        "\n{n} readings, one per message, QoS 1, {SITES} sites; {} CPUs; from the first publish until the store holds every reading\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!("| store | instances | committed readings/s | service CPU-s per 100k | PostgreSQL CPU-s per 100k |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {} |",
            r.store,
            r.instances,
            r.rate,
            r.service_cpu,
            r.pg_cpu.map_or("—".into(), |c| format!("{c:.2}"))
        );
    }
}
