//! Hourly aggregates, maintained with the readings: a newly stored reading adds to its
//! site-hour in the same transaction; a duplicate adds nothing. So late data updates the
//! hours (and the days derived from them) and redeliveries change nothing, and reports
//! never rescan raw readings.

use std::collections::HashMap;

use rusqlite::{params, Transaction};

use super::{Store, StoreError};
use crate::aqi::daily::SiteHour;
use crate::aqi::validity::HourAgg;
use crate::model::{Period, Pollutant, Reading, UnixMillis, MS_PER_DAY};

const HOUR_MS: i64 = 3_600_000;

/// The longest interval one sample can cover: an hour.
const MAX_SAMPLE_COVER_SECS: u64 = 3600;

/// One batch's changes, summed per site-hour before touching the table.
#[derive(Default)]
pub(super) struct Batch {
    hours: HashMap<(String, i64), [HourAgg; 2]>,
}

fn idx(p: Pollutant) -> usize {
    match p {
        Pollutant::Pm25 => 0,
        Pollutant::Pm10 => 1,
    }
}

impl Batch {
    /// Adds a newly stored reading. Only normal-flag values count (GB 3095: other flags
    /// are stored, not averaged).
    pub(super) fn add(&mut self, r: &Reading) {
        // Daily values a device computed itself never enter the hours (GB 3095 days
        // come from valid hours).
        if !r.flag.is_normal() || r.period == Period::Day {
            return;
        }
        let hour = r.ts.0.div_euclid(HOUR_MS) * HOUR_MS;
        let e = self
            .hours
            .entry((r.site.as_str().to_owned(), hour))
            .or_default();
        for p in Pollutant::ALL {
            let Some(v) = r.value(p) else { continue };
            let milli = (v.value() * 1000.0).round() as i64;
            let a = &mut e[idx(p)];
            match r.period {
                Period::Hour => a.device_mean_milli = Some(milli),
                Period::Day => {}
                Period::Sample => {
                    a.n += 1;
                    a.sum_milli += milli;
                    match r.interval_secs {
                        Some(s) => a.covered_secs += u64::from(s).min(MAX_SAMPLE_COVER_SECS),
                        None => a.n_without_interval += 1,
                    }
                }
            }
        }
    }

    pub(super) fn apply(
        self,
        tx: &Transaction<'_>,
        lines: Option<&super::HourlyLines>,
        now: UnixMillis,
    ) -> Result<Vec<SiteHour>, StoreError> {
        let mut touched = Vec::with_capacity(self.hours.len());
        let mut up = tx.prepare_cached(
            "INSERT INTO hourly (site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (site, hour_ms) DO UPDATE SET
                n25 = n25 + excluded.n25, sum25 = sum25 + excluded.sum25,
                cov25 = cov25 + excluded.cov25, nd25 = nd25 + excluded.nd25,
                dev25 = coalesce(excluded.dev25, dev25),
                n10 = n10 + excluded.n10, sum10 = sum10 + excluded.sum10,
                cov10 = cov10 + excluded.cov10, nd10 = nd10 + excluded.nd10,
                dev10 = coalesce(excluded.dev10, dev10)
             RETURNING site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10",
        )?;
        let mut derived =
            tx.prepare_cached("INSERT INTO derived_outbox (line, created_ms) VALUES (?1, ?2)")?;
        let mut dirty =
            tx.prepare_cached("INSERT OR IGNORE INTO dirty_days (site, utc_day) VALUES (?1, ?2)")?;
        let mut marked = std::collections::HashSet::new();
        for ((site, hour), [a, b]) in self.hours {
            let utc_day = hour.div_euclid(MS_PER_DAY);
            if marked.insert((site.clone(), utc_day)) {
                dirty.execute(params![site, utc_day])?;
            }
            let after = up.query_row(
                params![
                    site,
                    hour,
                    a.n,
                    a.sum_milli,
                    a.covered_secs as i64,
                    a.n_without_interval,
                    a.device_mean_milli,
                    b.n,
                    b.sum_milli,
                    b.covered_secs as i64,
                    b.n_without_interval,
                    b.device_mean_milli,
                ],
                site_hour_row,
            )?;
            if let Some(line) = lines.and_then(|f| f(&after)) {
                derived.execute(params![line, now.0])?;
            }
            touched.push(after);
        }
        Ok(touched)
    }
}

/// Reads one `hourly` row selected as
/// `site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10`.
pub(super) fn site_hour_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SiteHour> {
    let agg = |o: usize| -> rusqlite::Result<HourAgg> {
        Ok(HourAgg {
            n: r.get(o)?,
            sum_milli: r.get(o + 1)?,
            covered_secs: r.get::<_, i64>(o + 2)?.max(0) as u64,
            n_without_interval: r.get(o + 3)?,
            device_mean_milli: r.get(o + 4)?,
        })
    };
    Ok(SiteHour {
        site: r.get(0)?,
        hour: UnixMillis(r.get(1)?),
        pm25: agg(2)?,
        pm10: agg(7)?,
    })
}

impl Store {
    /// The hourly aggregates with `from <= hour < to`, for one site or all.
    pub fn hours(
        &self,
        from: UnixMillis,
        to: UnixMillis,
        site: Option<&str>,
    ) -> Result<Vec<SiteHour>, StoreError> {
        let sql = if site.is_some() {
            "SELECT site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10
             FROM hourly WHERE site = ?3 AND hour_ms >= ?1 AND hour_ms < ?2"
        } else {
            "SELECT site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10
             FROM hourly WHERE hour_ms >= ?1 AND hour_ms < ?2 AND ?3 IS NULL"
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![from.0, to.0, site], site_hour_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every site that has an hourly aggregate.
    pub fn sites(&self) -> Result<Vec<String>, StoreError> {
        // A skip scan: one index seek per site instead of reading every hour.
        let mut stmt = self.conn.prepare_cached(
            "WITH RECURSIVE s(site) AS (
                SELECT min(site) FROM hourly
                UNION ALL
                SELECT (SELECT min(site) FROM hourly WHERE site > s.site) FROM s WHERE s.site IS NOT NULL
             ) SELECT site FROM s WHERE site IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a site has any hourly aggregate.
    pub fn has_site(&self, site: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM hourly WHERE site = ?1 LIMIT 1")?
            .exists([site])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flag, MicrogramsPerCubicMetre, SiteId};
    use crate::store::StoreConfig;

    fn reading(ts: i64, pm10: f64, flag: Flag, period: Period) -> Reading {
        Reading {
            site: SiteId::parse("s1").unwrap(),
            device: None,
            ts: UnixMillis(ts),
            period,
            flag,
            pm25: None,
            pm10: Some(MicrogramsPerCubicMetre::new(pm10).unwrap()),
            interval_secs: Some(60),
        }
    }

    #[test]
    fn aggregates_follow_new_readings_only_and_match_a_backfill() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("aq.db"),
            ..StoreConfig::default()
        };
        let mut s = Store::open(&cfg).unwrap();
        let h = 1_470_013_200_000; // a whole hour
        let batch: Vec<Reading> = (0..50)
            .map(|i| {
                reading(
                    h + i * 60_000,
                    10.0 + i as f64 / 10.0,
                    Flag::Normal,
                    Period::Sample,
                )
            })
            .chain([
                reading(h + 55 * 60_000, 999.0, Flag::Maintenance, Period::Sample),
                reading(h, 42.0, Flag::Normal, Period::Hour),
            ])
            .collect();
        s.commit_batch_durable(&batch, &[], UnixMillis(0)).unwrap();
        // Redelivery of the whole batch changes nothing.
        s.commit_batch_durable(&batch, &[], UnixMillis(0)).unwrap();
        let got = s
            .hours(UnixMillis(h), UnixMillis(h + HOUR_MS), None)
            .unwrap();
        assert_eq!(got.len(), 1);
        let a = got[0].pm10;
        assert_eq!(
            (a.n, a.covered_secs, a.device_mean_milli),
            (50, 3000, Some(42_000))
        );
        let want: i64 = (0..50).map(|i| 10_000 + i * 100).sum();
        assert_eq!(a.sum_milli, want);
        assert_eq!(got[0].pm25, HourAgg::default());

        // The migration's SQL backfill computes the same aggregates from the readings.
        s.conn.execute("DELETE FROM hourly", []).unwrap();
        s.conn
            .execute_batch(
                super::super::schema::MIGRATIONS[1]
                    .split("CREATE INDEX hourly_hour ON hourly (hour_ms);")
                    .nth(1)
                    .unwrap(),
            )
            .unwrap();
        let again = s
            .hours(UnixMillis(h), UnixMillis(h + HOUR_MS), Some("s1"))
            .unwrap();
        assert_eq!(again[0].pm10, a);
        assert_eq!(s.sites().unwrap(), vec!["s1".to_string()]);
    }
}
