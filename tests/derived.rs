//! Derived series in a real InfluxDB 1.6: hourly means per site and daily values per
//! site and for the district, stamped at the start of the local hour/day, so that a
//! late backlog re-emits the day and the new value overwrites the old point.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aq_ingest::metrics::Metrics;
use common::*;

/// Hourly means for `site` on 2016-08-01 (Beijing), hours `hrs`.
fn hours(site: &str, pm25: f64, hrs: std::ops::Range<u32>) -> (String, Vec<u8>) {
    let items: Vec<String> = hrs
        .map(|h| format!(r#"{{"ts":"2016-08-01T{h:02}:00:00+08:00","pm25":{pm25},"pm10":60,"period":"hour"}}"#))
        .collect();
    (
        format!("aq/{site}/readings"),
        format!("[{}]", items.join(",")).into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_values_reach_influxdb_and_late_data_overwrites_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let influx = Influx1::start(dir.path(), "aq");
    let sink = format!(
        "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"aq\"\nflush_interval_secs = 0.1\nderived_daily_interval_secs = 1\n",
        influx.url()
    );
    let svc = Service::start(config(dir.path(), &broker.url(), "t-derived", Some(&sink))).await;
    let m = Arc::clone(&svc.metrics);

    // 19 hours at each site: no valid day yet.
    publish_all(
        broker.port,
        vec![hours("a", 30.0, 0..19), hours("b", 41.0, 0..19)],
    )
    .await;
    let district = |field: &str| {
        let rows = influx.query(
            "aq",
            &format!("SELECT {field} FROM pm_daily WHERE scope = 'district' AND time = '2016-07-31T16:00:00Z'"),
        );
        rows.first().map(|r| r[1].clone())
    };
    wait_for(
        "the district line in InfluxDB",
        Duration::from_secs(30),
        || district("class").is_some(),
    )
    .await;
    assert_eq!(district("class").unwrap(), "no_data");
    assert_eq!(district("valid").unwrap(), false);
    let hourly = influx.query("aq", "SELECT count(pm2_5) FROM pm_hourly WHERE site = 'a'");
    assert_eq!(hourly[0][1], 19);

    // The late backlog completes the day: PM2.5 (30 + 41) / 2 = 35.5 → 36 (IAQI 52);
    // PM10 60 (IAQI 55) is the larger.
    publish_all(
        broker.port,
        vec![hours("a", 30.0, 19..24), hours("b", 41.0, 19..24)],
    )
    .await;
    wait_for(
        "the district day re-emitted",
        Duration::from_secs(30),
        || district("class").as_ref().and_then(|v| v.as_str()) == Some("good"),
    )
    .await;
    assert_eq!(district("aqi").unwrap(), 55);
    assert_eq!(district("pm2_5_ug").unwrap(), 36);
    assert_eq!(district("sites_pm2_5").unwrap(), 2);
    // Overwritten, not added: one district point for the day, one per site.
    let n = influx.query(
        "aq",
        "SELECT count(class) FROM pm_daily WHERE scope = 'district'",
    );
    assert_eq!(n[0][1], 1);
    let a = influx.query(
        "aq",
        "SELECT aqi, pm2_5_ug, valid_hours_pm2_5 FROM pm_daily WHERE site = 'a'",
    );
    assert_eq!(
        (a.len(), a[0][1].clone(), a[0][2].clone(), a[0][3].clone()),
        (1, 55.into(), 30.into(), 24.into())
    );
    // Stamped at the start of the Beijing day.
    assert_eq!(a[0][0], "2016-07-31T16:00:00Z");
    let hourly = influx.query("aq", "SELECT count(pm2_5) FROM pm_hourly WHERE site = 'b'");
    assert_eq!(hourly[0][1], 24);
    assert!(Metrics::get(&m.lines_written) >= 48);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_fills_a_new_influxdb_with_readings_and_derived_series() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let influx = Influx1::start(dir.path(), "aq");
    let sink = |db: &str| {
        format!(
            "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"{db}\"\ncreate_database = true\nflush_interval_secs = 0.1\nderived_daily_interval_secs = 1\n",
            influx.url()
        )
    };
    let svc = Service::start(config(
        dir.path(),
        &broker.url(),
        "t-resend",
        Some(&sink("aq")),
    ))
    .await;
    publish_all(
        broker.port,
        vec![hours("a", 30.0, 0..24), hours("b", 41.0, 0..24)],
    )
    .await;
    let counts = |db: &str| -> Vec<i64> {
        [
            "SELECT count(pm2_5) FROM pm",
            "SELECT count(pm2_5) FROM pm_hourly",
            "SELECT count(class) FROM pm_daily",
        ]
        .iter()
        .map(|q| {
            influx
                .query(db, q)
                .first()
                .and_then(|r| r[1].as_i64())
                .unwrap_or(0)
        })
        .collect()
    };
    // 48 readings, 48 site-hours, 2 site-days and the district's.
    wait_for(
        "everything in the first database",
        Duration::from_secs(30),
        || counts("aq") == vec![48, 48, 3],
    )
    .await;

    // The analysts get a new, empty database: queue everything again with the CLI,
    // then start the service pointed at it. Refused while the service runs.
    let cfg_file = dir.path().join("aq.toml");
    std::fs::write(
        &cfg_file,
        format!(
            "[store]\npath = \"{}\"\n{}",
            dir.path().join("aq.db").display(),
            sink("aq2")
        ),
    )
    .unwrap();
    let resend = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .args(["--config", cfg_file.to_str().unwrap(), "resend"])
            .output()
            .unwrap()
    };
    let busy = resend();
    assert!(!busy.status.success());
    let why = String::from_utf8_lossy(&busy.stderr);
    assert!(why.contains("in use by another aq-ingest"), "{why}");
    svc.stop().await;
    let out = resend();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("48 readings, 48 hourly lines, 2 site-days"),
        "{said}"
    );
    let svc = Service::start(config(
        dir.path(),
        &broker.url(),
        "t-resend",
        Some(&sink("aq2")),
    ))
    .await;
    wait_for(
        "everything in the new database",
        Duration::from_secs(30),
        || counts("aq2") == vec![48, 48, 3],
    )
    .await;
    svc.stop().await;
    // The first database got nothing twice.
    assert_eq!(counts("aq"), vec![48, 48, 3]);
}

/// The derived daily series in InfluxDB class each day under the tables in force on it
/// (the default `aqi.tables = "in-force"`) and say so in the `tables` tag: the same PM2.5
/// daily mean, 70 µg/m³, is good on 2026-02-28 (HJ 633-2012, IAQI 94) and polluted on
/// 2026-03-01 (HJ 633-2026, IAQI 110), for the site and the district.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_series_are_classed_under_the_tables_in_force_on_each_day() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let influx = Influx1::start(dir.path(), "aq");
    let sink = format!(
        "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"aq\"\nflush_interval_secs = 0.1\nderived_daily_interval_secs = 1\n",
        influx.url()
    );
    let svc = Service::start(config(dir.path(), &broker.url(), "t-tables", Some(&sink))).await;
    let day = |date: &str| {
        let items: Vec<String> = (0..24)
            .map(|h| {
                format!(
                    r#"{{"ts":"{date}T{h:02}:00:00+08:00","pm25":70,"pm10":100,"period":"hour"}}"#
                )
            })
            .collect();
        (
            "aq/a/readings".to_string(),
            format!("[{}]", items.join(",")).into_bytes(),
        )
    };
    publish_all(broker.port, vec![day("2026-02-28"), day("2026-03-01")]).await;
    // "time scope tables class aqi" of every daily point, sorted.
    let all = || {
        let (s, body) = influx
            .query_raw(
                Some("aq"),
                "SELECT class, aqi FROM pm_daily GROUP BY scope, \"tables\"",
            )
            .unwrap();
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut out = Vec::new();
        for series in v["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for row in series["values"].as_array().unwrap() {
                out.push(format!(
                    "{} {} {} {} {}",
                    row[0].as_str().unwrap(),
                    series["tags"]["scope"].as_str().unwrap(),
                    series["tags"]["tables"].as_str().unwrap(),
                    row[1].as_str().unwrap(),
                    row[2]
                ));
            }
        }
        out.sort();
        out
    };
    wait_for("both days' daily points", Duration::from_secs(30), || {
        all().len() == 4
    })
    .await;
    // Stamped at the start of the Beijing day (16:00 UTC the day before).
    assert_eq!(
        all(),
        vec![
            "2026-02-27T16:00:00Z district HJ 633-2012 good 94",
            "2026-02-27T16:00:00Z site HJ 633-2012 good 94",
            "2026-02-28T16:00:00Z district HJ 633-2026 polluted 110",
            "2026-02-28T16:00:00Z site HJ 633-2026 polluted 110",
        ]
    );
    svc.stop().await;
}

/// Samples of one site-hour in two uploads, the second after the first reached
/// InfluxDB: the hourly point ends with every sample (the request that carries the
/// second upload carries the hour's line as stored then), and stays one point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_completed_by_a_later_upload_ends_with_all_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let influx = Influx1::start(dir.path(), "aq");
    let sink = format!(
        "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"aq\"\nflush_interval_secs = 0.1\n",
        influx.url()
    );
    let svc = Service::start(config(
        dir.path(),
        &broker.url(),
        "t-late-hour",
        Some(&sink),
    ))
    .await;
    let samples = |minutes: std::ops::Range<u32>, pm25: u32| {
        let items: Vec<String> = minutes
            .map(|m| {
                format!(
                    r#"{{"ts":"2016-08-01T10:{m:02}:00+08:00","pm25":{pm25},"interval_secs":60}}"#
                )
            })
            .collect();
        (
            "aq/a/readings".to_owned(),
            format!("[{}]", items.join(",")).into_bytes(),
        )
    };
    let hour = |field: &str| {
        influx
            .query(
                "aq",
                &format!("SELECT {field} FROM pm_hourly WHERE site = 'a'"),
            )
            .into_iter()
            .map(|r| r[1].clone())
            .collect::<Vec<_>>()
    };
    publish_all(broker.port, vec![samples(0..30, 20)]).await;
    wait_for(
        "the first half of the hour",
        Duration::from_secs(30),
        || hour("pm2_5_samples") == [serde_json::json!(30)],
    )
    .await;
    assert_eq!(
        hour("pm2_5_valid"),
        [serde_json::json!(false)],
        "30 minutes of 60"
    );
    publish_all(broker.port, vec![samples(30..60, 40)]).await;
    wait_for("the whole hour", Duration::from_secs(30), || {
        hour("pm2_5_samples") == [serde_json::json!(60)]
    })
    .await;
    let mean: Vec<_> = hour("pm2_5").iter().map(|v| v.as_f64()).collect();
    assert_eq!(mean, [Some(30.0)], "(30 × 20 + 30 × 40) / 60");
    assert_eq!(hour("pm2_5_valid"), [serde_json::json!(true)]);
    svc.stop().await;
}
