//! The target report, from the store's daily values (the cached site and district
//! days, with the days changed since the last refresh recomputed; reads only): day-by-day values (district,
//! or one site) and, for a configured target, the good-day progress. Rendered as a
//! table an official can read, as JSON, or as CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{Duration, NaiveDate};
use serde_json::{json, Value};
use thiserror::Error;

use crate::aqi::daily::{site_value, DayClass, DayValue, SiteDay};
use crate::aqi::index::Tables;
use crate::aqi::target::{progress, Progress, TargetConfig};
use crate::aqi::AqiConfig;
use crate::model::Pollutant;
use crate::store::{Store, StoreError};

/// Printed with every report: this is not the official count.
pub const PM_ONLY_NOTE: &str = "PM-only AQI (PM2.5 and PM10 from the bureau's construction-site network). Official district counts use national/provincial stations with six pollutants; this is the bureau's management figure. 仅含PM2.5/PM10的管理口径，非官方六项污染物统计。";

/// What to report.
#[derive(Debug, Clone)]
pub struct Spec {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub as_of: NaiveDate,
    /// One site instead of the district.
    pub site: Option<String>,
    /// The target whose progress to compute, when reporting a target.
    pub target: Option<TargetConfig>,
}

/// Report failures.
#[derive(Debug, Error)]
pub enum ReportError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the period ends ({to}) before it starts ({from})")]
    Period { from: NaiveDate, to: NaiveDate },
    #[error("no readings at all for site {0:?}")]
    UnknownSite(String),
}

/// A computed report.
#[derive(Debug, Clone)]
pub struct Report {
    pub spec: Spec,
    /// The index tables the days were classed under: the target's, else the
    /// service's `aqi.tables` (each day's set is in its [`DayValue::tables`]).
    pub tables: Tables,
    /// One per day from `from` through `min(to, as_of)`.
    pub days: Vec<DayValue>,
    pub progress: Option<Progress>,
}

/// Longest period reported at once.
pub const MAX_REPORT_DAYS: i64 = 3660;

/// The fields of a day (a site's or the district's) in every form that serializes one:
/// the report's JSON and CSV and the API's daily series, district days, target report
/// and bulletin, all through [`day_json`]. The report's CSV has every column, in this
/// order; the API's daily CSV has the first eleven ([`DAY_API_CSV_COLUMNS`]).
pub const DAY_COLUMNS: [&str; 18] = [
    "date",
    "pm25",
    "pm10",
    "aqi",
    "category",
    "primary",
    "class",
    "valid",
    "valid_hours_pm25",
    "valid_hours_pm10",
    "sites",
    "sites_pm25",
    "sites_pm10",
    "pm25_mean",
    "pm10_mean",
    "category_zh",
    "color",
    "tables",
];

/// The API's daily CSV columns (`/sites/{id}/series?resolution=day`,
/// `/district/daily`): its columns from before the serializers were one, which clients
/// read by position; the JSON has every column of [`DAY_COLUMNS`].
pub const DAY_API_CSV_COLUMNS: &[&str] = DAY_COLUMNS.split_at(11).0;

/// A day as one flat JSON object with every key of [`DAY_COLUMNS`]: `pm25`/`pm10` are
/// the rounded µg/m³ that were indexed, `pm25_mean`/`pm10_mean` the unrounded daily
/// concentrations; `aqi`, `category`, `category_zh`, `color` and `primary` are null on a
/// day without data (`primary` is empty when the AQI is 50 or less: HJ 633 names no
/// primary pollutant then); `sites` is the larger of the per-pollutant site counts;
/// `tables` names the breakpoint tables the AQI and class come from.
pub fn day_json(d: &DayValue) -> Value {
    let aqi = d.aqi.as_ref();
    json!({
        "date": d.date.to_string(),
        "pm25": d.pm25_ug,
        "pm10": d.pm10_ug,
        "aqi": aqi.map(|a| a.value),
        "category": aqi.map(|a| a.category.en()),
        "primary": aqi.map(|_| d.primary_label()),
        "class": d.class.as_str(),
        "valid": d.class != DayClass::NoData,
        "valid_hours_pm25": d.valid_hours_pm25,
        "valid_hours_pm10": d.valid_hours_pm10,
        "sites": d.sites_pm25.max(d.sites_pm10),
        "sites_pm25": d.sites_pm25,
        "sites_pm10": d.sites_pm10,
        "pm25_mean": d.pm25.map(|m| m.as_ug()),
        "pm10_mean": d.pm10.map(|m| m.as_ug()),
        "category_zh": aqi.map(|a| a.category.zh()),
        "color": aqi.map(|a| {
            let (r, g, b) = a.category.rgb();
            format!("#{r:02x}{g:02x}{b:02x}")
        }),
        "tables": d.tables.name(),
    })
}

/// Flat JSON objects as CSV, `cols` in order: null is an empty cell, a string is written
/// as it is (quoted when it holds a comma, quote or line break), anything else as JSON.
pub fn csv(rows: &[Value], cols: &[&str]) -> String {
    let mut s = csv_header(cols);
    for r in rows {
        csv_row(&mut s, r, cols);
    }
    s
}

/// The header line of [`csv`].
pub fn csv_header(cols: &[&str]) -> String {
    let mut s = cols.join(",");
    s.push('\n');
    s
}

/// One line of [`csv`], appended to `out`: for tables written a row at a time.
pub fn csv_row(out: &mut String, r: &Value, cols: &[&str]) {
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_cell(&r[*c]));
    }
    out.push('\n');
}

fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(x) if x.contains([',', '"', '\n', '\r']) => {
            format!("\"{}\"", x.replace('"', "\"\""))
        }
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// Builds a report.
pub fn build(store: &Store, aqi: &AqiConfig, spec: Spec) -> Result<Report, ReportError> {
    // A target is counted under its own tables; anything else under the service's.
    let tables = match &spec.target {
        Some(t) => t.tables_under(aqi.tables),
        None => aqi.tables,
    };
    if spec.to < spec.from {
        return Err(ReportError::Period {
            from: spec.from,
            to: spec.to,
        });
    }
    let zone = aqi.zone();
    let last = spec
        .to
        .min(spec.as_of)
        .min(spec.from + Duration::days(MAX_REPORT_DAYS));
    let mut days = Vec::new();
    if last >= spec.from {
        match &spec.site {
            Some(site) => {
                let rows = store.daily_fresh(
                    zone,
                    aqi.default_interval_secs,
                    spec.from,
                    last,
                    Some(site),
                )?;
                if rows.is_empty() && !store.has_site(site)? {
                    return Err(ReportError::UnknownSite(site.clone()));
                }
                let by_date: BTreeMap<NaiveDate, &SiteDay> =
                    rows.iter().map(|(d, _, v)| (*d, v)).collect();
                let mut date = spec.from;
                while date <= last {
                    let day = by_date.get(&date).copied();
                    days.push(site_value(date, day, tables.on(date)));
                    date += Duration::days(1);
                }
            }
            None => {
                days = store
                    .district_fresh(aqi, spec.from, last)?
                    .into_iter()
                    .map(|(date, d)| d.value(date, aqi.district_min_sites, tables.on(date)))
                    .collect();
            }
        }
    }
    let progress = spec.target.as_ref().map(|t| progress(t, &days, spec.as_of));
    Ok(Report {
        spec,
        tables,
        days,
        progress,
    })
}

impl Report {
    /// The tables of the last reported day (whose daily limits the dashboard draws).
    pub fn last_tables(&self) -> crate::aqi::index::TableSet {
        self.tables
            .on(self.days.last().map_or(self.spec.to, |d| d.date))
    }

    /// The tables of the reported days in words: one set's name, or both with the date
    /// of the switch when `aqi.tables = "in-force"` and the days straddle it.
    pub fn tables_label(&self) -> String {
        let last = self.days.last().map_or(self.spec.to, |d| d.date);
        self.tables.label(self.spec.from, last)
    }

    /// The JSON form: every day as [`day_json`] writes it, and the counts.
    pub fn to_json(&self) -> Value {
        let days: Vec<Value> = self.days.iter().map(day_json).collect();
        let count = |c| self.days.iter().filter(|d| d.class == c).count();
        json!({
            "target": self.spec.target.as_ref().map(|t| json!({
                "name": t.name, "from": t.from.to_string(), "to": t.to.to_string(),
                "good_days": t.good_days, "comparison": t.comparison, "required": t.required(),
            })),
            "from": self.spec.from.to_string(),
            "to": self.spec.to.to_string(),
            "as_of": self.spec.as_of.to_string(),
            "site": self.spec.site,
            "tables": self.tables_label(),
            // The 24-hour concentrations at IAQI 100 of the tables of the last reported
            // day: above them a day's pollutant is over its daily limit (the dashboard
            // draws them).
            "daily_limits": {
                "pm25": self.last_tables().limit_at_iaqi_100(Pollutant::Pm25),
                "pm10": self.last_tables().limit_at_iaqi_100(Pollutant::Pm10),
            },
            "note": PM_ONLY_NOTE,
            "counts": {
                "good": count(DayClass::Good),
                "polluted": count(DayClass::Polluted),
                "no_data": count(DayClass::NoData),
                "days": self.days.len(),
            },
            "progress": self.progress,
            "days": days,
        })
    }

    /// One row per day, the columns of [`DAY_COLUMNS`].
    pub fn to_csv(&self) -> String {
        let rows: Vec<Value> = self.days.iter().map(day_json).collect();
        csv(&rows, &DAY_COLUMNS)
    }

    /// The table for officials: the status in words, then the days.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let who = match &self.spec.site {
            Some(site) => format!("site {site} 站点"),
            None => "district 全区".into(),
        };
        let _ = writeln!(s, "Air quality report 空气质量报告 — {who}");
        let _ = writeln!(s, "Tables 标准: {}", self.tables_label());
        if let Some(t) = &self.spec.target {
            let _ = writeln!(
                s,
                "Target 目标 \"{}\": {} {} good days 优良天 in {}..{} ({} days)",
                t.name,
                match t.comparison {
                    crate::aqi::target::Comparison::MoreThan => "more than",
                    crate::aqi::target::Comparison::AtLeast => "at least",
                },
                t.good_days,
                t.from,
                t.to,
                t.days()
            );
        }
        let _ = writeln!(s, "As of 截至 {}", self.spec.as_of);
        if let Some(p) = &self.progress {
            let _ = writeln!(s, "Status 状态: {}", p.status.words());
            let _ = writeln!(
                s,
                "Good 优良 {} · polluted 污染 {} · no data 无数据 {} · elapsed 已过 {} · remaining 剩余 {}",
                p.good, p.polluted, p.no_data, p.elapsed, p.remaining
            );
            let _ = writeln!(
                s,
                "Still needed 仍需 {} · most still reachable 最多可达 {} · rate needed 所需优良率 {}",
                p.still_needed,
                p.max_reachable,
                p.rate_needed
                    .map(|r| format!("{:.1}%", r * 100.0))
                    .unwrap_or_else(|| "—".into())
            );
            let mean = |m: Option<f64>, l: Option<f64>| match (m, l) {
                (Some(m), Some(l)) => format!("{m:.1} µg/m³ (limit 限值 {l})"),
                (Some(m), None) => format!("{m:.1} µg/m³"),
                _ => "—".into(),
            };
            let _ = writeln!(
                s,
                "Period mean 期间均值: PM2.5 {} · PM10 {}",
                mean(p.pm25_mean, p.pm25_limit),
                mean(p.pm10_mean, p.pm10_limit)
            );
        }
        let _ = writeln!(s, "{PM_ONLY_NOTE}\n");
        let _ = writeln!(
            s,
            "{:<10}  {:>5}  {:>5}  {:>4}  {:<22}  {:<10}  {:>5}  {:>5}",
            "date", "PM2.5", "PM10", "AQI", "category 类别", "primary", "hours", "sites"
        );
        for d in &self.days {
            let opt = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "—".into());
            let cat = d
                .aqi
                .as_ref()
                .map(|a| format!("{} {}", a.category.zh(), a.category.en()))
                .unwrap_or_else(|| "无数据 no data".into());
            let _ = writeln!(
                s,
                "{:<10}  {:>5}  {:>5}  {:>4}  {:<22}  {:<10}  {:>5}  {:>5}",
                d.date,
                opt(d.pm25_ug),
                opt(d.pm10_ug),
                opt(d.aqi.as_ref().map(|a| a.value)),
                cat,
                d.primary_label(),
                d.valid_hours_pm25.max(d.valid_hours_pm10),
                d.sites_pm25.max(d.sites_pm10)
            );
        }
        s
    }
}

/// The same period under two table sets, day by day (`report --tables A,B`): what an
/// official asks the week a standard changes — which days change class, and both
/// counts.
#[derive(Debug, Clone)]
pub struct Compared {
    pub a: Report,
    pub b: Report,
}

impl Compared {
    /// Rows of the comparison: one per day, both sets' index and class.
    fn rows(&self) -> Vec<Value> {
        let (ta, tb) = (self.a.tables_label(), self.b.tables_label());
        let (ta, tb) = (ta.as_str(), tb.as_str());
        self.a
            .days
            .iter()
            .zip(&self.b.days)
            .map(|(x, y)| {
                json!({
                    "date": x.date.to_string(),
                    "pm25": x.pm25_ug,
                    "pm10": x.pm10_ug,
                    "pm25_mean": x.pm25.map(|m| m.as_ug()),
                    "pm10_mean": x.pm10.map(|m| m.as_ug()),
                    ta: {"aqi": x.aqi.as_ref().map(|a| a.value), "class": x.class.as_str()},
                    tb: {"aqi": y.aqi.as_ref().map(|a| a.value), "class": y.class.as_str()},
                    "changed": x.class != y.class,
                })
            })
            .collect()
    }

    fn counts(r: &Report) -> Value {
        let n = |c| r.days.iter().filter(|d| d.class == c).count();
        json!({"good": n(DayClass::Good), "polluted": n(DayClass::Polluted), "no_data": n(DayClass::NoData)})
    }

    pub fn to_json(&self) -> Value {
        let (ta, tb) = (self.a.tables_label(), self.b.tables_label());
        let (ta, tb) = (ta.as_str(), tb.as_str());
        json!({
            "tables": [ta, tb],
            "from": self.a.spec.from.to_string(),
            "to": self.a.spec.to.to_string(),
            "site": self.a.spec.site,
            "counts": {ta: Self::counts(&self.a), tb: Self::counts(&self.b)},
            "changed": self.rows().iter().filter(|r| r["changed"] == true).count(),
            "days": self.rows(),
            "note": PM_ONLY_NOTE,
        })
    }

    pub fn to_csv(&self) -> String {
        let (ta, tb) = (self.a.tables_label(), self.b.tables_label());
        let (ta, tb) = (ta.as_str(), tb.as_str());
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|r| {
                json!({
                    "date": r["date"], "pm25": r["pm25"], "pm10": r["pm10"],
                    "aqi_a": r[ta]["aqi"], "class_a": r[ta]["class"],
                    "aqi_b": r[tb]["aqi"], "class_b": r[tb]["class"],
                    "changed": r["changed"],
                })
            })
            .collect();
        let header = format!("# a = {ta}, b = {tb}\n");
        header
            + &csv(
                &rows,
                &[
                    "date", "pm25", "pm10", "aqi_a", "class_a", "aqi_b", "class_b", "changed",
                ],
            )
    }

    pub fn to_table(&self) -> String {
        let (ta, tb) = (self.a.tables_label(), self.b.tables_label());
        let (ta, tb) = (ta.as_str(), tb.as_str());
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Tables compared 标准对比: {ta} vs {tb}, {}..{}",
            self.a.spec.from, self.a.spec.to
        );
        for (t, r) in [(ta, &self.a), (tb, &self.b)] {
            let c = Self::counts(r);
            let _ = writeln!(
                s,
                "  {t}: good 优良 {} · polluted 污染 {} · no data 无数据 {}",
                c["good"], c["polluted"], c["no_data"]
            );
        }
        let rows = self.rows();
        let changed = rows.iter().filter(|r| r["changed"] == true).count();
        let _ = writeln!(
            s,
            "Days that change class 类别变化的天数: {changed} (marked *)"
        );
        let _ = writeln!(
            s,
            "\n{:<10} {:>6} {:>6}  {:>14}  {:>14}",
            "date", "PM2.5", "PM10", ta, tb
        );
        let cell = |v: &Value| {
            format!(
                "{} {}",
                v["aqi"].as_u64().map_or("—".into(), |a| a.to_string()),
                v["class"].as_str().unwrap_or("")
            )
        };
        for r in &rows {
            let num = |v: &Value| v.as_u64().map_or("—".into(), |x| x.to_string());
            let _ = writeln!(
                s,
                "{:<10} {:>6} {:>6}  {:>14}  {:>14} {}",
                r["date"].as_str().unwrap_or(""),
                num(&r["pm25"]),
                num(&r["pm10"]),
                cell(&r[ta]),
                cell(&r[tb]),
                if r["changed"] == true { "*" } else { "" }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::index::{aqi, iaqi, TableSet};
    use crate::model::Pollutant;

    fn day(aqi_of: Option<(u32, u32)>) -> DayValue {
        let t = TableSet::Hj633_2012;
        let date = NaiveDate::from_ymd_opt(2016, 8, 1).unwrap();
        let a = aqi_of.and_then(|(pm25, pm10)| {
            aqi(&[
                (Pollutant::Pm25, iaqi(t, Pollutant::Pm25, pm25)),
                (Pollutant::Pm10, iaqi(t, Pollutant::Pm10, pm10)),
            ])
        });
        DayValue {
            date,
            pm25: None,
            pm10: None,
            pm25_ug: aqi_of.map(|x| x.0),
            pm10_ug: aqi_of.map(|x| x.1),
            class: match &a {
                Some(a) if a.value <= 100 => DayClass::Good,
                Some(_) => DayClass::Polluted,
                None => DayClass::NoData,
            },
            aqi: a,
            valid_hours_pm25: 24,
            valid_hours_pm10: 20,
            sites_pm25: 3,
            sites_pm10: 4,
            tables: t,
        }
    }

    #[test]
    fn a_day_has_every_column_in_json_and_csv() {
        for d in [day(Some((50, 200))), day(None)] {
            let j = day_json(&d);
            let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
            let mut cols = DAY_COLUMNS.to_vec();
            cols.sort_unstable();
            let mut keys_sorted = keys.clone();
            keys_sorted.sort_unstable();
            assert_eq!(keys_sorted, cols);
        }
        let d = day(Some((50, 200)));
        let j = day_json(&d);
        assert_eq!(
            (j["aqi"].clone(), j["primary"].clone(), j["sites"].clone()),
            (125.into(), "PM10".into(), 4.into())
        );
        assert_eq!(j["color"], "#ff7e00");
        let text = csv(&[j], &DAY_COLUMNS);
        assert_eq!(
            text,
            "date,pm25,pm10,aqi,category,primary,class,valid,valid_hours_pm25,valid_hours_pm10,sites,sites_pm25,sites_pm10,pm25_mean,pm10_mean,category_zh,color,tables\n\
             2016-08-01,50,200,125,lightly polluted,PM10,polluted,true,24,20,4,3,4,,,轻度污染,#ff7e00,HJ 633-2012\n"
        );
        // No data: every AQI-derived cell empty, the class still named.
        let none = day_json(&day(None));
        assert!(none["aqi"].is_null() && none["primary"].is_null() && none["color"].is_null());
        assert_eq!(
            (none["class"].clone(), none["valid"].clone()),
            ("no_data".into(), false.into())
        );
    }

    #[test]
    fn the_api_csv_keeps_its_columns() {
        assert_eq!(
            DAY_API_CSV_COLUMNS.join(","),
            "date,pm25,pm10,aqi,category,primary,class,valid,valid_hours_pm25,valid_hours_pm10,sites"
        );
    }

    #[test]
    fn csv_cells_with_separators_are_quoted() {
        let rows = [json!({"a": "x, \"y\"", "b": 1.5, "c": null})];
        assert_eq!(
            csv(&rows, &["a", "b", "c"]),
            "a,b,c\n\"x, \"\"y\"\"\",1.5,\n"
        );
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;
    use crate::aqi::index::TableSet;
    use crate::aqi::target::{Comparison, TargetConfig};
    use crate::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};
    use crate::store::StoreConfig;

    /// A day whose PM2.5 daily mean is 70 µg/m³: 良 under HJ 633-2012 (IAQI 94), 轻度污染
    /// under HJ 633-2026 (IAQI 110). A target counts it under its own tables, and says so.
    #[test]
    fn a_target_is_counted_under_its_own_tables() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("aq.db"),
            ..StoreConfig::default()
        };
        let mut s = Store::open(&cfg).unwrap();
        let date = NaiveDate::from_ymd_opt(2016, 8, 1).unwrap();
        let start = crate::aqi::zone::Zone::BEIJING.start_of(date);
        let hours: Vec<Reading> = (0..24)
            .map(|h| Reading {
                site: SiteId::parse("a").unwrap(),
                device: None,
                ts: UnixMillis(start.0 + h * 3_600_000),
                period: Period::Hour,
                flag: Flag::Normal,
                pm25: Some(MicrogramsPerCubicMetre::new(70.0).unwrap()),
                pm10: None,
                interval_secs: None,
            })
            .collect();
        s.commit_batch_durable(&hours, &[], UnixMillis(0)).unwrap();
        s.refresh_daily(&AqiConfig::default()).unwrap();
        let report = |tables| {
            let target = TargetConfig {
                name: "t".into(),
                from: date,
                to: date,
                good_days: 1,
                comparison: Comparison::AtLeast,
                pm25_limit: None,
                pm10_limit: None,
                tables,
            };
            let spec = Spec {
                from: date,
                to: date,
                as_of: date,
                site: None,
                target: Some(target),
            };
            build(&s, &AqiConfig::default(), spec).unwrap()
        };
        let old = report(Some(TableSet::Hj633_2012));
        let new = report(Some(TableSet::Hj633_2026));
        assert_eq!(old.days[0].aqi.as_ref().map(|a| a.value), Some(94));
        assert_eq!(old.days[0].class, DayClass::Good);
        assert_eq!(new.days[0].aqi.as_ref().map(|a| a.value), Some(110));
        assert_eq!(new.days[0].class, DayClass::Polluted);
        assert_eq!(old.to_json()["tables"], "HJ 633-2012");
        assert_eq!(new.to_json()["tables"], "HJ 633-2026");
        assert!(new.to_table().contains("HJ 633-2026"));
        // Without tables of its own, the service's: in force on its 2016 dates, 2012.
        assert_eq!(report(None).tables, Tables::InForce);
        assert_eq!(report(None).to_json()["tables"], "HJ 633-2012");
        assert_eq!(report(None).days[0].class, DayClass::Good);
    }

    /// A report without a target follows `aqi.tables`: in force on each date by
    /// default — PM2.5 70 µg/m³ is good on 2026-02-28 and polluted on 2026-03-01, and
    /// the report says both sets with the date of the switch — or the pinned set.
    #[test]
    fn a_report_without_a_target_uses_the_tables_of_each_date() {
        use crate::aqi::index::HJ633_2026_IN_FORCE_FROM as SWITCH;
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&StoreConfig {
            path: dir.path().join("aq.db"),
            ..StoreConfig::default()
        })
        .unwrap();
        let first = SWITCH.pred_opt().unwrap();
        let start = crate::aqi::zone::Zone::BEIJING.start_of(first);
        let hours: Vec<Reading> = (0..48)
            .map(|h| Reading {
                site: SiteId::parse("a").unwrap(),
                device: None,
                ts: UnixMillis(start.0 + h * 3_600_000),
                period: Period::Hour,
                flag: Flag::Normal,
                pm25: Some(MicrogramsPerCubicMetre::new(70.0).unwrap()),
                pm10: None,
                interval_secs: None,
            })
            .collect();
        s.commit_batch_durable(&hours, &[], UnixMillis(0)).unwrap();
        s.refresh_daily(&AqiConfig::default()).unwrap();
        let report = |aqi: &AqiConfig, site: Option<&str>| {
            let spec = Spec {
                from: first,
                to: SWITCH,
                as_of: SWITCH,
                site: site.map(str::to_owned),
                target: None,
            };
            build(&s, aqi, spec).unwrap()
        };
        let classes = |r: &Report| {
            r.days
                .iter()
                .map(|d| (d.tables, d.class, d.aqi.as_ref().map(|a| a.value)))
                .collect::<Vec<_>>()
        };
        for site in [None, Some("a")] {
            let r = report(&AqiConfig::default(), site);
            assert_eq!(
                classes(&r),
                vec![
                    (TableSet::Hj633_2012, DayClass::Good, Some(94)),
                    (TableSet::Hj633_2026, DayClass::Polluted, Some(110)),
                ]
            );
            let j = r.to_json();
            assert_eq!(
                j["tables"],
                "HJ 633-2012 to 2026-02-28, HJ 633-2026 from 2026-03-01"
            );
            assert_eq!(
                (
                    j["days"][0]["tables"].clone(),
                    j["days"][1]["tables"].clone()
                ),
                ("HJ 633-2012".into(), "HJ 633-2026".into())
            );
            assert!(r.to_table().contains("HJ 633-2026 from 2026-03-01"));
            let pinned = AqiConfig {
                tables: Tables::Pinned(TableSet::Hj633_2012),
                ..AqiConfig::default()
            };
            let r = report(&pinned, site);
            assert_eq!(r.to_json()["tables"], "HJ 633-2012");
            assert_eq!(
                classes(&r),
                vec![(TableSet::Hj633_2012, DayClass::Good, Some(94)); 2]
            );
        }
    }
}
