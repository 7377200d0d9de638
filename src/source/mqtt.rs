//! The MQTT source (rumqttc): QoS 1, a persistent session under a stable client id, and
//! manual acknowledgements sent in receive order only after the ingest stage has
//! committed the message's readings.
//!
//! One task, the **poll task**, owns rumqttc's event loop. It never awaits the client
//! (rumqtt issues #263 and #1025: the client's request channel is drained by this very
//! loop, so awaiting it from here deadlocks). It hands [`Message`]s to the ingest stage
//! over a bounded channel and receives the committed ones back as [`AckToken`] batches,
//! whose PUBACKs it writes itself, one flush per batch.
//!
//! Every acknowledgement names the connection it belongs to. After a reconnect the
//! broker redelivers what was not acknowledged, with the same packet ids; an ack from
//! the old connection is dropped rather than sent on the new one (the redelivery is
//! then stored as a duplicate, which changes nothing, and acknowledged).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, PubAck, Publish, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls;
use tracing::{debug, error, info, warn};

use super::{AckToken, Message, Origin, Settled, SourceContext, SourceIndex};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::metrics::Metrics;

/// The largest MQTT packet the protocol allows. rumqttc's default (10 KiB) would turn one
/// oversized message into a disconnect and an endless redelivery loop, so we accept
/// anything the broker delivers and refuse oversized payloads ourselves, with an ack.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// The `[mqtt]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port`, or `mqtts://host:port` for TLS.
    #[serde(default = "default_url")]
    pub url: String,
    /// Stable client id: the broker keeps the persistent session (and the messages that
    /// arrive while the service is down) under it.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Subscription filters; the first `+` level of each is the site id.
    #[serde(default = "default_topics")]
    pub topics: Vec<String>,
    /// Several instances sharing the work (PostgreSQL store): each subscribes to
    /// `$share/{share_group}/{filter}` with its own `client_id`, and the broker hands
    /// each message to one of them. None (the default): a plain subscription.
    #[serde(default)]
    pub share_group: Option<String>,
    pub username: Option<String>,
    /// Environment variable holding the password (never the config file).
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// PEM file of CA certificates for `mqtts://`; the system roots when absent.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key for mutual TLS.
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    /// Larger payloads are refused (and acknowledged, so they cannot loop).
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// First reconnect delay; doubles per failure up to `reconnect_max_secs`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
    /// Capacity of the queue from this source to the ingest stage, and of the ack
    /// queues. It must exceed the broker's in-flight window (mosquitto
    /// `max_inflight_messages`): then the unacknowledged messages always fit and
    /// back-pressure can never close a cycle through the ack path.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

fn default_url() -> String {
    "mqtt://127.0.0.1:1883".into()
}
fn default_client_id() -> String {
    "aq-ingest".into()
}
fn default_topics() -> Vec<String> {
    vec!["aq/+/readings".into()]
}
fn default_password_env() -> String {
    "AQ_MQTT_PASSWORD".into()
}
fn default_max_payload_bytes() -> usize {
    // A day of minute readings as a JSON array is ~150 KiB.
    1024 * 1024 / 2
}
fn default_keep_alive_secs() -> u64 {
    30
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_secs() -> u64 {
    30
}
fn default_queue_capacity() -> usize {
    10_000
}

impl Default for MqttConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// Where the broker is, parsed from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Source failures at start-up (runtime connection errors are retried, not returned).
#[derive(Debug, Error)]
pub enum MqttError {
    #[error("mqtt.url {0:?}: use mqtt://host:port or mqtts://host:port")]
    Url(String),
    #[error("cannot read {path}: {source}")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl MqttConfig {
    /// The filters as subscribed: with the `$share/GROUP/` prefix when shared.
    pub fn subscriptions(&self) -> Vec<String> {
        match &self.share_group {
            Some(g) => self
                .topics
                .iter()
                .map(|t| format!("$share/{g}/{t}"))
                .collect(),
            None => self.topics.clone(),
        }
    }

    pub fn broker(&self) -> Result<BrokerAddr, MqttError> {
        let bad = || MqttError::Url(self.url.clone());
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        Ok(BrokerAddr {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    fn options(&self) -> Result<MqttOptions, MqttError> {
        let addr = self.broker()?;
        let mut o = MqttOptions::new(&self.client_id, &addr.host, addr.port);
        o.set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(self.keep_alive_secs.max(5)))
            .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET)
            .set_request_channel_capacity(self.queue_capacity.max(16));
        if let Some(user) = &self.username {
            let pass = std::env::var(&self.password_env).unwrap_or_default();
            o.set_credentials(user, pass);
        }
        if addr.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(self.tls_config()?),
            )));
        }
        Ok(o)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, MqttError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| MqttError::TlsFile {
                path: p.clone(),
                source,
            })
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.tls_ca_file {
            Some(p) => {
                let pem = read(p)?;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert.map_err(|e| MqttError::Tls(format!("{}: {e}", p.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| MqttError::Tls(format!("{}: {e}", p.display())))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| MqttError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        match (&self.tls_client_cert_file, &self.tls_client_key_file) {
            (Some(c), Some(k)) => {
                let certs = rustls_pemfile::certs(&mut read(c)?.as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| MqttError::Tls(format!("{}: {e}", c.display())))?;
                let key = rustls_pemfile::private_key(&mut read(k)?.as_slice())
                    .map_err(|e| MqttError::Tls(format!("{}: {e}", k.display())))?
                    .ok_or_else(|| MqttError::Tls(format!("{}: no private key", k.display())))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| MqttError::Tls(e.to_string()))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(MqttError::Tls(
                "tls_client_cert_file and tls_client_key_file go together".into(),
            )),
        }
    }
}

/// What acknowledging one message takes: its packet id, QoS and connection, packed into
/// the source-neutral [`AckToken`]'s `id` (generation in the high bits, QoS in bits
/// 16–17, packet id in the low 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    pkid: u16,
    qos: QoS,
    /// The connection it arrived on; an ack for an older connection is void.
    generation: u64,
}

impl Pending {
    fn pack(self) -> u64 {
        let q = match self.qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
            QoS::ExactlyOnce => 2,
        };
        (self.generation << 18) | (q << 16) | u64::from(self.pkid)
    }
    fn unpack(id: u64) -> Pending {
        let qos = match (id >> 16) & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        Pending {
            pkid: (id & 0xFFFF) as u16,
            qos,
            generation: id >> 18,
        }
    }
}

/// A started source.
pub struct MqttSource {
    /// The poll task; ends after shutdown once the acks are out (or the deadline passed).
    pub task: tokio::task::JoinHandle<()>,
    /// For publishing (alerts), with `try_publish` only: never awaited by the ingest.
    pub client: AsyncClient,
}

/// How long the poll task keeps the connection up after shutdown for the last acks.
pub const ACK_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Starts the source: connects (retrying forever with capped exponential backoff and
/// jitter) and subscribes. Messages go to `messages`, stamped with `source` as their
/// [`AckToken::source`], until `shutdown` turns true. Committed messages come back on
/// `acks`, in receive order; the source acknowledges them and, after shutdown,
/// disconnects once `acks` has closed.
pub fn start(
    cfg: &MqttConfig,
    source: SourceIndex,
    messages: mpsc::Sender<Message>,
    acks: mpsc::Receiver<Vec<Settled>>,
    ctx: SourceContext,
) -> Result<MqttSource, MqttError> {
    let options = cfg.options()?;
    let cap = cfg.queue_capacity.max(16);
    let (client, eventloop) = AsyncClient::new(options, cap);
    let poller = Poller {
        client,
        eventloop,
        topics: cfg.subscriptions(),
        source,
        generation: 0,
        clock: ctx.clock,
        metrics: ctx.metrics,
        tx: Some(messages),
        acks,
        backoff: Backoff::new(
            Duration::from_millis(cfg.reconnect_min_ms.max(1)),
            Duration::from_secs(cfg.reconnect_max_secs.max(1)),
        ),
        subscribed_once: false,
    };
    let publisher = poller.client.clone();
    let task = tokio::spawn(poller.run(ctx.shutdown));
    Ok(MqttSource {
        task,
        client: publisher,
    })
}

/// Publishes alerts through the source's client, without ever waiting on it.
#[derive(Clone)]
pub struct MqttAlertPublisher(pub AsyncClient);

impl crate::alerts::Publish for MqttAlertPublisher {
    fn try_publish(&self, alert: crate::alerts::Alert) -> Result<(), String> {
        self.0
            .try_publish(alert.topic, QoS::AtLeastOnce, true, alert.payload)
            .map_err(|e| e.to_string())
    }
}

/// The task that owns the rumqttc event loop.
///
/// Acknowledgements are written here, straight to the connection, one flush per
/// committed batch: rumqttc's `client.ack` costs a request-channel hop, a wake-up and a
/// socket write *per message*, which at tens of thousands of messages per second made
/// the broker and this service spend their time on 4-byte writes. Writing here also
/// removes the cycle through the client's request channel that can deadlock a manual-ack
/// consumer under back-pressure: this task drains `acks` even while it waits to hand a
/// message to the ingest stage.
struct Poller {
    /// Used only from spawned tasks (subscribe, disconnect): never awaited here.
    client: AsyncClient,
    eventloop: EventLoop,
    topics: Vec<String>,
    /// This source's index in the ingest's acker list, stamped on every token.
    source: SourceIndex,
    /// Connection counter: bumped at each CONNACK.
    generation: u64,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// To the ingest stage; dropped at shutdown, which is how ingest learns to finish.
    tx: Option<mpsc::Sender<Message>>,
    /// Committed batches (packed [`Pending`] ids), in receive order.
    acks: mpsc::Receiver<Vec<Settled>>,
    backoff: Backoff,
    subscribed_once: bool,
}

impl Poller {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut acks_open = true;
        // Phase 1: take messages until shutdown.
        while !*shutdown.borrow() {
            tokio::select! {
                _ = shutdown.changed() => {}
                batch = self.acks.recv(), if acks_open => match batch {
                    Some(b) => self.ack(b).await,
                    None => acks_open = false,
                },
                ev = self.eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if !self.forward(p, &mut shutdown).await {
                            break;
                        }
                    }
                    Ok(ev) => self.on_event(ev),
                    Err(e) => {
                        if !self.on_error(e, &mut shutdown).await {
                            break;
                        }
                    }
                },
            }
        }
        // Phase 2: no new messages; keep the connection polled and write the last
        // acknowledgements until ingest closes `acks`, then disconnect.
        self.tx = None;
        let drain = async {
            while acks_open {
                tokio::select! {
                    batch = self.acks.recv() => match batch {
                        Some(b) => self.ack(b).await,
                        None => acks_open = false,
                    },
                    ev = self.eventloop.poll() => {
                        if ev.is_err() {
                            // Disconnected: pending acks are void, redelivery covers them.
                            break;
                        }
                    }
                }
            }
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = client.disconnect().await;
            });
            // Poll until the DISCONNECT is written (or the connection ends).
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        if tokio::time::timeout(ACK_DRAIN_DEADLINE, drain)
            .await
            .is_err()
        {
            warn!(
                deadline_secs = ACK_DRAIN_DEADLINE.as_secs(),
                "mqtt: acks still pending at the shutdown deadline; the broker will redeliver them"
            );
        }
        self.metrics.mqtt_connected.store(false, Ordering::Relaxed);
        self.metrics.mqtt_subscribed.store(false, Ordering::Relaxed);
        info!("mqtt: source stopped");
    }

    /// Hands a publish to the ingest stage, writing acknowledgements while it waits
    /// (that wait is the back-pressure: the broker holds what we do not take). False
    /// when the source should stop: shutdown interrupted the wait (the message is then
    /// not acknowledged and the broker redelivers it next time) or ingest is gone.
    async fn forward(&mut self, p: Publish, shutdown: &mut watch::Receiver<bool>) -> bool {
        Metrics::add(&self.metrics.messages_received, 1);
        let pending = Pending {
            pkid: p.pkid,
            qos: p.qos,
            generation: self.generation,
        };
        let msg = Message {
            received: self.clock.now(),
            ack: AckToken {
                source: self.source,
                id: pending.pack(),
            },
            origin: Origin::Topic(p.topic),
            payload: p.payload,
        };
        let Some(tx) = self.tx.clone() else {
            return false;
        };
        loop {
            tokio::select! {
                permit = tx.reserve() => {
                    return match permit {
                        Ok(permit) => {
                            permit.send(msg);
                            true
                        }
                        Err(_) => false,
                    };
                }
                batch = self.acks.recv() => match batch {
                    Some(b) => self.ack(b).await,
                    // Ingest closed its side: it has stopped.
                    None => return false,
                },
                _ = shutdown.changed() => return false,
            }
        }
    }

    /// Writes the PUBACKs of one committed batch and flushes once.
    async fn ack(&mut self, batch: Vec<Settled>) {
        let current = self.generation;
        let Some(net) = self.eventloop.network.as_mut() else {
            // Disconnected: the broker redelivers; the copies are stored as duplicates.
            return;
        };
        let mut n = 0;
        for t in batch.into_iter().map(|s| Pending::unpack(s.id)) {
            if t.generation != current || t.qos == QoS::AtMostOnce {
                continue;
            }
            if net
                .write(Packet::PubAck(PubAck::new(t.pkid)))
                .await
                .is_err()
            {
                return;
            }
            n += 1;
        }
        if n > 0 && net.flush().await.is_ok() {
            Metrics::add(&self.metrics.messages_acked, n);
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Incoming(Packet::ConnAck(ack)) => {
                self.generation += 1;
                self.metrics.mqtt_connected.store(true, Ordering::Relaxed);
                Metrics::add(&self.metrics.mqtt_connects, 1);
                self.backoff.reset();
                info!(session_present = ack.session_present, "mqtt: connected");
                // Subscribe on a fresh session (the broker lost ours, or first start) and
                // once per process start (the configured topics may have changed).
                if !ack.session_present || !self.subscribed_once {
                    self.subscribed_once = true;
                    let client = self.client.clone();
                    let filters: Vec<_> = self
                        .topics
                        .iter()
                        .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
                        .collect();
                    // (`topics` already carry the `$share/GROUP/` prefix when shared.)
                    // A separate task: the poll task must never await the client.
                    tokio::spawn(async move {
                        if let Err(e) = client.subscribe_many(filters).await {
                            warn!(error = %e, "mqtt: subscribe request failed");
                        }
                    });
                } else {
                    // The broker kept our session and its subscriptions.
                    self.metrics.mqtt_subscribed.store(true, Ordering::Relaxed);
                }
            }
            Event::Incoming(Packet::SubAck(s)) => {
                for (code, topic) in s.return_codes.iter().zip(&self.topics) {
                    match code {
                        SubscribeReasonCode::Failure => {
                            error!(topic = %topic, "mqtt: broker refused the subscription; no readings will arrive for it")
                        }
                        SubscribeReasonCode::Success(q) => {
                            self.metrics.mqtt_subscribed.store(true, Ordering::Relaxed);
                            info!(topic = %topic, qos = ?q, "mqtt: subscribed")
                        }
                    }
                }
            }
            other => debug!(event = ?other, "mqtt event"),
        }
    }

    /// Handles a connection error; false when the loop should stop.
    async fn on_error(&mut self, e: ConnectionError, shutdown: &mut watch::Receiver<bool>) -> bool {
        let was_connected = self.metrics.mqtt_connected.swap(false, Ordering::Relaxed);
        self.metrics.mqtt_subscribed.store(false, Ordering::Relaxed);
        let delay = self.backoff.next_delay();
        if was_connected {
            warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "mqtt: connection lost");
        } else {
            debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "mqtt: connect failed");
        }
        if let ConnectionError::ConnectionRefused(code) = &e {
            error!(code = ?code, "mqtt: broker refused the connection (check credentials and client id)");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shutdown.changed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> Result<BrokerAddr, MqttError> {
        MqttConfig {
            url: u.into(),
            ..MqttConfig::default()
        }
        .broker()
    }

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            url("mqtt://10.0.0.5:1884").unwrap(),
            BrokerAddr {
                host: "10.0.0.5".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(url("mqtts://broker.example").unwrap().port, 8883);
        assert_eq!(url("mqtt://[::1]:1883").unwrap().host, "::1");
        assert!(url("tcp://x:1").is_err());
        assert!(url("mqtt://x:99999").is_err());
        assert!(url("mqtt://:1883").is_err());
    }

    #[test]
    fn ack_tokens_round_trip_through_the_neutral_id() {
        for (pkid, qos, generation) in [
            (1, QoS::AtLeastOnce, 1),
            (u16::MAX, QoS::AtMostOnce, 7),
            (42, QoS::ExactlyOnce, (1 << 40) + 3),
        ] {
            let p = Pending {
                pkid,
                qos,
                generation,
            };
            assert_eq!(Pending::unpack(p.pack()), p);
        }
    }

    #[test]
    fn tls_needs_both_client_files() {
        let cfg = MqttConfig {
            url: "mqtts://x:8883".into(),
            tls_client_cert_file: Some("/nonexistent".into()),
            ..MqttConfig::default()
        };
        assert!(matches!(cfg.tls_config(), Err(MqttError::Tls(_))));
    }
}
