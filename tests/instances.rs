//! Three aq-ingest instances on one PostgreSQL store and one mosquitto (`$share`),
//! with a fourth on its own SQLite store subscribed to the same stream as the
//! reference. A week for 50 sites is published (plus re-uploads) while one instance is
//! SIGKILLed mid-stream and restarted, and then the instance holding the InfluxDB
//! writer role is. Afterwards: every reading is stored exactly once, the hourly
//! aggregates equal a recomputation from the readings, VictoriaMetrics holds every
//! reading, and the report from any instance equals the SQLite instance's, day by day.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::instance::Instance;
use common::pg::Postgres;
use common::*;

const SITES: usize = 50;
/// A week at a ten-minute cadence.
const PER_SITE: usize = 7 * 24 * 6;
const CADENCE_MS: i64 = 600_000;

/// The week's first instant: eight days ago, on a whole day (UTC).
fn week_start() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    (now / 86_400_000 - 8) * 86_400_000
}

fn message(site: usize, i: usize, base: i64) -> (String, Vec<u8>) {
    let (pm25, pm10) = reading_values(site, i);
    let ts = base + i as i64 * CADENCE_MS;
    (
        format!("aq/site-{site:03}/readings"),
        format!(r#"{{"ts":{ts},"pm25":{pm25},"pm10":{pm10},"interval_secs":600}}"#).into_bytes(),
    )
}

/// Readings `from..to` of every site, interleaved by time as devices send them.
fn stream(from: usize, to: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .flat_map(|i| (0..SITES).map(move |s| message(s, i, base)))
        .collect()
}

/// An instance subscribed to `broker` (in the shared group when `share`), storing with
/// `store`, writing to `vm`; started and subscribed.
fn instance(dir: &Path, name: &str, store: &str, share: bool, broker: &str, vm: &str) -> Instance {
    let share = if share { "share_group = \"aq\"\n" } else { "" };
    let config = format!(
        "[mqtt]\nurl = \"{broker}\"\nclient_id = \"{name}\"\n{share}reconnect_min_ms = 50\nreconnect_max_secs = 1\n\
         {store}\n[log]\nstats_interval_secs = 0\n\
         [influx]\nurl = \"{vm}\"\nbucket = \"aq\"\nflush_interval_secs = 0.2\nretry_min_ms = 20\nretry_max_secs = 1\nderived = false\n"
    );
    Instance::new(dir, name, &config, "mqtt: subscribed")
}

/// Whether `i` holds the InfluxDB writer's role.
fn runs_influx_writer(i: &Instance) -> bool {
    i.log()
        .lines()
        .any(|l| l.contains("this instance now runs the role") && l.contains("influx writer"))
}

// Long because it is one scenario: start, publish with two kills, then every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_store_every_reading_once_and_report_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let broker = Mosquitto::start(dir.path());
    let vm = Victoria::start(dir.path());
    let pg_store = format!("[store]\nbackend = \"postgres\"\nurl = \"{}\"", pg.url());
    let lite_store = format!(
        "[store]\npath = \"{}\"\ndurability = \"process_crash\"",
        dir.path().join("ref.db").display()
    );
    // The reference: one instance on SQLite with a plain subscription (every message).
    // Its InfluxDB sink is VictoriaMetrics too; the PostgreSQL instances' points are
    // the same points.
    let reference = instance(
        dir.path(),
        "ref",
        &lite_store,
        false,
        &broker.url(),
        &vm.url(),
    );
    let mut inst: Vec<Instance> = (0..3)
        .map(|n| {
            instance(
                dir.path(),
                &format!("aq-{n}"),
                &pg_store,
                true,
                &broker.url(),
                &vm.url(),
            )
        })
        .collect();
    wait_until(
        "an instance to take the influx writer role",
        Duration::from_secs(20),
        || inst.iter().any(runs_influx_writer),
    );

    let base = week_start();
    let total = (SITES * PER_SITE) as i64;
    let third = PER_SITE / 3;
    let port = broker.port;
    // The stream, in three parts, each published while the instances work.
    let publisher = tokio::spawn(async move {
        publish_all(port, stream(0, third, base)).await;
        publish_all(port, stream(third, 2 * third, base)).await;
        publish_all(port, stream(2 * third, PER_SITE, base)).await;
        // Re-uploads: devices that resend a day they had already delivered.
        publish_all(port, stream(PER_SITE / 2, PER_SITE / 2 + 144, base)).await;
    });

    // One instance killed mid-stream, restarted at once with the same client id (its
    // share's queued messages wait in its session on the broker until then).
    let count = |pg: &Postgres| pg.count("SELECT count(*) FROM readings");
    wait_until(
        "a quarter of the stream stored",
        Duration::from_secs(120),
        || count(&pg) >= total / 4,
    );
    assert!(count(&pg) < total, "the first kill must fall mid-stream");
    let victim = inst
        .iter()
        .position(|i| !runs_influx_writer(i))
        .expect("two instances do not run the writer");
    inst[victim].kill();
    inst[victim].start();

    // Then the instance running the InfluxDB writer: another takes the role over.
    wait_until(
        "half of the stream stored",
        Duration::from_secs(120),
        || count(&pg) >= total / 2,
    );
    assert!(count(&pg) < total, "the second kill must fall mid-stream");
    let writer = inst.iter().position(runs_influx_writer).unwrap();
    inst[writer].kill();
    inst[writer].start();
    wait_until(
        "another instance to take the writer role over",
        Duration::from_secs(20),
        || {
            inst.iter()
                .enumerate()
                .any(|(n, i)| n != writer && runs_influx_writer(i))
                || runs_influx_writer(&inst[writer])
        },
    );
    publisher.await.unwrap();

    // Every reading stored exactly once, whichever instance committed it.
    wait_until(
        "every reading in PostgreSQL",
        Duration::from_secs(120),
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

    // VictoriaMetrics has every reading, from the writer role wherever it ran.
    let expected: BTreeSet<(String, i64)> = (0..SITES)
        .flat_map(|s| {
            (0..PER_SITE).map(move |i| (format!("site-{s:03}"), base + i as i64 * CADENCE_MS))
        })
        .collect();
    wait_until(
        "every reading in VictoriaMetrics",
        Duration::from_secs(120),
        || {
            let got: BTreeSet<(String, i64)> = vm
                .export("pm")
                .into_iter()
                .filter(|(name, ..)| name == "pm_pm10")
                .map(|(_, site, ts, _)| (site, ts))
                .collect();
            got == expected
        },
    );
    wait_until(
        "the PostgreSQL outbox drained",
        Duration::from_secs(60),
        || {
            pg.count(
            "SELECT count(*) FROM readings r WHERE r.seq > coalesce((SELECT c.seq FROM sink_cursors c
             WHERE c.sink = 'influx' AND c.writer = r.writer), 0)",
        ) == 0
        },
    );

    // The reports: any instance's equals the SQLite reference's, day by day.
    wait_until(
        "the reference to store every reading",
        Duration::from_secs(120),
        || {
            let c = rusqlite::Connection::open(dir.path().join("ref.db")).unwrap();
            count_sqlite(&c) == total
        },
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

fn count_sqlite(c: &rusqlite::Connection) -> i64 {
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap_or(0)
}

/// PostgreSQL stopped for a minute while devices keep publishing: the service
/// acknowledges nothing while it is down (the broker keeps the messages), says so on
/// /readyz, and stores every reading exactly once when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_a_minute_under_load_loses_nothing_and_acks_nothing_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start();
    let broker = Mosquitto::start(dir.path());
    let vm = Victoria::start(dir.path());
    let store = format!("[store]\nbackend = \"postgres\"\nurl = \"{}\"", pg.url());
    let inst = instance(
        dir.path(),
        "aq-solo",
        &store,
        false,
        &broker.url(),
        &vm.url(),
    );
    let base = week_start();
    let (sites, hours) = (20, 48 * 6); // two days at the ten-minute cadence
    let msgs = |from: usize, to: usize| -> Vec<(String, Vec<u8>)> {
        (from..to)
            .flat_map(|i| (0..sites).map(move |s| message(s, i, base)))
            .collect()
    };
    let total = (sites * hours) as i64;
    publish_all(broker.port, msgs(0, hours / 3)).await;
    wait_until("the first third stored", Duration::from_secs(60), || {
        pg.count("SELECT count(*) FROM readings") == (sites * (hours / 3)) as i64
    });
    assert_eq!(inst.ready().0, 200, "{}", inst.ready().1);

    pg.stop();
    wait_until(
        "readiness to report the store",
        Duration::from_secs(20),
        || {
            let (status, body) = inst.ready();
            status == 503 && body.contains("store")
        },
    );
    // Devices keep publishing while the database is down; the broker acknowledges them
    // (they wait for the service, in its session), the service cannot.
    let acked = inst.metric("aq_messages_acked_total");
    assert!(
        acked >= (sites * (hours / 3)) as u64,
        "the first third was acknowledged: {acked}"
    );
    let port = broker.port;
    let publisher = tokio::spawn({
        let more = msgs(hours / 3, hours);
        async move { publish_all(port, more).await }
    });
    let down_since = std::time::Instant::now();
    // Watched for the rest of the minute: no acknowledgement, readiness stays 503.
    while down_since.elapsed() < Duration::from_secs(60) {
        assert_eq!(
            inst.metric("aq_messages_acked_total"),
            acked,
            "acknowledged while PostgreSQL was down"
        );
        assert_eq!(inst.ready().0, 503);
        std::thread::sleep(Duration::from_millis(500));
    }
    publisher.await.unwrap();

    pg.restart();
    wait_until(
        "every reading stored after the outage",
        Duration::from_secs(120),
        || pg.count("SELECT count(*) FROM readings") >= total,
    );
    assert_eq!(pg.count("SELECT count(*) FROM readings"), total);
    assert_eq!(
        pg.count("SELECT count(DISTINCT (site, ts_ms)) FROM readings"),
        total
    );
    wait_until("readiness back", Duration::from_secs(20), || {
        inst.ready().0 == 200
    });
    pg.assert_hours_match_readings(sites * hours / 6);
}
