//! The OpenAPI document of the routes (hand-written, checked against the router by the
//! API tests: every path here answers, and every route is here).

use axum::Json;
use serde_json::{json, Value};

/// Every documented path, in OpenAPI form.
pub const PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/sites",
    "/api/v1/sites/{id}/series",
    "/api/v1/district/daily",
    "/api/v1/targets",
    "/api/v1/targets/{name}",
    "/api/v1/bulletin/{date}",
];

fn p(name: &str, location: &str, required: bool, desc: &str) -> Value {
    json!({"name": name, "in": location, "required": required, "description": desc, "schema": {"type": "string"}})
}

fn ok(desc: &str, csv: bool) -> Value {
    let mut content = json!({"application/json": {"schema": {"type": "object"}}});
    if csv {
        content["text/csv"] = json!({"schema": {"type": "string"}});
    }
    json!({
        "200": {"description": desc, "content": content},
        "400": {"description": "bad parameter: {error: {code, message, parameter}}"},
        "401": {"description": "a bearer token is required"},
    })
}

/// `GET /api/v1/openapi.json`.
pub(super) async fn document() -> Json<Value> {
    let from = p("from", "query", true, "first local date, YYYY-MM-DD");
    let to = p("to", "query", true, "last local date, YYYY-MM-DD");
    let fmt = p(
        "format",
        "query",
        false,
        "csv for CSV (or Accept: text/csv)",
    );
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "aq-ingest", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Read-only API: stored PM series, GB 3095 / HJ 633 daily values, good-day targets, the daily supervision bulletin."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "alive", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "ready: store writable, broker connected, sink not failing", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, with reasons"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
            "/api/v1/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3"}}}},
            "/api/v1/sites": {"get": {"summary": "sites, last reading, online/offline", "parameters": [fmt], "responses": ok("sites", true)}},
            "/api/v1/sites/{id}/series": {"get": {"summary": "a site's series", "parameters": [
                p("id", "path", true, "site id"), from, to,
                p("resolution", "query", false, "raw | hour (default) | day"), fmt],
                "responses": ok("the series with validity flags", true)}},
            "/api/v1/district/daily": {"get": {"summary": "district daily values", "parameters": [from, to, fmt], "responses": ok("days", true)}},
            "/api/v1/targets": {"get": {"summary": "configured targets", "responses": ok("targets", false)}},
            "/api/v1/targets/{name}": {"get": {"summary": "target report", "parameters": [
                p("name", "path", true, "target name"), p("as_of", "query", false, "YYYY-MM-DD, default today"),
                p("tables", "query", false, "two table sets, \"HJ 633-2012,HJ 633-2026\": the days under both, changed days marked, both counts")],
                "responses": ok("progress and days", false)}},
            "/api/v1/bulletin/{date}": {"get": {"summary": "the day's supervision bulletin (classes, exceedances and limits under the index tables of the date: aqi.tables, in force on it by default; `tables` names them)", "parameters": [p("date", "path", true, "YYYY-MM-DD, any local date"), fmt],
                "responses": ok("district AQI, sites ranked by PM10 with category, colour, exceedances and rejected counts, offline sites, messages rejected that day per site and per topic; as CSV the site table (reporting sites, then offline ones)", true)}},
        }
    }))
}
