//! The good-day target: a period (inclusive local dates), a threshold and a comparison,
//! and the report of where the district stands as of a date.
//!
//! Status, as of a date:
//! - **achieved**: good days already meet the target;
//! - **unreachable**: even if every remaining day were good, it could not be met;
//! - **on track**: the good-day rate so far (good / elapsed, no-data days counting as
//!   not good) is at least the rate needed on the remaining days;
//! - **at risk**: otherwise.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::daily::{DayClass, DayValue};
use super::mean::Milli;

/// How the threshold compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// "More than N good days" (the bureau's wording "100天以上" read strictly): ≥ N+1.
    #[default]
    MoreThan,
    /// "At least N" (the conventional Chinese reading of "以上", which includes N).
    AtLeast,
}

/// A `[[target]]` from the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub good_days: u32,
    #[serde(default)]
    pub comparison: Comparison,
    /// Period-mean limits, µg/m³ (mean of the valid district daily values).
    pub pm25_limit: Option<f64>,
    pub pm10_limit: Option<f64>,
    /// The index tables the target is counted under ("HJ 633-2012" or "HJ 633-2026").
    /// Required when the period reaches 2026-03-01 or later: the choice is never silent.
    pub tables: Option<super::index::TableSet>,
}

impl TargetConfig {
    /// Good days that meet the target.
    pub fn required(&self) -> u32 {
        match self.comparison {
            Comparison::MoreThan => self.good_days + 1,
            Comparison::AtLeast => self.good_days,
        }
    }
    pub fn days(&self) -> u32 {
        ((self.to - self.from).num_days() + 1).max(0) as u32
    }
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.to < self.from {
            p.push(format!("target {:?}: `to` is before `from`", self.name));
        }
        if self.tables.is_none() && self.to >= super::index::HJ633_2026_IN_FORCE_FROM {
            p.push(format!(
                "target {:?}: its period reaches {} or later, when HJ 633-2026 replaced HJ 633-2012; name its tables: tables = \"HJ 633-2026\" (or \"HJ 633-2012\" to count under the old ones)",
                self.name,
                super::index::HJ633_2026_IN_FORCE_FROM
            ));
        }
        if self.required() > self.days() {
            p.push(format!(
                "target {:?}: needs {} good days in a {}-day period",
                self.name,
                self.required(),
                self.days()
            ));
        }
        p
    }
}

impl TargetConfig {
    /// Things worth saying that do not stop the service: a table set that was in force
    /// for none of the target's dates.
    pub fn warnings(&self) -> Vec<String> {
        match self.tables {
            Some(t) if !t.in_force_during(self.from, self.to) => vec![format!(
                "target {:?} is counted under {}, which was in force for none of its dates ({}..{})",
                self.name,
                t.name(),
                self.from,
                self.to
            )],
            _ => Vec::new(),
        }
    }

    /// The tables to count this target under: its own for every date, or else the
    /// service's `aqi.tables` (a target without tables ends before 2026-03-01, so
    /// `in-force` means HJ 633-2012 for every date of it).
    pub fn tables_under(&self, service: super::index::Tables) -> super::index::Tables {
        self.tables.map_or(service, super::index::Tables::Pinned)
    }
}

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Achieved,
    OnTrack,
    AtRisk,
    Unreachable,
}

impl Status {
    pub fn words(self) -> &'static str {
        match self {
            Status::Achieved => "achieved 已达标",
            Status::OnTrack => "on track 进度正常",
            Status::AtRisk => "at risk 有风险",
            Status::Unreachable => "unreachable 无法完成",
        }
    }
}

/// The target report's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub as_of: NaiveDate,
    pub period_days: u32,
    pub elapsed: u32,
    pub remaining: u32,
    pub good: u32,
    pub polluted: u32,
    pub no_data: u32,
    pub required: u32,
    pub still_needed: u32,
    pub max_reachable: u32,
    /// Good days needed per remaining day (None when nothing remains).
    pub rate_needed: Option<f64>,
    /// Good days per elapsed day so far.
    pub rate_so_far: Option<f64>,
    pub status: Status,
    /// Mean of the valid daily values over the elapsed days, µg/m³.
    pub pm25_mean: Option<f64>,
    pub pm10_mean: Option<f64>,
    pub pm25_limit: Option<f64>,
    pub pm10_limit: Option<f64>,
}

/// Computes the progress from the period's day values (any order; days after `as_of`
/// or outside the period are ignored).
pub fn progress(t: &TargetConfig, days: &[DayValue], as_of: NaiveDate) -> Progress {
    let last = as_of.min(t.to);
    let elapsed = if last < t.from {
        0
    } else {
        ((last - t.from).num_days() + 1) as u32
    };
    let counted: Vec<&DayValue> = days
        .iter()
        .filter(|d| d.date >= t.from && d.date <= last)
        .collect();
    let good = counted.iter().filter(|d| d.class == DayClass::Good).count() as u32;
    let polluted = counted
        .iter()
        .filter(|d| d.class == DayClass::Polluted)
        .count() as u32;
    // Days with no value at all are no-data days too.
    let no_data = elapsed - good - polluted;
    let period_days = t.days();
    let remaining = period_days - elapsed;
    let required = t.required();
    let still_needed = required.saturating_sub(good);
    let max_reachable = good + remaining;
    let rate_needed = (remaining > 0).then(|| f64::from(still_needed) / f64::from(remaining));
    let rate_so_far = (elapsed > 0).then(|| f64::from(good) / f64::from(elapsed));
    let status = if good >= required {
        Status::Achieved
    } else if max_reachable < required {
        Status::Unreachable
    } else if rate_so_far.unwrap_or(1.0) >= rate_needed.unwrap_or(f64::INFINITY) {
        Status::OnTrack
    } else {
        Status::AtRisk
    };
    let mean = |f: fn(&DayValue) -> Option<Milli>| {
        let v: Vec<Milli> = counted.iter().filter_map(|d| f(d)).collect();
        Milli::mean(&v).map(Milli::as_ug)
    };
    Progress {
        as_of,
        period_days,
        elapsed,
        remaining,
        good,
        polluted,
        no_data,
        required,
        still_needed,
        max_reachable,
        rate_needed,
        rate_so_far,
        status,
        pm25_mean: mean(|d| d.pm25),
        pm10_mean: mean(|d| d.pm10),
        pm25_limit: t.pm25_limit,
        pm10_limit: t.pm10_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::daily::{site_value, SiteDay};
    use crate::aqi::index::TableSet;
    use crate::aqi::validity::DayAgg;
    use proptest::prelude::*;

    fn target(n: u32, cmp: Comparison) -> TargetConfig {
        TargetConfig {
            name: "h2".into(),
            from: NaiveDate::from_ymd_opt(2016, 7, 1).unwrap(),
            to: NaiveDate::from_ymd_opt(2016, 12, 31).unwrap(),
            good_days: n,
            comparison: cmp,
            pm25_limit: None,
            pm10_limit: None,
            tables: None,
        }
    }

    #[test]
    fn a_2026_period_must_name_its_tables_and_an_unused_set_is_a_warning() {
        let mut t = target(100, Comparison::MoreThan);
        assert!(
            t.problems().is_empty() && t.warnings().is_empty(),
            "2016: implicit 2012"
        );
        t.from = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        t.to = NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
        t.good_days = 10;
        let p = t.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("tables"), "{p:?}");
        t.tables = Some(TableSet::Hj633_2026);
        assert!(t.problems().is_empty() && t.warnings().is_empty());
        // 2012 tables for a period that straddles the switch: in force on some dates.
        t.tables = Some(TableSet::Hj633_2012);
        assert!(t.problems().is_empty() && t.warnings().is_empty());
        // …but not for a period wholly after it.
        t.from = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
        t.to = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        let w = t.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("HJ 633-2012") && w[0].contains("none of its dates"),
            "{w:?}"
        );
        use crate::aqi::index::Tables;
        // Its own tables, whatever the service's.
        assert_eq!(
            t.tables_under(Tables::Pinned(TableSet::Hj633_2026)),
            Tables::Pinned(TableSet::Hj633_2012)
        );
        // Without its own, the service's choice: in force on its 2016 dates, 2012.
        let t2016 = target(100, Comparison::MoreThan);
        assert_eq!(
            t2016
                .tables_under(Tables::InForce)
                .label(t2016.from, t2016.to),
            "HJ 633-2012"
        );
    }

    /// Day values from a class list, starting on the period's first day.
    fn days(classes: &[u8]) -> Vec<DayValue> {
        let from = NaiveDate::from_ymd_opt(2016, 7, 1).unwrap();
        classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let date = from + chrono::Duration::days(i as i64);
                let agg = |ug: f64| DayAgg {
                    valid_hours: 24,
                    mean: Some(Milli::from_ug(ug)),
                };
                let sd = SiteDay {
                    pm25: agg(if *c == 0 { 30.0 } else { 90.0 }),
                    pm10: agg(60.0),
                };
                match c {
                    2 => site_value(date, None, TableSet::Hj633_2012),
                    _ => site_value(date, Some(&sd), TableSet::Hj633_2012),
                }
            })
            .collect()
    }

    #[test]
    fn the_district_wording_more_than_100_means_101() {
        assert_eq!(target(100, Comparison::MoreThan).required(), 101);
        assert_eq!(target(100, Comparison::AtLeast).required(), 100);
        assert_eq!(target(100, Comparison::MoreThan).days(), 184);
    }

    #[test]
    fn counts_and_status() {
        let t = target(100, Comparison::MoreThan);
        // 30 days: 20 good, 8 polluted, 2 no data.
        let mut c = vec![0u8; 20];
        c.extend([1; 8]);
        c.extend([2; 2]);
        let as_of = NaiveDate::from_ymd_opt(2016, 7, 30).unwrap();
        let p = progress(&t, &days(&c), as_of);
        assert_eq!((p.elapsed, p.good, p.polluted, p.no_data), (30, 20, 8, 2));
        assert_eq!(
            (p.remaining, p.still_needed, p.max_reachable),
            (154, 81, 174)
        );
        // 20/30 = 0.67 so far ≥ 81/154 = 0.53 needed.
        assert_eq!(p.status, Status::OnTrack);
        // A missing day (no value at all) is a no-data day: drop the last (no-data) day.
        let p = progress(&t, &days(&c[..29]), as_of);
        assert_eq!((p.good, p.polluted, p.no_data), (20, 8, 2));
        let bad = progress(
            &t,
            &days(&[1; 100]),
            NaiveDate::from_ymd_opt(2016, 10, 8).unwrap(),
        );
        assert_eq!(bad.status, Status::Unreachable);
        let risky = progress(
            &t,
            &days(&[1; 40]),
            NaiveDate::from_ymd_opt(2016, 8, 9).unwrap(),
        );
        assert_eq!(risky.status, Status::AtRisk);
        let done = progress(
            &t,
            &days(&[0; 101]),
            NaiveDate::from_ymd_opt(2016, 10, 9).unwrap(),
        );
        assert_eq!(done.status, Status::Achieved);
        assert_eq!(done.still_needed, 0);
    }

    proptest! {
        #[test]
        fn counts_add_up_and_status_agrees(classes in proptest::collection::vec(0u8..3, 0..184), as_of_day in 0i64..200, n in 50u32..150, at_least in any::<bool>()) {
            let t = target(n, if at_least { Comparison::AtLeast } else { Comparison::MoreThan });
            let as_of = t.from + chrono::Duration::days(as_of_day);
            let p = progress(&t, &days(&classes), as_of);
            prop_assert_eq!(p.good + p.polluted + p.no_data, p.elapsed);
            prop_assert_eq!(p.elapsed + p.remaining, p.period_days);
            prop_assert_eq!(p.max_reachable, p.good + p.remaining);
            match p.status {
                Status::Achieved => prop_assert_eq!(p.still_needed, 0),
                Status::Unreachable => prop_assert!(p.still_needed > p.remaining),
                Status::OnTrack | Status::AtRisk => prop_assert!(p.still_needed > 0 && p.still_needed <= p.remaining),
            }
            if p.still_needed > 0 && p.remaining > 0 {
                let r = p.rate_needed.unwrap();
                prop_assert!((r * f64::from(p.remaining) - f64::from(p.still_needed)).abs() < 1e-9);
            }
        }
    }
}
