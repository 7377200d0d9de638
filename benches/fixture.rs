//! A half year of the district in a store, for the benchmarks: the hourly aggregates of
//! `SITES` sites × 184 days at one-minute cadence (what 63 million readings leave
//! behind), written directly, with every day marked for the first daily refresh.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use aq_ingest::aqi::target::{Comparison, TargetConfig};
use aq_ingest::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};
use aq_ingest::store::{Store, StoreConfig};
use chrono::NaiveDate;

pub const SITES: usize = 238;
pub const DAYS: i64 = 184;
/// 2016-07-01 00:00 Beijing time.
pub const START_MS: i64 = 1_467_302_400_000;

pub fn site(i: usize) -> String {
    format!("erqi-{i:03}")
}

pub fn target() -> TargetConfig {
    TargetConfig {
        name: "2016H2".into(),
        from: NaiveDate::from_ymd_opt(2016, 7, 1).unwrap(),
        to: NaiveDate::from_ymd_opt(2016, 12, 31).unwrap(),
        good_days: 100,
        comparison: Comparison::MoreThan,
        pm25_limit: None,
        pm10_limit: None,
        tables: Some(aq_ingest::aqi::index::TableSet::Hj633_2012),
    }
}

/// One minute-cadence sample: PM2.5 `v`, PM10 twice that.
pub fn reading(site: &str, ts: i64, v: f64) -> Reading {
    Reading {
        site: SiteId::parse(site).unwrap(),
        device: None,
        ts: UnixMillis(ts),
        period: Period::Sample,
        flag: Flag::Normal,
        pm25: Some(MicrogramsPerCubicMetre::new(v).unwrap()),
        pm10: Some(MicrogramsPerCubicMetre::new(v * 2.0).unwrap()),
        interval_secs: Some(60),
    }
}

/// Builds the store at `dir/aq.db` and returns its config.
pub fn build(dir: &Path) -> StoreConfig {
    let cfg = StoreConfig {
        path: dir.join("aq.db"),
        ..StoreConfig::default()
    };
    drop(Store::open(&cfg).unwrap());
    let mut c = rusqlite::Connection::open(&cfg.path).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO hourly (site, hour_ms, n25, sum25, cov25, nd25, n10, sum10, cov10, nd10) VALUES (?1, ?2, 60, ?3, 3600, 0, 60, ?4, 3600, 0)")
            .unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        for s in 0..SITES {
            for h in 0..(DAYS * 24) {
                // Some site-hours are missing, so that validity has work to do.
                if rng.u8(..) < 8 {
                    continue;
                }
                let pm25 = 60 * (10_000 + rng.i64(0..90_000));
                ins.execute(rusqlite::params![
                    site(s),
                    START_MS + h * 3_600_000,
                    pm25,
                    pm25 * 2
                ])
                .unwrap();
            }
        }
        // A bulk load bypasses the writer: mark every day for the first refresh.
        tx.execute(
            "INSERT OR IGNORE INTO dirty_days SELECT DISTINCT site, hour_ms / 86400000 FROM hourly",
            [],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    cfg
}
