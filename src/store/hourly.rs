//! Hourly aggregates, maintained with the readings: a newly stored reading adds to its
//! site-hour in the same transaction; a duplicate adds nothing. So late data updates the
//! hours (and the days derived from them) and redeliveries change nothing, and reports
//! never rescan raw readings.

use std::collections::BTreeMap;

use super::sql::{p, Columns, Db, Engine, Param, RowRef};
use super::{Store, StoreError};
use crate::aqi::daily::SiteHour;
use crate::aqi::validity::HourAgg;
use crate::model::{Period, Pollutant, Reading, UnixMillis, MS_PER_DAY};

const HOUR_MS: i64 = 3_600_000;

/// The longest interval one sample can cover: an hour.
const MAX_SAMPLE_COVER_SECS: u64 = 3600;

/// The columns of `hourly`, in the order [`site_hour_row`] reads them.
pub(super) const COLUMNS: &str =
    "site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10";

/// The end of an `INSERT INTO hourly`: a site-hour already stored gets the new counts
/// and sums added (a device's own hourly mean replaces the stored one).
const ADD_TO_STORED: &str = "ON CONFLICT (site, hour_ms) DO UPDATE SET
    n25 = hourly.n25 + excluded.n25, sum25 = hourly.sum25 + excluded.sum25,
    cov25 = hourly.cov25 + excluded.cov25, nd25 = hourly.nd25 + excluded.nd25,
    dev25 = coalesce(excluded.dev25, hourly.dev25),
    n10 = hourly.n10 + excluded.n10, sum10 = hourly.sum10 + excluded.sum10,
    cov10 = hourly.cov10 + excluded.cov10, nd10 = hourly.nd10 + excluded.nd10,
    dev10 = coalesce(excluded.dev10, hourly.dev10)";

/// What follows [`ADD_TO_STORED`] when the caller watches the hours (alerts): the rows
/// after the change. Only then: reading them back was ~3 000 instructions a site-hour.
const RETURNING: &str =
    "RETURNING site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10";

/// The UTC hour (its start) whose aggregate a stored reading adds to, or None when it
/// adds to none: only normal-flag values count (GB 3095: other flags are stored, not
/// averaged), and daily values a device computed itself never enter the hours (GB 3095
/// days come from valid hours). The one rule for the aggregates and for which hourly
/// lines a sink sends beside the readings.
pub fn hour_changed_by(r: &Reading) -> Option<UnixMillis> {
    if !r.flag.is_normal() || r.period == Period::Day {
        return None;
    }
    Some(UnixMillis(r.ts.0.div_euclid(HOUR_MS) * HOUR_MS))
}

/// One batch's changes, summed per site-hour before touching the table. Ordered: every
/// writer updates site-hours in key order, so two PostgreSQL instances touching the
/// same hours wait for each other instead of deadlocking.
/// Keys borrow the readings' site ids: no allocation per reading.
#[derive(Default)]
pub(super) struct Batch<'r> {
    hours: BTreeMap<(&'r str, i64), [HourAgg; 2]>,
}

fn idx(p: Pollutant) -> usize {
    match p {
        Pollutant::Pm25 => 0,
        Pollutant::Pm10 => 1,
    }
}

impl<'r> Batch<'r> {
    /// Adds a newly stored reading (to the hour [`hour_changed_by`] names).
    pub(super) fn add(&mut self, r: &'r Reading) {
        let Some(UnixMillis(hour)) = hour_changed_by(r) else {
            return;
        };
        let e = self.hours.entry((r.site.as_str(), hour)).or_default();
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

    /// Adds the batch to the stored site-hours and marks their UTC days dirty, inside
    /// the commit's transaction; with `watch`, returns the site-hours after the change
    /// (in key order), else nothing.
    pub(super) fn apply(self, tx: &Db, watch: bool) -> Result<Vec<SiteHour>, StoreError> {
        if tx.engine() == Engine::Postgres {
            return self.apply_in_one_statement(tx, watch);
        }
        let mut touched = Vec::with_capacity(if watch { self.hours.len() } else { 0 });
        let mut marked = std::collections::BTreeSet::new();
        for (site, hour) in self.hours.keys() {
            marked.insert((*site, hour.div_euclid(MS_PER_DAY)));
        }
        // Several marks per statement, as the upserts below: one statement per mark was
        // ~3 300 instructions each, a commit marks a day per site it touches.
        let marked: Vec<_> = marked.into_iter().collect();
        let mut params = Vec::with_capacity(UPSERT_CHUNKS[0] * 2);
        for chunk in in_chunks(&marked) {
            params.clear();
            for (site, utc_day) in chunk {
                params.extend_from_slice(p![*site, *utc_day]);
            }
            tx.prepare(mark_sql(chunk.len()))?.exec(&params)?;
        }
        let hours: Vec<_> = self.hours.iter().collect();
        let mut params = Vec::with_capacity(UPSERT_CHUNKS[0] * 12);
        for chunk in in_chunks(&hours) {
            let size = chunk.len();
            params.clear();
            for ((site, hour), [a, b]) in chunk {
                params.extend_from_slice(p![
                    *site,
                    *hour,
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
                ]);
            }
            let mut upsert = tx.prepare(upsert_sql(size, watch))?;
            let start = touched.len();
            // An upsert counts each row it inserted or updated: one per site-hour.
            let changed = if watch {
                upsert.each(&params, |r| {
                    touched.push(site_hour_row(r)?);
                    Ok(())
                })?;
                touched.len() - start
            } else {
                upsert.exec(&params)? as usize
            };
            if changed != size {
                return Err(StoreError::Corrupt(format!(
                    "an upsert of {size} site-hours changed {changed} rows"
                )));
            }
            // RETURNING gives its rows in no promised order.
            touched[start..].sort_by(|x, y| (&x.site, x.hour).cmp(&(&y.site, y.hour)));
        }
        Ok(touched)
    }
}

/// Site-hours per upsert statement, largest first: a commit's few hundred site-hours go
/// in a handful of statements (each execution costs about as much as several rows),
/// with one cached statement per size.
const UPSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// `items` in chunks of [`UPSERT_CHUNKS`] sizes, largest first: a few cached statements
/// cover any count.
fn in_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = UPSERT_CHUNKS.into_iter().find(|n| *n <= rest.len())?;
        let (chunk, more) = rest.split_at(size);
        rest = more;
        Some(chunk)
    })
}

/// One statement text per chunk size, built at first use.
type PerChunkSize = [std::sync::OnceLock<String>; UPSERT_CHUNKS.len()];

/// The statement for `rows` (one of [`UPSERT_CHUNKS`]) from `cache`, built by `build`
/// the first time.
fn per_chunk_size(
    cache: &'static PerChunkSize,
    rows: usize,
    build: impl FnOnce() -> String,
) -> &'static str {
    let at = UPSERT_CHUNKS
        .iter()
        .position(|n| *n == rows)
        .expect("a chunk size");
    cache[at].get_or_init(build)
}

/// SQLite's statement marking `rows` (one of [`UPSERT_CHUNKS`]) site-days dirty, those
/// already marked left as they are.
fn mark_sql(rows: usize) -> &'static str {
    static SQL: PerChunkSize = [const { std::sync::OnceLock::new() }; UPSERT_CHUNKS.len()];
    per_chunk_size(&SQL, rows, || {
        format!(
            "INSERT INTO dirty_days (site, utc_day) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(rows, 2)
        )
    })
}

/// `(?1, ?2, …), (…)`: `rows` rows of `cols` numbered parameters.
fn placeholders(rows: usize, cols: usize) -> String {
    let mut values = String::new();
    for row in 0..rows {
        values.push_str(if row == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                values.push_str(", ");
            }
            values.push_str(&format!("?{}", row * cols + c + 1));
        }
        values.push(')');
    }
    values
}

/// SQLite's upsert of `rows` (one of [`UPSERT_CHUNKS`]) site-hours, with `returning`
/// each row as it is after the statement. The keys in one statement are distinct (a
/// batch sums per site-hour first); they go in key order. Built once per size: building
/// it per chunk was ~2 000 instructions per reading.
fn upsert_sql(rows: usize, returning: bool) -> &'static str {
    static SQL: [PerChunkSize; 2] =
        [const { [const { std::sync::OnceLock::new() }; UPSERT_CHUNKS.len()] }; 2];
    per_chunk_size(&SQL[usize::from(returning)], rows, || {
        let sql = build_upsert_sql(rows);
        if returning {
            format!("{sql} {RETURNING}")
        } else {
            sql
        }
    })
}

fn build_upsert_sql(rows: usize) -> String {
    let values = placeholders(rows, 12);
    format!("INSERT INTO hourly ({COLUMNS}) VALUES {values} {ADD_TO_STORED}")
}

fn count(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("an hourly count of {v}")))
}

impl Batch<'_> {
    /// [`Batch::apply`] on PostgreSQL: one statement each for the dirty marks and the
    /// upserts (every statement is a round trip), in key order.
    // Long because the upsert's twelve column arrays are built and bound here, once.
    fn apply_in_one_statement(self, tx: &Db, watch: bool) -> Result<Vec<SiteHour>, StoreError> {
        if self.hours.is_empty() {
            return Ok(Vec::new());
        }
        let days: std::collections::BTreeSet<(&str, i64)> = self
            .hours
            .keys()
            .map(|(site, hour)| (*site, hour.div_euclid(MS_PER_DAY)))
            .collect();
        let (day_sites, day_numbers): (Vec<&str>, Vec<i64>) = days.into_iter().unzip();
        tx.exec(
            "INSERT INTO dirty_days (site, utc_day)
             SELECT * FROM unnest(CAST(?1 AS TEXT[]), CAST(?2 AS BIGINT[]))
             ON CONFLICT DO NOTHING",
            &[Param::Texts(&day_sites), Param::Ints(&day_numbers)],
        )?;
        // Column arrays, one entry per site-hour in key order.
        let mut sites: Vec<&str> = Vec::with_capacity(self.hours.len());
        let mut ints: [Vec<i64>; 9] = Default::default();
        let mut devs: [Vec<Option<i64>>; 2] = Default::default();
        for ((site, hour), aggs) in &self.hours {
            sites.push(site);
            ints[0].push(*hour);
            for (i, a) in aggs.iter().enumerate() {
                let at = 1 + 4 * i;
                ints[at].push(a.n.into());
                ints[at + 1].push(a.sum_milli);
                ints[at + 2].push(a.covered_secs as i64);
                ints[at + 3].push(a.n_without_interval.into());
                devs[i].push(a.device_mean_milli);
            }
        }
        let [hour, n25, sum25, cov25, nd25, n10, sum10, cov10, nd10] = &ints;
        let [dev25, dev10] = &devs;
        let sql = format!(
            "INSERT INTO hourly ({COLUMNS})
             SELECT * FROM unnest(CAST(?1 AS TEXT[]), CAST(?2 AS BIGINT[]),
                CAST(?3 AS BIGINT[]), CAST(?4 AS BIGINT[]), CAST(?5 AS BIGINT[]),
                CAST(?6 AS BIGINT[]), CAST(?7 AS BIGINT[]), CAST(?8 AS BIGINT[]),
                CAST(?9 AS BIGINT[]), CAST(?10 AS BIGINT[]), CAST(?11 AS BIGINT[]),
                CAST(?12 AS BIGINT[])) {ADD_TO_STORED} {}",
            if watch { RETURNING } else { "" }
        );
        let params = [
            Param::Texts(&sites),
            Param::Ints(hour),
            Param::Ints(n25),
            Param::Ints(sum25),
            Param::Ints(cov25),
            Param::Ints(nd25),
            Param::OptInts(dev25),
            Param::Ints(n10),
            Param::Ints(sum10),
            Param::Ints(cov10),
            Param::Ints(nd10),
            Param::OptInts(dev10),
        ];
        if !watch {
            tx.exec(&sql, &params)?;
            return Ok(Vec::new());
        }
        let mut touched = tx
            .rows(&sql, &params)?
            .iter()
            .map(site_hour_row)
            .collect::<Result<Vec<_>, _>>()?;
        touched.sort_by(|a, b| (a.site.as_str(), a.hour).cmp(&(b.site.as_str(), b.hour)));
        Ok(touched)
    }
}

/// Reads one `hourly` row selected as [`COLUMNS`].
pub(super) fn site_hour_row(r: &impl Columns) -> Result<SiteHour, StoreError> {
    let agg = |o: usize| -> Result<HourAgg, StoreError> {
        Ok(HourAgg {
            n: count(r.i64(o)?)?,
            sum_milli: r.i64(o + 1)?,
            covered_secs: r.i64(o + 2)?.max(0) as u64,
            n_without_interval: count(r.i64(o + 3)?)?,
            device_mean_milli: r.opt_i64(o + 4)?,
        })
    };
    Ok(SiteHour {
        site: r.text(0)?.to_owned(),
        hour: UnixMillis(r.i64(1)?),
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
        // Each row lent to the visitor, not copied first: a whole day of 10 000 sites is
        // ~20 000 rows, and a copy of each beside the `SiteHour`s doubled the memory
        // of the bulletin.
        let mut out = Vec::new();
        let mut push = |r: &RowRef<'_>| {
            out.push(site_hour_row(r)?);
            Ok(())
        };
        match site {
            Some(site) => self.db.each(
                &format!(
                    "SELECT {COLUMNS} FROM hourly WHERE site = ?3 AND hour_ms >= ?1 AND hour_ms < ?2"
                ),
                p![from.0, to.0, site],
                &mut push,
            )?,
            None => self.db.each(
                &format!("SELECT {COLUMNS} FROM hourly WHERE hour_ms >= ?1 AND hour_ms < ?2"),
                p![from.0, to.0],
                &mut push,
            )?,
        }
        Ok(out)
    }

    /// The stored aggregates of the site-hours `keys` (site, hour start in ms), in the
    /// order of `keys`; a key without a row is left out. A sink reads the hours of the
    /// readings it sends this way, once per request.
    pub fn site_hours(&self, keys: &[(String, i64)]) -> Result<Vec<SiteHour>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        if self.db.engine() == Engine::Postgres {
            // One round trip for them all.
            let (sites, hours): (Vec<&str>, Vec<i64>) =
                keys.iter().map(|(s, h)| (s.as_str(), *h)).unzip();
            let rows = self.db.rows(
                &format!(
                    "SELECT {COLUMNS} FROM hourly JOIN unnest(CAST(?1 AS TEXT[]),
                        CAST(?2 AS BIGINT[])) WITH ORDINALITY AS k(ks, kh, i)
                     ON site = ks AND hour_ms = kh ORDER BY i"
                ),
                &[Param::Texts(&sites), Param::Ints(&hours)],
            )?;
            for r in &rows {
                out.push(site_hour_row(r)?);
            }
            return Ok(out);
        }
        let mut one = self.db.prepare(&format!(
            "SELECT {COLUMNS} FROM hourly WHERE site = ?1 AND hour_ms = ?2"
        ))?;
        for (site, hour) in keys {
            one.each(p![site, *hour], |r| {
                out.push(site_hour_row(r)?);
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// Every site that has an hourly aggregate.
    pub fn sites(&self) -> Result<Vec<String>, StoreError> {
        // A skip scan: one index seek per site instead of reading every hour.
        self.db
            .rows(
                "WITH RECURSIVE s(site) AS (
                    SELECT min(site) FROM hourly
                    UNION ALL
                    SELECT (SELECT min(site) FROM hourly WHERE site > s.site) FROM s WHERE s.site IS NOT NULL
                 ) SELECT site FROM s WHERE site IS NOT NULL",
                p![],
            )?
            .iter()
            .map(|r| Ok(r.text(0)?.to_owned()))
            .collect()
    }

    /// Whether a site has any hourly aggregate.
    pub fn has_site(&self, site: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .row("SELECT 1 FROM hourly WHERE site = ?1 LIMIT 1", p![site])?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flag, MicrogramsPerCubicMetre, SiteId};

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
    fn the_upsert_returns_the_columns_the_row_reader_reads() {
        assert_eq!(RETURNING, format!("RETURNING {COLUMNS}"));
    }

    #[test]
    fn aggregates_follow_new_readings_only_and_match_a_backfill() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = crate::store::tests::open(&dir);
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
        s.sqlite().execute("DELETE FROM hourly", []).unwrap();
        s.sqlite()
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

/// What a commit writes to disk for the hourly aggregates, counted in WAL frames.
#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::model::{Flag, MicrogramsPerCubicMetre, SiteId};
    use crate::store::StoreConfig;

    const SITES: usize = 100;
    const HOUR: i64 = 1_470_013_200_000;

    /// Every site's reading at `minute` of the hour, with `flag`.
    fn one_per_site(minute: i64, flag: Flag) -> Vec<Reading> {
        (0..SITES)
            .map(|i| Reading {
                site: SiteId::parse(&format!("s{i:03}")).unwrap(),
                device: None,
                ts: UnixMillis(HOUR + minute * 60_000),
                period: Period::Sample,
                flag,
                pm25: None,
                pm10: Some(MicrogramsPerCubicMetre::new(40.0).unwrap()),
                interval_secs: Some(60),
            })
            .collect()
    }

    /// The WAL frames one commit of `batch` writes (the WAL emptied before it).
    fn frames_of(s: &mut Store, batch: &[Reading]) -> u64 {
        let c = s.sqlite();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let page: i64 = c
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        let page = page as u64;
        let wal = |s: &Store| {
            let path = s.sqlite().path().unwrap().to_owned() + "-wal";
            std::fs::metadata(path).map_or(0, |m| m.len())
        };
        assert_eq!(wal(s), 0, "the checkpoint emptied the WAL");
        s.commit_batch_durable(batch, &[], UnixMillis(0)).unwrap();
        // A WAL is a 32-byte header, then frames of a 24-byte header and a page.
        (wal(s) - 32) / (page + 24)
    }

    /// A commit adds to the current hour of every site it has readings of. In a store
    /// with days of hours per site, those rows must share a few pages: one page
    /// rewritten per site was most of what a district-wide commit wrote.
    #[test]
    fn a_commit_rewrites_few_pages_for_the_current_hour_of_every_site() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = crate::store::tests::open(&dir);
        // Ten days of hours before the current one, per site, as a long-running store has.
        s.sqlite()
            .execute_batch(&format!(
                "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}),
                 h(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM h WHERE k < 240)
                 INSERT INTO hourly (site, hour_ms, n10, sum10)
                 SELECT printf('s%03d', i), {HOUR} - k * 3600000, 60, 2400000 FROM h, s",
                SITES - 1
            ))
            .unwrap();
        // The current hour's rows and the day's dirty marks exist from here on.
        s.commit_batch_durable(&one_per_site(0, Flag::Normal), &[], UnixMillis(0))
            .unwrap();
        // The same readings apart from the hourly upserts: maintenance-flag readings
        // add to no hour.
        let without = frames_of(&mut s, &one_per_site(1, Flag::Maintenance));
        let with = frames_of(&mut s, &one_per_site(2, Flag::Normal));
        let hourly = with.saturating_sub(without);
        assert!(
            hourly <= (SITES / 10) as u64,
            "{SITES} site-hours updated in {hourly} pages ({with} frames with them, {without} without)"
        );
        // And the upserts did add to the hours.
        let got = s
            .hours(UnixMillis(HOUR), UnixMillis(HOUR + 1), Some("s042"))
            .unwrap();
        assert_eq!(got[0].pm10.n, 2);
    }

    /// A store of the version before (hours keyed by site first) opens with every
    /// hour kept, every column as it was, read back per site and per hour as before,
    /// and an analyst's view over the table still works.
    #[test]
    fn a_store_keyed_by_site_first_migrates_with_every_hour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aq.db");
        let all = "SELECT * FROM hourly ORDER BY site, hour_ms";
        let rows = |c: &rusqlite::Connection| -> Vec<Vec<Option<i64>>> {
            c.prepare(all)
                .unwrap()
                .query_map([], |r| {
                    // site as its length and first byte, then the eleven integers
                    let site: String = r.get(0)?;
                    let mut v = vec![Some(site.len() as i64), Some(i64::from(site.as_bytes()[0]))];
                    for i in 1..12 {
                        v.push(r.get(i)?);
                    }
                    Ok(v)
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let before = {
            let c = rusqlite::Connection::open(&path).unwrap();
            let v6 = &crate::store::schema::MIGRATIONS[..6];
            for sql in v6 {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", v6.len() as i64)
                .unwrap();
            // Every column a different value per row, so no two columns can swap unseen.
            c.execute_batch(&format!(
                "WITH RECURSIVE h(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM h WHERE k < 4)
                 INSERT INTO hourly (site, hour_ms, n25, sum25, cov25, nd25, dev25,
                                     n10, sum10, cov10, nd10, dev10)
                 SELECT site, {HOUR} + k * 3600000, k + 1, k + 2, k + 3, k + 4,
                        CASE WHEN k = 2 THEN NULL ELSE k + 5 END, k + 6, k + 7, k + 8,
                        k + 9, CASE WHEN k = 3 THEN NULL ELSE k + 10 END
                 FROM h, (SELECT 'b' AS site UNION ALL SELECT 'a' UNION ALL SELECT 'c-1');
                 CREATE VIEW analysts_hours AS SELECT site, hour_ms, n10 FROM hourly;"
            ))
            .unwrap();
            rows(&c)
        };
        assert_eq!(before.len(), 15);
        let s = Store::open(&StoreConfig {
            path,
            ..StoreConfig::default()
        })
        .unwrap();
        assert_eq!(rows(s.sqlite()), before);
        let in_view: i64 = s
            .sqlite()
            .query_row("SELECT count(*) FROM analysts_hours", [], |r| r.get(0))
            .unwrap();
        assert_eq!(in_view, 15);
        let b = s
            .hours(
                UnixMillis(HOUR),
                UnixMillis(HOUR + 5 * 3_600_000),
                Some("b"),
            )
            .unwrap();
        let hours: Vec<(i64, u32)> = b.iter().map(|h| (h.hour.0, h.pm10.n)).collect();
        assert_eq!(
            hours,
            (0..5)
                .map(|k| (HOUR + k * 3_600_000, k as u32 + 6))
                .collect::<Vec<_>>()
        );
        let one_hour = s
            .hours(
                UnixMillis(HOUR + 2 * 3_600_000),
                UnixMillis(HOUR + 3 * 3_600_000),
                None,
            )
            .unwrap();
        let sites: Vec<&str> = one_hour.iter().map(|h| h.site.as_str()).collect();
        assert_eq!(sites, ["a", "b", "c-1"]);
        assert_eq!(
            (
                one_hour[1].pm25.device_mean_milli,
                one_hour[1].pm10.device_mean_milli
            ),
            (None, Some(12))
        );
        assert_eq!(s.sites().unwrap(), ["a", "b", "c-1"]);
    }
}
