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
use crate::model::{Reading, UnixMillis};
use crate::reject::{excerpt, RejectReason, Rejection};
use crate::sink::tail::{News, TailBatch, TAIL_MAX_BATCH};
use crate::source::topic::{self, SiteFilter};
use crate::source::{Acker, Message, Origin, Settled};
use crate::store::{Committed, RejectRecord, StoreError, Writer};
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
        self,
        mut messages: mpsc::Receiver<Message>,
        ackers: Vec<Acker>,
        sink_news: Option<mpsc::Sender<News>>,
    ) -> Result<(), IngestError> {
        let Ingest {
            settings,
            store,
            clock,
            metrics,
            registry,
            alerts,
        } = self;
        let mut p = Pipeline {
            intake: Intake {
                settings,
                clock,
                metrics,
                registry,
            },
            alerts,
            ackers,
            sink_news,
            writer: Some(store),
            job: None,
            retry: None,
            filling: None,
            log: RejectLog::default(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            open: true,
        };
        loop {
            p.start_work(tokio::time::Instant::now());
            if p.is_done() {
                return Ok(());
            }
            let deadline = p.deadline();
            tokio::select! {
                joined = commit_done(&mut p.job) => {
                    if !p.finish(joined?, messages.is_closed()).await {
                        return Ok(());
                    }
                }
                m = messages.recv(), if p.open && p.can_take() => match m {
                    Some(m) => {
                        p.take(m);
                        // Whatever else is queued joins the batch without a wake-up each.
                        while p.can_take() {
                            match messages.try_recv() {
                                Ok(m) => p.take(m),
                                Err(_) => break,
                            }
                        }
                        if let Some(f) = &mut p.filling {
                            f.last = tokio::time::Instant::now();
                        }
                    }
                    None => p.open = false,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {}
            }
        }
    }
}

/// The commit running on the blocking thread: the writer comes back with its result.
type CommitJob = tokio::task::JoinHandle<(Writer, Result<Committed, StoreError>)>;

/// Waits for the running commit, if any (never resolves without one).
async fn commit_done(
    job: &mut Option<(CommitJob, Pending)>,
) -> Result<(Writer, Result<Committed, StoreError>), IngestError> {
    match job {
        Some((handle, _)) => Ok(handle.await?),
        None => std::future::pending().await,
    }
}

/// What decoding needs: the stage without its writer, so that the next batch is
/// decoded while the writer commits the one before.
pub(crate) struct Intake {
    settings: IngestSettings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    registry: Arc<crate::sites::Registry>,
}

/// A batch being filled: its messages in receive order, whether each was taken, and
/// its decoded readings not yet committed.
struct Filling {
    messages: Vec<Message>,
    accepted: Vec<bool>,
    slice: Slice,
    /// The receive time its rows carry: when the batch opened.
    now: UnixMillis,
    opened: tokio::time::Instant,
    /// When its last message arrived (the gap is counted from here).
    last: tokio::time::Instant,
}

/// A slice given to the writer, and what follows its commit.
struct Pending {
    slice: Arc<Slice>,
    now: UnixMillis,
    /// On a batch's last slice: the batch's messages and verdicts, acknowledged after
    /// it — after every slice of the batch is committed, never before.
    settle: Option<(Vec<Message>, Vec<bool>)>,
}

/// The stage while it runs: one batch commits while the next one fills.
///
/// The writer commits one slice at a time. Meanwhile messages keep being taken and
/// decoded into the next batch, which closes as a batch always has: while messages
/// arrive less than `batch_gap` apart it grows, up to `max_batch_messages` or
/// `max_batch_delay` after it opened. So when the broker's in-flight window is what
/// holds the stream back, the window's messages after the committing batch are
/// already decoded (and, the stream having paused, their batch closed) when the
/// writer is free; with a free-flowing stream batches still grow as large as before.
/// Memory holds at most the committing slice and the filling batch; a full batch or
/// slice stops the taking until the writer is free (back-pressure to the source).
struct Pipeline {
    intake: Intake,
    alerts: Option<Alerter>,
    ackers: Vec<Acker>,
    sink_news: Option<mpsc::Sender<News>>,
    /// None while a commit (or its retry) has it.
    writer: Option<Writer>,
    job: Option<(CommitJob, Pending)>,
    /// A failed commit waiting for its retry: nothing is committed before it.
    retry: Option<(tokio::time::Instant, Pending)>,
    filling: Option<Filling>,
    log: RejectLog,
    backoff: Backoff,
    /// False once every source has stopped sending.
    open: bool,
}

impl Pipeline {
    fn max_readings(&self) -> usize {
        self.intake.settings.max_batch_readings.max(1)
    }

    /// Whether another message may join the filling batch.
    fn can_take(&self) -> bool {
        self.filling.as_ref().is_none_or(|f| {
            f.messages.len() < self.intake.settings.max_batch_messages.max(1)
                && f.slice.readings.len() < self.max_readings()
        })
    }

    /// Decodes a message into the filling batch (opening one).
    fn take(&mut self, mut m: Message) {
        let f = self.filling.get_or_insert_with(|| {
            let at = tokio::time::Instant::now();
            Filling {
                messages: Vec::new(),
                accepted: Vec::new(),
                slice: Slice::default(),
                now: self.intake.clock.now(),
                opened: at,
                last: at,
            }
        });
        f.accepted
            .push(self.intake.take_recorded(&m, &mut self.log, &mut f.slice));
        // Decoded: from here on only its ack token is needed.
        m.payload = Bytes::new();
        f.messages.push(m);
    }

    /// When the filling batch closes if nothing else arrives.
    fn closes_at(&self, f: &Filling) -> tokio::time::Instant {
        let s = &self.intake.settings;
        (f.last + s.batch_gap).min(f.opened + s.max_batch_delay)
    }

    /// The next time to look again while the writer is free: the retry's, or the
    /// filling batch's closing time.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        // While a commit runs, its end is what to wait for.
        self.writer.as_ref()?;
        match (&self.retry, &self.filling) {
            (Some((at, _)), _) => Some(*at),
            (None, Some(f)) => Some(self.closes_at(f)),
            (None, None) => None,
        }
    }

    /// Gives the free writer its next slice, in order: a retry when due; a full slice
    /// of the filling batch; the filling batch's last slice once the batch is closed.
    fn start_work(&mut self, now: tokio::time::Instant) {
        if self.writer.is_none() {
            return;
        }
        if let Some((at, _)) = &self.retry {
            if *at <= now {
                let (_, pending) = self.retry.take().expect("checked");
                self.start(pending);
            }
            return;
        }
        let max = self.max_readings();
        let can_take = self.can_take();
        let Some(f) = &self.filling else { return };
        let closed = !self.open || !can_take || self.closes_at(f) <= now;
        let Some(f) = &mut self.filling else { return };
        if f.slice.readings.len() >= max {
            let rest = f.slice.readings.split_off(max);
            let full = std::mem::replace(
                &mut f.slice,
                Slice {
                    readings: rest,
                    rejects: Vec::new(),
                },
            );
            let pending = Pending {
                slice: Arc::new(full),
                now: f.now,
                settle: None,
            };
            self.start(pending);
            return;
        }
        if closed {
            let f = self.filling.take().expect("checked");
            self.start(Pending {
                slice: Arc::new(f.slice),
                now: f.now,
                settle: Some((f.messages, f.accepted)),
            });
        }
    }

    /// Starts committing `pending` with the (free) writer.
    fn start(&mut self, pending: Pending) {
        let mut w = self.writer.take().expect("the writer is free");
        let slice = Arc::clone(&pending.slice);
        let now = pending.now;
        let handle = tokio::task::spawn_blocking(move || {
            let r = w.commit_batch_watched(&slice.readings, &slice.rejects, now);
            (w, r)
        });
        self.job = Some((handle, pending));
    }

    /// Nothing left: every source stopped, and everything taken is committed and
    /// handed back.
    fn is_done(&self) -> bool {
        !self.open && self.filling.is_none() && self.job.is_none() && self.retry.is_none()
    }

    /// After a commit: its figures, alerts and news; its batch's tokens back to their
    /// sources when it was the batch's last slice. A failed commit is never
    /// acknowledged (an ack without a commit is a lost reading): it is retried with
    /// backoff. `false`: the service is stopping and the store keeps failing — stop
    /// without acknowledging (the broker redelivers at the next start).
    async fn finish(
        &mut self,
        (writer, result): (Writer, Result<Committed, StoreError>),
        sources_closed: bool,
    ) -> bool {
        self.writer = Some(writer);
        let (_, pending) = self.job.take().expect("a commit was running");
        match result {
            Ok(committed) => {
                self.backoff.reset();
                self.committed(&pending.slice, committed);
                if let Some((messages, accepted)) = pending.settle {
                    let by = tokens_by_source(&messages, &accepted, self.ackers.len());
                    for (source, ids) in by {
                        if !self.ackers[source].committed(ids).await {
                            // The source is gone (stopped): its broker or devices redeliver.
                            warn!(source, "ingest: source gone; committed messages will be redelivered and ignored as duplicates");
                        }
                    }
                }
                true
            }
            Err(e) => {
                Metrics::add(&self.intake.metrics.store_commit_failures, 1);
                let delay = self.backoff.next_delay();
                error!(error = %e, readings = pending.slice.readings.len(), retry_in_ms = delay.as_millis() as u64, "store commit failed; messages stay unacknowledged and the commit is retried");
                if sources_closed && delay >= Duration::from_secs(5) {
                    return false;
                }
                self.retry = Some((tokio::time::Instant::now() + delay, pending));
                true
            }
        }
    }

    /// A slice committed: figures, alerts for the hours it changed, and its readings
    /// to the sink's tail (never waiting: a full channel means the sink is busy, and
    /// what does not reach it in memory it reads from the outbox).
    fn committed(&mut self, slice: &Arc<Slice>, committed: Committed) {
        let metrics = &self.intake.metrics;
        let out = committed.outcome;
        if let Some(a) = &mut self.alerts {
            let (ok, failed) = a.after_commit(&committed.hours);
            Metrics::add(&metrics.alerts_published, ok);
            Metrics::add(&metrics.alerts_failed, failed);
        }
        Metrics::add(&metrics.readings_stored, out.stored);
        Metrics::add(&metrics.readings_duplicate, out.duplicates);
        Metrics::add(&metrics.store_commits, 1);
        if let Some(n) = &self.sink_news {
            let tail = committed
                .appended
                .filter(|a| a.count > 0 && slice.readings.len() <= TAIL_MAX_BATCH)
                .map(|appended| TailBatch {
                    appended,
                    readings: Arc::clone(slice) as Arc<dyn AsRef<[Reading]> + Send + Sync>,
                });
            let _ = n.try_send(News { tail });
        }
    }
}

impl Intake {
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
