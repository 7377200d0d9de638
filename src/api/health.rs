//! Liveness, readiness and Prometheus metrics.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::ApiState;

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
    if !(m.mqtt_connected.load(Ordering::Relaxed) || m.nats_connected.load(Ordering::Relaxed)) {
        reasons.push("not connected to the broker (MQTT or NATS)");
    }
    if m.nats_connected.load(Ordering::Relaxed) && !m.nats_consumer_ready.load(Ordering::Relaxed) {
        reasons
            .push("the NATS durable consumer is not ready (devices' messages are not being read)");
    }
    if m.sink_failing.load(Ordering::Relaxed) {
        reasons.push("InfluxDB writes are failing (readings are kept in the outbox)");
    }
    if m.devices_waiting.load(Ordering::Relaxed) > 0 {
        reasons.push("devices are held back: the store is not committing fast enough (nothing is dropped; see aq_device_pending_bytes)");
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

/// Prometheus text exposition of every pipeline counter and gauge (the set is defined
/// once, in `metrics`); the store size is read here, at scrape time — and left out
/// when the store does not answer (a database outage is when the counters matter).
pub(super) async fn metrics(State(st): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let store_bytes = st.with_store(|s, _| Ok(s.size_bytes().ok())).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.inner.metrics.exposition(store_bytes),
    ))
}
