//! A broker that survives a lost node: a three-node NATS JetStream cluster (replicas 3,
//! an MQTT listener on each node), PostgreSQL, and three aq-ingest instances sharing one
//! durable pull consumer; a fourth instance on its own SQLite store reads the same
//! stream through its own durable consumer, as the single-instance reference.
//!
//! - A week for 50 sites is published over MQTT QoS 1 by five devices spread over the
//!   three nodes; one aq-ingest instance is SIGKILLed (and restarted) and one NATS node
//!   is SIGKILLed mid-stream. The devices on the killed node move to another node and
//!   send again what was not acknowledged. Every reading a device was acknowledged for
//!   is stored exactly once, the consumers end with nothing pending, and the report of
//!   every instance equals the reference's.
//! - A slow commit (the readings table locked) makes the acknowledgement wait expire:
//!   the redeliveries are counted and bounded, and no row is stored twice.
//! - The trap the README warns of: readings published before any consumer exists are
//!   acknowledged to the device and dropped by the stream.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::instance::Instance;
use common::nats::{publish_failover, DeviceReport, NatsCluster};
use common::pg::Postgres;
use common::*;

const SITES: usize = 50;
/// A week at a ten-minute cadence.
const PER_SITE: usize = 7 * 24 * 6;
const CADENCE_MS: i64 = 600_000;
const DEVICES: usize = 5;

/// The week's first instant: eight days ago, on a whole day (UTC).
fn week_start() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now / 86_400_000 - 8) * 86_400_000
}

fn message(site: &str, s: usize, i: usize, base: i64) -> (String, Vec<u8>) {
    let (pm25, pm10) = reading_values(s, i);
    let ts = base + i as i64 * CADENCE_MS;
    (
        format!("aq/{site}/readings"),
        format!(r#"{{"ts":{ts},"pm25":{pm25},"pm10":{pm10},"interval_secs":600}}"#).into_bytes(),
    )
}

/// Device `d`'s stream: the week of its sites (every `DEVICES`th), interleaved by time.
fn device_stream(d: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (0..PER_SITE)
        .flat_map(|i| {
            (d..SITES)
                .step_by(DEVICES)
                .map(move |s| message(&format!("site-{s:03}"), s, i, base))
        })
        .collect()
}

/// One aq-ingest process with a `[nats]` source, started and its durable consumer
/// created.
fn instance(dir: &Path, name: &str, store: &str, nats: &str) -> Instance {
    let config = format!("{nats}\n{store}\n[log]\nstats_interval_secs = 0\n");
    Instance::new(dir, name, &config, "nats: consumer ready")
}

/// The `[nats]` section for `durable` on `cluster`.
fn nats_section(cluster: &NatsCluster, durable: &str, extra: &str) -> String {
    format!(
        "[nats]\nurls = [{}]\ndurable = \"{durable}\"\nmqtt_url = \"mqtt://127.0.0.1:{}\"\nreconnect_max_secs = 1\n{extra}",
        cluster.urls_toml(),
        cluster.nodes[0].mqtt_port
    )
}

fn pg_store(pg: &Postgres) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = \"{}\"", pg.url())
}

fn count_sqlite(path: &Path) -> i64 {
    let Ok(c) = rusqlite::Connection::open(path) else {
        return 0;
    };
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap_or(0)
}

// Long because it is one scenario: start, publish with two kills, then every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_three_instances_one_of_each_killed_every_acknowledged_reading_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let mut cluster = NatsCluster::start(dir.path(), 3);
    // The ack wait is what a killed instance's messages wait before they go to the
    // others; it must also exceed the time a message waits in an instance's window
    // (max_in_flight / commit rate), or the queue itself makes redeliveries.
    let ack_wait = "ack_wait_secs = 10\nmax_in_flight = 500\n";
    let ref_db = dir.path().join("ref.db");
    let lite = format!(
        "[store]\npath = \"{}\"\ndurability = \"process_crash\"",
        ref_db.display()
    );
    // Consumers first: the stream keeps only what some consumer is interested in.
    let reference = instance(
        dir.path(),
        "ref",
        &lite,
        &nats_section(&cluster, "ref", ack_wait),
    );
    // The cluster was new: the first instance made the server create its MQTT streams.
    assert!(
        reference.log().contains("connected once over MQTT"),
        "{}",
        reference.log()
    );
    // aq-2 is given only the node that is killed: it learns the others from the
    // cluster and must move to one of them.
    let only_node_1 = format!(
        "[nats]\nurls = [\"nats://127.0.0.1:{}\"]\ndurable = \"aq-ingest\"\nreconnect_max_secs = 1\n{ack_wait}",
        cluster.nodes[1].client_port
    );
    let mut inst: Vec<Instance> = (0..3)
        .map(|n| {
            let nats = if n == 2 {
                only_node_1.clone()
            } else {
                nats_section(&cluster, "aq-ingest", ack_wait)
            };
            instance(dir.path(), &format!("aq-{n}"), &pg_store(&pg), &nats)
        })
        .collect();

    let base = week_start();
    let total = (SITES * PER_SITE) as i64;
    let ports = cluster.mqtt_ports();
    // Device d publishes to node d % 3: devices 1 and 4 use the node that is killed.
    let progress: Vec<Arc<AtomicUsize>> = (0..DEVICES).map(|_| Arc::default()).collect();
    let devices: Vec<_> = (0..DEVICES)
        .map(|d| {
            tokio::spawn(publish_failover(
                ports.clone(),
                d % 3,
                format!("device-{d}"),
                device_stream(d, base),
                Arc::clone(&progress[d]),
            ))
        })
        .collect();
    let per_device = SITES / DEVICES * PER_SITE;

    // The node kill, while devices 1 and 4 are halfway through their streams.
    let acked = |d: usize| progress[d].load(Ordering::Relaxed);
    wait_until("devices 1 and 4 halfway", Duration::from_secs(180), || {
        acked(1) >= per_device / 2 && acked(4) >= per_device / 2
    });
    assert!(
        acked(1) < per_device && acked(4) < per_device,
        "the node kill must fall mid-stream"
    );
    cluster.kill(1);
    let aq2_acked_at_kill = inst[2].metric("aq_messages_acked_total");

    // The instance kill, while the instances are storing the stream.
    let count = |pg: &Postgres| pg.count("SELECT count(*) FROM readings");
    wait_until(
        "a quarter of the stream stored",
        Duration::from_secs(180),
        || count(&pg) >= total / 4,
    );
    assert!(count(&pg) < total, "the instance kill must fall mid-stream");
    inst[1].kill();
    inst[1].start();

    let mut reports: Vec<DeviceReport> = Vec::new();
    for d in devices {
        reports.push(d.await.unwrap());
    }
    println!("devices: {reports:?}");
    for d in [1, 4] {
        let r = &reports[d];
        assert!(r.failovers >= 1, "device {d} did not move: {r:?}");
        assert!(
            r.acked_by_node.get(&1).copied().unwrap_or(0) > 0,
            "device {d} was acknowledged by the killed node before it died: {r:?}"
        );
        assert!(
            r.acked_by_node.keys().any(|n| *n != 1),
            "device {d} was acknowledged by another node after: {r:?}"
        );
    }

    // Every reading stored exactly once, whichever instance committed it.
    wait_until(
        "every reading in PostgreSQL",
        Duration::from_secs(180),
        || count(&pg) >= total,
    );
    assert_eq!(count(&pg), total);
    assert_eq!(
        pg.count("SELECT count(DISTINCT (site, ts_ms, period)) FROM readings"),
        total
    );
    assert!(
        pg.count("SELECT count(DISTINCT writer) FROM readings") >= 3,
        "the instances shared the work"
    );
    pg.assert_hours_match_readings(SITES * PER_SITE / 6);

    // The consumers end with nothing pending or unacknowledged.
    for durable in ["aq-ingest", "ref"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (pending, ack_pending, redelivered) =
                cluster.consumer_state("$MQTT_msgs", durable).await;
            if pending == 0 && ack_pending == 0 {
                println!("consumer {durable}: drained; redelivered now {redelivered}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "consumer {durable}: {pending} pending, {ack_pending} unacknowledged"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let redeliveries: u64 = inst
        .iter()
        .map(|i| i.metric("aq_nats_redeliveries_total"))
        .sum();
    let duplicates: u64 = inst
        .iter()
        .map(|i| i.metric("aq_readings_duplicate_total"))
        .sum();
    println!("instances: {redeliveries} redeliveries counted, {duplicates} duplicate readings");
    // aq-2 was on the killed node, moved to another and went on storing.
    let log = inst[2].log();
    let moved = log
        .find("nats: disconnected")
        .and_then(|at| log[at..].find("nats: connected"));
    assert!(moved.is_some(), "aq-2 did not move to another node:\n{log}");
    // Whether it still got messages after moving depends on how fast the other two
    // drained the stream meanwhile; what must hold is that it is a working member of
    // the consumer again.
    wait_until(
        "aq-2's consumer ready again on another node",
        Duration::from_secs(30),
        || inst[2].metric("aq_nats_consumer_ready") == 1,
    );
    assert!(inst[2].metric("aq_messages_acked_total") >= aq2_acked_at_kill);

    // The reports: any instance's equals the single-instance reference's, day by day.
    wait_until(
        "the reference to store every reading",
        Duration::from_secs(180),
        || count_sqlite(&ref_db) == total,
    );
    let zone_day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000)
            .unwrap()
            .date_naive()
            .to_string()
    };
    let (from, to) = (
        zone_day(base),
        zone_day(base + (PER_SITE as i64 - 1) * CADENCE_MS),
    );
    let want = reference.report(&from, &to);
    assert!(
        want["days"].as_array().is_some_and(|d| d.len() >= 7),
        "{want}"
    );
    for i in &inst {
        assert_eq!(i.report(&from, &to)["days"], want["days"], "{}", i.name);
    }
}

/// Holds `LOCK TABLE readings` in an open transaction until told to release it: every
/// commit that writes readings waits on it.
fn lock_readings(pg: &Postgres) -> (std::sync::mpsc::SyncSender<()>, std::thread::JoinHandle<()>) {
    let url = pg.url();
    // One signal each way: "locked", "release".
    let (release, released) = std::sync::mpsc::sync_channel(1);
    let (locked_tx, locked) = std::sync::mpsc::sync_channel(1);
    let t = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        locked_tx.send(()).unwrap();
        let _ = released.recv();
        tx.rollback().unwrap();
    });
    locked.recv().unwrap();
    (release, t)
}

// Long because it is one scenario: lock, publish, watch the storm, release, check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_commit_makes_a_bounded_counted_redelivery_storm_and_no_duplicate_rows() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let cluster = NatsCluster::start(dir.path(), 3);
    // The window is larger than what the cluster lets out unacknowledged, so the
    // instances keep pulling while their commit is stuck and receive the redeliveries
    // — until their windows are full.
    let (max_in_flight, max_ack_pending, ack_wait_secs) = (600u64, 1000u64, 1u64);
    let extra = format!(
        "ack_wait_secs = {ack_wait_secs}\nmax_in_flight = {max_in_flight}\nmax_ack_pending = {max_ack_pending}\n"
    );
    let inst: Vec<Instance> = (0..2)
        .map(|n| {
            instance(
                dir.path(),
                &format!("aq-{n}"),
                &pg_store(&pg),
                &nats_section(&cluster, "aq-ingest", &extra),
            )
        })
        .collect();
    let base = week_start();
    // 20 sites × 50 readings, and a site whose id has a dot (`//` in the subject).
    let mut msgs: Vec<_> = (0..50)
        .flat_map(|i| (0..20).map(move |s| message(&format!("site-{s:03}"), s, i, base)))
        .collect();
    msgs.extend((0..10).map(|i| message("erqi.7", 7, i, base)));
    let total = msgs.len() as i64;

    let (release, locker) = lock_readings(&pg);
    let started = Instant::now();
    let report = publish_failover(
        cluster.mqtt_ports(),
        0,
        "device-storm".into(),
        msgs,
        Arc::default(),
    )
    .await;
    assert_eq!(report.acked as i64, total);
    // The storm: every ack wait that expires makes the cluster send the held messages
    // again; the instances take them until their in-flight windows are full.
    let redeliveries = || -> u64 {
        inst.iter()
            .map(|i| i.metric("aq_nats_redeliveries_total"))
            .sum()
    };
    let mut peak_in_flight = 0;
    wait_until(
        "redeliveries while the commit is stuck",
        Duration::from_secs(60),
        || {
            for i in &inst {
                peak_in_flight = peak_in_flight.max(i.metric("aq_nats_in_flight"));
            }
            redeliveries() >= 100
        },
    );
    assert!(
        pg.count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") >= 1,
        "an instance's commit waits on the lock"
    );
    // Bounded while stuck: each instance holds at most its window, first deliveries
    // and redeliveries together.
    let stuck_redeliveries = redeliveries();
    assert!(
        stuck_redeliveries <= 2 * max_in_flight,
        "{stuck_redeliveries} redeliveries while stuck"
    );
    release.send(()).unwrap();
    locker.join().unwrap();
    let stuck_secs = started.elapsed().as_secs();

    wait_until("every reading stored", Duration::from_secs(120), || {
        pg.count("SELECT count(*) FROM readings") >= total
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.consumer_state("$MQTT_msgs", "aq-ingest").await.1 > 0 {
        assert!(Instant::now() < deadline, "acknowledgements pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pg.count("SELECT count(*) FROM readings"), total);
    assert_eq!(
        pg.count("SELECT count(DISTINCT (site, ts_ms, period)) FROM readings"),
        total,
        "no reading stored twice"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM readings WHERE site = 'erqi.7'"),
        10
    );
    let n = redeliveries();
    let duplicates: u64 = inst
        .iter()
        .map(|i| i.metric("aq_readings_duplicate_total"))
        .sum();
    // After the release, at most one more round: what was out when the lock went.
    let bound = stuck_redeliveries + max_ack_pending;
    println!(
        "storm: {stuck_redeliveries} redeliveries while stuck for {stuck_secs} s, {n} in all (bound {bound}), {duplicates} duplicate readings, peak in flight {peak_in_flight} (window {max_in_flight})"
    );
    assert!(n <= bound, "{n} redeliveries > {bound}");
    assert!(n > 0, "redeliveries are counted");
    assert!(
        duplicates > 0,
        "the redelivered copies were stored as duplicates"
    );
    assert!(
        peak_in_flight <= max_in_flight,
        "in flight {peak_in_flight} > {max_in_flight}"
    );
}

/// The number of messages `$MQTT_msgs` holds.
async fn stream_messages(cluster: &NatsCluster) -> u64 {
    let js = async_nats::jetstream::new(cluster.client().await);
    let mut st = js.get_stream("$MQTT_msgs").await.unwrap();
    st.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readings_published_before_the_consumer_exists_are_acknowledged_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let cluster = NatsCluster::start(dir.path(), 3);
    let base = week_start();
    let batch = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 10)
            .map(|i| message("site-000", 0, i, base))
            .collect()
    };
    // No consumer yet: the device's connection creates the stream, every publish is
    // acknowledged, and the stream keeps none of them.
    let early = publish_failover(
        cluster.mqtt_ports(),
        0,
        "early".into(),
        batch(0),
        Arc::default(),
    )
    .await;
    assert_eq!(early.acked, 10);
    assert_eq!(stream_messages(&cluster).await, 0, "kept with no consumer");

    let inst = instance(
        dir.path(),
        "aq-0",
        &pg_store(&pg),
        &nats_section(&cluster, "aq-ingest", ""),
    );
    assert!(
        !inst.log().contains("connected once over MQTT"),
        "the stream existed already"
    );
    publish_failover(
        cluster.mqtt_ports(),
        1,
        "late".into(),
        batch(10),
        Arc::default(),
    )
    .await;
    wait_until("the later readings stored", Duration::from_secs(60), || {
        pg.count("SELECT count(*) FROM readings") >= 10
    });
    let stored: Vec<i64> = pg
        .query("SELECT ts_ms FROM readings ORDER BY ts_ms")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i64> = (10..20).map(|i| base + i * CADENCE_MS).collect();
    assert_eq!(stored, want, "only what was published after the consumer");
}
