//! Pipeline counters and gauges, kept from the start and shared by every stage through
//! an `Arc<Metrics>`. Plain atomics: a reading costs a few relaxed increments, never a
//! lock.
//!
//! The metric set is defined once, in the `metric_set!` table below: each row names a
//! field, its kind, its Prometheus name and its help text. The same rows generate the
//! [`Metrics`] struct, the [`METRICS`] table the `/metrics` exposition is rendered from
//! ([`Metrics::exposition`]) and the periodic log line ([`Metrics::log_counters`]), so a
//! counter cannot be counted without being logged and exported. The two labelled
//! families (rejects by reason, write errors by class) are described by [`FAMILIES`].

use std::fmt::{self, Write as _};
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

/// Whether a metric only goes up (a counter) or up and down (a gauge); the Prometheus
/// `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// One unlabelled metric: a row of the table.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The field of [`Metrics`] and of the periodic log line.
    pub field: &'static str,
    /// The name in the Prometheus exposition.
    pub name: &'static str,
    pub kind: MetricKind,
    /// One sentence for operators; the `# HELP` text and the field's doc.
    pub help: &'static str,
    /// How the value is read (flags read as 0/1).
    pub read: fn(&Metrics) -> u64,
}

/// A counter family with one label, one series per label value (every value is
/// exported, zeros included, so that a rate over it never starts from nothing).
#[derive(Debug, Clone, Copy)]
pub struct FamilyDef {
    /// The periodic log line's field for the family's total; `<field>_by_<label>`
    /// carries the non-zero series.
    pub field: &'static str,
    /// The name in the Prometheus exposition.
    pub name: &'static str,
    /// The label that tells the series apart.
    pub label: &'static str,
    pub help: &'static str,
    /// Every series: (label value, count), in a fixed order.
    pub read: fn(&Metrics) -> Vec<(&'static str, u64)>,
}

/// The labelled families, exported after the unlabelled metrics.
pub const FAMILIES: [FamilyDef; 2] = [
    FamilyDef {
        field: "rejected",
        name: "aq_rejected_total",
        label: "reason",
        help: "Readings and messages refused, by reason.",
        read: |m| {
            RejectReason::ALL
                .iter()
                .map(|r| (r.as_str(), m.rejected(*r)))
                .collect()
        },
    },
    FamilyDef {
        field: "write_errors",
        name: "aq_write_errors_total",
        label: "class",
        help: "InfluxDB write failures, by class.",
        read: |m| {
            WriteErrorClass::ALL
                .iter()
                .map(|c| (c.as_str(), m.write_errors(*c)))
                .collect()
        },
    },
];

/// A gauge `/metrics` reads from the store at scrape time rather than from an atomic;
/// it is not in the periodic log line, which has no store at hand.
pub const STORE_SIZE_BYTES: (&str, &str) = (
    "aq_store_size_bytes",
    "Size of the store (the SQLite file and its WAL, or the PostgreSQL database).",
);

/// How a field of the table is read: as a number for the exposition, and as its own type
/// (a count or a flag) for the log line.
trait Load {
    type Logged: tracing::Value;
    fn as_u64(&self) -> u64;
    fn logged(&self) -> Self::Logged;
}

impl Load for AtomicU64 {
    type Logged = u64;
    fn as_u64(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
    fn logged(&self) -> u64 {
        self.as_u64()
    }
}

impl Load for AtomicBool {
    type Logged = bool;
    fn as_u64(&self) -> u64 {
        u64::from(self.load(Ordering::Relaxed))
    }
    fn logged(&self) -> bool {
        self.load(Ordering::Relaxed)
    }
}

/// Generates, from one list of rows, the [`Metrics`] struct, the [`METRICS`] table and
/// [`Metrics::log_counters`]. A row is
/// `field: AtomicU64 | AtomicBool, Counter | Gauge, "prometheus_name", "help";`.
/// A macro because `tracing` field names must be known at compile time: a table read at
/// run time could only log the counters as one opaque string.
/// A fixed family of counters (arrays of more than 32 have no `Default`).
#[derive(Debug)]
struct Counters<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> std::ops::Deref for Counters<N> {
    type Target = [AtomicU64; N];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

macro_rules! metric_set {
    ($( $field:ident: $ty:ty, $kind:ident, $name:literal, $help:literal; )*) => {
        /// Every pipeline counter and gauge (see the module doc for where the set is
        /// defined).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( #[doc = $help] pub $field: $ty, )*
            /// Readings and messages refused, by reason ([`FAMILIES`]).
            rejected: Counters<{ RejectReason::ALL.len() }>,
            /// Sink failures, by class ([`FAMILIES`]).
            write_errors: [AtomicU64; WriteErrorClass::ALL.len()],
        }

        /// The unlabelled metrics, in log and exposition order.
        pub const METRICS: &[MetricDef] = &[
            $( MetricDef {
                field: stringify!($field),
                name: $name,
                kind: MetricKind::$kind,
                help: $help,
                read: |m: &Metrics| Load::as_u64(&m.$field),
            }, )*
        ];

        impl Metrics {
            /// Logs every counter and gauge of the table in one INFO event (the
            /// families as their total plus the non-zero series).
            pub fn log_counters(&self) {
                tracing::info!(
                    $( $field = Load::logged(&self.$field), )*
                    rejected = self.rejected_total(),
                    rejected_by_reason = %NonZero(&FAMILIES[0], self),
                    write_errors = self.write_errors_total(),
                    write_errors_by_class = %NonZero(&FAMILIES[1], self),
                    "pipeline counters"
                );
            }
        }
    };
}

metric_set! {
    messages_received: AtomicU64, Counter, "aq_messages_received_total",
        "MQTT messages received.";
    messages_acked: AtomicU64, Counter, "aq_messages_acked_total",
        "MQTT messages acknowledged to the broker (after their commit).";
    readings_received: AtomicU64, Counter, "aq_readings_received_total",
        "Readings decoded from messages (valid or not).";
    readings_stored: AtomicU64, Counter, "aq_readings_stored_total",
        "Readings newly committed to the store.";
    readings_duplicate: AtomicU64, Counter, "aq_readings_duplicate_total",
        "Readings that were already stored (redeliveries, re-uploads).";
    store_commits: AtomicU64, Counter, "aq_store_commits_total",
        "Store transactions committed.";
    store_commit_failures: AtomicU64, Counter, "aq_store_commit_failures_total",
        "Store commits that failed and are retried (their messages stay unacknowledged).";
    lines_written: AtomicU64, Counter, "aq_lines_written_total",
        "Lines the sink wrote to InfluxDB.";
    lines_dead_lettered: AtomicU64, Counter, "aq_lines_dead_lettered_total",
        "Lines the sink dead-lettered (refused by InfluxDB one by one).";
    lines_superseded: AtomicU64, Counter, "aq_lines_superseded_total",
        "Derived lines not sent because a newer line for the same point went in the same request.";
    outbox_depth: AtomicU64, Gauge, "aq_outbox_depth",
        "Readings and derived lines waiting for InfluxDB.";
    outbox_oldest_age_secs: AtomicU64, Gauge, "aq_outbox_oldest_age_seconds",
        "Age of the oldest waiting reading, in seconds.";
    mqtt_connected: AtomicBool, Gauge, "aq_mqtt_connected",
        "1 when connected to the MQTT broker.";
    mqtt_subscribed: AtomicBool, Gauge, "aq_mqtt_subscribed",
        "1 when the broker has confirmed our subscriptions on this connection.";
    mqtt_connects: AtomicU64, Counter, "aq_mqtt_connects_total",
        "MQTT (re)connections made.";
    nats_connected: AtomicBool, Gauge, "aq_nats_connected",
        "1 when connected to a node of the NATS cluster ([nats] source).";
    nats_consumer_ready: AtomicBool, Gauge, "aq_nats_consumer_ready",
        "1 when the durable JetStream consumer exists and is being pulled from.";
    nats_connects: AtomicU64, Counter, "aq_nats_connects_total",
        "NATS (re)connections made.";
    nats_redeliveries: AtomicU64, Counter, "aq_nats_redeliveries_total",
        "JetStream messages delivered more than once (ack wait expired, or an instance died); stored once.";
    nats_in_flight: AtomicU64, Gauge, "aq_nats_in_flight",
        "JetStream messages fetched and not yet committed and acknowledged (capped by nats.max_in_flight).";
    alerts_published: AtomicU64, Counter, "aq_alerts_published_total",
        "Alert and clear messages published.";
    alerts_failed: AtomicU64, Counter, "aq_alerts_failed_total",
        "Alert messages that could not be queued (the MQTT client was full or gone).";
    sink_failing: AtomicBool, Gauge, "aq_sink_failing",
        "1 when the sink's last InfluxDB attempt failed.";
    device_connections: AtomicU64, Gauge, "aq_device_connections",
        "Devices connected to the embedded broker.";
    device_pending_bytes: AtomicU64, Gauge, "aq_device_pending_bytes",
        "Payload bytes taken from devices and not yet committed (capped by broker.max_pending_bytes).";
    devices_waiting: AtomicU64, Gauge, "aq_devices_waiting",
        "Device connections held back right now because the pending bytes are at their cap.";
    device_waits: AtomicU64, Counter, "aq_device_waits_total",
        "Times a device connection was held back for room (the store was not keeping up).";
    hj212_connections: AtomicU64, Gauge, "aq_hj212_connections",
        "HJ 212 devices connected to the TCP listener.";
    hj212_frames: AtomicU64, Counter, "aq_hj212_frames_total",
        "Whole HJ 212 frames received over TCP.";
    hj212_replies: AtomicU64, Counter, "aq_hj212_replies_total",
        "CN=9014 replies written (each after its frame was committed).";
    hj212_refused: AtomicU64, Counter, "aq_hj212_refused_total",
        "HJ 212 connections refused or closed (connection cap, idle, frame rate).";
    device_unauthorized: AtomicU64, Counter, "aq_device_unauthorized_total",
        "Publishes refused because the client may not write that site (never stored).";
    device_refused: AtomicU64, Counter, "aq_device_refused_total",
        "Device connections refused or closed for a protocol error, bad credentials or the connection cap.";
    api_report_computations: AtomicU64, Counter, "aq_api_report_computations_total",
        "Target reports the API computed from the store.";
    api_report_shared: AtomicU64, Counter, "aq_api_report_shared_total",
        "Target report requests answered by another request's computation (in flight, or within api.report_max_staleness_ms).";
}

/// A family's non-zero series as `label=count` pairs, for the log line.
struct NonZero<'a>(&'a FamilyDef, &'a Metrics);

impl fmt::Display for NonZero<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (label, n) in (self.0.read)(self.1) {
            if n > 0 {
                write!(f, "{sep}{label}={n}")?;
                sep = ",";
            }
        }
        Ok(())
    }
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
    pub fn write_errors_total(&self) -> u64 {
        self.write_errors
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
    /// Reads a counter (shorthand for tests and logs).
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric of the table, the
    /// families with every label value, and the store size read by the caller (absent
    /// when the store did not answer).
    pub fn exposition(&self, store_size_bytes: Option<u64>) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let head = |out: &mut String, name: &str, kind: MetricKind, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
        };
        for d in METRICS {
            head(&mut out, d.name, d.kind, d.help);
            let _ = writeln!(out, "{} {}", d.name, (d.read)(self));
        }
        if let Some(bytes) = store_size_bytes {
            let (name, help) = STORE_SIZE_BYTES;
            head(&mut out, name, MetricKind::Gauge, help);
            let _ = writeln!(out, "{name} {bytes}");
        }
        for f in &FAMILIES {
            head(&mut out, f.name, MetricKind::Counter, f.help);
            for (value, n) in (f.read)(self) {
                let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", f.name, f.label);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The fields of the periodic log line, as the JSON log format writes them.
    fn logged_fields(m: &Metrics) -> serde_json::Map<String, serde_json::Value> {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .json()
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, || m.log_counters());
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        line["fields"].as_object().unwrap().clone()
    }

    /// The struct's own field names, read from its `Debug` output so that a field added
    /// by hand beside the table is caught too.
    fn struct_fields(m: &Metrics) -> BTreeSet<String> {
        format!("{m:#?}")
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_once(':').map(|(f, _)| f.to_owned()))
            .collect()
    }

    #[test]
    fn every_metric_is_both_logged_and_exported() {
        let m = Metrics::default();
        Metrics::add(&m.alerts_published, 3);
        m.mqtt_subscribed.store(true, Ordering::Relaxed);
        m.reject(RejectReason::BadJson);
        m.write_error(WriteErrorClass::Timeout);

        let logged = logged_fields(&m);
        let text = m.exposition(Some(4096));
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let exported: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();

        let fields = struct_fields(&m);
        assert!(fields.len() >= METRICS.len() + FAMILIES.len(), "{fields:?}");
        let mut missing = Vec::new();
        for f in &fields {
            if !logged.contains_key(f) {
                missing.push(format!("{f}: not in the log line"));
            }
            let name = METRICS
                .iter()
                .map(|d| (d.field, d.name))
                .chain(FAMILIES.iter().map(|d| (d.field, d.name)))
                .find(|(field, _)| field == f)
                .map(|(_, name)| name);
            match name {
                Some(n) if exported.contains(n) => {}
                Some(n) => missing.push(format!("{f}: {n} not in /metrics")),
                None => missing.push(format!("{f}: not in the metric table")),
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");

        // Nothing logged or exported that the struct does not hold (the store size
        // aside, read by /metrics from the store).
        for k in logged.keys().filter(|k| *k != "message") {
            let base = FAMILIES
                .iter()
                .find(|f| k.starts_with(&format!("{}_by_", f.field)))
                .map_or(k.as_str(), |f| f.field);
            assert!(fields.contains(base), "{k} logged but not a metric");
        }
        let want: BTreeSet<&str> = METRICS
            .iter()
            .map(|d| d.name)
            .chain(FAMILIES.iter().map(|f| f.name))
            .chain([STORE_SIZE_BYTES.0])
            .collect();
        assert_eq!(exported, want);

        // A store that does not answer: everything but its size is still exported.
        let offline = m.exposition(None);
        assert!(!offline.contains(STORE_SIZE_BYTES.0), "{offline}");
        assert!(
            offline.contains("\naq_alerts_published_total 3\n"),
            "{offline}"
        );

        // The values agree between the two.
        assert_eq!(logged["alerts_published"], 3);
        assert_eq!(logged["mqtt_subscribed"], true);
        assert_eq!(logged["rejected"], 1);
        assert_eq!(logged["rejected_by_reason"], "bad_json=1");
        assert_eq!(logged["write_errors_by_class"], "timeout=1");
        assert!(text.contains("\naq_alerts_published_total 3\n"), "{text}");
        assert!(text.contains("\naq_mqtt_subscribed 1\n"), "{text}");
        assert!(text.contains("\naq_store_size_bytes 4096\n"), "{text}");
        assert!(text.contains("aq_rejected_total{reason=\"bad_json\"} 1\n"));
        assert!(text.contains("aq_write_errors_total{class=\"auth\"} 0\n"));
    }
}
