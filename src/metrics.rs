//! Pipeline counters, kept from the start and shared by every stage through an
//! `Arc<Metrics>`. Plain atomics: a reading costs a few relaxed increments, never a lock.
//! Logged periodically by `app`; exported over HTTP by the API.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::reject::RejectReason;

/// Classes of sink write failures, counted separately because each needs a different
/// operator response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorClass {
    /// 400/422: the server refused lines (bisected; refused lines dead-lettered).
    Rejected,
    /// 401/403: credentials.
    Auth,
    /// 404: org, bucket or database missing.
    NotFound,
    /// 413: batch too large (split).
    TooLarge,
    /// 429/503: server asked to slow down.
    Throttled,
    /// Other 5xx.
    Server,
    /// Connection refused, reset, DNS.
    Network,
    /// Request took longer than the timeout.
    Timeout,
}

impl WriteErrorClass {
    pub const ALL: [WriteErrorClass; 8] = [
        Self::Rejected,
        Self::Auth,
        Self::NotFound,
        Self::TooLarge,
        Self::Throttled,
        Self::Server,
        Self::Network,
        Self::Timeout,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::TooLarge => "too_large",
            Self::Throttled => "throttled",
            Self::Server => "server",
            Self::Network => "network",
            Self::Timeout => "timeout",
        }
    }
    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// Every pipeline counter. Monotonic counters unless marked as a gauge.
#[derive(Debug, Default)]
pub struct Metrics {
    /// MQTT messages received.
    pub messages_received: AtomicU64,
    /// MQTT messages acknowledged to the broker (after their commit).
    pub messages_acked: AtomicU64,
    /// Readings decoded from messages (valid or not).
    pub readings_received: AtomicU64,
    /// Readings and messages refused, by reason.
    rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Readings newly committed to the store.
    pub readings_stored: AtomicU64,
    /// Readings that were already stored (redeliveries, re-uploads).
    pub readings_duplicate: AtomicU64,
    /// Store transactions committed.
    pub store_commits: AtomicU64,
    /// Lines the sink wrote successfully.
    pub lines_written: AtomicU64,
    /// Lines the sink dead-lettered (refused by the server one by one).
    pub lines_dead_lettered: AtomicU64,
    /// Sink failures, by class.
    write_errors: [AtomicU64; WriteErrorClass::ALL.len()],
    /// Gauge: outbox rows waiting for the sink.
    pub outbox_depth: AtomicU64,
    /// Gauge: age of the oldest outbox row, in seconds.
    pub outbox_oldest_age_secs: AtomicU64,
    /// Gauge: whether the MQTT connection is up.
    pub mqtt_connected: AtomicBool,
    /// Gauge: whether the broker has confirmed our subscriptions on this connection.
    pub mqtt_subscribed: AtomicBool,
    /// MQTT (re)connections made.
    pub mqtt_connects: AtomicU64,
    /// Alert and clear messages published.
    pub alerts_published: AtomicU64,
    /// Alert messages that could not be queued (the MQTT client was full or gone).
    pub alerts_failed: AtomicU64,
    /// Gauge: whether the sink's last attempt failed.
    pub sink_failing: AtomicBool,
}

impl Metrics {
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
    pub fn write_error(&self, class: WriteErrorClass) {
        self.write_errors[class.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn write_errors(&self, class: WriteErrorClass) -> u64 {
        self.write_errors[class.index()].load(Ordering::Relaxed)
    }
    /// Reads a counter (shorthand for tests and logs).
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Non-zero reject counts, for logs.
    pub fn rejected_by_reason(&self) -> Vec<(RejectReason, u64)> {
        RejectReason::ALL
            .iter()
            .map(|r| (*r, self.rejected(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Non-zero write error counts, for logs.
    pub fn write_errors_by_class(&self) -> Vec<(WriteErrorClass, u64)> {
        WriteErrorClass::ALL
            .iter()
            .map(|c| (*c, self.write_errors(*c)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
