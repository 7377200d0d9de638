//! Liveness, readiness and Prometheus metrics.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::ApiState;
use crate::metrics::{Metrics, WriteErrorClass};
use crate::reject::RejectReason;

/// Alive: the process answers.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the store is writable, the broker connected, the sink not failing; else 503
/// with the reasons.
pub(super) async fn readyz(State(st): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let writable = st.with_store(|s, _| Ok(s.check_writable().is_ok())).await?;
    let m = &st.inner.metrics;
    let mut reasons = Vec::new();
    if !writable {
        reasons.push("the store is not writable");
    }
    if !m.mqtt_connected.load(Ordering::Relaxed) {
        reasons.push("not connected to the MQTT broker");
    }
    if m.sink_failing.load(Ordering::Relaxed) {
        reasons.push("InfluxDB writes are failing (readings are kept in the outbox)");
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(json!({"ready": reasons.is_empty(), "reasons": reasons})),
    ))
}

/// Prometheus text exposition of every pipeline counter and gauge.
pub(super) async fn metrics(State(st): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let store_bytes = st
        .with_store(|s, _| s.size_bytes().map_err(ApiError::internal))
        .await?;
    let m = &st.inner.metrics;
    let g = Metrics::get;
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    one(
        "aq_messages_received_total",
        "counter",
        "MQTT messages received.",
        g(&m.messages_received),
    );
    one(
        "aq_messages_acked_total",
        "counter",
        "MQTT messages acknowledged after their commit.",
        g(&m.messages_acked),
    );
    one(
        "aq_readings_received_total",
        "counter",
        "Readings decoded from messages.",
        g(&m.readings_received),
    );
    one(
        "aq_readings_stored_total",
        "counter",
        "Readings newly stored.",
        g(&m.readings_stored),
    );
    one(
        "aq_readings_duplicate_total",
        "counter",
        "Readings already stored (redeliveries).",
        g(&m.readings_duplicate),
    );
    one(
        "aq_store_commits_total",
        "counter",
        "Store transactions.",
        g(&m.store_commits),
    );
    one(
        "aq_lines_written_total",
        "counter",
        "Lines written to InfluxDB.",
        g(&m.lines_written),
    );
    one(
        "aq_lines_dead_lettered_total",
        "counter",
        "Lines InfluxDB refused one by one.",
        g(&m.lines_dead_lettered),
    );
    one(
        "aq_outbox_depth",
        "gauge",
        "Readings and derived lines waiting for InfluxDB.",
        g(&m.outbox_depth),
    );
    one(
        "aq_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest waiting reading.",
        g(&m.outbox_oldest_age_secs),
    );
    one(
        "aq_store_size_bytes",
        "gauge",
        "Size of the SQLite store.",
        store_bytes,
    );
    one(
        "aq_mqtt_connected",
        "gauge",
        "1 when connected to the MQTT broker.",
        u64::from(m.mqtt_connected.load(Ordering::Relaxed)),
    );
    one(
        "aq_mqtt_connects_total",
        "counter",
        "MQTT (re)connections.",
        g(&m.mqtt_connects),
    );
    one(
        "aq_sink_failing",
        "gauge",
        "1 when the last InfluxDB attempt failed.",
        u64::from(m.sink_failing.load(Ordering::Relaxed)),
    );
    let _ = writeln!(out, "# HELP aq_rejected_total Readings and messages refused, by reason.\n# TYPE aq_rejected_total counter");
    for r in RejectReason::ALL {
        let _ = writeln!(
            out,
            "aq_rejected_total{{reason=\"{}\"}} {}",
            r.as_str(),
            m.rejected(r)
        );
    }
    let _ = writeln!(out, "# HELP aq_write_errors_total InfluxDB write failures, by class.\n# TYPE aq_write_errors_total counter");
    for c in WriteErrorClass::ALL {
        let _ = writeln!(
            out,
            "aq_write_errors_total{{class=\"{}\"}} {}",
            c.as_str(),
            m.write_errors(c)
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}
