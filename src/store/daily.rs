//! Daily values per site: a cache of what the hourly aggregates imply (schema
//! migration 3), refreshed on a timer together with the district's, with the days
//! commits have touched since recomputed on read. Every statement on `site_daily` is
//! here. The district cache ([`super::district`]) is built over these site-days and uses
//! this module, never the reverse: the refresh of both, one transaction, is started
//! there.

use std::collections::BTreeSet;

use chrono::{Duration, NaiveDate};

use super::sql::{p, Begin, Columns, Db, Row};
use super::{Store, StoreError};
use crate::aqi::daily::{site_days, SiteDay};
use crate::aqi::mean::Milli;
use crate::aqi::validity::{DayAgg, MIN_VALID_HOURS, VALID_HOUR_COVERAGE_SECS};
use crate::aqi::zone::Zone;
use crate::aqi::AqiConfig;
use crate::model::{UnixMillis, MS_PER_DAY};

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

/// The columns of `site_daily`, in the order [`daily_row`] reads them and
/// [`refresh_sites`] writes them: their one home.
const COLUMNS: &str = "day, site, h25, num25, den25, h10, num10, den10";

/// Reads one `site_daily` row selected as [`COLUMNS`].
fn daily_row(r: &Row) -> Result<(NaiveDate, String, SiteDay), StoreError> {
    let agg = |o: usize| -> Result<DayAgg, StoreError> {
        let num = r.opt_i64(o + 1)?;
        let den = r.opt_i64(o + 2)?;
        Ok(DayAgg {
            valid_hours: r.i64(o)? as usize,
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
        epoch() + Duration::days(r.i64(0)?),
        r.text(1)?.to_owned(),
        SiteDay {
            pm25: agg(2)?,
            pm10: agg(5)?,
        },
    ))
}

/// The local days that UTC day `utc_day` overlaps.
pub(super) fn local_days(zone: Zone, utc_day: i64) -> [NaiveDate; 2] {
    [
        zone.date_of(UnixMillis(utc_day * MS_PER_DAY)),
        zone.date_of(UnixMillis(utc_day * MS_PER_DAY + MS_PER_DAY - 1)),
    ]
}

/// The cached site-days of one date (for the district and the derived series).
pub(super) fn site_days_on(
    db: &Db,
    date: NaiveDate,
) -> Result<Vec<(NaiveDate, String, SiteDay)>, StoreError> {
    db.rows(
        &format!("SELECT {COLUMNS} FROM site_daily WHERE day = ?1"),
        p![day_number(date)],
    )?
    .iter()
    .map(daily_row)
    .collect()
}

/// Every date with a cached site-day.
pub(super) fn cached_dates(db: &Db) -> Result<Vec<NaiveDate>, StoreError> {
    db.rows("SELECT DISTINCT day FROM site_daily", p![])?
        .iter()
        .map(|r| Ok(epoch() + Duration::days(r.i64(0)?)))
        .collect()
}

/// Marks every cached date for the derived series (through one of its sites, whose line
/// is rewritten unchanged), so that its district day is emitted again.
pub(super) fn mark_every_date_pending(db: &Db) -> Result<(), StoreError> {
    db.exec(
        "INSERT INTO derived_pending (day, site)
         SELECT day, min(site) FROM site_daily GROUP BY day ON CONFLICT DO NOTHING",
        p![],
    )?;
    Ok(())
}

/// Marks every cached site-day for the derived series (a resend of everything).
/// Returns how many.
pub(super) fn mark_every_site_day_pending(db: &Db) -> Result<u64, StoreError> {
    db.exec(
        "INSERT INTO derived_pending (day, site) SELECT day, site FROM site_daily WHERE true
         ON CONFLICT DO NOTHING",
        p![],
    )
}

/// The cache key of the rows: the rules the site-days' means and valid hours were
/// computed with. Reads compare it with [`rows_part`] of the stored key.
pub(super) fn cache_key(zone: Zone, default_interval_secs: u32) -> String {
    format!(
        "zone={};interval={default_interval_secs};hours={MIN_VALID_HOURS};coverage={VALID_HOUR_COVERAGE_SECS}",
        zone.start_of(epoch()).0
    )
}

/// The site cache key as stored: [`cache_key`], then after `|` the index tables
/// (`aqi.tables`) the derived site lines were classed under. A change of the tables
/// leaves the rows as they are (they hold means, not classes) but sends every
/// site-day's derived line again.
pub(super) fn site_key(aqi: &AqiConfig) -> String {
    format!(
        "{}|tables={}",
        cache_key(aqi.zone(), aqi.default_interval_secs),
        aqi.tables.key()
    )
}

/// The part of a stored cache key that the cached rows depend on: before the first
/// `|` (a key stored by a version without the part after it is all rows part).
pub(super) fn rows_part(key: &str) -> &str {
    key.split_once('|').map_or(key, |(rows, _)| rows)
}

/// One site-day recomputed from its hours (None: no hours at all).
fn recompute(
    db: &Db,
    site: &str,
    date: NaiveDate,
    zone: Zone,
    default_interval_secs: u32,
) -> Result<Option<SiteDay>, StoreError> {
    let from = zone.start_of(date);
    let to = zone.start_of(date + Duration::days(1));
    let hours = db
        .rows(
            &format!(
                "SELECT {} FROM hourly WHERE site = ?1 AND hour_ms >= ?2 AND hour_ms < ?3",
                super::hourly::COLUMNS
            ),
            p![site, from.0, to.0],
        )?
        .iter()
        .map(super::hourly::site_hour_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(site_days(&hours, zone, default_interval_secs)
        .into_values()
        .next())
}

/// A date whose touched sites are at least this share (1/N) of the sites with a row in
/// its latest two stored hours is recomputed from one read of the day's hours of every
/// site.
const WHOLE_DAY_SHARE: usize = 4;

/// The touched site-days recomputed from their hours (None: no hours at all), in the
/// set's order. The hours are stored by hour, then site: a day's hours of every site
/// are one primary-key range, while one site's day is 24 rows on 24 pages (found
/// through `hourly_site`). So a date with many touched sites — a commit covers every
/// site's today — is read in one range; a date with a few (a late upload), per site.
fn recompute_all(
    db: &Db,
    touched: &BTreeSet<(String, NaiveDate)>,
    zone: Zone,
    default_interval_secs: u32,
) -> Result<Vec<Option<SiteDay>>, StoreError> {
    let mut whole_days = std::collections::BTreeMap::new();
    for (date, sites) in read_whole(db, touched, zone)? {
        let (from, to) = (zone.start_of(date), zone.start_of(date + Duration::days(1)));
        let mut hours = Vec::new();
        db.each(
            &format!(
                "SELECT {} FROM hourly WHERE hour_ms >= ?1 AND hour_ms < ?2",
                super::hourly::COLUMNS
            ),
            p![from.0, to.0],
            |r| {
                if sites.contains(r.text(0)?) {
                    hours.push(super::hourly::site_hour_row(r)?);
                }
                Ok(())
            },
        )?;
        whole_days.insert(date, site_days(&hours, zone, default_interval_secs));
    }
    touched
        .iter()
        .map(|(site, date)| match whole_days.get(date) {
            Some(days) => Ok(days.get(&(*date, site.clone())).cloned()),
            None => recompute(db, site, *date, zone, default_interval_secs),
        })
        .collect()
}

/// The touched dates [`recompute_all`] reads whole, with their touched sites: those
/// where the touched sites are at least 1/[`WHOLE_DAY_SHARE`] of the sites in the
/// day's latest two stored hours (a short primary-key range; two, so that a commit
/// that has just opened an hour for a few sites does not hide the rest; today's
/// counts before noon as after).
fn read_whole<'a>(
    db: &Db,
    touched: &'a BTreeSet<(String, NaiveDate)>,
    zone: Zone,
) -> Result<std::collections::BTreeMap<NaiveDate, BTreeSet<&'a str>>, StoreError> {
    let mut by_date: std::collections::BTreeMap<NaiveDate, BTreeSet<&str>> = Default::default();
    for (site, date) in touched {
        by_date.entry(*date).or_default().insert(site.as_str());
    }
    let mut whole = std::collections::BTreeMap::new();
    for (date, sites) in by_date {
        let (from, to) = (zone.start_of(date), zone.start_of(date + Duration::days(1)));
        let in_latest_hour = db
            .row(
                "SELECT coalesce(max(n), 0) FROM (
                    SELECT count(*) AS n FROM hourly
                    WHERE hour_ms >= ?1 AND hour_ms < ?2 AND hour_ms >= (
                        SELECT max(hour_ms) FROM hourly WHERE hour_ms >= ?1 AND hour_ms < ?2
                    ) - 3600000
                    GROUP BY hour_ms
                ) AS latest",
                p![from.0, to.0],
            )?
            .map_or(Ok(0), |r| r.i64(0))? as usize;
        if in_latest_hour > 0 && sites.len() * WHOLE_DAY_SHARE >= in_latest_hour {
            whole.insert(date, sites);
        }
    }
    Ok(whole)
}

/// The key a cache was last built under (`table`: `daily_cache_key` or
/// `district_cache_key`).
pub(super) fn stored_key(db: &Db, table: &str) -> Result<Option<String>, StoreError> {
    match db.row(&format!("SELECT key FROM {table} WHERE id = 1"), p![])? {
        Some(r) => Ok(Some(r.text(0)?.to_owned())),
        None => Ok(None),
    }
}

/// Records the key a cache is now built under.
pub(super) fn store_key(db: &Db, table: &str, key: &str) -> Result<(), StoreError> {
    db.exec(
        &format!(
            "INSERT INTO {table} (id, key) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET key = excluded.key"
        ),
        p![key],
    )?;
    Ok(())
}

/// Starts the cache afresh when its rows were computed under other rules than `key`'s
/// rows part: every site-day is dropped and every day with hours marked dirty. When
/// only the tables changed, every cached site-day is marked for the derived series
/// instead (its line changes class and tag). Returns whether the rows were reset.
fn reset_on_new_rules(tx: &Db, key: &str) -> Result<bool, StoreError> {
    let old = stored_key(tx, "daily_cache_key")?;
    if old.as_deref() == Some(key) {
        return Ok(false);
    }
    let rows_changed = old.as_deref().map(rows_part) != Some(rows_part(key));
    if rows_changed {
        tx.exec("DELETE FROM site_daily", p![])?;
        tx.exec(
            &format!(
                "INSERT INTO dirty_days (site, utc_day)
                 SELECT DISTINCT site, hour_ms / {MS_PER_DAY} FROM hourly WHERE true
                 ON CONFLICT DO NOTHING"
            ),
            p![],
        )?;
    } else {
        mark_every_site_day_pending(tx)?;
    }
    store_key(tx, "daily_cache_key", key)?;
    Ok(rows_changed)
}

/// What a refresh of the site cache did, for the district refresh in the same
/// transaction.
pub(super) struct SiteRefresh {
    /// The site cache key (the rules the site-days were computed with).
    pub(super) key: String,
    /// The rules changed since the last refresh: every site-day was recomputed.
    pub(super) rules_changed: bool,
    /// The site-days recomputed.
    pub(super) touched: BTreeSet<(String, NaiveDate)>,
}

/// Recomputes, inside the caller's exclusive transaction, the site-days that commits
/// have touched since the last refresh (all of them when the rules changed), and marks
/// them for the derived series.
///
/// The marks are taken (deleted) before the hours are read. On PostgreSQL a writer
/// that commits meanwhile either committed before the delete (its hours are read
/// after it) or marks its day again, waiting on the deleted mark's row lock until this
/// transaction ends — so no mark is lost without its hours being read.
pub(super) fn refresh_sites(tx: &Db, aqi: &AqiConfig) -> Result<SiteRefresh, StoreError> {
    let (zone, default_interval_secs) = (aqi.zone(), aqi.default_interval_secs);
    let key = cache_key(zone, default_interval_secs);
    let rules_changed = reset_on_new_rules(tx, &site_key(aqi))?;
    let mut dirty = Vec::new();
    for r in tx.rows("DELETE FROM dirty_days RETURNING site, utc_day", p![])? {
        dirty.push((r.text(0)?.to_owned(), r.i64(1)?));
    }
    // The local days a UTC day overlaps.
    let mut touched: BTreeSet<(String, NaiveDate)> = BTreeSet::new();
    for (site, d) in &dirty {
        for date in local_days(zone, *d) {
            touched.insert((site.clone(), date));
        }
    }
    let fresh = recompute_all(tx, &touched, zone, default_interval_secs)?;
    for ((site, date), d) in touched.iter().zip(fresh) {
        let Some(d) = d else {
            continue;
        };
        let a = d.pm25.mean.map(store_parts);
        let b = d.pm10.mean.map(store_parts);
        // Every column but the key is written.
        tx.exec(
            &format!(
                "INSERT INTO site_daily ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (day, site) DO UPDATE SET h25 = excluded.h25,
                    num25 = excluded.num25, den25 = excluded.den25, h10 = excluded.h10,
                    num10 = excluded.num10, den10 = excluded.den10"
            ),
            p![
                day_number(*date),
                site,
                d.pm25.valid_hours as i64,
                a.map(|x| x.0),
                a.map(|x| x.1),
                d.pm10.valid_hours as i64,
                b.map(|x| x.0),
                b.map(|x| x.1),
            ],
        )?;
        // The sinks' derived series follow every recomputed day that has data.
        tx.exec(
            "INSERT INTO derived_pending (day, site) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            p![day_number(*date), site],
        )?;
    }
    Ok(SiteRefresh {
        key,
        rules_changed,
        touched,
    })
}

/// Every (site, UTC day) marked dirty.
pub(super) fn dirty_marks(db: &Db) -> Result<Vec<(String, i64)>, StoreError> {
    db.rows("SELECT site, utc_day FROM dirty_days", p![])?
        .iter()
        .map(|r| Ok((r.text(0)?.to_owned(), r.i64(1)?)))
        .collect()
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
        let tx = self.db.begin(Begin::Snapshot)?;
        let rows = self.daily_now(zone, default_interval_secs, from, to, site)?;
        tx.commit()?;
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
        let db = &self.db;
        let key = stored_key(db, "daily_cache_key")?;
        if key.as_deref().map(rows_part) != Some(cache_key(zone, default_interval_secs).as_str()) {
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
        let mut touched = BTreeSet::new();
        for (s, d) in dirty_marks(db)? {
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
        let fresh = recompute_all(db, &touched, zone, default_interval_secs)?;
        for ((s, date), fresh) in touched.into_iter().zip(fresh) {
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

    /// Emits the derived daily series: in one transaction, hands the site-days
    /// recomputed since the last call (and every cached site-day of their dates, for the
    /// district values) to `make`, stores the lines it returns in the derived outbox,
    /// and clears the pending marks. Returns the number of lines.
    pub(crate) fn emit_derived_days(
        &mut self,
        now: UnixMillis,
        make: impl FnOnce(&[(NaiveDate, String)], &DayRows) -> Vec<String>,
    ) -> Result<usize, StoreError> {
        let tx = self.db.begin(Begin::Exclusive)?;
        // Taken (deleted) first, as in `refresh_sites`: a refresh that marks a day
        // meanwhile waits for this transaction and its mark stays for the next call.
        let mut pending = Vec::new();
        for r in tx.rows("DELETE FROM derived_pending RETURNING day, site", p![])? {
            pending.push((epoch() + Duration::days(r.i64(0)?), r.text(1)?.to_owned()));
        }
        if pending.is_empty() {
            return Ok(0);
        }
        pending.sort();
        let mut by_date = DayRows::new();
        let dates: BTreeSet<NaiveDate> = pending.iter().map(|p| p.0).collect();
        for d in dates {
            for (date, site, day) in site_days_on(&tx, d)? {
                by_date.entry(date).or_default().push((site, day));
            }
        }
        let lines = make(&pending, &by_date);
        for l in &lines {
            tx.exec(
                "INSERT INTO derived_outbox (line, created_ms) VALUES (?1, ?2)",
                p![l, now.0],
            )?;
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
        self.db
            .rows(
                &format!(
                    "SELECT {COLUMNS} FROM site_daily
                     WHERE day >= ?1 AND day <= ?2 AND (CAST(?3 AS TEXT) IS NULL OR site = ?3)
                     ORDER BY day, site"
                ),
                p![day_number(from), day_number(to), site],
            )?
            .iter()
            .map(daily_row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 12 sites: each with every hour of 2016-08-01 (local) and the first nine hours
    /// of 2016-08-02, the first six sites with a tenth; values vary by site and hour.
    fn store_of_two_days(dir: &tempfile::TempDir, zone: Zone) -> (Store, NaiveDate) {
        let s = crate::store::tests::open(dir);
        let day = NaiveDate::from_ymd_opt(2016, 8, 1).unwrap();
        let from = zone.start_of(day).0;
        s.sqlite()
            .execute_batch(&format!(
                "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 11),
                 h(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM h WHERE k < 33)
                 INSERT INTO hourly (site, hour_ms, n25, sum25, cov25, n10, sum10, cov10)
                 SELECT printf('s%02d', i), {from} + k * 3600000,
                        60, (20 + i * 7 + k * 3) * 60000, 3600 - i * 90, 60, (50 + i * 11 + k) * 60000, 3600
                 FROM s, h WHERE k < 33 OR (k = 33 AND i < 6)"
            ))
            .unwrap();
        (s, day)
    }

    fn touched(sites: &[&str], date: NaiveDate) -> BTreeSet<(String, NaiveDate)> {
        sites.iter().map(|x| (x.to_string(), date)).collect()
    }

    /// A date is read whole when its touched sites are at least a quarter of those in
    /// its latest two hours: also today before noon, and when a commit has just opened
    /// an hour for some sites only.
    #[test]
    fn whole_days_are_read_when_a_quarter_of_the_sites_are_touched() {
        let dir = tempfile::tempdir().unwrap();
        let zone = AqiConfig::default().zone();
        let (s, day) = store_of_two_days(&dir, zone);
        let next = day + Duration::days(1);
        let whole = |t: &BTreeSet<(String, NaiveDate)>| -> Vec<NaiveDate> {
            read_whole(&s.db, t, zone).unwrap().into_keys().collect()
        };
        // The morning of the next day (its latest hour has six sites, the one before it
        // twelve): three of twelve is a quarter, two is not.
        assert_eq!(whole(&touched(&["s00", "s07", "s11"], next)), [next]);
        assert_eq!(whole(&touched(&["s00", "s07"], next)), []);
        assert_eq!(whole(&touched(&["s03", "s04", "s05"], day)), [day]);
        assert_eq!(whole(&touched(&["s03"], day)), []);
        // A date without hours is never read whole.
        assert_eq!(whole(&touched(&["s00"], day - Duration::days(1))), []);
    }

    /// Both reads of [`recompute_all`] — the day's hours of every site at once, or one
    /// site's — give the site-days its hours give.
    #[test]
    fn site_days_recomputed_from_whole_days_or_per_site_are_their_hours_days() {
        let dir = tempfile::tempdir().unwrap();
        let aqi = AqiConfig::default();
        let (zone, secs) = (aqi.zone(), aqi.default_interval_secs);
        let (s, day) = store_of_two_days(&dir, zone);
        let want = |site: &str, date: NaiveDate| {
            let (from, to) = (zone.start_of(date), zone.start_of(date + Duration::days(1)));
            let hours = s.hours(from, to, Some(site)).unwrap();
            format!("{:?}", site_days(&hours, zone, secs).into_values().next())
        };
        let check = |sites: &[&str], date: NaiveDate, read_whole_day: bool| {
            let t = touched(sites, date);
            assert_eq!(
                read_whole(&s.db, &t, zone).unwrap().contains_key(&date),
                read_whole_day
            );
            let got = recompute_all(&s.db, &t, zone, secs).unwrap();
            assert_eq!(got.len(), t.len());
            for ((site, _), d) in t.iter().zip(got) {
                assert_eq!(format!("{d:?}"), want(site, date), "{site} {date}");
            }
        };
        assert!(
            want("s00", day).contains("valid_hours: 24"),
            "{}",
            want("s00", day)
        );
        assert!(
            want("s11", day).contains("valid_hours: 0"),
            "{}",
            want("s11", day)
        );
        assert_eq!(want("nobody", day), "None");
        // Half the sites and one with no hours at all: the whole day, the others' hours
        // read and left out.
        check(
            &["s00", "s02", "s05", "s06", "s09", "s11", "nobody"],
            day,
            true,
        );
        check(&["s01", "s04", "s08", "s10"], day + Duration::days(1), true);
        // One site of twelve: per site.
        check(&["s05"], day, false);
        check(&["s11"], day + Duration::days(1), false);
    }
}
