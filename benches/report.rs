//! Target-report benchmark (prints its figures): `cargo bench --bench report`.
//!
//! A store holding the hourly aggregates of 238 sites × 184 days at one-minute cadence
//! (what 63 million readings leave behind: 1.05 million site-hours, 60 samples each) is
//! built directly, then the district target report for the half year is computed from
//! it repeatedly; the median and worst times are printed.

use std::time::{Duration, Instant};

use aq_ingest::aqi::target::{Comparison, TargetConfig};
use aq_ingest::aqi::AqiConfig;
use aq_ingest::report::{build, Spec};
use aq_ingest::store::{Store, StoreConfig};
use chrono::NaiveDate;

const SITES: usize = 238;
const DAYS: i64 = 184;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        path: dir.path().join("aq.db"),
        ..StoreConfig::default()
    };
    let store = Store::open(&cfg).unwrap();
    drop(store);
    let from = NaiveDate::from_ymd_opt(2016, 7, 1).unwrap();
    let t0 = Instant::now();
    {
        let mut c = rusqlite::Connection::open(&cfg.path).unwrap();
        let tx = c.transaction().unwrap();
        {
            // A bulk load bypasses the writer: mark every day for the first refresh.
            let mut ins = tx
                .prepare("INSERT INTO hourly (site, hour_ms, n25, sum25, cov25, nd25, n10, sum10, cov10, nd10) VALUES (?1, ?2, 60, ?3, 3600, 0, 60, ?4, 3600, 0)")
                .unwrap();
            let start_ms = 1_467_302_400_000i64; // 2016-06-30T16:00Z = 2016-07-01 00:00 Beijing
            let mut rng = fastrand::Rng::with_seed(7);
            for s in 0..SITES {
                let site = format!("erqi-{s:03}");
                for h in 0..(DAYS * 24) {
                    // Some site-hours are missing, so that validity has work to do.
                    if rng.u8(..) < 8 {
                        continue;
                    }
                    let pm25 = 60 * (10_000 + rng.i64(0..90_000));
                    let pm10 = pm25 * 2;
                    ins.execute(rusqlite::params![
                        site,
                        start_ms + h * 3_600_000,
                        pm25,
                        pm10
                    ])
                    .unwrap();
                }
            }
        }
        tx.execute(
            "INSERT OR IGNORE INTO dirty_days SELECT DISTINCT site, hour_ms / 86400000 FROM hourly",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    println!(
        "built {} site-hours in {:.1} s",
        SITES as i64 * DAYS * 24,
        t0.elapsed().as_secs_f64()
    );

    let mut store = Store::open(&cfg).unwrap();
    let t1 = Instant::now();
    let n = store
        .refresh_daily(aq_ingest::aqi::zone::Zone::BEIJING, 60)
        .unwrap();
    println!(
        "first refresh of the daily cache ({n} site-days, after a bulk load): {:.0} ms",
        t1.elapsed().as_secs_f64() * 1000.0
    );
    let target = TargetConfig {
        name: "2016H2".into(),
        from,
        to: NaiveDate::from_ymd_opt(2016, 12, 31).unwrap(),
        good_days: 100,
        comparison: Comparison::MoreThan,
        pm25_limit: None,
        pm10_limit: None,
    };
    let aqi = AqiConfig::default();
    let mut times: Vec<Duration> = Vec::new();
    let mut good = 0;
    for _ in 0..11 {
        let t = Instant::now();
        let r = build(
            &mut store,
            &aqi,
            Spec {
                from: target.from,
                to: target.to,
                as_of: target.to,
                site: None,
                target: Some(target.clone()),
            },
        )
        .unwrap();
        times.push(t.elapsed());
        good = r.progress.unwrap().good;
    }
    times.sort();
    println!(
        "district target report, {SITES} sites × {DAYS} days: median {:.1} ms, worst {:.1} ms ({good} good days)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
}
