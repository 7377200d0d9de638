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

/// A long-running store's history, written directly (`AQ_CPU_HISTORY_DAYS` in
/// benches/cpu.rs, `AQ_BENCH_HISTORY_DAYS` in benches/pipeline.rs): each of `sites`
/// sites (named by SQLite's `printf(name, i)`) with `days` days of hourly aggregates
/// and its last four hours of minute readings (enough for a page of its own in the
/// readings' identity index), all before `end_ms` (an hour's start) and already
/// delivered to the `influx` sink. Returns the readings written.
pub fn history(c: &rusqlite::Connection, name: &str, sites: usize, end_ms: i64, days: i64) -> u64 {
    let minutes = 240;
    let sites_cte = format!(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {})",
        sites - 1
    );
    c.execute_batch(&format!(
        "BEGIN;
         {sites_cte}, h(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM h WHERE k < {hours})
         INSERT INTO hourly (site, hour_ms, n25, sum25, n10, sum10)
         SELECT printf('{name}', i), {end_ms} - k * 3600000, 60, 1800000, 60, 3240000
         FROM h, s ORDER BY k DESC, i;
         {sites_cte}, m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < {minutes})
         INSERT INTO readings (site, ts_ms, period, flag, pm25, pm10, interval_secs, received_ms)
         SELECT printf('{name}', i), {end_ms} - k * 60000, 0, 'N', 30.0, 54.0, 60, 0
         FROM m, s ORDER BY k DESC, i;
         INSERT INTO sink_cursors (sink, seq) SELECT 'influx', max(seq) FROM readings;
         COMMIT;",
        hours = days * 24
    ))
    .unwrap();
    (sites * minutes) as u64
}
