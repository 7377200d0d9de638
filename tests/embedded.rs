//! One command on a fresh machine: the built binary with the shipped default config
//! (embedded broker, embedded store) in an empty directory, fed by a real external MQTT
//! client (`mosquitto_pub`), stopped with SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn default_config_runs_with_no_external_broker_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The shipped defaults, with only the listen port moved off 1883 (tests never use
    // fixed ports).
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
            .unwrap();
    assert!(shipped.contains("listen = \"127.0.0.1:1883\""));
    assert!(shipped.contains("listen = \"127.0.0.1:8080\""));
    let api_port = free_port();
    let cfg = shipped
        .replace(
            "listen = \"127.0.0.1:1883\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{api_port}\""),
        );
    std::fs::write(dir.path().join("aq.toml"), cfg).unwrap();

    let mut svc = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .current_dir(dir.path())
            .args(["--config", "aq.toml"])
            .env_remove("RUST_LOG"),
        dir.path().join("service.log"),
    );
    wait_until(
        "the embedded broker to take devices",
        Duration::from_secs(20),
        || svc.log_text().contains("devices can connect"),
    );
    // It tells a newcomer how to publish (logged just after the broker's line, so
    // waited for, not read once).
    let hint = format!("mosquitto_pub -h 127.0.0.1 -p {port}");
    wait_until("the publish hint", Duration::from_secs(20), || {
        svc.log_text().contains(&hint)
    });

    let pub_bin = require("mosquitto_pub");
    let now = chrono::Utc::now().timestamp();
    let payloads = [
        (
            "aq/erqi-001/readings",
            r#"{"ts":"2016-08-01T08:58:57+08:00","pm25":35.2,"pm10":80.1}"#.to_string(),
        ),
        (
            "aq/erqi-002/readings",
            format!(
                r#"[{{"ts":{now},"pm10":50}},{{"ts":{},"pm10":51,"pm25":20}}]"#,
                now - 60
            ),
        ),
        (
            "aq/erqi-003/readings",
            r#"{"ts":"yesterday","pm10":1}"#.to_string(),
        ),
    ];
    for (topic, payload) in &payloads {
        let st = Command::new(&pub_bin)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                payload,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "mosquitto_pub failed");
    }
    let db_path = dir.path().join("data/aq-ingest.db");
    wait_until(
        "three readings and one reject in the store",
        Duration::from_secs(20),
        || {
            db_path.exists() && {
                let c = db(&dir.path().join("data"));
                c.query_row(
                    "SELECT (SELECT count(*) FROM readings) * 10 + (SELECT count(*) FROM rejects)",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                    == 31
            }
        },
    );

    // The readings are in the API and in the report too.
    let (status, body) = http(
        "GET",
        &format!("http://127.0.0.1:{api_port}/api/v1/sites/erqi-001/series?resolution=raw&from=2016-08-01&to=2016-08-01"),
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (series[0]["pm25"].as_f64(), series[0]["pm10"].as_f64()),
        (Some(35.2), Some(80.1))
    );
    let report = Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
        .current_dir(dir.path())
        .args([
            "--config",
            "aq.toml",
            "report",
            "--site",
            "erqi-001",
            "--from",
            "2016-08-01",
            "--to",
            "2016-08-01",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    // One reading is not a valid hour, let alone a day: the report says no data.
    assert_eq!(
        (
            report["days"][0]["date"].as_str(),
            report["days"][0]["class"].as_str()
        ),
        (Some("2016-08-01"), Some("no_data"))
    );

    unsafe_sigterm(svc.pid());
    let status = svc.wait();
    assert!(status.success(), "exit status {status:?}");
    let text = svc.log_text();
    assert!(text.contains("messages_acked=3"), "{text}");
    assert!(text.contains("stopped"));
    let c = db(&dir.path().join("data"));
    let v: (f64, f64) = c
        .query_row(
            "SELECT pm25, pm10 FROM readings WHERE site = 'erqi-001'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(v, (35.2, 80.1));
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM rejects WHERE reason = 'bad_timestamp'"
        ),
        1
    );
}
