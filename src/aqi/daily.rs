//! From hourly aggregates to daily values: per site, per pollutant, and for the district
//! (HJ 663-2013 practice: the district concentration is the mean of the valid site daily
//! concentrations, unrounded, then rounded and indexed — never a mean of AQIs).

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::index::{aqi, iaqi, Aqi, TableSet};
use super::mean::Milli;
use super::validity::{day, DayAgg, HourAgg};
use super::zone::Zone;
use crate::model::{Pollutant, UnixMillis};

/// One site-hour as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteHour {
    pub site: String,
    /// The UTC start of the hour.
    pub hour: UnixMillis,
    pub pm25: HourAgg,
    pub pm10: HourAgg,
}

/// One site's day, per pollutant.
#[derive(Debug, Clone, Copy)]
pub struct SiteDay {
    pub pm25: DayAgg,
    pub pm10: DayAgg,
}

/// Groups hours into local site-days.
pub fn site_days(
    hours: &[SiteHour],
    zone: Zone,
    default_interval_secs: u32,
) -> BTreeMap<(NaiveDate, String), SiteDay> {
    let mut means: BTreeMap<(NaiveDate, String), (Vec<Milli>, Vec<Milli>)> = BTreeMap::new();
    for h in hours {
        let e = means
            .entry((zone.date_of(h.hour), h.site.clone()))
            .or_default();
        if let Some(m) = h.pm25.valid_mean(default_interval_secs) {
            e.0.push(m);
        }
        if let Some(m) = h.pm10.valid_mean(default_interval_secs) {
            e.1.push(m);
        }
    }
    means
        .into_iter()
        .map(|(k, (a, b))| {
            (
                k,
                SiteDay {
                    pm25: day(&a),
                    pm10: day(&b),
                },
            )
        })
        .collect()
}

/// A day's class for the good-day count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DayClass {
    /// A valid day with AQI ≤ 100 (优良天).
    Good,
    /// A valid day with AQI > 100.
    Polluted,
    /// Neither PM2.5 nor PM10 valid: neither good nor polluted. Missing data never
    /// counts as good.
    NoData,
}

impl DayClass {
    /// The stable code used in reports, the API and InfluxDB.
    pub fn as_str(self) -> &'static str {
        match self {
            DayClass::Good => "good",
            DayClass::Polluted => "polluted",
            DayClass::NoData => "no_data",
        }
    }
}

/// A day's value (one site's, or the district's).
#[derive(Debug, Clone)]
pub struct DayValue {
    pub date: NaiveDate,
    /// Daily concentrations (unrounded), when valid.
    pub pm25: Option<Milli>,
    pub pm10: Option<Milli>,
    /// Rounded integer µg/m³ that were indexed.
    pub pm25_ug: Option<u32>,
    pub pm10_ug: Option<u32>,
    pub aqi: Option<Aqi>,
    pub class: DayClass,
    /// Valid hours (a site's day) or, for the district, the most valid hours of a
    /// counted site.
    pub valid_hours_pm25: usize,
    pub valid_hours_pm10: usize,
    /// Sites whose valid daily value entered the mean, per pollutant (1 for a site).
    pub sites_pm25: usize,
    pub sites_pm10: usize,
    /// The breakpoint tables the AQI and class were computed under.
    pub tables: TableSet,
}

impl DayValue {
    /// The primary pollutants as shown to people: `PM2.5`, `PM10` or `PM2.5+PM10`
    /// (empty when there is none).
    pub fn primary_label(&self) -> String {
        self.aqi
            .as_ref()
            .map(|a| {
                a.primary
                    .iter()
                    .map(|p| match p {
                        Pollutant::Pm25 => "PM2.5",
                        Pollutant::Pm10 => "PM10",
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .unwrap_or_default()
    }
}

fn value(
    date: NaiveDate,
    table: TableSet,
    pm25: Option<Milli>,
    pm10: Option<Milli>,
    hours: (usize, usize),
    sites: (usize, usize),
) -> DayValue {
    let pm25_ug = pm25.map(Milli::round_ug);
    let pm10_ug = pm10.map(Milli::round_ug);
    let mut parts = Vec::new();
    if let Some(c) = pm25_ug {
        parts.push((Pollutant::Pm25, iaqi(table, Pollutant::Pm25, c)));
    }
    if let Some(c) = pm10_ug {
        parts.push((Pollutant::Pm10, iaqi(table, Pollutant::Pm10, c)));
    }
    let aqi = aqi(&parts);
    let class = match &aqi {
        None => DayClass::NoData,
        Some(a) if a.value <= 100 => DayClass::Good,
        Some(_) => DayClass::Polluted,
    };
    DayValue {
        date,
        pm25,
        pm10,
        pm25_ug,
        pm10_ug,
        aqi,
        class,
        valid_hours_pm25: hours.0,
        valid_hours_pm10: hours.1,
        sites_pm25: sites.0,
        sites_pm10: sites.1,
        tables: table,
    }
}

/// One site's day value.
pub fn site_value(date: NaiveDate, d: Option<&SiteDay>, table: TableSet) -> DayValue {
    match d {
        Some(d) => value(
            date,
            table,
            d.pm25.mean,
            d.pm10.mean,
            (d.pm25.valid_hours, d.pm10.valid_hours),
            (
                usize::from(d.pm25.mean.is_some()),
                usize::from(d.pm10.mean.is_some()),
            ),
        ),
        None => value(date, table, None, None, (0, 0), (0, 0)),
    }
}

/// The district's day for one pollutant before the minimum-sites rule: the mean of
/// the counted sites' valid daily concentrations, how many there were, and the most
/// valid hours of any counted site. What the store caches per district day.
#[derive(Debug, Clone, Copy, Default)]
pub struct DistrictAgg {
    pub mean: Option<Milli>,
    pub sites: usize,
    pub max_hours: usize,
}

/// The district's day, both pollutants, from the counted sites' days.
#[derive(Debug, Clone, Copy, Default)]
pub struct DistrictDay {
    pub pm25: DistrictAgg,
    pub pm10: DistrictAgg,
}

impl DistrictDay {
    /// Aggregates the counted sites' days (the caller leaves excluded sites out).
    pub fn of(sites: &[&SiteDay]) -> DistrictDay {
        let agg = |f: fn(&SiteDay) -> &DayAgg| {
            let valid: Vec<Milli> = sites.iter().filter_map(|s| f(s).mean).collect();
            DistrictAgg {
                mean: Milli::mean(&valid),
                sites: valid.len(),
                max_hours: sites.iter().map(|s| f(s).valid_hours).max().unwrap_or(0),
            }
        };
        DistrictDay {
            pm25: agg(|s| &s.pm25),
            pm10: agg(|s| &s.pm10),
        }
    }

    /// The day's value: per pollutant, the mean counts only when at least `min_sites`
    /// sites had a valid daily value.
    pub fn value(&self, date: NaiveDate, min_sites: usize, table: TableSet) -> DayValue {
        let counted = |a: &DistrictAgg| a.mean.filter(|_| a.sites >= min_sites.max(1));
        value(
            date,
            table,
            counted(&self.pm25),
            counted(&self.pm10),
            (self.pm25.max_hours, self.pm10.max_hours),
            (self.pm25.sites, self.pm10.sites),
        )
    }
}

/// The district's day: per pollutant, the mean of the counted sites' valid daily
/// concentrations when at least `min_sites` have one.
pub fn district_value(
    date: NaiveDate,
    sites: &[&SiteDay],
    min_sites: usize,
    table: TableSet,
) -> DayValue {
    DistrictDay::of(sites).value(date, min_sites, table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::validity::HourAgg;

    fn agg(ug: f64) -> HourAgg {
        HourAgg {
            n: 60,
            sum_milli: (ug * 1000.0).round() as i64 * 60,
            covered_secs: 3600,
            ..HourAgg::default()
        }
    }

    fn day_of(pm25: Option<f64>, pm10: Option<f64>, hours: usize) -> SiteDay {
        let hours: Vec<SiteHour> = (0..hours)
            .map(|h| SiteHour {
                site: "s".into(),
                hour: UnixMillis(Zone::BEIJING.start_of(d()).0 + h as i64 * 3_600_000),
                pm25: pm25.map(agg).unwrap_or_default(),
                pm10: pm10.map(agg).unwrap_or_default(),
            })
            .collect();
        *site_days(&hours, Zone::BEIJING, 60)
            .values()
            .next()
            .unwrap()
    }

    fn d() -> NaiveDate {
        NaiveDate::from_ymd_opt(2016, 8, 1).unwrap()
    }

    #[test]
    fn good_polluted_and_no_data_days() {
        let t = TableSet::Hj633_2012;
        assert_eq!(
            site_value(d(), Some(&day_of(Some(75.4), Some(80.0), 24)), t).class,
            DayClass::Good
        );
        let p = site_value(d(), Some(&day_of(Some(75.5), Some(80.0), 24)), t);
        assert_eq!((p.class, p.aqi.unwrap().value), (DayClass::Polluted, 102));
        // 19 valid hours: no data, never good.
        assert_eq!(
            site_value(d(), Some(&day_of(Some(10.0), Some(10.0), 19)), t).class,
            DayClass::NoData
        );
        // Only PM10 valid: the day rests on it.
        let only10 = site_value(d(), Some(&day_of(None, Some(151.0), 24)), t);
        assert_eq!(only10.class, DayClass::Polluted);
        assert_eq!(only10.pm25_ug, None);
        assert_eq!(site_value(d(), None, t).class, DayClass::NoData);
    }

    #[test]
    fn district_is_a_mean_of_concentrations_not_of_aqis() {
        // Site A PM2.5 75 (IAQI 100), site B 250 (IAQI 300). The mean of the AQIs, 200,
        // would say 中度污染; the mean concentration 162.5 → 162 gives 212, 重度污染.
        let a = day_of(Some(75.0), None, 24);
        let b = day_of(Some(250.0), None, 24);
        let t = TableSet::Hj633_2012;
        let v = district_value(d(), &[&a, &b], 1, t);
        assert_eq!(v.pm25_ug, Some(162));
        assert_eq!(v.aqi.as_ref().unwrap().value, 212);
        assert_eq!(v.aqi.as_ref().unwrap().category.zh(), "重度污染");
        let ia = site_value(d(), Some(&a), t).aqi.unwrap().value;
        let ib = site_value(d(), Some(&b), t).aqi.unwrap().value;
        assert_eq!((ia + ib) / 2, 200);
        assert_eq!((v.sites_pm25, v.sites_pm10), (2, 0));
    }

    #[test]
    fn minimum_sites_rule() {
        let a = day_of(Some(20.0), None, 24);
        let short = day_of(Some(500.0), None, 10);
        // One valid site of the two; two required: no district value.
        assert_eq!(
            district_value(d(), &[&a, &short], 2, TableSet::Hj633_2012).class,
            DayClass::NoData
        );
        let v = district_value(d(), &[&a, &short], 1, TableSet::Hj633_2012);
        assert_eq!((v.pm25_ug, v.sites_pm25), (Some(20), 1));
    }

    /// How bad a class and category are, for comparing them: no data is neither.
    fn badness(v: &DayValue) -> Option<(u8, super::super::index::Category)> {
        let class = match v.class {
            DayClass::NoData => return None,
            DayClass::Good => 0,
            DayClass::Polluted => 1,
        };
        Some((class, v.aqi.as_ref()?.category))
    }

    proptest::proptest! {
        /// For any daily means — exact fractions of milli-µg/m³, either pollutant
        /// missing, rounded and indexed as a day is — the day's class and category under
        /// HJ 633-2026 are never better than under HJ 633-2012 (and its AQI never
        /// lower), for a site's day and for the district's.
        #[test]
        fn a_day_is_never_better_under_hj633_2026_than_under_2012(
            pm25 in proptest::option::of((0i128..700_000, 1i128..50)),
            pm10 in proptest::option::of((0i128..800_000, 1i128..50)),
            sites in 1usize..4,
        ) {
            let mean = |m: Option<(i128, i128)>| m.map(|(n, d)| Milli::ratio(n, d));
            let agg = |m| DistrictAgg { mean: mean(m), sites, max_hours: 24 };
            let day = DistrictDay { pm25: agg(pm25), pm10: agg(pm10) };
            let old = day.value(d(), 1, TableSet::Hj633_2012);
            let new = day.value(d(), 1, TableSet::Hj633_2026);
            proptest::prop_assert_eq!(old.class == DayClass::NoData, new.class == DayClass::NoData);
            proptest::prop_assert!(badness(&new) >= badness(&old), "{:?} vs {:?}", new, old);
            proptest::prop_assert!(
                new.aqi.as_ref().map(|a| a.value) >= old.aqi.as_ref().map(|a| a.value)
            );
            proptest::prop_assert_eq!((new.tables, old.tables), (TableSet::Hj633_2026, TableSet::Hj633_2012));
            // A site's day: the same values.
            let site = SiteDay {
                pm25: DayAgg { valid_hours: 24, mean: mean(pm25) },
                pm10: DayAgg { valid_hours: 24, mean: mean(pm10) },
            };
            let old_site = site_value(d(), Some(&site), TableSet::Hj633_2012);
            let new_site = site_value(d(), Some(&site), TableSet::Hj633_2026);
            proptest::prop_assert!(badness(&new_site) >= badness(&old_site));
            proptest::prop_assert_eq!(badness(&old_site), badness(&old));
        }
    }
}
