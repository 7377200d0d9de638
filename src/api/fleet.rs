//! The whole-fleet pages — the site list and the day's bulletin — serialized straight
//! from typed rows into the response body, on the store's blocking thread.
//!
//! At 10 000 sites these are the API's largest answers (the bulletin is ~2 MB of JSON).
//! Built as a `serde_json::Value` tree first, every site was a map of owned keys and
//! values (well over a kilobyte a site), all of it alive at once beside the rows it
//! came from and the body being written: the service's peak memory (89 MiB, against
//! 38 MiB while ingesting). Typed rows borrow their strings and cost tens of bytes.
//!
//! Their fields are declared in the order a `Value` map wrote them (sorted keys: this
//! crate does not enable serde_json's `preserve_order`), so the bytes are the tree's;
//! `tests::the_typed_pages_are_byte_for_byte_the_value_built_ones` compares the two.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate};
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::ApiContext;
use crate::aqi::daily::{site_value, SiteDay, SiteHour};
use crate::aqi::index::TableSet;
use crate::model::{Pollutant, UnixMillis};
use crate::report::{self, build, day_json, Spec};
use crate::sites::Registry;
use crate::source::topic::site_of;
use crate::store::Store;

/// The site list's CSV columns.
pub(super) const SITE_CSV_COLUMNS: &[&str] = &[
    "id",
    "name",
    "location",
    "latitude",
    "longitude",
    "registered",
    "counts_for_district",
    "interval_secs",
    "last_reading",
    "last_received",
    "status",
];

/// The bulletin's site table as CSV columns.
pub(super) const BULLETIN_CSV_COLUMNS: &[&str] = &[
    "date",
    "site",
    "status",
    "pm10",
    "pm25",
    "aqi",
    "category",
    "category_zh",
    "pm10_exceeds_daily_limit",
    "pm25_exceeds_daily_limit",
    "hours_over_pm10_alert",
    "rejected",
];

/// Bytes of JSON a site takes in these pages, about: the body's first allocation, so
/// that it is not regrown (and copied) a dozen times on the way to megabytes.
const JSON_BYTES_PER_SITE: usize = 256;

/// One site of `GET /api/v1/sites`. Fields in sorted order (see the module doc).
#[derive(Serialize)]
struct SiteRow<'a> {
    counts_for_district: bool,
    id: &'a str,
    interval_secs: Option<u32>,
    last_reading: Option<String>,
    last_received: Option<String>,
    latitude: Option<f64>,
    location: Option<&'a str>,
    longitude: Option<f64>,
    name: Option<&'a str>,
    registered: bool,
    status: &'static str,
}

/// `GET /api/v1/sites` at `now`: every site registered or seen, its last reading and
/// whether it is online; JSON, or CSV ([`SITE_CSV_COLUMNS`]).
pub(super) fn sites(
    s: &mut Store,
    cfg: &ApiContext,
    registry: &Registry,
    now: UnixMillis,
    csv: bool,
) -> Result<Response, ApiError> {
    let offline_ms = (cfg.api.offline_after_secs as i64) * 1000;
    let seen: BTreeMap<String, (i64, i64)> = s
        .site_activity()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(site, ts, rx)| (site, (ts, rx)))
        .collect();
    // Registered sites (seen or not) and sites seen but not registered.
    let mut ids: Vec<&str> = registry
        .sites()
        .map(|x| x.id.as_str())
        .chain(seen.keys().map(String::as_str))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<SiteRow<'_>> = ids
        .into_iter()
        .map(|id| {
            let reg = registry.get(id);
            let act = seen.get(id);
            let online = act.is_some_and(|(_, rx)| now.0 - rx <= offline_ms);
            SiteRow {
                counts_for_district: !cfg.aqi.district_exclude.iter().any(|x| x == id),
                id,
                interval_secs: reg.and_then(|r| r.interval_secs),
                last_reading: act.map(|a| UnixMillis(a.0).to_string()),
                last_received: act.map(|a| UnixMillis(a.1).to_string()),
                latitude: reg.and_then(|r| r.latitude),
                location: reg.and_then(|r| r.location.as_deref()),
                longitude: reg.and_then(|r| r.longitude),
                name: reg.and_then(|r| r.name.as_deref()),
                registered: reg.is_some(),
                status: if online { "online" } else { "offline" },
            }
        })
        .collect();
    let page = if csv {
        csv_response(rows.iter().map(serde_json::to_value), SITE_CSV_COLUMNS)
    } else {
        json_response(&rows, rows.len())
    };
    release_cache(s);
    page
}

/// The bulletin of a day. Fields in sorted order (see the module doc).
#[derive(Serialize)]
struct Bulletin<'a> {
    date: String,
    district: Option<Value>,
    limits: Limits,
    offline: Vec<String>,
    rejects: Vec<TopicCount<'a>>,
    rejects_by_site: Vec<SiteCount<'a>>,
    sites: Vec<BulletinSite<'a>>,
    tables: &'static str,
}

#[derive(Serialize)]
struct Limits {
    pm10_daily: u32,
    pm10_hourly_alert: f64,
    pm25_daily: u32,
}

#[derive(Serialize)]
struct TopicCount<'a> {
    count: i64,
    topic: &'a str,
}

#[derive(Serialize)]
struct SiteCount<'a> {
    count: i64,
    site: Option<&'a str>,
}

/// One reporting site's row of the bulletin: its day, exceedances of the daily limits
/// and the hours over the hourly PM10 alert level.
#[derive(Serialize)]
struct BulletinSite<'a> {
    aqi: Option<u32>,
    category: Option<&'static str>,
    category_zh: Option<&'static str>,
    color: Option<String>,
    hours_over_pm10_alert: Vec<String>,
    pm10: Option<u32>,
    pm10_exceeds_daily_limit: bool,
    pm25: Option<u32>,
    pm25_exceeds_daily_limit: bool,
    rejected: i64,
    site: &'a str,
}

/// `GET /api/v1/bulletin/{date}`: 每天通报督察情况 — the district's day, sites ranked
/// by PM10 with their exceedances, sites offline, rejected readings; JSON, or the site
/// table as CSV ([`BULLETIN_CSV_COLUMNS`]: one row per site that reported, then one
/// per site offline that day).
pub(super) fn bulletin(
    s: &mut Store,
    cfg: &ApiContext,
    d: NaiveDate,
    csv: bool,
) -> Result<Response, ApiError> {
    let zone = cfg.aqi.zone();
    let (t0, t1) = (zone.start_of(d), zone.start_of(d + Duration::days(1)));
    let r = build(
        s,
        &cfg.aqi,
        Spec {
            from: d,
            to: d,
            as_of: d,
            site: None,
            target: None,
        },
    )
    .map_err(ApiError::internal)?;
    let days = s
        .daily_fresh(zone, cfg.aqi.default_interval_secs, d, d, None)
        .map_err(ApiError::internal)?;
    let hours = s.hours(t0, t1, None).map_err(ApiError::internal)?;
    let alert = cfg.api.hourly_alert_pm10_ug;
    // The day's tables: in force on it, unless aqi.tables pins a set (the same choice
    // build() made for the district's day). Exceeding = an IAQI above 100 in them.
    let tables = cfg.aqi.tables.on(d);
    let limits = Limits {
        pm10_daily: tables.limit_at_iaqi_100(Pollutant::Pm10),
        pm10_hourly_alert: alert,
        pm25_daily: tables.limit_at_iaqi_100(Pollutant::Pm25),
    };
    // Refusals received that day, per site: the site is the topic's site level (a
    // payload too broken to name one still came in on a site's topic).
    let rejects = s.rejects_by_topic(t0, t1).map_err(ApiError::internal)?;
    let mut rejected: BTreeMap<Option<&str>, i64> = BTreeMap::new();
    for (topic, n) in &rejects {
        *rejected.entry(site_of(&cfg.filters, topic)).or_default() += n;
    }
    let (sites, reporting) = reporting_sites(cfg, (d, tables), &days, &hours, &limits, &rejected);
    let offline: Vec<String> = s
        .sites()
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|x| !reporting.contains(x.as_str()))
        .collect();
    let mut by_site: Vec<SiteCount<'_>> = rejected
        .iter()
        .map(|(site, n)| SiteCount {
            count: *n,
            site: *site,
        })
        .collect();
    by_site.sort_by(|a, b| b.count.cmp(&a.count).then(a.site.cmp(&b.site)));
    let b = Bulletin {
        date: d.to_string(),
        district: r.days.first().map(day_json),
        limits,
        offline,
        rejects: rejects
            .iter()
            .map(|(topic, n)| TopicCount { count: *n, topic })
            .collect(),
        rejects_by_site: by_site,
        sites,
        tables: tables.name(),
    };
    let page = if csv {
        csv_response(bulletin_rows(&b), BULLETIN_CSV_COLUMNS)
    } else {
        json_response(&b, b.sites.len() + b.offline.len())
    };
    release_cache(s);
    page
}

/// Empties the read connection's page cache after a whole-fleet page: it read
/// through every site's pages, which no other request needs next, and each of the
/// API's connections would otherwise keep its cache full of them (up to
/// `READER_CACHE_KIB` each, all at once). The pages stay in the OS's file cache.
fn release_cache(s: &Store) {
    if let Err(e) = s.shrink_memory() {
        tracing::warn!(error = %e, "api: could not empty a read connection's page cache");
    }
}

/// The rows of the sites that reported on day `d`, ranked by PM10, and the set of
/// them (from the day's `hours`).
fn reporting_sites<'a>(
    cfg: &ApiContext,
    (d, tables): (NaiveDate, TableSet),
    days: &'a [(NaiveDate, String, SiteDay)],
    hours: &'a [SiteHour],
    limits: &Limits,
    rejected: &BTreeMap<Option<&str>, i64>,
) -> (Vec<BulletinSite<'a>>, BTreeSet<&'a str>) {
    // One pass over the day's hours (not one per site: 10 000 sites × their hours).
    let mut reporting: BTreeSet<&str> = BTreeSet::new();
    let mut over: HashMap<&str, Vec<String>> = HashMap::new();
    for h in hours {
        reporting.insert(h.site.as_str());
        if over_alert(cfg, h, limits.pm10_hourly_alert) {
            over.entry(h.site.as_str())
                .or_default()
                .push(h.hour.to_string());
        }
    }
    let mut sites: Vec<BulletinSite<'_>> = days
        .iter()
        .map(|(_, site, sd)| {
            let over = over.remove(site.as_str()).unwrap_or_default();
            bulletin_site((d, tables), site, sd, over, limits, rejected)
        })
        .collect();
    // Stable: sites of equal PM10 stay in the store's order.
    sites.sort_by_key(|s| std::cmp::Reverse(s.pm10.unwrap_or(0)));
    (sites, reporting)
}

/// Whether hour `h`'s valid PM10 mean is above the alert level.
fn over_alert(cfg: &ApiContext, h: &SiteHour, alert: f64) -> bool {
    h.pm10
        .valid_mean(cfg.aqi.default_interval_secs)
        .is_some_and(|m| m.as_ug() > alert)
}

fn bulletin_site<'a>(
    (d, tables): (NaiveDate, TableSet),
    site: &'a str,
    sd: &SiteDay,
    over: Vec<String>,
    limits: &Limits,
    rejected: &BTreeMap<Option<&str>, i64>,
) -> BulletinSite<'a> {
    let v = site_value(d, Some(sd), tables);
    let aqi = v.aqi.as_ref();
    BulletinSite {
        aqi: aqi.map(|a| a.value),
        category: aqi.map(|a| a.category.en()),
        category_zh: aqi.map(|a| a.category.zh()),
        color: aqi.map(|a| {
            let (r, g, b) = a.category.rgb();
            format!("#{r:02x}{g:02x}{b:02x}")
        }),
        hours_over_pm10_alert: over,
        pm10: v.pm10_ug,
        pm10_exceeds_daily_limit: v.pm10_ug.is_some_and(|c| c > limits.pm10_daily),
        pm25: v.pm25_ug,
        pm25_exceeds_daily_limit: v.pm25_ug.is_some_and(|c| c > limits.pm25_daily),
        rejected: rejected.get(&Some(site)).copied().unwrap_or(0),
        site,
    }
}

/// The bulletin's sites as flat rows, one at a time: those that reported (ranked by
/// PM10, the alert hours counted), then those offline that day.
fn bulletin_rows<'b>(
    b: &'b Bulletin<'_>,
) -> impl Iterator<Item = Result<Value, serde_json::Error>> + 'b {
    let reporting = b.sites.iter().map(move |s| {
        let mut r = serde_json::to_value(s)?;
        r["date"] = Value::from(b.date.as_str());
        r["status"] = Value::from("reporting");
        r["hours_over_pm10_alert"] = Value::from(s.hours_over_pm10_alert.len());
        Ok(r)
    });
    let offline = b.offline.iter().map(move |site| {
        Ok(serde_json::json!({"date": b.date, "site": site, "status": "offline"}))
    });
    reporting.chain(offline)
}

/// `v` as a JSON response body, written once into a buffer sized for `sites`.
fn json_response(v: &impl Serialize, sites: usize) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(sites.saturating_mul(JSON_BYTES_PER_SITE).max(128));
    serde_json::to_writer(&mut body, v).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Flat rows, each made and dropped in turn, as a CSV response.
fn csv_response(
    rows: impl Iterator<Item = Result<Value, serde_json::Error>>,
    cols: &[&str],
) -> Result<Response, ApiError> {
    let mut out = report::csv_header(cols);
    for row in rows {
        report::csv_row(&mut out, &row.map_err(ApiError::internal)?, cols);
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
}

#[cfg(test)]
mod tests {
    //! The typed pages against the `Value`-built ones they replaced (kept here, as they
    //! were, as the reference), on a small fleet with every field in use.

    use axum::body::to_bytes;
    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId};
    use crate::plan::Plan;
    use crate::reject::{RejectReason, Rejection};
    use crate::store::{RejectRecord, Writer};

    const DAY: &str = "2016-08-01";

    /// A store with four sites on 2016-08-01 (Beijing): `a` clean all day, `b` dusty
    /// with hours over the PM10 alert, `c` on the hourly alert's edge for a few hours
    /// only (no valid day), `d` registered but excluded from the district and silent
    /// that day (it reported the day before: offline); two refusals on `b`'s topic, one
    /// on a topic naming no site.
    fn fleet(dir: &std::path::Path) -> (Plan, Store) {
        std::fs::write(
            dir.join("sites.toml"),
            "[[site]]\nid = \"a\"\nname = \"东区 \\\"工地\\\", 1\"\nlocation = \"Erqi\"\nlatitude = 34.72\nlongitude = 113.6\ninterval_secs = 60\n\n[[site]]\nid = \"d\"\ncounts_for_district = false\n",
        )
        .unwrap();
        let text = format!(
            "[store]\npath = \"{}\"\n[sites]\nfile = \"{}\"\n[aqi]\ndistrict_exclude = [\"c\"]\n",
            dir.join("aq.db").display(),
            dir.join("sites.toml").display()
        );
        let plan = Plan::resolve(Config::parse(&text, "test").unwrap(), "test").unwrap();
        let mut w = Writer::open(&plan.store).unwrap();
        let t0 = 1_469_980_800_000; // 2016-08-01T00:00+08:00
        let hour = 3_600_000;
        let r = |site: &str, ts: i64, pm25: f64, pm10: f64| Reading {
            site: SiteId::parse(site).unwrap(),
            device: None,
            ts: UnixMillis(ts),
            period: Period::Hour,
            flag: Flag::Normal,
            pm25: Some(MicrogramsPerCubicMetre::new(pm25).unwrap()),
            pm10: Some(MicrogramsPerCubicMetre::new(pm10).unwrap()),
            interval_secs: None,
        };
        let mut readings = Vec::new();
        let mut before = Vec::new();
        for h in 0..24 {
            readings.push(r("a", t0 + h * hour, 30.0, 60.0));
            let dusty = if h % 5 == 0 { 420.5 } else { 150.0 };
            readings.push(r("b", t0 + h * hour, 50.0, dusty));
            before.push(r("d", t0 - 86_400_000 + h * hour, 10.0, 20.0));
        }
        w.commit_batch_durable(&before, &[], UnixMillis(t0))
            .unwrap();
        for h in 0..3 {
            readings.push(r("c", t0 + h * hour, 80.0, 300.0 + h as f64));
        }
        let reject = |topic: &str| RejectRecord {
            rejection: Rejection::new(RejectReason::BadJson, "x"),
            topic: topic.to_owned(),
            excerpt: "{".to_owned(),
        };
        let rejects = [
            reject("aq/b/readings"),
            reject("aq/b/readings"),
            reject("elsewhere"),
        ];
        // Rejects are dated by the commit's receive time: on the day.
        w.commit_batch_durable(&readings, &rejects, UnixMillis(t0 + 10 * hour))
            .unwrap();
        let store = Store::open(&plan.store).unwrap();
        (plan, store)
    }

    async fn body(r: Response) -> (String, String) {
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let b = to_bytes(r.into_body(), usize::MAX).await.unwrap();
        (ct, String::from_utf8(b.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_typed_pages_are_byte_for_byte_the_value_built_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (plan, mut s) = fleet(dir.path());
        let cfg = plan.api.as_ref().unwrap();
        let d: NaiveDate = DAY.parse().unwrap();
        // Half an hour after the day's commit: a, b and c online, d (last heard of at
        // the day's start) offline.
        let now = UnixMillis(1_469_980_800_000 + 21 * 1_800_000);

        let want = reference_bulletin(&mut s, cfg, d);
        // The fleet exercises what the page can say.
        assert_eq!(want["sites"][0]["site"], "b", "{want}");
        assert_eq!(
            want["sites"][0]["hours_over_pm10_alert"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        assert!(want["sites"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["site"] == "c" && x["aqi"].is_null()));
        assert_eq!(want["offline"], json!(["d"]));
        assert_eq!(want["rejects_by_site"][0], json!({"site": "b", "count": 2}));
        let (ct, got) = body(bulletin(&mut s, cfg, d, false).unwrap()).await;
        assert_eq!(ct, "application/json");
        assert_eq!(got, serde_json::to_string(&want).unwrap());
        let (ct, got) = body(bulletin(&mut s, cfg, d, true).unwrap()).await;
        assert_eq!(ct, "text/csv; charset=utf-8");
        assert_eq!(
            got,
            report::csv(&reference_bulletin_rows(&want), BULLETIN_CSV_COLUMNS)
        );

        let want = reference_sites(&mut s, cfg, &plan.registry, now);
        assert_eq!(want.len(), 4);
        assert_eq!(want[0]["name"], "东区 \"工地\", 1");
        assert_eq!(want[1]["status"], "online");
        assert_eq!(want[3]["status"], "offline");
        assert_eq!(want[3]["counts_for_district"], false);
        let (ct, got) = body(sites(&mut s, cfg, &plan.registry, now, false).unwrap()).await;
        assert_eq!(ct, "application/json");
        assert_eq!(got, serde_json::to_string(&want).unwrap());
        let (_, got) = body(sites(&mut s, cfg, &plan.registry, now, true).unwrap()).await;
        assert_eq!(got, report::csv(&want, SITE_CSV_COLUMNS));
    }

    /// The site list as it was built before (`routes::sites` up to the typed rows).
    fn reference_sites(
        s: &mut Store,
        cfg: &ApiContext,
        registry: &Registry,
        now: UnixMillis,
    ) -> Vec<Value> {
        let offline_ms = (cfg.api.offline_after_secs as i64) * 1000;
        let seen: BTreeMap<String, (i64, i64)> = s
            .site_activity()
            .unwrap()
            .into_iter()
            .map(|(site, ts, rx)| (site, (ts, rx)))
            .collect();
        let mut ids: Vec<String> = registry.sites().map(|x| x.id.clone()).collect();
        ids.extend(seen.keys().cloned());
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let reg = registry.get(&id);
                let act = seen.get(&id);
                let online = act.is_some_and(|(_, rx)| now.0 - rx <= offline_ms);
                json!({
                    "id": id,
                    "name": reg.and_then(|r| r.name.clone()),
                    "location": reg.and_then(|r| r.location.clone()),
                    "latitude": reg.and_then(|r| r.latitude),
                    "longitude": reg.and_then(|r| r.longitude),
                    "registered": reg.is_some(),
                    "counts_for_district": !cfg.aqi.district_exclude.contains(&id),
                    "interval_secs": reg.and_then(|r| r.interval_secs),
                    "last_reading": act.map(|a| UnixMillis(a.0).to_string()),
                    "last_received": act.map(|a| UnixMillis(a.1).to_string()),
                    "status": if online { "online" } else { "offline" },
                })
            })
            .collect()
    }

    /// The bulletin as it was built before (`routes::bulletin_json`).
    fn reference_bulletin(s: &mut Store, cfg: &ApiContext, d: NaiveDate) -> Value {
        let zone = cfg.aqi.zone();
        let (t0, t1) = (zone.start_of(d), zone.start_of(d + Duration::days(1)));
        let spec = Spec {
            from: d,
            to: d,
            as_of: d,
            site: None,
            target: None,
        };
        let r = build(s, &cfg.aqi, spec).unwrap();
        let days = s
            .daily_fresh(zone, cfg.aqi.default_interval_secs, d, d, None)
            .unwrap();
        let hours = s.hours(t0, t1, None).unwrap();
        let alert = cfg.api.hourly_alert_pm10_ug;
        let tables = cfg.aqi.tables.on(d);
        let limit_pm10 = tables.limit_at_iaqi_100(Pollutant::Pm10);
        let limit_pm25 = tables.limit_at_iaqi_100(Pollutant::Pm25);
        let rejects = s.rejects_by_topic(t0, t1).unwrap();
        let mut rejected: BTreeMap<Option<&str>, i64> = BTreeMap::new();
        for (topic, n) in &rejects {
            *rejected.entry(site_of(&cfg.filters, topic)).or_default() += n;
        }
        let mut sites: Vec<Value> = days
            .iter()
            .map(|(_, site, sd)| {
                let v = site_value(d, Some(sd), tables);
                let over: Vec<String> = hours
                    .iter()
                    .filter(|h| h.site == *site)
                    .filter(|h| over_alert(cfg, h, alert))
                    .map(|h| h.hour.to_string())
                    .collect();
                json!({
                    "site": site,
                    "pm10": v.pm10_ug,
                    "pm25": v.pm25_ug,
                    "aqi": v.aqi.as_ref().map(|a| a.value),
                    "category": v.aqi.as_ref().map(|a| a.category.en()),
                    "category_zh": v.aqi.as_ref().map(|a| a.category.zh()),
                    "color": v.aqi.as_ref().map(|a| {
                        let (r, g, b) = a.category.rgb();
                        format!("#{r:02x}{g:02x}{b:02x}")
                    }),
                    "pm10_exceeds_daily_limit": v.pm10_ug.is_some_and(|c| c > limit_pm10),
                    "pm25_exceeds_daily_limit": v.pm25_ug.is_some_and(|c| c > limit_pm25),
                    "hours_over_pm10_alert": over,
                    "rejected": rejected.get(&Some(site.as_str())).copied().unwrap_or(0),
                })
            })
            .collect();
        sites.sort_by(|a, b| {
            b["pm10"]
                .as_u64()
                .unwrap_or(0)
                .cmp(&a["pm10"].as_u64().unwrap_or(0))
        });
        let reporting: BTreeSet<&str> = hours.iter().map(|h| h.site.as_str()).collect();
        let offline: Vec<String> = s
            .sites()
            .unwrap()
            .into_iter()
            .filter(|x| !reporting.contains(x.as_str()))
            .collect();
        let mut by_site: Vec<(Option<&str>, i64)> = rejected.into_iter().collect();
        by_site.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        json!({
            "date": d.to_string(),
            "district": r.days.first().map(day_json),
            "sites": sites,
            "offline": offline,
            "rejects_by_site": by_site.into_iter().map(|(site, n)| json!({"site": site, "count": n})).collect::<Vec<_>>(),
            "rejects": rejects.iter().map(|(topic, n)| json!({"topic": topic, "count": n})).collect::<Vec<_>>(),
            "limits": {"pm10_daily": limit_pm10, "pm25_daily": limit_pm25, "pm10_hourly_alert": alert},
            "tables": tables.name(),
        })
    }

    /// The bulletin's CSV rows as they were built before (`routes::bulletin_rows`).
    fn reference_bulletin_rows(b: &Value) -> Vec<Value> {
        let date = &b["date"];
        let mut rows: Vec<Value> = b["sites"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let mut r = s.clone();
                r["date"] = date.clone();
                r["status"] = json!("reporting");
                r["hours_over_pm10_alert"] =
                    json!(s["hours_over_pm10_alert"].as_array().map_or(0, Vec::len));
                r
            })
            .collect();
        for site in b["offline"].as_array().into_iter().flatten() {
            rows.push(json!({"date": date, "site": site, "status": "offline"}));
        }
        rows
    }
}
