//! Derived series for InfluxDB: hourly means per site (with validity) and daily values
//! per site and for the district (means, AQI, category, good, valid). Pure builders of
//! line-protocol lines; others decide when (the sink makes the hours' lines for the
//! readings of each request, housekeeping queues the days' after each daily refresh).
//! Timestamps are the start of the local hour or day, so a recomputed value overwrites
//! the old point instead of adding one.
//!
//! Measurements (with the default `influx.measurement = "pm"`):
//! - `pm_hourly`, tag `site`; fields `pm2_5`, `pm10` (µg/m³, the hour's mean),
//!   `pm2_5_valid`, `pm10_valid` (bool), `pm2_5_samples`, `pm10_samples` (int);
//! - `pm_daily`, tag `scope` = `site` (with tag `site`) or `district`, tag `tables` =
//!   the day's index tables (`aqi.tables`: in force on the date unless pinned); fields `pm2_5`,
//!   `pm10` (daily mean, unrounded), `pm2_5_ug`, `pm10_ug` (the rounded values indexed),
//!   `aqi` (int), `category` (string), `class` (`good`/`polluted`/`no_data`), `good`,
//!   `valid` (bool), `valid_hours_pm2_5`, `valid_hours_pm10`, `sites_pm2_5`,
//!   `sites_pm10` (int).

use chrono::NaiveDate;

use crate::aqi::daily::{district_value, site_value, DayClass, DayValue, SiteHour};
use crate::aqi::index::Tables;
use crate::aqi::zone::Zone;
use crate::aqi::AqiConfig;
use crate::sink::line_protocol::{encode, encode_ref_into, FieldRef, FieldValue, Point, PointRef};
use crate::store::DayRows;

/// What the builders need from the config.
#[derive(Debug, Clone)]
pub struct Derived {
    pub measurement: String,
    /// `{measurement}_hourly`, made once (a line per site-hour of every request).
    hourly_measurement: String,
    pub zone: Zone,
    /// The tables each date is classed under (`aqi.tables`).
    pub tables: Tables,
    pub default_interval_secs: u32,
    pub min_sites: usize,
    pub exclude: Vec<String>,
}

impl Derived {
    pub fn new(measurement: &str, aqi: &AqiConfig) -> Derived {
        Derived {
            measurement: measurement.to_owned(),
            hourly_measurement: format!("{measurement}_hourly"),
            zone: aqi.zone(),
            tables: aqi.tables,
            default_interval_secs: aqi.default_interval_secs,
            min_sites: aqi.district_min_sites,
            exclude: aqi.district_exclude.clone(),
        }
    }

    /// The hourly line of a site-hour (None when it has no normal-flag data at all).
    pub fn hour_line(&self, h: &SiteHour) -> Option<String> {
        // Built on the stack: one line per site-hour of every request.
        let mut fields = [("", FieldRef::Bool(false)); 6];
        let mut n = 0;
        for (names, agg) in [
            (["pm2_5", "pm2_5_valid", "pm2_5_samples"], &h.pm25),
            (["pm10", "pm10_valid", "pm10_samples"], &h.pm10),
        ] {
            if agg.n == 0 && agg.device_mean_milli.is_none() {
                continue;
            }
            let valid = agg.valid_mean(self.default_interval_secs);
            let mean = valid.map(|m| m.as_ug()).unwrap_or_else(|| {
                if agg.n > 0 {
                    agg.sum_milli as f64 / f64::from(agg.n) / 1000.0
                } else {
                    0.0
                }
            });
            fields[n] = (names[0], FieldRef::Float(mean));
            fields[n + 1] = (names[1], FieldRef::Bool(valid.is_some()));
            fields[n + 2] = (names[2], FieldRef::Integer(i64::from(agg.n)));
            n += 3;
        }
        if n == 0 {
            return None;
        }
        let measurement = &self.hourly_measurement;
        let mut line = String::with_capacity(160);
        encode_ref_into(
            &PointRef {
                measurement,
                tags: &[("site", &h.site)],
                fields: &fields[..n],
                ts_ms: h.hour.0,
            },
            &mut line,
        )
        .ok()?;
        Some(line)
    }

    /// Lines for the recomputed site-days and for the district on each of their dates.
    pub fn day_lines(&self, pending: &[(NaiveDate, String)], rows: &DayRows) -> Vec<String> {
        let mut out = Vec::new();
        let mut dates: Vec<NaiveDate> = Vec::new();
        for (date, site) in pending {
            let day = rows
                .get(date)
                .and_then(|v| v.iter().find(|(s, _)| s == site))
                .map(|(_, d)| d);
            let v = site_value(*date, day, self.tables.on(*date));
            out.extend(self.day_line(&v, Some(site)));
            if !dates.contains(date) {
                dates.push(*date);
            }
        }
        for date in dates {
            let sites: Vec<_> = rows
                .get(&date)
                .map(|v| {
                    v.iter()
                        .filter(|(s, _)| !self.exclude.contains(s))
                        .map(|(_, d)| d)
                        .collect()
                })
                .unwrap_or_default();
            let v = district_value(date, &sites, self.min_sites, self.tables.on(date));
            out.extend(self.day_line(&v, None));
        }
        out
    }

    fn day_line(&self, v: &DayValue, site: Option<&str>) -> Option<String> {
        let mut tags = vec![(
            "scope".to_owned(),
            if site.is_some() { "site" } else { "district" }.to_owned(),
        )];
        if let Some(s) = site {
            tags.push(("site".into(), s.to_owned()));
        }
        // Which index tables the class and AQI come from (the day's: in force on it
        // unless aqi.tables pins a set): analysts can tell, and keep, both series.
        tags.push(("tables".into(), v.tables.name().to_owned()));
        let mut fields = Vec::new();
        let int = |n: usize| FieldValue::Integer(n as i64);
        if let Some(m) = v.pm25 {
            fields.push(("pm2_5".to_owned(), FieldValue::Float(m.as_ug())));
        }
        if let Some(m) = v.pm10 {
            fields.push(("pm10".to_owned(), FieldValue::Float(m.as_ug())));
        }
        if let Some(c) = v.pm25_ug {
            fields.push(("pm2_5_ug".to_owned(), FieldValue::Integer(i64::from(c))));
        }
        if let Some(c) = v.pm10_ug {
            fields.push(("pm10_ug".to_owned(), FieldValue::Integer(i64::from(c))));
        }
        if let Some(a) = &v.aqi {
            fields.push(("aqi".to_owned(), FieldValue::Integer(i64::from(a.value))));
            fields.push((
                "category".to_owned(),
                FieldValue::Str(a.category.en().to_owned()),
            ));
        }
        let class = v.class.as_str();
        fields.push(("class".to_owned(), FieldValue::Str(class.to_owned())));
        fields.push((
            "good".to_owned(),
            FieldValue::Bool(v.class == DayClass::Good),
        ));
        fields.push((
            "valid".to_owned(),
            FieldValue::Bool(v.class != DayClass::NoData),
        ));
        fields.push(("valid_hours_pm2_5".to_owned(), int(v.valid_hours_pm25)));
        fields.push(("valid_hours_pm10".to_owned(), int(v.valid_hours_pm10)));
        fields.push(("sites_pm2_5".to_owned(), int(v.sites_pm25)));
        fields.push(("sites_pm10".to_owned(), int(v.sites_pm10)));
        encode(&Point {
            measurement: format!("{}_daily", self.measurement),
            tags,
            fields,
            ts_ms: self.zone.start_of(v.date).0,
        })
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::validity::HourAgg;
    use crate::model::UnixMillis;

    #[test]
    fn hourly_lines_say_whether_the_hour_is_valid() {
        let d = Derived::new("pm", &AqiConfig::default());
        let h = SiteHour {
            site: "s1".into(),
            hour: UnixMillis(1_470_013_200_000),
            pm25: HourAgg::default(),
            pm10: HourAgg {
                n: 44,
                sum_milli: 44 * 80_000,
                covered_secs: 44 * 60,
                ..HourAgg::default()
            },
        };
        assert_eq!(
            d.hour_line(&h).unwrap(),
            "pm_hourly,site=s1 pm10=80,pm10_valid=false,pm10_samples=44i 1470013200000\n"
        );
        let empty = SiteHour {
            pm10: HourAgg::default(),
            ..h
        };
        assert!(d.hour_line(&empty).is_none());
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};
    use crate::store::{Store, StoreConfig};

    /// 24 device hourly means of PM2.5 `pm25` for `site` on 1 August 2016 (Beijing).
    fn hours_of(site: &str, pm25: f64) -> Vec<Reading> {
        hours_on(NaiveDate::from_ymd_opt(2016, 8, 1).unwrap(), site, pm25)
    }

    /// 24 device hourly means of PM2.5 `pm25` for `site` on `date` (Beijing).
    fn hours_on(date: NaiveDate, site: &str, pm25: f64) -> Vec<Reading> {
        let day_start = crate::aqi::zone::Zone::BEIJING.start_of(date);
        (0..24)
            .map(|h| Reading {
                site: SiteId::parse(site).unwrap(),
                device: None,
                ts: UnixMillis(day_start.0 + h * 3_600_000),
                period: Period::Hour,
                flag: Flag::Normal,
                pm25: Some(MicrogramsPerCubicMetre::new(pm25).unwrap()),
                pm10: None,
                interval_secs: None,
            })
            .collect()
    }

    #[test]
    fn a_refresh_emits_site_and_district_days() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&StoreConfig {
            path: dir.path().join("aq.db"),
            ..StoreConfig::default()
        })
        .unwrap();
        let d = Derived::new("pm", &AqiConfig::default());
        s.commit_batch_durable(&hours_of("a", 30.0), &[], UnixMillis(0))
            .unwrap();
        s.refresh_daily(&AqiConfig::default()).unwrap();
        let n = s
            .emit_derived_days(UnixMillis(0), |p, rows| d.day_lines(p, rows))
            .unwrap();
        assert_eq!(n, 2, "one site line and one district line");
        let lines: Vec<String> = s
            .derived_head(10)
            .unwrap()
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert!(
            lines[0].starts_with(
                "pm_daily,scope=site,site=a,tables=HJ\\ 633-2012 pm2_5=30,pm2_5_ug=30i,aqi=43i"
            ),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("pm_daily,scope=district,tables=HJ\\ 633-2012 pm2_5=30,"),
            "{lines:?}"
        );
        // Nothing pending any more.
        assert_eq!(
            s.emit_derived_days(UnixMillis(0), |p, rows| d.day_lines(p, rows))
                .unwrap(),
            0
        );
    }

    #[test]
    fn a_change_of_district_rules_re_emits_the_district_days() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&StoreConfig {
            path: dir.path().join("aq.db"),
            ..StoreConfig::default()
        })
        .unwrap();
        let mut r = hours_of("a", 30.0);
        r.extend(hours_of("b", 50.0));
        s.commit_batch_durable(&r, &[], UnixMillis(0)).unwrap();
        // Refreshes under `aqi`, emits, and returns (and clears) the district lines.
        let district = |s: &mut Store, aqi: &AqiConfig| -> Vec<String> {
            let d = Derived::new("pm", aqi);
            s.refresh_daily(aqi).unwrap();
            s.emit_derived_days(UnixMillis(0), |p, rows| d.day_lines(p, rows))
                .unwrap();
            let lines = s.derived_head(100).unwrap();
            let seqs: Vec<i64> = lines.iter().map(|l| l.0).collect();
            s.sink_done_durable("test", None, &seqs, &[], UnixMillis(0))
                .unwrap();
            lines
                .into_iter()
                .map(|r| r.1)
                .filter(|l| l.starts_with("pm_daily,scope=district"))
                .collect()
        };
        let all = AqiConfig::default();
        let first = district(&mut s, &all);
        assert_eq!(first.len(), 1);
        assert!(
            first[0].starts_with("pm_daily,scope=district,tables=HJ\\ 633-2012 pm2_5=40,"),
            "{first:?}"
        );
        // Same rules, nothing new: nothing re-emitted.
        assert!(district(&mut s, &all).is_empty());
        // Site b no longer counts: the district day is written again, from a alone.
        let without_b = AqiConfig {
            district_exclude: vec!["b".into()],
            ..AqiConfig::default()
        };
        let again = district(&mut s, &without_b);
        assert_eq!(again.len(), 1);
        assert!(
            again[0].starts_with("pm_daily,scope=district,tables=HJ\\ 633-2012 pm2_5=30,"),
            "{again:?}"
        );
    }

    /// Refreshes under `aqi`, emits, and returns (and clears) every derived day line.
    fn emitted(s: &mut Store, aqi: &AqiConfig) -> Vec<String> {
        let d = Derived::new("pm", aqi);
        s.refresh_daily(aqi).unwrap();
        s.emit_derived_days(UnixMillis(0), |p, rows| d.day_lines(p, rows))
            .unwrap();
        let lines = s.derived_head(1000).unwrap();
        let seqs: Vec<i64> = lines.iter().map(|l| l.0).collect();
        s.sink_done_durable("test", None, &seqs, &[], UnixMillis(0))
            .unwrap();
        lines.into_iter().map(|r| r.1).collect()
    }

    /// PM2.5 70 µg/m³ on the last day of HJ 633-2012 and on the first of HJ 633-2026:
    /// in force on each date, the first is good (IAQI 94) and the second polluted
    /// (IAQI 110), each line tagged with its day's tables. Pinning a set re-emits every
    /// line — every site's, not one per date — under it, and so does going back.
    #[test]
    fn each_day_is_classed_under_its_tables_and_a_change_re_emits_every_line() {
        use crate::aqi::index::{TableSet, Tables, HJ633_2026_IN_FORCE_FROM as SWITCH};
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&StoreConfig {
            path: dir.path().join("aq.db"),
            ..StoreConfig::default()
        })
        .unwrap();
        let last_2012 = SWITCH.pred_opt().unwrap();
        let mut r = Vec::new();
        for date in [last_2012, SWITCH] {
            r.extend(hours_on(date, "a", 70.0));
            r.extend(hours_on(date, "b", 70.0));
        }
        s.commit_batch_durable(&r, &[], UnixMillis(0)).unwrap();
        // Every line of a run: (scope and site, tables tag, class, aqi), sorted.
        let summary = |lines: &[String]| {
            let mut v: Vec<String> = lines
                .iter()
                .map(|l| {
                    let (tags, fields) = l.split_once(" pm2_5=").unwrap();
                    let field = |k: &str| {
                        fields
                            .split([',', ' '])
                            .find_map(|f| f.strip_prefix(&format!("{k}=")))
                            .unwrap()
                            .to_owned()
                    };
                    let ts: i64 = l.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
                    let date = crate::aqi::zone::Zone::BEIJING.date_of(UnixMillis(ts));
                    format!("{date} {tags} {} {}", field("class"), field("aqi"))
                })
                .collect();
            v.sort();
            v
        };
        let in_force = AqiConfig::default();
        let want = |t12: &str, t26: &str, c12: &str, c26: &str| {
            let mut v = Vec::new();
            for (date, t, c) in [(last_2012, t12, c12), (SWITCH, t26, c26)] {
                let t = t.replace(' ', "\\ ");
                for scope in ["scope=district", "scope=site,site=a", "scope=site,site=b"] {
                    let aqi = if c == "\"good\"" { "94i" } else { "110i" };
                    v.push(format!("{date} pm_daily,{scope},tables={t} {c} {aqi}"));
                }
            }
            v.sort();
            v
        };
        let (good, polluted) = ("\"good\"", "\"polluted\"");
        assert_eq!(
            summary(&emitted(&mut s, &in_force)),
            want("HJ 633-2012", "HJ 633-2026", good, polluted)
        );
        assert!(emitted(&mut s, &in_force).is_empty(), "nothing changed");
        for (t, class) in [
            (TableSet::Hj633_2012, good),
            (TableSet::Hj633_2026, polluted),
        ] {
            let pinned = AqiConfig {
                tables: Tables::Pinned(t),
                ..AqiConfig::default()
            };
            assert_eq!(
                summary(&emitted(&mut s, &pinned)),
                want(t.name(), t.name(), class, class),
                "{t:?}"
            );
        }
        assert_eq!(
            summary(&emitted(&mut s, &in_force)),
            want("HJ 633-2012", "HJ 633-2026", good, polluted)
        );
    }
}
