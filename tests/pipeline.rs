//! End to end through real servers: readings published to mosquitto land exactly once,
//! with the published values, in the store (SQLite, and PostgreSQL: every test runs on
//! both), in VictoriaMetrics (v2 API) and in InfluxDB 1.6 (v1 API).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aq_ingest::metrics::Metrics;
use common::store::TestStore;
use common::*;

const SITES: usize = 100;
const PER_SITE: usize = 100;

fn all_messages(base: i64) -> Vec<(String, Vec<u8>)> {
    // Interleave sites the way a fleet publishes: one reading from each in turn.
    let mut v = Vec::with_capacity(SITES * PER_SITE);
    for i in 0..PER_SITE {
        for s in 0..SITES {
            v.push(reading_msg(s, i, base));
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_land_exactly_once_in_sqlite_and_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    ten_thousand_to_victoria_metrics(dir.path(), TestStore::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_land_exactly_once_in_postgres_and_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    ten_thousand_to_victoria_metrics(dir.path(), TestStore::postgres()).await;
}

async fn ten_thousand_to_victoria_metrics(dir: &std::path::Path, store: TestStore) {
    let broker = Mosquitto::start(dir);
    let vm = Victoria::start(dir);
    let influx = format!("[influx]\nurl = \"{}\"\napi = \"v2\"\norg = \"erqi\"\nbucket = \"aq\"\nflush_interval_secs = 0.2\nderived = false\n", vm.url());
    let svc = Service::start(config_on(&store, &broker.url(), "t-vm", Some(&influx))).await;
    let base = base_ts_ms();
    publish_all(broker.port, all_messages(base)).await;
    let m = std::sync::Arc::clone(&svc.metrics);
    wait_for("10k lines written", Duration::from_secs(120), || {
        Metrics::get(&m.lines_written) == (SITES * PER_SITE) as u64
    })
    .await;
    assert_eq!(Metrics::get(&m.readings_stored), (SITES * PER_SITE) as u64);
    assert_eq!(m.rejected_total(), 0);
    svc.stop().await;
    assert_stored_exactly_in(&store, base, SITES, PER_SITE);
    assert_eq!(Metrics::get(&m.messages_acked), (SITES * PER_SITE) as u64);

    // VictoriaMetrics keeps duplicates, so an exact count proves nothing was sent twice.
    let points = vm.export("pm");
    let mut by_field: HashMap<&str, usize> = HashMap::new();
    for (field, site, ts, v) in &points {
        *by_field.entry(field.as_str()).or_default() += 1;
        let s: usize = site.trim_start_matches("site-").parse().unwrap();
        let i = ((ts - base) / 60_000) as usize;
        let (pm25, pm10) = reading_values(s, i);
        match field.as_str() {
            "pm_pm2_5" => assert_eq!(*v, pm25),
            "pm_pm10" => assert_eq!(*v, pm10),
            // VictoriaMetrics files string fields as a series of zeros.
            "pm_flag" => {}
            other => panic!("unexpected series {other}"),
        }
    }
    assert_eq!(by_field.get("pm_pm10"), Some(&(SITES * PER_SITE)));
    assert_eq!(by_field.get("pm_pm2_5"), Some(&(SITES * PER_SITE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_land_in_influxdb_1_6_over_the_v1_api() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let influx = Influx1::start(dir.path(), "aq");
    let sink = format!(
        "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"aq\"\nflush_interval_secs = 0.2\nderived = false\n",
        influx.url()
    );
    let svc = Service::start(config(dir.path(), &broker.url(), "t-influx", Some(&sink))).await;
    let base = base_ts_ms();
    publish_all(broker.port, all_messages(base)).await;
    let m = std::sync::Arc::clone(&svc.metrics);
    wait_for("10k lines written", Duration::from_secs(120), || {
        Metrics::get(&m.lines_written) == (SITES * PER_SITE) as u64
    })
    .await;
    svc.stop().await;
    assert_stored_exactly(dir.path(), base, SITES, PER_SITE);
    let counts = influx.query("aq", "SELECT count(pm10), count(pm2_5) FROM pm");
    assert_eq!(counts[0][1], serde_json::json!(SITES * PER_SITE));
    assert_eq!(counts[0][2], serde_json::json!(SITES * PER_SITE));
    let sites = influx.query(
        "aq",
        "SHOW TAG VALUES CARDINALITY FROM pm WITH KEY = \"site\"",
    );
    assert_eq!(sites[0][0], serde_json::json!(SITES));
    // Spot-check values: the sum over one site equals the published sum.
    let rows = influx.query("aq", "SELECT sum(pm10) FROM pm WHERE site = 'site-007'");
    let want: f64 = (0..PER_SITE).map(|i| reading_values(7, i).1).sum();
    assert!((rows[0][1].as_f64().unwrap() - want).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_readings_published_twice_are_stored_and_forwarded_once() {
    let dir = tempfile::tempdir().unwrap();
    published_twice_stored_once(dir.path(), TestStore::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_readings_published_twice_are_stored_and_forwarded_once_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    published_twice_stored_once(dir.path(), TestStore::postgres()).await;
}

async fn published_twice_stored_once(dir: &std::path::Path, store: TestStore) {
    let broker = Mosquitto::start(dir);
    let vm = Victoria::start(dir);
    let influx = format!(
        "[influx]\nurl = \"{}\"\nbucket = \"aq\"\nflush_interval_secs = 0.1\nderived = false\n",
        vm.url()
    );
    let svc = Service::start(config_on(&store, &broker.url(), "t-dup", Some(&influx))).await;
    let base = base_ts_ms();
    let msgs: Vec<_> = (0..10)
        .flat_map(|s| (0..50).map(move |i| reading_msg(s, i, base)))
        .collect();
    publish_all(broker.port, msgs.clone()).await;
    // The second copy also as one array per site, the way a device re-uploads a backlog.
    let mut arrays = Vec::new();
    for s in 0..10 {
        let items: Vec<String> = (0..50)
            .map(|i| String::from_utf8(reading_msg(s, i, base).1).unwrap())
            .collect();
        arrays.push((
            format!("aq/site-{s:03}/readings"),
            format!("[{}]", items.join(",")).into_bytes(),
        ));
    }
    publish_all(broker.port, msgs).await;
    publish_all(broker.port, arrays).await;
    let m = std::sync::Arc::clone(&svc.metrics);
    wait_for("all copies acknowledged", Duration::from_secs(60), || {
        Metrics::get(&m.messages_acked) == 1010
    })
    .await;
    assert_eq!(Metrics::get(&m.readings_stored), 500);
    assert_eq!(Metrics::get(&m.readings_duplicate), 1000);
    wait_for("500 lines written", Duration::from_secs(60), || {
        Metrics::get(&m.lines_written) >= 500
    })
    .await;
    svc.stop().await;
    assert_eq!(Metrics::get(&m.lines_written), 500);
    assert_eq!(store.count("SELECT count(*) FROM readings"), 500);
    assert_eq!(store.outbox_depth(), 0);
    let pm10 = vm
        .export("pm")
        .into_iter()
        .filter(|p| p.0 == "pm_pm10")
        .count();
    assert_eq!(pm10, 500);
    assert!(!m.mqtt_connected.load(Ordering::Relaxed));
}
