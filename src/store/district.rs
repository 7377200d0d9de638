//! The district's daily values: a cache over the site-days (schema migration 5), so a
//! half-year target report reads 184 rows instead of 238 × 184 site-days. Refreshed in
//! the site cache's transaction for the dates it touched; rebuilt when the district
//! rules change; on read, the dates commits touched since are recomputed from their
//! site-days in the same snapshot.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{Duration, NaiveDate};

use super::daily::{
    cache_key, cached_dates, day_number, dirty_marks, epoch, local_days, mark_every_date_pending,
    refresh_sites, rows_part, site_days_on, store_key, stored_key,
};
use super::sql::{p, Begin, Columns, Db, Row};
use super::{Store, StoreError};
use crate::aqi::daily::{DistrictAgg, DistrictDay, SiteDay};
use crate::aqi::mean::Milli;
use crate::aqi::AqiConfig;

/// The district cache key: the site cache's rows rules (`site_key`, [`cache_key`])
/// plus every other rule a district value depends on — the sites left out (order and
/// repeats do not matter) — then, after `|`, the minimum number of sites and the index
/// tables (`aqi.tables`). The cached rows do not depend on the part after `|`, so a
/// read compares only the [`rows_part`]; the derived series do: a refresh under a
/// changed key rebuilds the rows and re-emits every district day.
fn district_key(site_key: &str, aqi: &AqiConfig) -> String {
    let mut ex: Vec<&str> = aqi.district_exclude.iter().map(String::as_str).collect();
    ex.sort_unstable();
    ex.dedup();
    format!(
        "{site_key};exclude={}|min_sites={};tables={}",
        ex.join(","),
        aqi.district_min_sites,
        aqi.tables.key()
    )
}

/// An exact mean as 32 bytes: numerator and denominator, little-endian i128.
fn mean_blob(m: Option<Milli>) -> Option<Vec<u8>> {
    m.map(|m| {
        let (n, d) = m.parts();
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&d.to_le_bytes());
        b
    })
}

/// An exact mean from its 32 stored bytes.
fn mean_of(b: &[u8]) -> Result<Milli, StoreError> {
    let bad =
        || StoreError::Corrupt("a district mean is 32 bytes with a positive denominator".into());
    let (n, d) = b.split_at_checked(16).ok_or_else(bad)?;
    let n = i128::from_le_bytes(n.try_into().map_err(|_| bad())?);
    let d = i128::from_le_bytes(d.try_into().map_err(|_| bad())?);
    if d <= 0 {
        return Err(bad());
    }
    Ok(Milli::from_parts(n, d))
}

/// Reads one `district_daily` row selected as `day, n25, h25, mean25, n10, h10, mean10`.
fn district_row(r: &Row) -> Result<(NaiveDate, DistrictDay), StoreError> {
    let agg = |o: usize| -> Result<DistrictAgg, StoreError> {
        Ok(DistrictAgg {
            sites: r.i64(o)? as usize,
            max_hours: r.i64(o + 1)? as usize,
            mean: r.opt_blob(o + 2)?.map(mean_of).transpose()?,
        })
    };
    Ok((
        epoch() + Duration::days(r.i64(0)?),
        DistrictDay {
            pm25: agg(1)?,
            pm10: agg(4)?,
        },
    ))
}

/// The district's day from cached site-days, the excluded sites left out.
fn district_of(rows: &[(NaiveDate, String, SiteDay)], exclude: &HashSet<&str>) -> DistrictDay {
    let counted: Vec<&SiteDay> = rows
        .iter()
        .filter(|r| !exclude.contains(r.1.as_str()))
        .map(|r| &r.2)
        .collect();
    DistrictDay::of(&counted)
}

/// Brings `district_daily` up to date inside the site cache's refresh transaction:
/// the `touched` dates, or every date (and a re-emission of the derived district days)
/// when the site rules (`rules_changed`) or the district rules changed.
fn refresh(
    tx: &Db,
    aqi: &AqiConfig,
    site_key: &str,
    rules_changed: bool,
    touched: impl Iterator<Item = NaiveDate>,
) -> Result<(), StoreError> {
    let dkey = district_key(site_key, aqi);
    let old_dkey = stored_key(tx, "district_cache_key")?;
    let dates: BTreeSet<NaiveDate> = if rules_changed || old_dkey.as_deref() != Some(&dkey) {
        tx.exec("DELETE FROM district_daily", p![])?;
        store_key(tx, "district_cache_key", &dkey)?;
        // The derived series' district days change with the rules: re-emit each date.
        mark_every_date_pending(tx)?;
        cached_dates(tx)?.into_iter().collect()
    } else {
        touched.collect()
    };
    let exclude: HashSet<&str> = aqi.district_exclude.iter().map(String::as_str).collect();
    for date in dates {
        let d = district_of(&site_days_on(tx, date)?, &exclude);
        let (m25, m10) = (mean_blob(d.pm25.mean), mean_blob(d.pm10.mean));
        tx.exec(
            "INSERT INTO district_daily
                (day, n25, h25, mean25, n10, h10, mean10, mean25_ug, mean10_ug)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (day) DO UPDATE SET n25 = excluded.n25, h25 = excluded.h25,
                mean25 = excluded.mean25, n10 = excluded.n10, h10 = excluded.h10,
                mean10 = excluded.mean10, mean25_ug = excluded.mean25_ug,
                mean10_ug = excluded.mean10_ug",
            p![
                day_number(date),
                d.pm25.sites as i64,
                d.pm25.max_hours as i64,
                m25.as_deref(),
                d.pm10.sites as i64,
                d.pm10.max_hours as i64,
                m10.as_deref(),
                d.pm25.mean.map(|m| m.as_ug()),
                d.pm10.mean.map(|m| m.as_ug()),
            ],
        )?;
    }
    Ok(())
}

impl Store {
    /// Recomputes the daily values that commits have touched since the last refresh (all
    /// of them when the rules changed). Returns how many site-days were recomputed.
    /// The district days of the touched dates (of every date when the district rules
    /// changed) are recomputed from the refreshed site-days in the same transaction.
    /// (Here rather than in `daily`: the district depends on the site-days, not the
    /// reverse.)
    pub(crate) fn refresh_daily(&mut self, aqi: &AqiConfig) -> Result<usize, StoreError> {
        // Exclusive: on SQLite the writer waits while we refresh, so no mark is lost
        // between our read of dirty_days and our delete of it (PostgreSQL: see
        // `refresh_sites`).
        let tx = self.db.begin(Begin::Exclusive)?;
        let sites = refresh_sites(&tx, aqi)?;
        let dates = sites.touched.iter().map(|t| t.1);
        refresh(&tx, aqi, &sites.key, sites.rules_changed, dates)?;
        tx.commit()?;
        Ok(sites.touched.len())
    }

    /// The district's days for `from..=to` (one entry per date, in order) as they are
    /// now, without writing: the cached district days, with the dates commits touched
    /// since the last refresh recomputed from their site-days — in one read snapshot.
    /// When the cache was built under other rows rules (zone, cadence, exclusion list,
    /// e.g. the `report` command with another config), everything comes from the
    /// site-days.
    pub fn district_fresh(
        &self,
        aqi: &AqiConfig,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, DistrictDay)>, StoreError> {
        let (zone, interval) = (aqi.zone(), aqi.default_interval_secs);
        let exclude: HashSet<&str> = aqi.district_exclude.iter().map(String::as_str).collect();
        let site_key = cache_key(zone, interval);
        let tx = self.db.begin(Begin::Snapshot)?;
        // The rows depend on the rules before `|` only: a report under other tables
        // or another minimum of sites reads the same cached rows.
        let cached = stored_key(&tx, "daily_cache_key")?
            .as_deref()
            .map(rows_part)
            == Some(site_key.as_str())
            && stored_key(&tx, "district_cache_key")?
                .as_deref()
                .map(rows_part)
                == Some(rows_part(&district_key(&site_key, aqi)));
        let mut days: BTreeMap<NaiveDate, DistrictDay> = BTreeMap::new();
        // The dates to compute from their site-days: those a counted site's commits
        // touched since the refresh, or every date when there is no cache for these
        // rules.
        let mut touched = BTreeSet::new();
        if cached {
            let rows = tx.rows(
                "SELECT day, n25, h25, mean25, n10, h10, mean10 FROM district_daily
                 WHERE day >= ?1 AND day <= ?2",
                p![day_number(from), day_number(to)],
            )?;
            for r in &rows {
                let (date, d) = district_row(r)?;
                days.insert(date, d);
            }
            for (site, d) in dirty_marks(&tx)? {
                if exclude.contains(site.as_str()) {
                    continue;
                }
                touched.extend(
                    local_days(zone, d)
                        .into_iter()
                        .filter(|date| (from..=to).contains(date)),
                );
            }
        } else {
            touched.extend(from.iter_days().take_while(|d| *d <= to));
        }
        // One read of the span (its site-days, with the touched ones recomputed),
        // however many dates a backlog touched.
        if let (Some(&first), Some(&last)) = (touched.first(), touched.last()) {
            let rows = self.daily_now(zone, interval, first, last, None)?;
            for date in &touched {
                days.insert(*date, DistrictDay::default());
            }
            for chunk in rows.chunk_by(|a, b| a.0 == b.0) {
                if touched.contains(&chunk[0].0) {
                    days.insert(chunk[0].0, district_of(chunk, &exclude));
                }
            }
        }
        tx.commit()?;
        let mut out = Vec::new();
        let mut date = from;
        while date <= to {
            out.push((date, days.remove(&date).unwrap_or_default()));
            date += Duration::days(1);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::daily::site_days;
    use crate::aqi::daily::{DayClass, DayValue};
    use crate::aqi::zone::Zone;
    use crate::model::UnixMillis;
    use crate::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId};
    use crate::store::StoreConfig;

    fn date(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2016, 8, d).unwrap()
    }

    /// Device hourly means for `site` on August `day`, hours `hours`, values varying
    /// by site, day and hour so that the means are fractions with various denominators.
    fn hours(site: &str, day: u32, hours: std::ops::Range<i64>) -> Vec<Reading> {
        let start = Zone::BEIJING.start_of(date(day)).0;
        let k = site.len() as f64 + f64::from(day);
        hours
            .map(|h| Reading {
                site: SiteId::parse(site).unwrap(),
                device: None,
                ts: UnixMillis(start + h * 3_600_000),
                period: Period::Hour,
                flag: Flag::Normal,
                pm25: Some(
                    MicrogramsPerCubicMetre::new(20.0 + k * 7.3 + ((h * h) % 17) as f64 * 1.1)
                        .unwrap(),
                ),
                pm10: Some(
                    MicrogramsPerCubicMetre::new(60.0 + k * 9.7 + ((h * h) % 13) as f64 * 2.3)
                        .unwrap(),
                ),
                interval_secs: None,
            })
            .collect()
    }

    fn aqi(exclude: &[&str], min_sites: usize) -> AqiConfig {
        AqiConfig {
            district_exclude: exclude.iter().map(|s| s.to_string()).collect(),
            district_min_sites: min_sites,
            ..AqiConfig::default()
        }
    }

    /// The district days straight from the hourly aggregates, no cache involved.
    fn expected(s: &Store, aqi: &AqiConfig) -> Vec<DayValue> {
        let zone = aqi.zone();
        let hrs = s
            .hours(zone.start_of(date(1)), zone.start_of(date(5)), None)
            .unwrap();
        let days = site_days(&hrs, zone, aqi.default_interval_secs);
        (1..=4)
            .map(|d| {
                let sites: Vec<&SiteDay> = days
                    .iter()
                    .filter(|((dt, site), _)| {
                        *dt == date(d) && !aqi.district_exclude.contains(site)
                    })
                    .map(|(_, v)| v)
                    .collect();
                DistrictDay::of(&sites).value(
                    date(d),
                    aqi.district_min_sites,
                    aqi.tables.on(date(d)),
                )
            })
            .collect()
    }

    fn got(s: &Store, aqi: &AqiConfig) -> Vec<DayValue> {
        s.district_fresh(aqi, date(1), date(4))
            .unwrap()
            .into_iter()
            .map(|(d, v)| v.value(d, aqi.district_min_sites, aqi.tables.on(d)))
            .collect()
    }

    /// Everything a report shows of a day, the exact means included.
    fn shown(v: &[DayValue]) -> Vec<String> {
        v.iter()
            .map(|d| {
                format!(
                    "{} {:?} {:?} {:?} {:?} {} {} {} {} {}",
                    d.date,
                    d.pm25.map(Milli::parts),
                    d.pm10.map(Milli::parts),
                    d.aqi.as_ref().map(|a| a.value),
                    d.class,
                    d.valid_hours_pm25,
                    d.valid_hours_pm10,
                    d.sites_pm25,
                    d.sites_pm10,
                    d.primary_label()
                )
            })
            .collect()
    }

    fn dirty(s: &Store) -> i64 {
        s.sqlite()
            .query_row("SELECT count(*) FROM dirty_days", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_district_cache_agrees_with_a_recomputation_in_every_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&StoreConfig {
            path: dir.path().join("aq.db"),
            ..StoreConfig::default()
        })
        .unwrap();
        let mut r = Vec::new();
        for d in 1..=3 {
            r.extend(hours("a", d, 0..24));
            r.extend(hours("bb", d, 0..(19 + d as i64))); // day 1: 20 hours, day 2: 21…
            r.extend(hours("ccc", d, 2..24));
        }
        s.commit_batch_durable(&r, &[], UnixMillis(0)).unwrap();
        let rules = aqi(&["ccc"], 1);
        let before = expected(&s, &rules);
        // Means over 24 and 20 hours make a district mean that is a true fraction.
        assert!(
            before[0].pm25.unwrap().parts().1 > 1,
            "{:?}",
            before[0].pm25
        );
        assert_eq!(
            (before[0].sites_pm25, before[3].class),
            (2, DayClass::NoData)
        );

        // No refresh yet: computed from the hours.
        assert_eq!(shown(&got(&s, &rules)), shown(&before));

        // Refreshed: read from the cache — a row altered behind its back shows.
        assert!(s.refresh_daily(&rules).unwrap() > 0);
        assert_eq!(dirty(&s), 0);
        assert_eq!(shown(&got(&s, &rules)), shown(&before));
        s.sqlite()
            .execute(
                "UPDATE district_daily SET n25 = 99 WHERE day = ?1",
                [day_number(date(2))],
            )
            .unwrap();
        assert_eq!(
            got(&s, &rules)[1].sites_pm25,
            99,
            "the cached row is what is read"
        );

        // A late backlog for day 2 (and a first day 4): those dates are recomputed on
        // read until the next refresh, which stores them.
        s.commit_batch_durable(&hours("bb", 2, 21..24), &[], UnixMillis(0))
            .unwrap();
        s.commit_batch_durable(&hours("a", 4, 0..24), &[], UnixMillis(0))
            .unwrap();
        let after = expected(&s, &rules);
        assert_ne!(shown(&after[1..2]), shown(&before[1..2]));
        assert_ne!(after[3].class, DayClass::NoData, "day 4 now has a site");
        assert_eq!(shown(&got(&s, &rules)), shown(&after));
        s.refresh_daily(&rules).unwrap();
        assert_eq!(dirty(&s), 0);
        assert_eq!(shown(&got(&s, &rules)), shown(&after));

        // An excluded site's backlog does not change the district.
        s.commit_batch_durable(&hours("ccc", 1, 0..2), &[], UnixMillis(0))
            .unwrap();
        assert_eq!(shown(&got(&s, &rules)), shown(&after));

        // Another exclusion list: right before its first refresh (computed from the
        // site-days) and after it (the cache rebuilt for every date).
        let other = aqi(&["a"], 1);
        let want = expected(&s, &other);
        assert_ne!(shown(&want), shown(&after));
        assert_eq!(shown(&got(&s, &other)), shown(&want));
        s.refresh_daily(&other).unwrap();
        assert_eq!(shown(&got(&s, &other)), shown(&want));
        let rows: i64 = s
            .sqlite()
            .query_row("SELECT count(*) FROM district_daily", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 4);

        // The minimum-sites rule applies on read, to the same cached rows.
        let strict = aqi(&["a"], 2);
        let want = expected(&s, &strict);
        assert_eq!(want[3].class, DayClass::NoData, "day 4 has one site");
        assert_eq!(shown(&got(&s, &strict)), shown(&want));
    }

    #[test]
    fn the_district_key_ignores_exclusion_order_and_repeats_but_not_the_rules() {
        let k = "zone=0";
        assert_eq!(
            district_key(k, &aqi(&["b", "a", "b"], 1)),
            district_key(k, &aqi(&["a", "b"], 1))
        );
        assert_ne!(
            district_key(k, &aqi(&["a"], 1)),
            district_key(k, &aqi(&[], 1))
        );
        assert_ne!(district_key(k, &aqi(&[], 1)), district_key(k, &aqi(&[], 2)));
        // The tables: part of the key (a change re-emits the derived days), not of the
        // rows part that reads compare (the rows hold means, not classes).
        use crate::aqi::index::{TableSet, Tables};
        let pinned = AqiConfig {
            tables: Tables::Pinned(TableSet::Hj633_2012),
            ..aqi(&[], 1)
        };
        let (in_force, pinned) = (district_key(k, &aqi(&[], 1)), district_key(k, &pinned));
        assert_ne!(in_force, pinned);
        assert_eq!(rows_part(&in_force), rows_part(&pinned));
        assert_ne!(
            rows_part(&district_key(k, &aqi(&["a"], 1))),
            rows_part(&in_force)
        );
    }

    #[test]
    fn a_damaged_district_mean_is_an_error_not_a_value() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let row = |blob: &[u8]| {
            db.row("SELECT 1, 1, 24, ?1, 0, 0, NULL", p![blob])
                .unwrap()
                .unwrap()
        };
        for blob in [vec![0u8; 31], {
            let mut b = 5i128.to_le_bytes().to_vec();
            b.extend(0i128.to_le_bytes());
            b
        }] {
            let r = district_row(&row(&blob));
            assert!(r.is_err(), "{} bytes", blob.len());
        }
        let ok = district_row(&row(&mean_blob(Some(Milli::ratio(151, 2))).unwrap())).unwrap();
        assert_eq!(ok.1.pm25.mean.unwrap().parts(), (151, 2));
        assert!(ok.1.pm10.mean.is_none());
    }

    /// A site-day as compared: date, site, exact PM2.5 mean, valid hours.
    type SiteRow = (NaiveDate, String, Option<(i128, i128)>, usize);

    /// One step of a store's life: a commit of device hourly means, or a refresh.
    #[derive(Debug, Clone)]
    enum Step {
        /// Site (index), August day, first hour, hours, PM2.5 in tenths of µg/m³.
        Commit(usize, u32, i64, i64, u32),
        /// A refresh under rule set (index).
        Refresh(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0usize..3, 1u32..4, 0i64..24, 1i64..24, 50u32..3000)
                .prop_map(|(s, d, h, n, v)| Step::Commit(s, d, h, n, v)),
            1 => (0usize..4).prop_map(Step::Refresh),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever the order of commits (late ones included), refreshes and changes of
        /// the district rules and tables, every read — site days and district days, under any of
        /// the rule sets — equals a recomputation from the hours.
        #[test]
        fn caches_always_agree_with_the_hours(steps in proptest::collection::vec(step(), 1..14)) {
            const SITES: [&str; 3] = ["a", "bb", "ccc"];
            // The last: other tables than in force (the same rows, other classes).
            let pinned = AqiConfig {
                tables: crate::aqi::index::Tables::Pinned(crate::aqi::index::TableSet::Hj633_2026),
                ..aqi(&["bb"], 1)
            };
            let rules = [aqi(&[], 1), aqi(&["bb"], 1), aqi(&["a"], 2), pinned];
            let dir = tempfile::tempdir().unwrap();
            let mut s = Store::open(&StoreConfig {
                path: dir.path().join("aq.db"),
                ..StoreConfig::default()
            })
            .unwrap();
            for st in steps {
                match st {
                    Step::Commit(site, day, first, n, tenths) => {
                        let start = Zone::BEIJING.start_of(date(day)).0;
                        let r: Vec<Reading> = (first..(first + n).min(24))
                            .map(|h| Reading {
                                site: SiteId::parse(SITES[site]).unwrap(),
                                device: None,
                                ts: UnixMillis(start + h * 3_600_000),
                                period: Period::Hour,
                                flag: Flag::Normal,
                                pm25: Some(MicrogramsPerCubicMetre::new(f64::from(tenths + h as u32) / 10.0).unwrap()),
                                pm10: Some(MicrogramsPerCubicMetre::new(f64::from(tenths) / 5.0).unwrap()),
                                interval_secs: None,
                            })
                            .collect();
                        s.commit_batch_durable(&r, &[], UnixMillis(0)).unwrap();
                    }
                    Step::Refresh(i) => {
                        s.refresh_daily(&rules[i]).unwrap();
                    }
                }
                for r in &rules {
                    proptest::prop_assert_eq!(shown(&got(&s, r)), shown(&expected(&s, r)));
                }
                let fresh = s.daily_fresh(Zone::BEIJING, 60, date(1), date(4), None).unwrap();
                let hrs = s.hours(Zone::BEIJING.start_of(date(1)), Zone::BEIJING.start_of(date(5)), None).unwrap();
                let want: Vec<SiteRow> = site_days(&hrs, Zone::BEIJING, 60)
                    .into_iter()
                    .map(|((d, site), v)| (d, site, v.pm25.mean.map(Milli::parts), v.pm25.valid_hours))
                    .collect();
                let have: Vec<SiteRow> = fresh
                    .into_iter()
                    .map(|(d, site, v)| (d, site, v.pm25.mean.map(Milli::parts), v.pm25.valid_hours))
                    .collect();
                proptest::prop_assert_eq!(have, want);
            }
        }
    }
}
