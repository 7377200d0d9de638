//! The operator's commands on a real store file, through the built binary:
//! `dead-letters` lists the lines InfluxDB refused and `--requeue` queues them again.

mod common;

use std::process::Command;

use aq_ingest::model::UnixMillis;
use aq_ingest::store::{DeadLetter, DeadLetterKind, Store, StoreConfig};

/// The built binary with `--config cfg` and `args`, run in the config's directory (so
/// that relative store paths resolve as they do for an operator).
fn run(cfg: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
        .current_dir(cfg.parent().unwrap())
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dead_letters_are_listed_and_queued_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig {
        path: dir.path().join("aq.db"),
        ..StoreConfig::default()
    };
    let cfg = dir.path().join("aq.toml");
    std::fs::write(
        &cfg,
        format!("[store]\npath = \"{}\"\n", store.path.display()),
    )
    .unwrap();

    let (ok, said, err) = run(&cfg, &["dead-letters"]);
    assert!(ok, "{err}");
    assert_eq!(said, "no dead letters\n");

    let http400 = DeadLetterKind::Refused { status: 400 };
    let letter = |seq: i64, kind: DeadLetterKind, reason: &str, line: &str| DeadLetter {
        seq,
        kind,
        reason: reason.into(),
        line: line.into(),
    };
    aq_ingest::store::Outbox::open(&store, "influx")
        .unwrap()
        .advance_durable(
            &aq_ingest::store::Cursor::from(aq_ingest::store::Pos { writer: 0, seq: 3 }),
            &[
                letter(1, http400, "field type conflict", "pm,site=a pm10=1 1000\n"),
                letter(2, http400, "field type conflict", "pm,site=b pm10=2 1000\n"),
                letter(
                    3,
                    DeadLetterKind::Unencodable,
                    "not encodable",
                    "Point { .. }",
                ),
            ],
            UnixMillis(1),
        )
        .unwrap();
    let (ok, said, err) = run(&cfg, &["dead-letters"]);
    assert!(ok, "{err}");
    assert_eq!(
        said.lines().map(str::trim).collect::<Vec<_>>(),
        vec![
            "2  HTTP 400  field type conflict",
            "1  unencodable  not encodable"
        ]
    );

    let (ok, said, err) = run(&cfg, &["dead-letters", "--requeue"]);
    assert!(ok, "{err}");
    assert!(said.contains("queued 2 refused lines again"), "{said}");
    let s = Store::open(&store).unwrap();
    let queued: Vec<String> = s
        .derived_head(10)
        .unwrap()
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        queued,
        vec!["pm,site=a pm10=1 1000\n", "pm,site=b pm10=2 1000\n"]
    );
    let (_, said, _) = run(&cfg, &["dead-letters"]);
    assert_eq!(said.trim(), "1  unencodable  not encodable");
}

/// check-config refuses a target whose period reaches the 2026 standards without naming
/// its tables, and warns when a target's tables were in force for none of its dates.
#[test]
fn check_config_makes_the_table_set_of_a_2026_target_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let check = |target: &str| {
        std::fs::write(
            dir.path().join("aq.toml"),
            format!("[[target]]\nname = \"2026H2\"\nfrom = \"2026-07-01\"\nto = \"2026-12-31\"\ngood_days = 100\n{target}"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .current_dir(dir.path())
            .args(["--config", "aq.toml", "check-config"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = check("");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("2026H2") && text.contains("tables"), "{text}");
    let (code, text) = check("tables = \"HJ 633-2026\"\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warning"), "{text}");
    let (code, text) = check("tables = \"HJ 633-2012\"\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("warning") && text.contains("none of its dates"),
        "{text}"
    );
}

/// A half-week through MQTT into the built binary, then `report --tables` under both
/// table sets: the days whose class changes are exactly those whose rounded daily
/// concentrations lie between the two sets' IAQI-100 breakpoints (computed here from
/// the report's own daily values, not listed), and the counts differ by them.
#[test]
fn the_comparison_report_marks_exactly_the_days_between_the_two_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, api) = (common::free_port(), common::free_port());
    std::fs::write(d.join("aq.toml"), common::shipped_config(port, api)).unwrap();
    let mut svc = common::spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .current_dir(d)
            .args(["--config", "aq.toml"]),
        d.join("svc.log"),
    );
    common::wait_until("the broker", std::time::Duration::from_secs(20), || {
        svc.log_text().contains("devices can connect")
    });
    // Daily (PM2.5, PM10) as 24 device hourly means each, from 2016-08-01.
    let days = [
        (30, 60),
        (62, 90),
        (70, 100),
        (75, 140),
        (76, 100),
        (90, 200),
        (40, 130),
    ];
    for (i, (pm25, pm10)) in days.iter().enumerate() {
        let hours: Vec<String> = (0..24)
            .map(|h| format!(r#"{{"ts":"2016-08-{:02}T{h:02}:00:00+08:00","pm25":{pm25},"pm10":{pm10},"period":"hour"}}"#, i + 1))
            .collect();
        let st = Command::new(common::require("mosquitto_pub"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                "aq/s1/readings",
            ])
            .args(["-m", &format!("[{}]", hours.join(","))])
            .status()
            .unwrap();
        assert!(st.success());
    }
    svc.terminate();
    let report = |extra: &[&str]| {
        let mut args = vec!["report", "--from", "2016-08-01", "--to", "2016-08-07"];
        args.extend([
            "--as-of",
            "2016-08-07",
            "--tables",
            "HJ 633-2012,HJ 633-2026",
        ]);
        args.extend(extra);
        let (ok, out, err) = run(&d.join("aq.toml"), &args);
        assert!(ok, "{err}");
        out
    };
    let out = report(&["--format", "json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = r["days"].as_array().unwrap();
    assert_eq!(rows.len(), days.len());
    let good = |pm25: u64, pm10: u64, (l25, l10): (u64, u64)| pm25 <= l25 && pm10 <= l10;
    let mut want_changed = 0;
    for row in rows {
        let (pm25, pm10) = (row["pm25"].as_u64().unwrap(), row["pm10"].as_u64().unwrap());
        // IAQI 100: 2012 at PM2.5 75 / PM10 150, 2026 at 60 / 120 (domain.md §7).
        let changed = good(pm25, pm10, (75, 150)) != good(pm25, pm10, (60, 120));
        assert_eq!(row["changed"].as_bool(), Some(changed), "{row}");
        want_changed += usize::from(changed);
    }
    assert_eq!(want_changed, 4, "62, 70, 75 µg/m³ PM2.5 and 130 µg/m³ PM10");
    assert_eq!(r["changed"].as_u64(), Some(want_changed as u64));
    let good12 = r["counts"]["HJ 633-2012"]["good"].as_u64().unwrap();
    let good26 = r["counts"]["HJ 633-2026"]["good"].as_u64().unwrap();
    assert_eq!(good12 - good26, want_changed as u64, "2026 is never better");
    // The table for officials marks the same days.
    let text = report(&[]);
    assert_eq!(
        text.lines().filter(|l| l.ends_with(" *")).count(),
        want_changed,
        "{text}"
    );
}
