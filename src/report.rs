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
use crate::aqi::target::{progress, Progress, TargetConfig};
use crate::aqi::AqiConfig;
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
    /// One per day from `from` through `min(to, as_of)`.
    pub days: Vec<DayValue>,
    pub progress: Option<Progress>,
}

/// Longest period reported at once.
pub const MAX_REPORT_DAYS: i64 = 3660;

/// Builds a report.
pub fn build(store: &Store, aqi: &AqiConfig, spec: Spec) -> Result<Report, ReportError> {
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
                    days.push(site_value(date, by_date.get(&date).copied(), aqi.table_set));
                    date += Duration::days(1);
                }
            }
            None => {
                days = store
                    .district_fresh(aqi, spec.from, last)?
                    .into_iter()
                    .map(|(date, d)| d.value(date, aqi.district_min_sites, aqi.table_set))
                    .collect();
            }
        }
    }
    let progress = spec.target.as_ref().map(|t| progress(t, &days, spec.as_of));
    Ok(Report {
        spec,
        days,
        progress,
    })
}

impl Report {
    /// The JSON form: every day with at least `date`, `pm25`, `pm10`, `aqi` (null when no
    /// data) and `class`, and the counts.
    pub fn to_json(&self) -> Value {
        let days: Vec<Value> = self
            .days
            .iter()
            .map(|d| {
                json!({
                    "date": d.date.to_string(),
                    "pm25": d.pm25_ug,
                    "pm10": d.pm10_ug,
                    "pm25_mean": d.pm25.map(|m| m.as_ug()),
                    "pm10_mean": d.pm10.map(|m| m.as_ug()),
                    "aqi": d.aqi.as_ref().map(|a| a.value),
                    "category": d.aqi.as_ref().map(|a| a.category.en()),
                    "category_zh": d.aqi.as_ref().map(|a| a.category.zh()),
                    "primary": d.primary_label(),
                    "class": d.class.as_str(),
                    "valid_hours_pm25": d.valid_hours_pm25,
                    "valid_hours_pm10": d.valid_hours_pm10,
                    "sites_pm25": d.sites_pm25,
                    "sites_pm10": d.sites_pm10,
                })
            })
            .collect();
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

    /// One row per day.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("date,pm25,pm10,aqi,category,primary,class,valid_hours_pm25,valid_hours_pm10,sites_pm25,sites_pm10\n");
        for d in &self.days {
            let opt = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_default();
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{}",
                d.date,
                opt(d.pm25_ug),
                opt(d.pm10_ug),
                opt(d.aqi.as_ref().map(|a| a.value)),
                d.aqi.as_ref().map(|a| a.category.en()).unwrap_or(""),
                d.primary_label(),
                d.class.as_str(),
                d.valid_hours_pm25,
                d.valid_hours_pm10,
                d.sites_pm25,
                d.sites_pm10
            );
        }
        s
    }

    /// The table for officials: the status in words, then the days.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let who = match &self.spec.site {
            Some(site) => format!("site {site} 站点"),
            None => "district 全区".into(),
        };
        let _ = writeln!(s, "Air quality report 空气质量报告 — {who}");
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
