//! `aq-ingest simulate` against a real broker: every reading the simulator generates for
//! a replayed period (late site-days included, uploaded last as backlogs) is stored.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aq_ingest::aqi::zone::Zone;
use aq_ingest::metrics::Metrics;
use aq_ingest::sim::Simulator;
use chrono::NaiveDate;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_period_is_stored_reading_for_reading() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let svc = Service::start(config(dir.path(), &broker.url(), "t-sim", None)).await;
    let m = Arc::clone(&svc.metrics);
    let (sites, days, seed) = (6usize, 20i64, 9u64);
    let from = NaiveDate::from_ymd_opt(2016, 11, 1).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
        .args([
            "--config",
            "/dev/null",
            "simulate",
            "--broker",
            &broker.url(),
        ])
        .args([
            "--sites",
            &sites.to_string(),
            "--interval-secs",
            "300",
            "--from",
            "2016-11-01",
        ])
        .args([
            "--days",
            &days.to_string(),
            "--seed",
            &seed.to_string(),
            "--batch",
            "12",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    // The simulator's own account of what it generated, from the library.
    let sim = Simulator {
        sites,
        interval_secs: 300,
        seed,
        zone: Zone::BEIJING,
    };
    let want: usize = (0..days)
        .flat_map(|d| (0..sites).map(move |s| (s, d)))
        .map(|(s, d)| sim.site_day(s, from + chrono::Duration::days(d)).len())
        .sum();
    assert!(
        want > sites * days as usize * 200,
        "a realistic share of the 288 readings a day"
    );
    wait_for(
        "every simulated reading stored",
        Duration::from_secs(60),
        || Metrics::get(&m.readings_stored) == want as u64,
    )
    .await;
    assert_eq!(m.rejected_total(), 0);
    svc.stop().await;
    let c = db(dir.path());
    assert_eq!(count(&c, "SELECT count(*) FROM readings"), want as i64);
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings WHERE pm25 > pm10"),
        0
    );
    assert_eq!(
        count(&c, "SELECT count(DISTINCT site) FROM readings"),
        sites as i64
    );
}
