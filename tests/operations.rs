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
    // The service-wide tables: a pinned set is a warning (it classes the dates it was
    // not in force on), the shipped "in-force" none.
    let (code, text) = check("tables = \"HJ 633-2026\"\n[aqi]\ntables = \"HJ 633-2012\"\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("warning") && text.contains("aqi.tables pins HJ 633-2012"),
        "{text}"
    );
    let (code, text) = check("tables = \"HJ 633-2026\"\n[aqi]\ntables = \"in-force\"\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warning"), "{text}");
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

/// The IAQI-100 concentrations (24-hour, µg/m³) of the two table sets, from the
/// standards (domain.md §7), not from the code under test: (PM2.5, PM10).
const IAQI_100_HJ633_2012: (u32, u32) = (75, 150);
const IAQI_100_HJ633_2026: (u32, u32) = (60, 120);

/// An exact non-negative fraction `n / d` (d > 0).
type Frac = (i128, i128);

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 {
        a.abs().max(1)
    } else {
        gcd(b, a % b)
    }
}

/// The mean of exact fractions (None for none).
fn mean_of(xs: &[Frac]) -> Option<Frac> {
    if xs.is_empty() {
        return None;
    }
    let (mut n, mut d) = (0i128, 1i128);
    for &(a, b) in xs {
        (n, d) = (n * b + a * d, d * b);
        let g = gcd(n, d);
        (n, d) = (n / g, d / g);
    }
    Some((n, d * xs.len() as i128))
}

/// GB/T 8170 to an integer: round half to even.
fn round_half_even((n, d): Frac) -> u32 {
    let (q, r) = (n / d, n % d);
    let up = 2 * r > d || (2 * r == d && q % 2 == 1);
    (q + i128::from(up)) as u32
}

/// The district's rounded daily (PM2.5, PM10) of `date`, recomputed here from the
/// readings the simulator publishes (hourly readings, one per hour): a site-hour is
/// valid when its reading is normal-flagged, a site-day when it has at least 20 valid
/// hours (GB 3095-2012 Table 4), its concentration the mean of those hours; the
/// district's, the mean of the valid site-days' concentrations, then rounded (HJ 663).
/// Also how many site-days were not valid.
fn district_day(
    sim: &aq_ingest::sim::Simulator,
    date: chrono::NaiveDate,
) -> ([Option<u32>; 2], usize) {
    let mut site_means: [Vec<Frac>; 2] = [Vec::new(), Vec::new()];
    let mut invalid = 0;
    for s in 0..sim.sites {
        let normal: Vec<_> = sim
            .site_day(s, date)
            .into_iter()
            .filter(|r| r.flag == aq_ingest::model::Flag::Normal)
            .collect();
        if normal.len() < 20 {
            invalid += 1;
            continue;
        }
        let tenths = |v: f64| (v * 10.0).round() as i128;
        let hours = normal.len() as i128;
        site_means[0].push((normal.iter().map(|r| tenths(r.pm25)).sum(), 10 * hours));
        site_means[1].push((normal.iter().map(|r| tenths(r.pm10)).sum(), 10 * hours));
    }
    (
        site_means.map(|m| mean_of(&m).map(round_half_even)),
        invalid,
    )
}

/// Whether a day's class differs between the two table sets — "its means lie between
/// the two boundaries": the day is valid, no pollutant's rounded mean is above its 2012
/// IAQI-100 concentration (so it is good under 2012), and at least one is above its
/// 2026 one (so it is polluted under 2026). (A day above a 2012 boundary is polluted
/// under both; a day at or below both 2026 boundaries is good under both.)
fn between_the_boundaries([pm25, pm10]: [Option<u32>; 2]) -> bool {
    let over =
        |(l25, l10): (u32, u32)| pm25.is_some_and(|c| c > l25) || pm10.is_some_and(|c| c > l10);
    (pm25.is_some() || pm10.is_some()) && !over(IAQI_100_HJ633_2012) && over(IAQI_100_HJ633_2026)
}

/// A stored half year (2016H2, 184 days) published by `aq-ingest simulate` through the
/// service's embedded MQTT broker into the built binary, then `report --tables` under
/// both table sets: the days whose class changes are exactly the days whose district
/// means — recomputed here from the simulator's readings, and checked against the
/// report's — lie between the two boundaries, and the good-day counts differ by
/// exactly that many.
#[test]
fn a_half_year_under_both_table_sets_differs_exactly_on_the_days_between_the_boundaries() {
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
    // Three sites, one reading an hour, a day per message: 184 × 3 site-days. The
    // embedded broker acknowledges a message once it is committed, and `simulate`
    // returns when every message is acknowledged.
    // Seed 26: among its days between the boundaries, some are there through PM10
    // alone (PM10 between the boundaries is rarer than PM2.5; asserted below).
    let (sites, seed, from, days) = (3usize, 26u64, "2016-07-01", 184u32);
    let (ok, said, err) = run(
        &d.join("aq.toml"),
        &[
            "simulate",
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--sites",
            &sites.to_string(),
            "--interval-secs",
            "3600",
            "--batch",
            "24",
            "--seed",
            &seed.to_string(),
            "--from",
            from,
            "--days",
            &days.to_string(),
        ],
    );
    assert!(ok, "{said}{err}");
    svc.terminate();
    let (ok, out, err) = run(
        &d.join("aq.toml"),
        &[
            "report",
            "--target",
            "2016H2",
            "--as-of",
            "2016-12-31",
            "--tables",
            "HJ 633-2012,HJ 633-2026",
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = r["days"].as_array().unwrap();
    assert_eq!(rows.len(), days as usize);

    let sim = aq_ingest::sim::Simulator {
        sites,
        interval_secs: 3600,
        seed,
        zone: aq_ingest::aqi::zone::Zone::BEIJING,
    };
    let first: chrono::NaiveDate = from.parse().unwrap();
    let (mut changed, mut between) = (Vec::new(), Vec::new());
    // Days good under both, between the boundaries, polluted under both; site-days
    // left out as not valid.
    let (mut kinds, mut invalid_site_days) = ([0usize; 3], 0);
    for (i, row) in rows.iter().enumerate() {
        let date = first + chrono::Duration::days(i as i64);
        assert_eq!(row["date"], date.to_string());
        let (means, invalid) = district_day(&sim, date);
        invalid_site_days += invalid;
        // The service's daily values are the ones recomputed from the readings.
        let [pm25, pm10] = means.map(|m| m.map(serde_json::Value::from).unwrap_or_default());
        assert_eq!((&row["pm25"], &row["pm10"]), (&pm25, &pm10), "{date}");
        if row["changed"] == true {
            changed.push(date);
            // 2026 is never better: a change is good → polluted.
            assert_eq!(
                (&row["HJ 633-2012"]["class"], &row["HJ 633-2026"]["class"]),
                (&"good".into(), &"polluted".into()),
                "{row}"
            );
        }
        if between_the_boundaries(means) {
            between.push(date);
        }
        let class_2012 = row["HJ 633-2012"]["class"].as_str();
        match (between_the_boundaries(means), class_2012) {
            (true, _) => kinds[1] += 1,
            (false, Some("good")) => kinds[0] += 1,
            (false, Some("polluted")) => kinds[2] += 1,
            _ => {}
        }
    }
    assert_eq!(
        changed, between,
        "changed days vs days between the boundaries"
    );
    let count = |t: &str, c: &str| r["counts"][t][c].as_u64().unwrap();
    let (good12, good26) = (count("HJ 633-2012", "good"), count("HJ 633-2026", "good"));
    assert_eq!(good12 - good26, between.len() as u64);
    assert_eq!(r["changed"].as_u64(), Some(between.len() as u64));
    assert_eq!(
        count("HJ 633-2012", "no_data"),
        count("HJ 633-2026", "no_data")
    );
    // The half year is a real test of the boundary: days of every kind, days between
    // the boundaries through each pollutant alone, and site-days the validity rule
    // leaves out.
    let (l25, l10) = IAQI_100_HJ633_2026;
    let through = |over: fn([Option<u32>; 2], u32, u32) -> bool| {
        between
            .iter()
            .any(|date| over(district_day(&sim, *date).0, l25, l10))
    };
    assert!(kinds.iter().all(|k| *k > 0), "{kinds:?}");
    assert!(between.len() >= 5, "{kinds:?}");
    assert!(
        through(|[a, b], l25, l10| a.is_some_and(|c| c > l25) && b.is_some_and(|c| c <= l10)),
        "a day between the boundaries through PM2.5 alone"
    );
    assert!(
        through(|[a, b], l25, l10| b.is_some_and(|c| c > l10) && a.is_some_and(|c| c <= l25)),
        "a day between the boundaries through PM10 alone"
    );
    assert!(invalid_site_days > 0, "no site-day left out");
}
