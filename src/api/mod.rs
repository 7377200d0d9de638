//! The read-only HTTP API for analysts and the dashboard (axum): the stored series, the
//! district's daily values, the target reports, the daily supervision bulletin, and the
//! service's own health and metrics. One file per route group; [`error`] is the one
//! error type every route answers with.

pub mod error;
mod fleet;
mod health;
mod memo;
mod openapi;
mod routes;

pub use memo::DEFAULT_MAX_STALENESS_MS;
pub use openapi::PATHS;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::aqi::target::TargetConfig;
use crate::aqi::AqiConfig;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::sites::Registry;
use crate::source::topic::SiteFilter;
use crate::store::Store;
use error::ApiError;

/// The `[api]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the API and dashboard.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// When this environment variable is set, every route but `/healthz` needs
    /// `Authorization: Bearer <its value>`.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// A site with no reading for this long is offline.
    #[serde(default = "default_offline_after_secs")]
    pub offline_after_secs: u64,
    /// Hourly PM10 above this (µg/m³) is an alert in the bulletin.
    #[serde(default = "default_alert_pm10")]
    pub hourly_alert_pm10_ug: f64,
    /// Longest period a daily query may ask for.
    #[serde(default = "default_max_range_days")]
    pub max_range_days: i64,
    /// Longest period a raw or hourly series query may ask for.
    #[serde(default = "default_max_raw_days")]
    pub max_raw_days: i64,
    /// Per-request time limit.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// A target report may be served from another request's computation that started
    /// at most this long before the request arrived (ms): concurrent requests share one
    /// computation, and its answer serves for this long. 0: every request computes.
    #[serde(default = "default_report_max_staleness_ms")]
    pub report_max_staleness_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_token_env() -> String {
    "AQ_API_TOKEN".into()
}
fn default_offline_after_secs() -> u64 {
    3600
}
fn default_alert_pm10() -> f64 {
    // Twice the GB 3095 Grade II 24-hour limit, as an hourly alarm level.
    300.0
}
fn default_max_range_days() -> i64 {
    400
}
fn default_max_raw_days() -> i64 {
    7
}
fn default_request_timeout_secs() -> u64 {
    10
}
fn default_report_max_staleness_ms() -> u64 {
    DEFAULT_MAX_STALENESS_MS
}

impl Default for ApiConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// What the API is told at start, resolved once by [`crate::plan`]: its own section,
/// the AQI rules with the district exclusions settled, the targets, the reading topic
/// filters (the bulletin counts rejects per site) and the bearer token.
#[derive(Debug, Clone)]
pub struct ApiContext {
    pub api: ApiConfig,
    pub aqi: AqiConfig,
    /// The configured `[[target]]`s.
    pub target: Vec<TargetConfig>,
    pub filters: Vec<SiteFilter>,
    /// The bearer token every route but `/healthz` needs, when one is set.
    pub token: Option<String>,
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    /// The API's own read connections.
    stores: Arc<Pool>,
    cfg: ApiContext,
    /// The site registry (names, locations, district membership).
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Target reports computed lately, shared by concurrent and closely following
    /// requests within `api.report_max_staleness_ms`.
    reports: Arc<memo::Memo<routes::ReportKey, bytes::Bytes>>,
}

/// Read connections shared by the requests: each query takes one on a blocking thread.
/// One connection behind a lock made the API one request at a time (eight concurrent
/// analysts: eight times the latency, the same throughput); SQLite's WAL mode lets
/// several readers run beside the writer, and PostgreSQL serves each connection on its
/// own. Requests wait for a free connection asynchronously, within their time limit,
/// so a burst of slow requests queues as cheap tasks, not as blocked threads.
struct Pool {
    /// The idle connections; as many as `permits` has permits.
    idle: std::sync::Mutex<Vec<Store>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// A connection taken from the [`Pool`]; it goes back when the lease is dropped (after
/// the query, even one whose request has timed out and gone).
struct Lease {
    store: Option<Store>,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.store.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(s);
        }
        // The permit is released after this body, with the connection already back.
    }
}

impl Pool {
    fn new(stores: Vec<Store>) -> Pool {
        Pool {
            permits: Arc::new(tokio::sync::Semaphore::new(stores.len())),
            idle: std::sync::Mutex::new(stores),
        }
    }

    async fn lease(self: &Arc<Pool>) -> Lease {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let store = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .expect("a permit stands for an idle connection");
        Lease {
            store: Some(store),
            pool: Arc::clone(self),
            _permit: permit,
        }
    }
}

/// How many read connections the API opens: one per core (queries are CPU-bound reads;
/// more would only share the cores), at least 2 so that a slow report does not hold
/// up a quick request, at most 8 (each SQLite connection keeps its own page cache).
pub fn read_connections() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, 8)
}

impl ApiState {
    /// Runs `f` on a store connection on a blocking thread, within the request time
    /// limit.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store, &ApiContext) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let limit = Duration::from_secs(self.inner.cfg.api.request_timeout_secs.max(1));
        let deadline = tokio::time::Instant::now() + limit;
        let timeout = || ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: "the query took too long".into(),
            parameter: None,
        };
        let Ok(mut lease) = tokio::time::timeout_at(deadline, self.inner.stores.lease()).await
        else {
            return Err(timeout());
        };
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || {
            let store = lease.store.as_mut().expect("a lease holds its connection");
            f(store, &inner.cfg)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ApiError::internal(e)),
            Err(_) => Err(timeout()),
        }
    }
}

/// Builds the router over `stores`, the API's read connections (at least one; see
/// [`read_connections`]).
pub fn router(
    cfg: ApiContext,
    registry: Arc<Registry>,
    stores: Vec<Store>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
) -> Router {
    assert!(!stores.is_empty(), "the API needs a store connection");
    let reports = Arc::new(memo::Memo::new(cfg.api.report_max_staleness_ms));
    let state = ApiState {
        inner: Arc::new(Inner {
            stores: Arc::new(Pool::new(stores)),
            reports,
            cfg,
            registry,
            metrics,
            clock,
        }),
    };
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/sites", get(routes::sites))
        .route("/api/v1/sites/:id/series", get(routes::series))
        .route("/api/v1/district/daily", get(routes::district_daily))
        .route("/api/v1/targets", get(routes::targets))
        .route("/api/v1/targets/:name", get(routes::target))
        .route("/api/v1/bulletin/:date", get(routes::bulletin))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(health::healthz))
        .merge(protected)
        .with_state(state)
}

/// Bearer-token check (constant-time compare) when a token is configured. The
/// dashboard's page also takes it as `/?token=…`: a browser opening a link sends no
/// header; the page then sends it as a header on every API request.
async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(want) = &st.inner.cfg.token {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = || {
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(
                req.uri(),
            )
            .ok()
            .and_then(|q| q.0.get("token").cloned())
        };
        let got = match header {
            Some(h) => h.to_owned(),
            None if req.uri().path() == "/" => query().unwrap_or_default(),
            None => String::new(),
        };
        if !crate::credentials::same(got.as_bytes(), want.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// The dashboard, shipped inside the binary (no CDN, nothing fetched but the API).
async fn dashboard() -> Html<&'static str> {
    Html(page())
}

/// The dashboard's parts, in the order the page loads them: its stylesheet and its
/// scripts (plain JavaScript, no build step), put into `dashboard/index.html` once.
const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPTS: [&str; 5] = [
    include_str!("dashboard/core.js"),
    include_str!("dashboard/calendar.js"),
    include_str!("dashboard/charts.js"),
    include_str!("dashboard/day.js"),
    include_str!("dashboard/main.js"),
];

/// The page as served: one HTML document with everything inline.
fn page() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| {
        include_str!("dashboard/index.html")
            .replacen("/*STYLE*/", STYLE, 1)
            .replacen("/*SCRIPT*/", &SCRIPTS.join("\n"), 1)
    })
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn the_dashboard_is_one_page_with_nothing_fetched_from_elsewhere() {
        let p = page();
        assert!(!p.contains("/*STYLE*/") && !p.contains("/*SCRIPT*/"));
        for part in super::SCRIPTS.iter().chain([&super::STYLE]) {
            assert!(p.contains(part.trim()), "a part is missing from the page");
        }
        // The only absolute URL is the SVG namespace: no CDN, no font or tile server.
        let urls: Vec<&str> = p
            .match_indices("http")
            .map(|(i, _)| &p[i..(i + 30).min(p.len())])
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .filter(|u| !u.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(urls.is_empty(), "{urls:?}");
        assert!(!p.contains("<script src") && !p.contains("<link rel=\"stylesheet\""));
    }
}
