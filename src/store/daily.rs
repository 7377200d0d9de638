//! Daily values per site: a cache of what the hourly aggregates imply (schema
//! migration 3), refreshed on a timer together with the district's ([`super::district`]),
//! with the days commits have touched since recomputed on read.

use std::collections::BTreeSet;

use chrono::{Duration, NaiveDate};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::hourly::DAY_MS;
use super::{district, Store, StoreError};
use crate::aqi::daily::{site_days, SiteDay};
use crate::aqi::mean::Milli;
use crate::aqi::validity::{DayAgg, MIN_VALID_HOURS, VALID_HOUR_COVERAGE_SECS};
use crate::aqi::zone::Zone;
use crate::aqi::AqiConfig;
use crate::model::UnixMillis;

pub(super) fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
}

pub(super) fn day_number(d: NaiveDate) -> i64 {
    (d - epoch()).num_days()
}

/// A fraction as two SQLite integers; approximated (to 10⁻⁶ milli-µg/m³) in the
/// unrealistic case that it does not fit.
fn store_parts(m: Milli) -> (i64, i64) {
    let (n, d) = m.parts();
    match (i64::try_from(n), i64::try_from(d)) {
        (Ok(n), Ok(d)) => (n, d),
        _ => ((m.as_f64() * 1e6).round() as i64, 1_000_000),
    }
}

/// Cached site-days grouped by date.
pub type DayRows = std::collections::BTreeMap<NaiveDate, Vec<(String, SiteDay)>>;

/// Reads one `site_daily` row selected as `day, site, h25, num25, den25, h10, num10, den10`.
pub(super) fn daily_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(NaiveDate, String, SiteDay)> {
    let agg = |o: usize| -> rusqlite::Result<DayAgg> {
        let num: Option<i64> = r.get(o + 1)?;
        let den: Option<i64> = r.get(o + 2)?;
        Ok(DayAgg {
            valid_hours: r.get::<_, i64>(o)? as usize,
            mean: match (num, den) {
                // Stored in lowest terms by `store_parts` (or as an approximation over
                // 10⁶, which `ratio` reduces).
                (Some(n), Some(d)) if d == 1_000_000 => {
                    Some(Milli::ratio(i128::from(n), i128::from(d)))
                }
                (Some(n), Some(d)) if d > 0 => {
                    Some(Milli::from_parts(i128::from(n), i128::from(d)))
                }
                _ => None,
            },
        })
    };
    Ok((
        epoch() + Duration::days(r.get(0)?),
        r.get::<_, String>(1)?,
        SiteDay {
            pm25: agg(2)?,
            pm10: agg(5)?,
        },
    ))
}

/// The local days that UTC day `utc_day` overlaps.
pub(super) fn local_days(zone: Zone, utc_day: i64) -> [NaiveDate; 2] {
    [
        zone.date_of(UnixMillis(utc_day * DAY_MS)),
        zone.date_of(UnixMillis(utc_day * DAY_MS + DAY_MS - 1)),
    ]
}

/// The cache key: the rules daily values were computed with.
pub(super) fn cache_key(zone: Zone, default_interval_secs: u32) -> String {
    format!(
        "zone={};interval={default_interval_secs};hours={MIN_VALID_HOURS};coverage={VALID_HOUR_COVERAGE_SECS}",
        zone.start_of(epoch()).0
    )
}

/// One site-day recomputed from its hours (None: no hours at all).
fn recompute(
    conn: &rusqlite::Connection,
    site: &str,
    date: NaiveDate,
    zone: Zone,
    default_interval_secs: u32,
) -> Result<Option<SiteDay>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10
         FROM hourly WHERE site = ?1 AND hour_ms >= ?2 AND hour_ms < ?3",
    )?;
    let from = zone.start_of(date);
    let to = zone.start_of(date + Duration::days(1));
    let hours = stmt
        .query_map(params![site, from.0, to.0], super::hourly::site_hour_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(site_days(&hours, zone, default_interval_secs)
        .into_values()
        .next())
}

impl Store {
    /// Daily values for `from..=to` (one site or all) as they are now, without writing:
    /// the cached values, with the days that commits touched since the last refresh
    /// recomputed from their hours — all in one read snapshot. This is what reports
    /// and the API use, so a read never waits for the writer.
    pub fn daily_fresh(
        &self,
        zone: Zone,
        default_interval_secs: u32,
        from: NaiveDate,
        to: NaiveDate,
        site: Option<&str>,
    ) -> Result<Vec<(NaiveDate, String, SiteDay)>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let rows = self.daily_now(zone, default_interval_secs, from, to, site)?;
        tx.finish()?;
        Ok(rows)
    }

    /// [`Store::daily_fresh`] inside the caller's read transaction.
    pub(super) fn daily_now(
        &self,
        zone: Zone,
        default_interval_secs: u32,
        from: NaiveDate,
        to: NaiveDate,
        site: Option<&str>,
    ) -> Result<Vec<(NaiveDate, String, SiteDay)>, StoreError> {
        let tx = &self.conn;
        let key: Option<String> = tx
            .query_row("SELECT key FROM daily_cache_key WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        if key.as_deref() != Some(cache_key(zone, default_interval_secs).as_str()) {
            // No cache for these rules: everything from the hours.
            let hours = self.hours(
                zone.start_of(from),
                zone.start_of(to + Duration::days(1)),
                site,
            )?;
            return Ok(site_days(&hours, zone, default_interval_secs)
                .into_iter()
                .map(|((d, s), v)| (d, s, v))
                .collect());
        }
        let mut rows = self.daily(from, to, site)?;
        let dirty: Vec<(String, i64)> = {
            let mut stmt = tx.prepare_cached("SELECT site, utc_day FROM dirty_days")?;
            let r = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            r.collect::<Result<_, _>>()?
        };
        let mut touched = BTreeSet::new();
        for (s, d) in dirty {
            if site.is_some_and(|x| x != s) {
                continue;
            }
            for date in local_days(zone, d) {
                if date >= from && date <= to {
                    touched.insert((s.clone(), date));
                }
            }
        }
        if touched.is_empty() {
            // The common case for past periods: the cache is all there is.
            return Ok(rows);
        }
        // `rows` is sorted by (date, site) (the query's ORDER BY): patch in place.
        // (One primary-key range per touched site-day: measured faster than one
        // query over the day's hours through the hour index, even for every site.)
        for (s, date) in touched {
            let fresh = recompute(tx, &s, date, zone, default_interval_secs)?;
            let at = rows.binary_search_by(|r| (r.0, r.1.as_str()).cmp(&(date, s.as_str())));
            match (at, fresh) {
                (Ok(i), Some(v)) => rows[i].2 = v,
                (Ok(i), None) => {
                    rows.remove(i);
                }
                (Err(i), Some(v)) => rows.insert(i, (date, s, v)),
                (Err(_), None) => {}
            }
        }
        Ok(rows)
    }

    /// Recomputes the daily values that commits have touched since the last refresh (all
    /// of them when the rules changed). Returns how many site-days were recomputed.
    /// The district days of the touched dates (of every date when the district rules
    /// changed) are recomputed from the refreshed site-days in the same transaction.
    pub fn refresh_daily(&mut self, aqi: &AqiConfig) -> Result<usize, StoreError> {
        let (zone, default_interval_secs) = (aqi.zone(), aqi.default_interval_secs);
        let key = cache_key(zone, default_interval_secs);
        // IMMEDIATE: the writer waits while we refresh, so no mark is lost between our
        // read of dirty_days and our delete of it.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<String> = tx
            .query_row("SELECT key FROM daily_cache_key WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let rules_changed = old.as_deref() != Some(key.as_str());
        if rules_changed {
            tx.execute("DELETE FROM site_daily", [])?;
            tx.execute(
                "INSERT OR IGNORE INTO dirty_days SELECT DISTINCT site, hour_ms / 86400000 FROM hourly",
                [],
            )?;
            tx.execute(
                "INSERT INTO daily_cache_key (id, key) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET key = excluded.key",
                [&key],
            )?;
        }
        let dirty: Vec<(String, i64)> = {
            let mut stmt = tx.prepare("SELECT site, utc_day FROM dirty_days")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        // The local days a UTC day overlaps.
        let mut touched: BTreeSet<(String, NaiveDate)> = BTreeSet::new();
        for (site, d) in &dirty {
            for date in local_days(zone, *d) {
                touched.insert((site.clone(), date));
            }
        }
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO site_daily (day, site, h25, num25, den25, h10, num10, den10)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (day, site) DO UPDATE SET h25 = excluded.h25, num25 = excluded.num25,
                    den25 = excluded.den25, h10 = excluded.h10, num10 = excluded.num10, den10 = excluded.den10",
            )?;
            let mut pending = tx.prepare_cached(
                "INSERT OR IGNORE INTO derived_pending (day, site) VALUES (?1, ?2)",
            )?;
            for (site, date) in &touched {
                let Some(d) = recompute(&tx, site, *date, zone, default_interval_secs)? else {
                    continue;
                };
                let a = d.pm25.mean.map(store_parts);
                let b = d.pm10.mean.map(store_parts);
                up.execute(params![
                    day_number(*date),
                    site,
                    d.pm25.valid_hours as i64,
                    a.map(|x| x.0),
                    a.map(|x| x.1),
                    d.pm10.valid_hours as i64,
                    b.map(|x| x.0),
                    b.map(|x| x.1),
                ])?;
                // The sinks' derived series follow every recomputed day that has data.
                pending.execute(params![day_number(*date), site])?;
            }
            let mut del =
                tx.prepare_cached("DELETE FROM dirty_days WHERE site = ?1 AND utc_day = ?2")?;
            for (site, d) in &dirty {
                del.execute(params![site, d])?;
            }
        }
        // The district days over the refreshed site-days.
        district::refresh(&tx, aqi, &key, rules_changed, touched.iter().map(|t| t.1))?;
        tx.commit()?;
        Ok(touched.len())
    }

    /// Emits the derived daily series: in one transaction, hands the site-days
    /// recomputed since the last call (and every cached site-day of their dates, for the
    /// district values) to `make`, stores the lines it returns in the derived outbox,
    /// and clears the pending marks. Returns the number of lines.
    pub fn emit_derived_days(
        &mut self,
        now: UnixMillis,
        make: impl FnOnce(&[(NaiveDate, String)], &DayRows) -> Vec<String>,
    ) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending: Vec<(NaiveDate, String)> = {
            let mut stmt = tx.prepare("SELECT day, site FROM derived_pending")?;
            let rows = stmt.query_map([], |r| {
                Ok((epoch() + Duration::days(r.get(0)?), r.get::<_, String>(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        if pending.is_empty() {
            return Ok(0);
        }
        let mut by_date = DayRows::new();
        {
            let dates: BTreeSet<NaiveDate> = pending.iter().map(|p| p.0).collect();
            let mut stmt = tx.prepare_cached(
                "SELECT day, site, h25, num25, den25, h10, num10, den10 FROM site_daily WHERE day = ?1",
            )?;
            for d in dates {
                let rows = stmt.query_map([day_number(d)], daily_row)?;
                for row in rows {
                    let (date, site, day) = row?;
                    by_date.entry(date).or_default().push((site, day));
                }
            }
        }
        let lines = make(&pending, &by_date);
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO derived_outbox (line, created_ms) VALUES (?1, ?2)")?;
            for l in &lines {
                ins.execute(params![l, now.0])?;
            }
            let mut del =
                tx.prepare_cached("DELETE FROM derived_pending WHERE day = ?1 AND site = ?2")?;
            for (d, site) in &pending {
                del.execute(params![day_number(*d), site])?;
            }
        }
        tx.commit()?;
        Ok(lines.len())
    }

    /// Cached daily values for `from..=to`, for one site or all: (date, site, day).
    /// Call [`Store::refresh_daily`] first.
    pub fn daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        site: Option<&str>,
    ) -> Result<Vec<(NaiveDate, String, SiteDay)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT day, site, h25, num25, den25, h10, num10, den10 FROM site_daily
             WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR site = ?3) ORDER BY day, site",
        )?;
        let rows = stmt.query_map(params![day_number(from), day_number(to), site], daily_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
