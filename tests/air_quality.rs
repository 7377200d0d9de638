//! The good-day count end to end through MQTT: a deterministic half year for four sites
//! (clean days, polluted days, days with too few hours) gives the expected daily table
//! and target report; publishing everything again changes nothing; a late backlog turns
//! a no-data day into a good day and the report follows.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aq_ingest::metrics::Metrics;
use chrono::NaiveDate;
use common::store::TestStore;
use common::*;

const SITES: usize = 4;
const DAYS: i64 = 184;

fn start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2016, 7, 1).unwrap()
}

/// What each day is made of.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Clean,
    Polluted,
    /// Only 19 valid hours at every site.
    TooFewHours,
}

fn kind(d: i64) -> Kind {
    if d % 11 == 3 {
        Kind::TooFewHours
    } else if d % 5 == 0 {
        Kind::Polluted
    } else {
        Kind::Clean
    }
}

/// PM2.5 at site `s` (0-based) on day `d`: the four sites' values average to base + 2.5,
/// which rounds half-to-even (42.5 → 42, 97.5 → 98).
fn pm25(d: i64, s: usize) -> f64 {
    let base = if kind(d) == Kind::Polluted {
        95.0
    } else {
        40.0
    };
    base + 1.0 + s as f64
}

/// Hours published for a day: 19 for a too-few-hours day, else 24.
fn hours(d: i64) -> std::ops::Range<i64> {
    if kind(d) == Kind::TooFewHours {
        0..19
    } else {
        0..24
    }
}

/// One message per site-day: an array of device hourly means (HJ 212 CN=2061 style).
fn site_day_msg(d: i64, s: usize, hrs: std::ops::Range<i64>) -> (String, Vec<u8>) {
    let day_start =
        chrono::NaiveDateTime::new(start() + chrono::Duration::days(d), chrono::NaiveTime::MIN);
    let items: Vec<String> = hrs
        .map(|h| {
            let local = day_start + chrono::Duration::hours(h);
            format!(
                r#"{{"ts":"{}+08:00","pm25":{},"pm10":80,"period":"hour"}}"#,
                local.format("%Y-%m-%dT%H:%M:%S"),
                pm25(d, s)
            )
        })
        .collect();
    (
        format!("aq/site-{s}/readings"),
        format!("[{}]", items.join(",")).into_bytes(),
    )
}

fn half_year() -> Vec<(String, Vec<u8>)> {
    (0..DAYS)
        .flat_map(|d| (0..SITES).map(move |s| site_day_msg(d, s, hours(d))))
        .collect()
}

/// Runs `aq-ingest report --format json` on the service's store.
fn report_json(cfg: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "report",
            "--format",
            "json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_half_year_gives_the_expected_days_and_target_report() {
    let dir = tempfile::tempdir().unwrap();
    half_year_report(dir.path(), TestStore::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_half_year_gives_the_expected_days_and_target_report_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    half_year_report(dir.path(), TestStore::postgres()).await;
}

// Long because it is one scenario: the half year, its copies and a late backlog, each
// checked against the generator's own definition of the days.
async fn half_year_report(dir: &std::path::Path, store: TestStore) {
    let broker = Mosquitto::start(dir);
    let cfg = config_on(&store, &broker.url(), "t-aq", None);
    let cfg_text = format!(
        "{}[[target]]\nname = \"2016H2\"\nfrom = \"2016-07-01\"\nto = \"2016-12-31\"\ngood_days = 100\n",
        store.toml()
    );
    let cfg_file = dir.join("report.toml");
    std::fs::write(&cfg_file, cfg_text).unwrap();

    let svc = Service::start(cfg).await;
    let m = Arc::clone(&svc.metrics);
    let msgs = half_year();
    let n_msgs = msgs.len() as u64;
    publish_all(broker.port, msgs.clone()).await;
    wait_for(
        "the half year acknowledged",
        Duration::from_secs(120),
        || Metrics::get(&m.messages_acked) == n_msgs,
    )
    .await;

    // Expected, from the generator's own definition of each day.
    let expect_class = |d: i64| match kind(d) {
        Kind::Clean => "good",
        Kind::Polluted => "polluted",
        Kind::TooFewHours => "no_data",
    };
    let r = report_json(&cfg_file, &["--as-of", "2016-12-31"]);
    let days = r["days"].as_array().unwrap();
    assert_eq!(days.len(), DAYS as usize);
    for (d, day) in days.iter().enumerate() {
        let d = d as i64;
        assert_eq!(
            day["date"],
            (start() + chrono::Duration::days(d)).to_string()
        );
        assert_eq!(day["class"], expect_class(d), "day {d}");
        match kind(d) {
            Kind::Clean => {
                // Mean 42.5 → 42 µg/m³ (half to even); PM10 80 → IAQI 65 is the larger.
                assert_eq!(day["pm25"], 42);
                assert_eq!(day["pm10"], 80);
                assert_eq!(day["aqi"], 65);
                assert_eq!(day["sites_pm25"], 4);
            }
            Kind::Polluted => {
                assert_eq!(day["pm25"], 98);
                assert_eq!(day["aqi"], 129);
                assert_eq!(day["primary"], "PM2.5");
            }
            Kind::TooFewHours => {
                assert!(day["aqi"].is_null());
                assert_eq!(day["valid_hours_pm25"], 19);
            }
        }
    }
    let good = (0..DAYS).filter(|d| kind(*d) == Kind::Clean).count() as u64;
    let polluted = (0..DAYS).filter(|d| kind(*d) == Kind::Polluted).count() as u64;
    let p = &r["progress"];
    assert_eq!(p["good"], good);
    assert_eq!(p["polluted"], polluted);
    assert_eq!(p["no_data"], DAYS as u64 - good - polluted);
    assert_eq!(p["required"], 101);
    assert_eq!(
        p["status"],
        if good >= 101 {
            "achieved"
        } else {
            "unreachable"
        }
    );

    // Everything again: nothing changes.
    let stored = Metrics::get(&m.readings_stored);
    publish_all(broker.port, msgs).await;
    wait_for("the copies acknowledged", Duration::from_secs(120), || {
        Metrics::get(&m.messages_acked) == 2 * n_msgs
    })
    .await;
    assert_eq!(Metrics::get(&m.readings_stored), stored);
    assert_eq!(report_json(&cfg_file, &["--as-of", "2016-12-31"]), r);

    // A late backlog: the five missing hours of day 3 at every site.
    assert_eq!(kind(3), Kind::TooFewHours);
    let late: Vec<_> = (0..SITES).map(|s| site_day_msg(3, s, 19..24)).collect();
    publish_all(broker.port, late).await;
    wait_for("the backlog acknowledged", Duration::from_secs(60), || {
        Metrics::get(&m.messages_acked) == 2 * n_msgs + SITES as u64
    })
    .await;
    let after = report_json(&cfg_file, &["--as-of", "2016-12-31"]);
    assert_eq!(after["days"][3]["class"], "good");
    assert_eq!(after["days"][3]["valid_hours_pm25"], 24);
    assert_eq!(after["progress"]["good"], good + 1);
    // One site alone.
    let one = report_json(
        &cfg_file,
        &[
            "--site",
            "site-0",
            "--from",
            "2016-07-02",
            "--to",
            "2016-07-03",
        ],
    );
    assert_eq!(one["days"][0]["pm25"], 41);
    assert_eq!(one["days"][0]["sites_pm25"], 1);
    svc.stop().await;
}
