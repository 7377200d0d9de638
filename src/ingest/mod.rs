//! The ingest stage: takes messages from the source in receive order, decodes and
//! validates them, commits readings and rejects to the store in batches, and only then
//! hands the messages to the acknowledger, in the same order.
//!
//! Batching adapts to the stream: a batch takes every queued message and keeps growing
//! while messages arrive less than `batch_gap_ms` apart, up to `max_batch_messages` or
//! `max_batch_delay_ms`. A busy stream gets large batches (cheap commits); a quiet one
//! is committed one short gap after its message arrived.
//!
//! A batch is bounded in messages, but a message can be an array of up to 10 000
//! readings, so the readings of one batch are committed in slices of at most
//! `max_batch_readings` (one transaction each; a large array spans several). Memory
//! then holds one slice of decoded readings, not the whole batch's. The batch's
//! messages are acknowledged only after its last slice committed, so a message's
//! PUBACK still follows the commit of every one of its readings; a crash between
//! slices redelivers the batch, and the committed slices are duplicates (no-ops).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::alerts::Alerter;
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::decode::json;
use crate::metrics::Metrics;
use crate::model::Reading;
use crate::reject::{excerpt, RejectReason, Rejection};
use crate::sink::tail::{News, TailBatch, TAIL_MAX_BATCH};
use crate::source::topic::{self, SiteFilter};
use crate::source::{Acker, Message, Origin, Settled};
use crate::store::{on_blocking_thread, RejectRecord, Writer};
use crate::validate::{self, Policy, DEFAULT_MAX_FUTURE_SECS};

mod hj212;

pub use hj212::Hj212Rules;

/// The `[ingest]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Most messages per store transaction.
    #[serde(default = "default_max_batch_messages")]
    pub max_batch_messages: usize,
    /// Most readings per store transaction: a batch with more is committed in
    /// slices before any of its messages is acknowledged.
    #[serde(default = "default_max_batch_readings")]
    pub max_batch_readings: usize,
    /// Readings stamped further ahead of the receive clock are refused.
    #[serde(default = "default_max_future_secs")]
    pub max_future_secs: u64,
    /// A batch keeps growing while messages arrive less than this far apart…
    #[serde(default = "default_batch_gap_ms")]
    pub batch_gap_ms: u64,
    /// …but is committed at most this long after its first message arrived.
    #[serde(default = "default_max_batch_delay_ms")]
    pub max_batch_delay_ms: u64,
}

fn default_batch_gap_ms() -> u64 {
    1
}
fn default_max_batch_delay_ms() -> u64 {
    20
}

fn default_max_batch_messages() -> usize {
    2000
}
/// Readings per commit by default: what a batch of single-reading messages reaches
/// anyway (1 000–2 000 per commit under load), ten arrays of 100 over it. Larger
/// commits gain little (the fsync is paid per commit, the row work per reading) and
/// a slice of decoded readings, with the aggregates it touches, is what the ingest
/// holds in memory at once (2 000 arrays of 100 in one commit peaked near 100 MiB).
pub const DEFAULT_MAX_BATCH_READINGS: usize = 20_000;
fn default_max_batch_readings() -> usize {
    DEFAULT_MAX_BATCH_READINGS
}
fn default_max_future_secs() -> u64 {
    DEFAULT_MAX_FUTURE_SECS
}

impl Default for IngestConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// The ingest stage's failures: only the store can fail it, and only at shutdown (a
/// failing commit is retried until it succeeds or the service stops).
#[derive(Debug, Error)]
pub enum IngestError {
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How the stage treats messages: resolved once from config by [`crate::plan`].
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Topic filters that name the site level.
    pub filters: Vec<SiteFilter>,
    pub policy: Policy,
    /// Larger payloads are refused (and acknowledged, so they cannot loop).
    pub max_payload_bytes: usize,
    pub max_batch_messages: usize,
    /// Most readings per commit (at least 1); see [`IngestConfig::max_batch_readings`].
    pub max_batch_readings: usize,
    /// Batch growth: see [`IngestConfig::batch_gap_ms`] and `max_batch_delay_ms`.
    pub batch_gap: Duration,
    pub max_batch_delay: Duration,
    /// How HJ 212 frames are attributed and checked.
    pub hj212: Hj212Rules,
}

/// Everything the stage needs, built by `app`.
pub struct Ingest {
    pub settings: IngestSettings,
    /// The writer: the only handle that commits readings. Moved into a blocking task
    /// for each commit.
    pub store: Writer,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// The site registry: unregistered sites, units and cadences.
    pub registry: Arc<crate::sites::Registry>,
    /// Hourly PM10 alerts and where they are published.
    pub alerts: Option<Alerter>,
}

/// How often one reason's rejections are logged at most.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// WARN-logs rejections at most once per reason per interval, with the count since.
#[derive(Default)]
struct RejectLog {
    last: HashMap<RejectReason, (Instant, u64)>,
}

impl RejectLog {
    fn note(&mut self, r: &Rejection, origin: &str) {
        let now = Instant::now();
        let entry = self
            .last
            .entry(r.reason)
            .or_insert((now - REJECT_LOG_INTERVAL, 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= REJECT_LOG_INTERVAL {
            warn!(reason = r.reason.as_str(), count = entry.1, origin, detail = %r.detail, "rejected readings (first of this batch shown)");
            *entry = (now, 0);
        }
    }
}

/// One slice of a batch: what one transaction commits.
#[derive(Default)]
struct Slice {
    readings: Vec<Reading>,
    rejects: Vec<RejectRecord>,
}

/// The sink's tail borrows a committed slice's readings where they are.
impl AsRef<[Reading]> for Slice {
    fn as_ref(&self) -> &[Reading] {
        &self.readings
    }
}

impl Ingest {
    /// Runs until `messages` closes (every source has stopped sending), then returns
    /// after the last commit and after the last tokens have been handed back through
    /// `ackers` (indexed by [`crate::source::AckToken::source`]; dropping them tells
    /// each source that no more will come).
    pub async fn run(
        mut self,
        mut messages: mpsc::Receiver<Message>,
        ackers: Vec<Acker>,
        sink_news: Option<mpsc::Sender<News>>,
    ) -> Result<(), IngestError> {
        let mut log = RejectLog::default();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let max_readings = self.settings.max_batch_readings.max(1);
        while let Some(first) = messages.recv().await {
            let mut batch = collect(
                first,
                &mut messages,
                self.settings.max_batch_messages,
                self.settings.batch_gap,
                self.settings.max_batch_delay,
            )
            .await;
            let now = self.clock.now();
            // Per message, in batch order: whether its payload was taken (see [`Settled`]).
            let mut accepted = Vec::with_capacity(batch.len());
            let mut slice = Slice::default();
            for m in &mut batch {
                accepted.push(self.take_recorded(m, &mut log, &mut slice));
                // Decoded: from here on only its ack token is needed.
                m.payload = Bytes::new();
                while slice.readings.len() >= max_readings {
                    let rest = slice.readings.split_off(max_readings);
                    let full = std::mem::replace(
                        &mut slice,
                        Slice {
                            readings: rest,
                            rejects: Vec::new(),
                        },
                    );
                    let done;
                    (self, done) = self
                        .commit(full, now, &messages, &mut backoff, &sink_news)
                        .await?;
                    if !done {
                        return Ok(());
                    }
                }
            }
            let done;
            (self, done) = self
                .commit(slice, now, &messages, &mut backoff, &sink_news)
                .await?;
            if !done {
                return Ok(());
            }
            // Every slice of the batch is committed: now, and only now, its messages
            // are acknowledged.
            for (source, ids) in tokens_by_source(&batch, &accepted, ackers.len()) {
                if !ackers[source].committed(ids).await {
                    // The source is gone (stopped): its broker or devices redeliver.
                    warn!(source, "ingest: source gone; committed messages will be redelivered and ignored as duplicates");
                }
            }
            drop(batch);
        }
        Ok(())
    }

    /// Commits one slice, retrying with backoff until it succeeds: a failed commit is
    /// never acknowledged (an ack without a commit is a lost reading). `false`: the
    /// service is stopping and the store keeps failing — stop without acknowledging
    /// (the broker redelivers at the next start).
    /// Takes the stage by value because the writer moves to a blocking thread and back.
    async fn commit(
        mut self,
        slice: Slice,
        now: crate::model::UnixMillis,
        messages: &mpsc::Receiver<Message>,
        backoff: &mut Backoff,
        sink_news: &Option<mpsc::Sender<News>>,
    ) -> Result<(Self, bool), IngestError> {
        let slice = Arc::new(slice);
        // The changed site-hours are read back only for the alerts.
        let watch = self.alerts.is_some();
        loop {
            let p = Arc::clone(&slice);
            let (s, r) = on_blocking_thread(self.store, move |w| {
                w.commit_batch(&p.readings, &p.rejects, now, watch)
            })
            .await?;
            self.store = s;
            match r {
                Ok(committed) => {
                    let out = committed.outcome;
                    self.publish_alerts(&committed.hours);
                    Metrics::add(&self.metrics.readings_stored, out.stored);
                    Metrics::add(&self.metrics.readings_duplicate, out.duplicates);
                    Metrics::add(&self.metrics.store_commits, 1);
                    backoff.reset();
                    if let Some(n) = sink_news {
                        // Never waits: a full channel means the sink is busy, and what
                        // does not reach it in memory it reads from the outbox.
                        let tail = committed
                            .appended
                            .filter(|a| a.count > 0 && slice.readings.len() <= TAIL_MAX_BATCH)
                            .map(|appended| TailBatch {
                                appended,
                                readings: Arc::clone(&slice)
                                    as Arc<dyn AsRef<[Reading]> + Send + Sync>,
                            });
                        let _ = n.try_send(News { tail });
                    }
                    return Ok((self, true));
                }
                Err(e) => {
                    Metrics::add(&self.metrics.store_commit_failures, 1);
                    let delay = backoff.next_delay();
                    error!(error = %e, readings = slice.readings.len(), retry_in_ms = delay.as_millis() as u64, "store commit failed; messages stay unacknowledged and the commit is retried");
                    if messages.is_closed() && delay >= Duration::from_secs(5) {
                        return Ok((self, false));
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Publishes (retained, without waiting) the alerts these changed hours cause.
    fn publish_alerts(&mut self, hours: &[crate::aqi::daily::SiteHour]) {
        if let Some(a) = &mut self.alerts {
            let (ok, failed) = a.after_commit(hours);
            Metrics::add(&self.metrics.alerts_published, ok);
            Metrics::add(&self.metrics.alerts_failed, failed);
        }
    }

    /// Decodes and validates one message into `slice`: its readings, and the
    /// rejections to record; whether its payload was taken (see [`Settled`]).
    fn take_recorded(&self, m: &Message, log: &mut RejectLog, slice: &mut Slice) -> bool {
        let label = m.origin.label();
        let mut rec = Recorder {
            metrics: &self.metrics,
            log,
            label: &label,
            payload: &m.payload,
            rejects: &mut slice.rejects,
        };
        let taken = self.take(m, &mut rec, &mut slice.readings);
        if let Err(r) = &taken {
            rec.reject(r.clone());
        }
        taken.is_ok()
    }

    /// One message: its readings into `readings`, reading-level refusals recorded;
    /// `Err` refuses the whole payload.
    fn take(
        &self,
        m: &Message,
        rec: &mut Recorder<'_>,
        readings: &mut Vec<Reading>,
    ) -> Result<(), Rejection> {
        let settings = &self.settings;
        let payload = &m.payload[..];
        if payload.len() > settings.max_payload_bytes {
            return Err(Rejection::new(
                RejectReason::PayloadTooLarge,
                format!(
                    "{} bytes, at most {}",
                    payload.len(),
                    settings.max_payload_bytes
                ),
            ));
        }
        let topic = match &m.origin {
            Origin::Topic(t) if !settings.hj212.is_hj212_topic(t) => t,
            // HJ 212 frames, over TCP or MQTT: the site comes from the frame's MN.
            _ => return hj212::take(self, m, rec, readings),
        };
        let Some(raw_site) = topic::site_of(&settings.filters, topic) else {
            return Err(Rejection::new(
                RejectReason::BadTopic,
                "topic matches no configured filter",
            ));
        };
        let site = validate::site(raw_site)?;
        if !self.registry.allows(site.as_str()) {
            return Err(Rejection::new(
                RejectReason::UnknownSite,
                format!("site {site} is not in the site registry"),
            ));
        }
        let defaults = self.registry.defaults(site.as_str());
        let observations = json::decode(payload)?;
        Metrics::add(&self.metrics.readings_received, observations.len() as u64);
        for obs in observations {
            match obs.and_then(|o| {
                validate::reading_with(&site, o, m.received, &settings.policy, defaults)
            }) {
                Ok(reading) => readings.push(reading),
                Err(r) => rec.reject(r),
            }
        }
        Ok(())
    }
}

/// Records refusals: counted by reason, logged rate-limited, kept for the rejects table
/// with the origin and a payload excerpt.
struct Recorder<'a> {
    metrics: &'a Metrics,
    log: &'a mut RejectLog,
    label: &'a str,
    payload: &'a [u8],
    rejects: &'a mut Vec<RejectRecord>,
}

impl Recorder<'_> {
    fn reject(&mut self, r: Rejection) {
        self.metrics.reject(r.reason);
        self.log.note(&r, self.label);
        self.rejects.push(RejectRecord {
            rejection: r,
            topic: excerpt(self.label.as_bytes()),
            excerpt: excerpt(self.payload),
        });
    }
}

/// A committed batch's tokens, grouped by the source that issued them, each group in
/// receive order.
fn tokens_by_source(
    batch: &[Message],
    accepted: &[bool],
    sources: usize,
) -> Vec<(usize, Vec<Settled>)> {
    let mut by: Vec<Vec<Settled>> = vec![Vec::new(); sources];
    for (m, accepted) in batch.iter().zip(accepted) {
        if let Some(ids) = by.get_mut(usize::from(m.ack.source)) {
            ids.push(Settled {
                id: m.ack.id,
                accepted: *accepted,
            });
        }
    }
    by.into_iter()
        .enumerate()
        .filter(|(_, ids)| !ids.is_empty())
        .collect()
}

/// Grows a batch from its first message: takes what is queued, then keeps waiting
/// while messages arrive less than `batch_gap` apart, up to `max_batch_messages` or
/// `max_batch_delay`. Each commit rewrites the current page of every site it touches,
/// so a busy stream is far cheaper in a few large commits; a quiet one waits one gap.
async fn collect(
    first: Message,
    messages: &mut mpsc::Receiver<Message>,
    max_messages: usize,
    gap: Duration,
    max_delay: Duration,
) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + max_delay;
    let mut batch = vec![first];
    while batch.len() < max_messages {
        match messages.try_recv() {
            Ok(m) => {
                batch.push(m);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let wait = gap.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        if wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, messages.recv()).await {
            Ok(Some(m)) => batch.push(m),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}
