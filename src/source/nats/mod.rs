//! The NATS JetStream source (`[nats]`, async-nats): devices publish MQTT QoS 1 to any
//! node of a NATS cluster, which stores each publish in the replicated `$MQTT_msgs`
//! stream before the device's PUBACK. This source reads that stream through one
//! **durable pull consumer** shared by every aq-ingest instance (a work queue: each
//! message goes to one instance; what an instance fetched and did not acknowledge goes
//! to another after `ack_wait`).
//!
//! The same contract as the MQTT source: a message is acknowledged (`+ACK`, explicit
//! ack policy) only after the ingest has committed it; a refused payload is
//! acknowledged too, so that it cannot loop. At most `max_in_flight` messages are
//! fetched and not yet settled per instance (plus one pull batch buffered in the
//! client). A redelivery — `ack_wait` expired on a slow commit, or the instance that
//! had it died — is counted (`aq_nats_redeliveries_total`) and stored once: the
//! store's identity (site, time, kind) makes the second commit a duplicate.
//!
//! The site comes from the MQTT topic the device used: the delivered subject
//! `$MQTT.msgs.aq.site-001.readings` is decoded back to `aq/site-001/readings`
//! ([`subject`]), and the ingest matches it against `[mqtt] topics` like any topic.
//!
//! **The consumer must exist before devices publish**: `$MQTT_msgs` keeps a message
//! only while a consumer is interested in it, so a publish with no consumer is
//! PUBACKed and dropped. Every instance creates (or updates to its config) the durable
//! consumer at start, before it reports ready; the stream itself is created by the
//! server at the first MQTT connection, which `[nats] mqtt_url` makes when it is
//! missing. The README says how a deployment orders this.

pub mod subject;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Stream as Messages};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{AckToken, Message, Origin, Settled, SourceContext, SourceIndex};
use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// The `[nats]` config: present, it replaces the MQTT client as the device source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Client URLs of the cluster's nodes (`nats://host:4222`); list every node: the
    /// client connects to one and moves to another when it goes.
    pub urls: Vec<String>,
    /// The stream nats-server keeps MQTT QoS 1 messages in.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// The durable consumer's name: the same on every instance that shares the work.
    #[serde(default = "default_durable")]
    pub durable: String,
    /// How long the cluster waits for an acknowledgement before it redelivers the
    /// message (to any instance). Longer than a slow commit; a dead instance's
    /// messages wait this long.
    #[serde(default = "default_ack_wait_secs")]
    pub ack_wait_secs: u64,
    /// Messages this instance holds fetched and not yet committed and acknowledged.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The consumer's `max_ack_pending`: unacknowledged messages across all instances;
    /// at least instances × `max_in_flight`.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    pub username: Option<String>,
    /// Environment variable holding the NATS password (never the config file).
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// An MQTT listener of the cluster (`mqtt://host:1883`). The server creates
    /// `$MQTT_msgs` at the first MQTT connection; when the stream is missing at start,
    /// the source makes one there so that it can create its consumer before any
    /// device publishes. Absent: the source waits for the stream.
    pub mqtt_url: Option<String>,
    /// Longest wait between two attempts to reach the cluster or create the consumer.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
}

fn default_stream() -> String {
    "$MQTT_msgs".into()
}
fn default_durable() -> String {
    "aq-ingest".into()
}
fn default_ack_wait_secs() -> u64 {
    30
}
fn default_max_in_flight() -> usize {
    2_000
}
fn default_max_ack_pending() -> i64 {
    20_000
}
fn default_password_env() -> String {
    "AQ_NATS_PASSWORD".into()
}
fn default_reconnect_max_secs() -> u64 {
    10
}

impl NatsConfig {
    /// Every problem of the section (`topics`: the MQTT reading filters it consumes).
    pub fn problems(&self, topics: &[String]) -> Vec<String> {
        let mut p = Vec::new();
        if self.urls.is_empty() {
            p.push("nats.urls is empty: list the client URL of every node".into());
        }
        for u in &self.urls {
            if !(u.starts_with("nats://") || u.starts_with("tls://")) {
                p.push(format!(
                    "nats.urls: {u:?} is not nats://host:port or tls://host:port"
                ));
            }
        }
        let bad_name = |n: &str| n.is_empty() || n.contains(['.', '*', '>', ' ', '\t']);
        if bad_name(&self.stream) {
            p.push(format!(
                "nats.stream {:?} is not a stream name",
                self.stream
            ));
        }
        if bad_name(&self.durable) || self.durable.starts_with('$') {
            p.push(format!(
                "nats.durable {:?} must be a name without '.', '*', '>', spaces or a leading '$'",
                self.durable
            ));
        }
        if self.ack_wait_secs == 0 {
            p.push("nats.ack_wait_secs must be positive".into());
        }
        if self.max_in_flight == 0 {
            p.push("nats.max_in_flight must be positive".into());
        }
        if self.max_ack_pending < self.max_in_flight as i64 {
            p.push("nats.max_ack_pending must be at least nats.max_in_flight (instances × max_in_flight)".into());
        }
        if let Some(u) = &self.mqtt_url {
            if !u.starts_with("mqtt://") {
                p.push(format!("nats.mqtt_url {u:?}: use mqtt://host:port"));
            }
        }
        if let Err(e) = subject::filter_subjects(topics) {
            p.push(format!("mqtt.topics with [nats]: {e}"));
        }
        p
    }

    /// The durable consumer as this instance creates or updates it.
    fn consumer_config(&self, topics: &[String]) -> Result<pull::Config, NatsError> {
        Ok(pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some("aq-ingest: readings, acknowledged after the store commit".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(self.ack_wait_secs),
            // Unlimited: a message that hit a cap would never be stored.
            max_deliver: -1,
            filter_subjects: subject::filter_subjects(topics)?,
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        })
    }

    /// Messages asked for per pull request: a quarter of the in-flight window, so that
    /// the next batch is on its way while the ingest commits this one.
    fn pull_batch(&self) -> usize {
        (self.max_in_flight / 4).clamp(1, 1_000)
    }
}

/// Source failures at start-up (runtime failures are retried, not returned).
#[derive(Debug, Error)]
pub enum NatsError {
    #[error("consumer filter: {0}")]
    Filter(#[from] subject::SubjectError),
    #[error("the stream {stream:?} does not exist (no MQTT client has connected to the cluster yet; set nats.mqtt_url)")]
    NoStream { stream: String },
    #[error("NATS request: {0}")]
    Request(String),
}

/// A started source.
pub struct NatsSource {
    /// The consumer task; ends after shutdown once the acks are out (or the deadline).
    pub task: tokio::task::JoinHandle<()>,
    /// For publishing alerts (core NATS, to MQTT subscribers of the topic).
    pub client: Client,
}

/// How long the source keeps the connection after shutdown for the last acks.
pub const ACK_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Starts the source: connects to the cluster (retrying, in the background), creates
/// the durable consumer and feeds `messages` until `shutdown`; committed messages come
/// back on `acks` and are acknowledged.
pub async fn start(
    cfg: &NatsConfig,
    topics: &[String],
    source: SourceIndex,
    messages: mpsc::Sender<Message>,
    acks: mpsc::Receiver<Vec<Settled>>,
    ctx: SourceContext,
) -> Result<NatsSource, NatsError> {
    let consumer_config = cfg.consumer_config(topics)?;
    let client = connect(cfg, &ctx.metrics).await?;
    let consumer = Consumer {
        cfg: cfg.clone(),
        config: consumer_config,
        js: jetstream::new(client.clone()),
        client: client.clone(),
        source,
        ctx_metrics: Arc::clone(&ctx.metrics),
        clock: Arc::clone(&ctx.clock),
        tx: Some(messages),
        acks,
        in_flight: HashMap::new(),
        next_id: 0,
        backoff: Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(cfg.reconnect_max_secs.max(1)),
        ),
    };
    let task = tokio::spawn(consumer.run(ctx.shutdown));
    Ok(NatsSource { task, client })
}

/// Connects to the cluster. The client retries the first connection in the
/// background and reconnects (to any node it knows) forever; `nats_connected` follows.
async fn connect(cfg: &NatsConfig, metrics: &Arc<Metrics>) -> Result<Client, NatsError> {
    let m = Arc::clone(metrics);
    let max = Duration::from_secs(cfg.reconnect_max_secs.max(1));
    let mut opts = async_nats::ConnectOptions::new()
        .name("aq-ingest")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(move |attempts| {
            Duration::from_millis(100u64 << attempts.min(8)).min(max)
        })
        .event_callback(move |event| {
            let m = Arc::clone(&m);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        m.nats_connected.store(true, Ordering::Relaxed);
                        Metrics::add(&m.nats_connects, 1);
                        info!("nats: connected");
                    }
                    async_nats::Event::Disconnected => {
                        m.nats_connected.store(false, Ordering::Relaxed);
                        warn!("nats: disconnected; reconnecting to another node");
                    }
                    other => debug!(event = %other, "nats event"),
                }
            }
        });
    if let Some(user) = &cfg.username {
        let pass = std::env::var(&cfg.password_env).unwrap_or_default();
        opts = opts.user_and_password(user.clone(), pass);
    }
    opts.connect(cfg.urls.as_slice())
        .await
        .map_err(|e| NatsError::Request(e.to_string()))
}

/// The consumer task: pulls, forwards, acknowledges.
struct Consumer {
    cfg: NatsConfig,
    /// The durable consumer's config, created or updated at each (re)start.
    config: pull::Config,
    js: Context,
    client: Client,
    /// This source's index in the ingest's acker list, stamped on every token.
    source: SourceIndex,
    ctx_metrics: Arc<Metrics>,
    clock: Arc<dyn crate::clock::Clock>,
    /// To the ingest stage; dropped at shutdown, which is how ingest learns to finish.
    tx: Option<mpsc::Sender<Message>>,
    /// Committed batches, in receive order.
    acks: mpsc::Receiver<Vec<Settled>>,
    /// Messages forwarded and not yet settled: token id → the reply subject to ack.
    /// At most `max_in_flight` entries (no pull while full).
    in_flight: HashMap<u64, Subject>,
    next_id: u64,
    backoff: Backoff,
}

impl Consumer {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut acks_open = true;
        // Phase 1: take messages until shutdown.
        'outer: while !*shutdown.borrow() {
            let Some(mut messages) = self.open(&mut shutdown).await else {
                break;
            };
            loop {
                let room = self.in_flight.len() < self.cfg.max_in_flight;
                tokio::select! {
                    _ = shutdown.changed() => break 'outer,
                    batch = self.acks.recv(), if acks_open => match batch {
                        Some(b) => self.ack(b).await,
                        None => acks_open = false,
                    },
                    next = messages.next(), if room => match next {
                        Some(Ok(m)) => {
                            self.backoff.reset();
                            if !self.forward(m, &mut shutdown).await {
                                break 'outer;
                            }
                        }
                        Some(Err(e)) => {
                            // Paced: a cluster without quorum answers every pull with
                            // an error.
                            let delay = self.backoff.next_delay();
                            warn!(error = %e, kind = ?e.kind(), retry_in_ms = delay.as_millis() as u64, "nats: pull failed; pulling again");
                            if !self.pause(delay, &mut shutdown).await {
                                break 'outer;
                            }
                            if matches!(e.kind(), pull::MessagesErrorKind::ConsumerDeleted
                                | pull::MessagesErrorKind::RequestLimitExceeded) {
                                continue 'outer;
                            }
                        }
                        None => continue 'outer,
                    },
                }
            }
        }
        self.ctx_metrics
            .nats_consumer_ready
            .store(false, Ordering::Relaxed);
        // Phase 2: no new messages (the pull stream is dropped); acknowledge what the
        // ingest still commits until it closes `acks`.
        self.tx = None;
        let drain = async {
            while acks_open {
                match self.acks.recv().await {
                    Some(b) => self.ack(b).await,
                    None => acks_open = false,
                }
            }
            let _ = self.client.flush().await;
        };
        if tokio::time::timeout(ACK_DRAIN_DEADLINE, drain)
            .await
            .is_err()
        {
            warn!(
                deadline_secs = ACK_DRAIN_DEADLINE.as_secs(),
                "nats: acks still pending at the shutdown deadline; the cluster will redeliver them"
            );
        }
        info!("nats: source stopped");
    }

    /// Creates (or updates) the durable consumer and opens its pull stream, retrying
    /// with backoff; `None` on shutdown.
    async fn open(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<Messages> {
        loop {
            match self.try_open().await {
                Ok(m) => {
                    self.backoff.reset();
                    return Some(m);
                }
                Err(e) => {
                    self.ctx_metrics
                        .nats_consumer_ready
                        .store(false, Ordering::Relaxed);
                    let delay = self.backoff.next_delay();
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "nats: cannot open the consumer");
                    if !self.pause(delay, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Waits `delay`, acknowledging committed batches meanwhile (the ingest must never
    /// block on its acker); false on shutdown.
    async fn pause(&mut self, delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                Some(b) = self.acks.recv() => self.ack(b).await,
                _ = shutdown.changed() => return false,
            }
        }
    }

    async fn try_open(&mut self) -> Result<Messages, NatsError> {
        let stream = match self.js.get_stream(&self.cfg.stream).await {
            Ok(s) => s,
            Err(e) => {
                let missing = matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
                match (&self.cfg.mqtt_url, missing) {
                    (Some(url), true) => {
                        mqtt_probe(url, &self.cfg).await?;
                        return Err(NatsError::NoStream {
                            stream: self.cfg.stream.clone(),
                        });
                    }
                    (None, true) => {
                        return Err(NatsError::NoStream {
                            stream: self.cfg.stream.clone(),
                        })
                    }
                    _ => return Err(NatsError::Request(e.to_string())),
                }
            }
        };
        let consumer: PullConsumer = stream
            .create_consumer(self.config.clone())
            .await
            .map_err(|e| NatsError::Request(format!("creating the consumer: {e}")))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.cfg.pull_batch())
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| NatsError::Request(format!("pulling: {e}")))?;
        self.ctx_metrics
            .nats_consumer_ready
            .store(true, Ordering::Relaxed);
        info!(stream = %self.cfg.stream, durable = %self.cfg.durable, filters = ?self.config.filter_subjects, "nats: consumer ready");
        Ok(messages)
    }

    /// Hands a message to the ingest stage, acknowledging committed ones while it waits
    /// (that wait is the back-pressure). False when the source should stop.
    async fn forward(
        &mut self,
        m: jetstream::Message,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let metrics = Arc::clone(&self.ctx_metrics);
        Metrics::add(&metrics.messages_received, 1);
        if m.info().is_ok_and(|i| i.delivered > 1) {
            Metrics::add(&metrics.nats_redeliveries, 1);
        }
        let jetstream::Message { message: m, .. } = m;
        let topic = subject::topic_of(m.subject.as_str()).unwrap_or_else(|| m.subject.to_string());
        let mut reply = m.reply;
        let id = self.next_id;
        self.next_id += 1;
        let msg = Message {
            received: self.clock.now(),
            ack: AckToken {
                source: self.source,
                id,
            },
            origin: Origin::Topic(topic),
            payload: m.payload,
        };
        let Some(tx) = self.tx.clone() else {
            return false;
        };
        loop {
            tokio::select! {
                permit = tx.reserve() => {
                    let Ok(permit) = permit else { return false };
                    if let Some(r) = reply.take() {
                        self.in_flight.insert(id, r);
                    }
                    metrics.nats_in_flight.store(self.in_flight.len() as u64, Ordering::Relaxed);
                    permit.send(msg);
                    return true;
                }
                batch = self.acks.recv() => match batch {
                    Some(b) => self.ack(b).await,
                    None => return false,
                },
                _ = shutdown.changed() => return false,
            }
        }
    }

    /// Acknowledges one committed batch (`+ACK` to each message's reply subject).
    async fn ack(&mut self, batch: Vec<Settled>) {
        let mut n = 0;
        for s in batch {
            let Some(reply) = self.in_flight.remove(&s.id) else {
                continue;
            };
            // An empty payload is `+ACK`. A lost ack (the node went) means a
            // redelivery, stored as a duplicate.
            if self.client.publish(reply, Bytes::new()).await.is_ok() {
                n += 1;
            }
        }
        Metrics::add(&self.ctx_metrics.messages_acked, n);
        self.ctx_metrics
            .nats_in_flight
            .store(self.in_flight.len() as u64, Ordering::Relaxed);
    }
}

/// Connects once to an MQTT listener of the cluster (with the NATS credentials) and
/// leaves: the server creates its MQTT streams (`$MQTT_msgs` among them) at an
/// account's first MQTT connection.
async fn mqtt_probe(url: &str, cfg: &NatsConfig) -> Result<(), NatsError> {
    let addr = crate::source::mqtt::MqttConfig {
        url: url.to_owned(),
        ..Default::default()
    }
    .broker()
    .map_err(|e| NatsError::Request(e.to_string()))?;
    let id = format!("aq-ingest-probe-{}", fastrand::u32(..));
    let mut o = rumqttc::MqttOptions::new(id, addr.host, addr.port);
    o.set_clean_session(true);
    if let Some(user) = &cfg.username {
        o.set_credentials(user, std::env::var(&cfg.password_env).unwrap_or_default());
    }
    let (client, mut el) = rumqttc::AsyncClient::new(o, 4);
    let connack = async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(NatsError::Request(format!("MQTT probe {url}: {e}"))),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), connack)
        .await
        .map_err(|_| NatsError::Request(format!("MQTT probe {url}: no CONNACK in 10 s")))??;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    info!(
        url,
        "nats: connected once over MQTT so that the server creates its MQTT streams"
    );
    Ok(())
}

/// Publishes alerts through the source's NATS client, never waiting on it: a bounded
/// queue and one task. Core NATS reaches MQTT subscribers of the topic (not retained:
/// NATS keeps retained messages only for MQTT publishers).
#[derive(Clone)]
pub struct NatsAlertPublisher {
    /// Alerts waiting for the publishing task.
    tx: mpsc::Sender<crate::alerts::Alert>,
}

/// Alerts waiting to be published; more are counted as failed (alerts are rare).
const ALERT_QUEUE: usize = 256;

impl NatsAlertPublisher {
    pub fn start(client: Client) -> NatsAlertPublisher {
        let (tx, mut rx) = mpsc::channel::<crate::alerts::Alert>(ALERT_QUEUE);
        tokio::spawn(async move {
            while let Some(a) = rx.recv().await {
                let s = subject::topic_to_subject(&a.topic);
                if let Err(e) = client.publish(s, a.payload.into()).await {
                    warn!(error = %e, "nats: alert not published");
                }
            }
        });
        NatsAlertPublisher { tx }
    }
}

impl crate::alerts::Publish for NatsAlertPublisher {
    fn try_publish(&self, alert: crate::alerts::Alert) -> Result<(), String> {
        self.tx.try_send(alert).map_err(|e| e.to_string())
    }
}
