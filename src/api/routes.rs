//! The analyst routes: sites, series, district daily values, targets, bulletin. JSON by
//! default; CSV with `?format=csv` or `Accept: text/csv` where a table is natural.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Duration, NaiveDate};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::fleet;
use super::memo::Served;
use super::ApiState;
use crate::aqi::index::TableSet;
use crate::metrics::Metrics;
use crate::model::SiteId;
use crate::report::{self, build, day_json, Spec, DAY_API_CSV_COLUMNS};

/// Common query parameters.
#[derive(Debug, Deserialize, Default)]
pub(super) struct Q {
    from: Option<String>,
    to: Option<String>,
    as_of: Option<String>,
    resolution: Option<String>,
    format: Option<String>,
    /// Two table sets to compare, "HJ 633-2012,HJ 633-2026".
    tables: Option<String>,
}

fn date(param: &'static str, v: &Option<String>) -> Result<Option<NaiveDate>, ApiError> {
    v.as_deref()
        .map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| ApiError::bad(param, format!("{param} {s:?}: use YYYY-MM-DD")))
        })
        .transpose()
}

fn range(q: &Q, max_days: i64) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let from = date("from", &q.from)?.ok_or_else(|| ApiError::bad("from", "from is required"))?;
    let to = date("to", &q.to)?.ok_or_else(|| ApiError::bad("to", "to is required"))?;
    if to < from {
        return Err(ApiError::bad("to", "to is before from"));
    }
    if (to - from).num_days() + 1 > max_days {
        return Err(ApiError::range(
            "to",
            format!("at most {max_days} days per request"),
        ));
    }
    Ok((from, to))
}

fn wants_csv(q: &Q, headers: &HeaderMap) -> bool {
    q.format.as_deref() == Some("csv")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))
}

/// A JSON array of flat objects, or the same as CSV (columns in `cols` order).
fn table(rows: Vec<Value>, cols: &[&str], csv: bool) -> Response {
    if !csv {
        return Json(Value::Array(rows)).into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        report::csv(&rows, cols),
    )
        .into_response()
}

fn site_param(id: &str) -> Result<SiteId, ApiError> {
    SiteId::parse(id).map_err(|e| ApiError::bad("id", format!("site id: {}", e.as_str())))
}

/// `GET /api/v1/sites`: every site seen, its last reading and whether it is online.
pub(super) async fn sites(
    State(st): State<ApiState>,
    Query(q): Query<Q>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = st.inner.clock.now();
    let registry = std::sync::Arc::clone(&st.inner.registry);
    let csv = wants_csv(&q, &headers);
    st.with_store(move |s, cfg| fleet::sites(s, cfg, &registry, now, csv))
        .await
}

/// `GET /api/v1/sites/{id}/series?from=&to=&resolution=raw|hour|day`.
pub(super) async fn series(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<Q>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let site = site_param(&id)?;
    let resolution = q.resolution.clone().unwrap_or_else(|| "hour".into());
    let max = match resolution.as_str() {
        "raw" | "hour" => st.inner.cfg.api.max_raw_days,
        "day" => st.inner.cfg.api.max_range_days,
        _ => return Err(ApiError::bad("resolution", "use raw, hour or day")),
    };
    let (from, to) = range(&q, max)?;
    let csv = wants_csv(&q, &headers);
    let res = resolution.clone();
    let rows = st
        .with_store(move |s, cfg| {
            if !s.has_site(site.as_str()).map_err(ApiError::internal)? {
                return Err(ApiError::not_found(
                    "id",
                    format!("no readings for site {site}"),
                ));
            }
            let zone = cfg.aqi.zone();
            let (t0, t1) = (zone.start_of(from), zone.start_of(to + Duration::days(1)));
            let rows: Vec<Value> = match res.as_str() {
                "raw" => s
                    .raw_series(site.as_str(), t0, t1)
                    .map_err(ApiError::internal)?
                    .into_iter()
                    .map(|r| {
                        json!({
                            "time": r.ts.to_string(),
                            "period": r.period.as_str(),
                            "flag": r.flag.code(),
                            "valid": r.flag.is_normal(),
                            "pm25": r.pm25.map(|v| v.value()),
                            "pm10": r.pm10.map(|v| v.value()),
                        })
                    })
                    .collect(),
                "hour" => s
                    .hours(t0, t1, Some(site.as_str()))
                    .map_err(ApiError::internal)?
                    .into_iter()
                    .map(|h| {
                        let i = cfg.aqi.default_interval_secs;
                        let m25 = h.pm25.valid_mean(i);
                        let m10 = h.pm10.valid_mean(i);
                        json!({
                            "time": h.hour.to_string(),
                            "pm25": m25.map(|m| m.as_ug()),
                            "pm10": m10.map(|m| m.as_ug()),
                            "pm25_valid": m25.is_some(),
                            "pm10_valid": m10.is_some(),
                            "pm25_samples": h.pm25.n,
                            "pm10_samples": h.pm10.n,
                        })
                    })
                    .collect(),
                // A site's days are the report's, one per date.
                _ => {
                    let site = Some(site.to_string());
                    let spec = Spec {
                        from,
                        to,
                        as_of: to,
                        site,
                        target: None,
                    };
                    let r = build(s, &cfg.aqi, spec).map_err(ApiError::internal)?;
                    r.days.iter().map(day_json).collect()
                }
            };
            Ok(rows)
        })
        .await?;
    Ok(table(rows, series_columns(&resolution), csv))
}

/// The CSV columns of a series at `resolution` (`raw`, `hour`, else `day`).
fn series_columns(resolution: &str) -> &'static [&'static str] {
    match resolution {
        "raw" => &["time", "period", "flag", "valid", "pm25", "pm10"],
        "hour" => &[
            "time",
            "pm25",
            "pm10",
            "pm25_valid",
            "pm10_valid",
            "pm25_samples",
            "pm10_samples",
        ],
        _ => DAY_API_CSV_COLUMNS,
    }
}

/// `GET /api/v1/district/daily?from=&to=`.
pub(super) async fn district_daily(
    State(st): State<ApiState>,
    Query(q): Query<Q>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (from, to) = range(&q, st.inner.cfg.api.max_range_days)?;
    let rows = st
        .with_store(move |s, cfg| {
            let r = build(
                s,
                &cfg.aqi,
                Spec {
                    from,
                    to,
                    as_of: to,
                    site: None,
                    target: None,
                },
            )
            .map_err(ApiError::internal)?;
            Ok(r.days.iter().map(day_json).collect::<Vec<_>>())
        })
        .await?;
    Ok(table(rows, DAY_API_CSV_COLUMNS, wants_csv(&q, &headers)))
}

/// `GET /api/v1/targets`.
pub(super) async fn targets(State(st): State<ApiState>) -> Json<Value> {
    Json(Value::Array(
        st.inner
            .cfg
            .target
            .iter()
            .map(|t| json!({"name": t.name, "from": t.from.to_string(), "to": t.to.to_string(), "good_days": t.good_days, "comparison": t.comparison, "required": t.required(), "days": t.days()}))
            .collect(),
    ))
}

/// What tells target reports apart in the memo ([`super::memo`]): the target (its
/// config is fixed for the service's life), the day it is as of, and the two table
/// sets compared, if any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ReportKey {
    target: String,
    as_of: NaiveDate,
    tables: Option<(TableSet, TableSet)>,
}

/// `GET /api/v1/targets/{name}?as_of=`: the target report, as computed by this request
/// or by another within `api.report_max_staleness_ms` (see [`super::memo`]).
pub(super) async fn target(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<Q>,
) -> Result<Response, ApiError> {
    let t = st
        .inner
        .cfg
        .target
        .iter()
        .find(|t| t.name == name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("name", format!("no target named {name:?}")))?;
    let now = st.inner.clock.now();
    let zone = st.inner.cfg.aqi.zone();
    let as_of = date("as_of", &q.as_of)?.unwrap_or_else(|| zone.date_of(now));
    let pair = q
        .tables
        .as_deref()
        .map(TableSet::pair)
        .transpose()
        .map_err(|e| ApiError::bad("tables", e))?;
    let key = ReportKey {
        target: name,
        as_of,
        tables: pair,
    };
    let computing = st.clone();
    let (body, served) = st
        .inner
        .reports
        .get(key, now, move || async move {
            computing
                .with_store(move |s, cfg| {
                    let v = target_json(s, cfg, &t, as_of, pair)?;
                    // Serialized once here, off the async workers: every request it
                    // serves gets the same bytes.
                    serde_json::to_vec(&v)
                        .map(bytes::Bytes::from)
                        .map_err(ApiError::internal)
                })
                .await
        })
        .await;
    let m = &st.inner.metrics;
    if served != Served::Shared {
        Metrics::add(&m.api_report_computations, 1);
    }
    if served != Served::Computed {
        Metrics::add(&m.api_report_shared, 1);
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body?).into_response())
}

/// Target `t`'s report as of `as_of` as JSON, computed from the store: under its own
/// tables, or day by day under both sets of `pair`.
fn target_json(
    s: &crate::store::Store,
    cfg: &super::ApiContext,
    t: &crate::aqi::target::TargetConfig,
    as_of: NaiveDate,
    pair: Option<(TableSet, TableSet)>,
) -> Result<Value, ApiError> {
    let under = |tables: Option<TableSet>| {
        let mut t = t.clone();
        t.tables = tables.or(t.tables);
        let spec = Spec {
            from: t.from,
            to: t.to,
            as_of,
            site: None,
            target: Some(t),
        };
        build(s, &cfg.aqi, spec).map_err(ApiError::internal)
    };
    match pair {
        // The same period under both sets, day by day.
        Some((a, b)) => Ok(crate::report::Compared {
            a: under(Some(a))?,
            b: under(Some(b))?,
        }
        .to_json()),
        // The calendar's colours are in every day already.
        None => Ok(under(None)?.to_json()),
    }
}

/// `GET /api/v1/bulletin/{date}?format=csv`: 每天通报督察情况 — the district's day,
/// sites ranked by PM10 with their exceedances, sites offline, rejected readings (see
/// [`fleet::bulletin`]).
pub(super) async fn bulletin(
    State(st): State<ApiState>,
    Path(day): Path<String>,
    Query(q): Query<Q>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let d = date("date", &Some(day))?.expect("given");
    let csv = wants_csv(&q, &headers);
    st.with_store(move |s, cfg| fleet::bulletin(s, cfg, d, csv))
        .await
}
