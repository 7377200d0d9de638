//! The PostgreSQL store under several concurrent writers, against a real server: each
//! reading stored once whichever instance commits it, hourly aggregates equal to a
//! recomputation from the readings, and an outbox that neither skips nor repeats a row
//! while writers commit out of sequence order.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aq_ingest::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};
use aq_ingest::store::{Outbox, StoreConfig, Writer};
use common::pg::Postgres;

/// Reading `i` of site `s` (one a minute from a whole hour), values varying by both.
fn reading(s: usize, i: i64) -> Reading {
    Reading {
        site: SiteId::parse(&format!("site-{s:02}")).unwrap(),
        device: None,
        ts: UnixMillis(1_470_009_600_000 + i * 60_000),
        period: Period::Sample,
        flag: if i % 17 == 5 {
            Flag::Maintenance
        } else {
            Flag::Normal
        },
        pm25: Some(
            MicrogramsPerCubicMetre::new(((s * 13 + i as usize * 7) % 900) as f64 / 10.0).unwrap(),
        ),
        pm10: Some(
            MicrogramsPerCubicMetre::new(((s * 37 + i as usize * 11) % 2000) as f64 / 10.0 + 5.0)
                .unwrap(),
        ),
        interval_secs: Some(60),
    }
}

/// Every reading of `sites` × `per_site`, cut into batches of `batch`, in an order
/// that differs per writer (`seed`), and each batch shuffled: three writers then
/// insert the same identities in different orders at the same time.
fn batches(sites: usize, per_site: i64, batch: usize, seed: u64) -> Vec<Vec<Reading>> {
    let mut all: Vec<Reading> = (0..sites)
        .flat_map(|s| (0..per_site).map(move |i| reading(s, i)))
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    rng.shuffle(&mut all);
    all.chunks(batch).map(<[Reading]>::to_vec).collect()
}

/// The hourly aggregates recomputed by PostgreSQL from the stored readings, as the
/// store keeps them (normal-flag samples: count, sum in milli-µg/m³, covered seconds).
const RECOMPUTED: &str = "
    SELECT site, (ts_ms / 3600000) * 3600000 AS hour_ms,
           CAST(count(pm25) FILTER (WHERE flag = 'N') AS BIGINT),
           CAST(coalesce(sum(round(pm25 * 1000)) FILTER (WHERE flag = 'N'), 0) AS BIGINT),
           CAST(coalesce(sum(least(interval_secs, 3600)) FILTER (WHERE flag = 'N' AND pm25 IS NOT NULL), 0) AS BIGINT),
           CAST(count(pm10) FILTER (WHERE flag = 'N') AS BIGINT),
           CAST(coalesce(sum(round(pm10 * 1000)) FILTER (WHERE flag = 'N'), 0) AS BIGINT)
    FROM readings GROUP BY 1, 2 ORDER BY 1, 2";

const STORED: &str = "
    SELECT site, hour_ms, n25, sum25, cov25, n10, sum10 FROM hourly
    WHERE n25 > 0 OR n10 > 0 ORDER BY 1, 2";

type HourRow = (String, i64, i64, i64, i64, i64, i64);

fn hour_rows(pg: &Postgres, sql: &str) -> Vec<HourRow> {
    pg.query(sql)
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

#[test]
fn concurrent_writers_store_each_reading_once_and_the_hours_match_the_readings() {
    let pg = Postgres::start();
    let cfg = StoreConfig::postgres(&pg.url());
    let (sites, per_site) = (8, 240);
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let mut writer = Writer::open(&cfg).unwrap();
                let mut stored = 0;
                for b in batches(sites, per_site, 97, w) {
                    stored += writer
                        .commit_batch_durable(&b, &[], UnixMillis(1))
                        .unwrap()
                        .stored;
                }
                stored
            })
        })
        .collect();
    let stored: u64 = writers.into_iter().map(|t| t.join().unwrap()).sum();
    let total = (sites as i64) * per_site;
    // Every writer offered every reading; between them they stored each exactly once.
    assert_eq!(stored as i64, total);
    assert_eq!(pg.count("SELECT count(*) FROM readings"), total);
    assert_eq!(
        pg.count("SELECT count(DISTINCT (site, ts_ms, period)) FROM readings"),
        total
    );
    // The aggregates were updated only from rows actually inserted.
    let want = hour_rows(&pg, RECOMPUTED);
    assert_eq!(want.len(), sites * 4, "4 hours per site");
    assert_eq!(hour_rows(&pg, STORED), want);
    // Three writers registered; the rows name them.
    assert_eq!(pg.count("SELECT count(DISTINCT writer) FROM readings"), 3);
}

#[test]
fn the_outbox_neither_skips_nor_repeats_a_row_while_writers_commit_out_of_order() {
    let pg = Postgres::start();
    let cfg = StoreConfig::postgres(&pg.url());
    let done = Arc::new(AtomicBool::new(false));
    // Three writers with disjoint readings (each its own sites), small batches, so
    // that sequence values are handed out interleaved and commit out of order.
    let writers: Vec<_> = (0..3usize)
        .map(|w| {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let mut writer = Writer::open(&cfg).unwrap();
                let mut rng = fastrand::Rng::with_seed(w as u64);
                for i in 0..400i64 {
                    let n = rng.usize(1..6);
                    let b: Vec<Reading> = (0..n).map(|k| reading(w * 10 + k, i)).collect();
                    writer.commit_batch_durable(&b, &[], UnixMillis(1)).unwrap();
                }
            })
        })
        .collect();
    // The sink: pages of at most 7 after its cursor, cursor moved after each page.
    let reader = {
        let (cfg, done) = (cfg.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut outbox = Outbox::open(&cfg, "influx").unwrap();
            let mut cursor = outbox.cursor().unwrap();
            let mut seen: Vec<i64> = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let page = outbox.pending(&cursor, 7).unwrap();
                if page.is_empty() && finished {
                    return seen;
                }
                for (pos, _) in &page {
                    seen.push(pos.seq);
                    cursor.advance(*pos);
                }
                if !page.is_empty() {
                    outbox.advance_durable(&cursor, &[], UnixMillis(2)).unwrap();
                }
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let seen = reader.join().unwrap();
    let all: BTreeSet<i64> = pg
        .query("SELECT seq FROM readings")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "a row was delivered twice");
    assert_eq!(
        distinct,
        all,
        "rows skipped: {}",
        all.len() - distinct.len()
    );
    // And the stored cursor has nothing left after it.
    let outbox = Outbox::open(&cfg, "influx").unwrap();
    let cursor = outbox.cursor().unwrap();
    assert!(outbox.pending(&cursor, 10).unwrap().is_empty());
    assert_eq!(outbox.pending_stats(&cursor).unwrap().0, 0);
}

/// The analysts' views say what the service computes: readings, hourly sample means,
/// site days and district days, read with plain SQL (what Grafana or a BI tool runs).
#[test]
fn the_analyst_views_agree_with_the_service() {
    use aq_ingest::aqi::AqiConfig;
    use aq_ingest::store::{Maintainer, Store};
    let pg = Postgres::start();
    let cfg = StoreConfig::postgres(&pg.url());
    let mut writer = Writer::open(&cfg).unwrap();
    // Three sites, two UTC days (2880 minutes) each: the local (UTC+8) day between
    // them has every hour valid.
    for s in 0..3 {
        let day: Vec<Reading> = (0..2880).map(|i| reading(s, i)).collect();
        writer
            .commit_batch_durable(&day, &[], UnixMillis(1))
            .unwrap();
    }
    let aqi = AqiConfig::default();
    Maintainer::open(&cfg).unwrap().refresh_daily(&aqi).unwrap();

    assert_eq!(pg.count("SELECT count(*) FROM aq_readings"), 3 * 2880);
    let hourly = pg.query(
        "SELECT pm10_sample_mean::float8, pm10_samples FROM aq_hourly
         WHERE site = 'site-01' ORDER BY hour LIMIT 1",
    );
    // The first hour's normal-flag samples (the maintenance ones are stored, not
    // averaged).
    let normal: Vec<f64> = (0..60)
        .map(|i| reading(1, i))
        .filter(|r| r.flag == Flag::Normal)
        .map(|r| r.pm10.unwrap().value())
        .collect();
    let want = normal.iter().sum::<f64>() / normal.len() as f64;
    assert!((hourly[0].get::<_, f64>(0) - want).abs() < 1e-9);
    assert_eq!(hourly[0].get::<_, i64>(1), normal.len() as i64);

    let store = Store::open(&cfg).unwrap();
    // 16:00 UTC is local midnight: the local day of minute 1000 is whole.
    let date = aqi.zone().date_of(reading(0, 1000).ts);
    let days = store
        .daily_fresh(aqi.zone(), aqi.default_interval_secs, date, date, None)
        .unwrap();
    let view = pg.query(&format!(
        "SELECT site, pm25_mean::float8, pm25_valid_hours FROM aq_site_daily
         WHERE day = DATE '{date}' ORDER BY site"
    ));
    assert_eq!(view.len(), days.len());
    assert!(!days.is_empty());
    for ((_, site, d), row) in days.iter().zip(&view) {
        assert_eq!(row.get::<_, String>(0), *site);
        let mean = d.pm25.mean.map(|m| m.as_ug());
        assert_eq!(
            row.get::<_, Option<f64>>(1).map(|v| (v * 1e9).round()),
            mean.map(|v| (v * 1e9).round())
        );
        assert_eq!(row.get::<_, i64>(2), d.pm25.valid_hours as i64);
    }
    let district = store.district_fresh(&aqi, date, date).unwrap();
    let row = &pg.query(&format!(
        "SELECT pm10_sites, pm10_mean FROM aq_district_daily WHERE day = DATE '{date}'"
    ))[0];
    assert_eq!(row.get::<_, i64>(0), district[0].1.pm10.sites as i64);
    let want = district[0].1.pm10.mean.map(|m| m.as_ug()).unwrap();
    assert!((row.get::<_, f64>(1) - want).abs() < 1e-9);
}

/// One batch holding the same reading twice (a device's re-upload inside one
/// message): stored and counted once, on PostgreSQL's one-statement insert too.
#[test]
fn a_reading_twice_in_one_batch_is_stored_and_counted_once() {
    let pg = Postgres::start();
    let mut writer = Writer::open(&StoreConfig::postgres(&pg.url())).unwrap();
    let (a, b) = (reading(1, 0), reading(1, 1));
    let first = writer
        .commit_batch_durable(&[a.clone(), b.clone(), a.clone()], &[], UnixMillis(1))
        .unwrap();
    assert_eq!((first.stored, first.duplicates), (2, 1));
    let again = writer
        .commit_batch_durable(&[b, a], &[], UnixMillis(2))
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 2));
    assert_eq!(pg.count("SELECT count(*) FROM readings"), 2);
    assert_eq!(pg.count("SELECT n10 FROM hourly"), 2);
}

/// The sink reads the site-hours of the readings it sends by key, in one round trip on
/// PostgreSQL: the rows of the keys given, in their order, none for a key without one —
/// the same as SQLite's lookups.
#[test]
fn site_hours_by_key_are_the_stored_hours_in_the_order_asked_on_both_engines() {
    use aq_ingest::store::Store;
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = StoreConfig {
        path: dir.path().join("aq.db"),
        ..StoreConfig::default()
    };
    for cfg in [StoreConfig::postgres(&pg.url()), sqlite] {
        let mut writer = Writer::open(&cfg).unwrap();
        for s in 0..3 {
            let two_hours: Vec<Reading> = (0..120).map(|i| reading(s, i)).collect();
            writer
                .commit_batch_durable(&two_hours, &[], UnixMillis(1))
                .unwrap();
        }
        let store = Store::open(&cfg).unwrap();
        let all = store
            .hours(UnixMillis(0), UnixMillis(i64::MAX), None)
            .unwrap();
        assert_eq!(all.len(), 6);
        let key = |i: usize| (all[i].site.clone(), all[i].hour.0);
        let keys = vec![
            key(5),
            key(0),
            ("nowhere".to_owned(), all[0].hour.0),
            key(3),
        ];
        let got = store.site_hours(&keys).unwrap();
        let want = vec![all[5].clone(), all[0].clone(), all[3].clone()];
        assert_eq!(got, want, "{:?}", cfg.backend);
    }
}
