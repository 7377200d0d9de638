//! The HJ 212 TCP listener: devices open a connection and stream frames; each whole
//! frame goes to the ingest as one message, and when its `Flag` asks for a reply the
//! CN=9014 answer (echoing its `QN`) is written **after the frame's readings are
//! committed** — the TCP equivalent of the MQTT PUBACK — and never for a frame the
//! ingest refused (bad CRC, wrong password, unknown MN, …: no reply, the connection
//! stays open, the refusal is in the rejects table).
//!
//! Per connection: frames split across reads and several per read are framed by
//! [`crate::decode::hj212::Framer`]; garbage between frames is skipped and counted; a
//! device silent for `idle_timeout_secs` or sending more than `max_frames_per_sec` is
//! disconnected and counted; a device killed mid-frame harms nobody else. At the
//! service's stop the listener closes first, connections stop reading, the replies of
//! what the ingest still commits are written, then they close.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::routes::Routes;
use super::{AckToken, Message, Origin, Settled, SourceContext, SourceIndex};
use crate::clock::Clock;
use crate::decode::hj212::{check_envelope, parse_segment, CrcVariant, Framer};
use crate::metrics::Metrics;
use crate::sites::Registry;
use crate::sites::UnknownMn;

/// The `[hj212]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hj212Config {
    /// Where HJ 212 devices connect; absent: no listener.
    pub listen: Option<SocketAddr>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A device silent this long is disconnected.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// A connection sending more frames per second than this is closed.
    #[serde(default = "default_max_frames_per_sec")]
    pub max_frames_per_sec: u32,
    /// A frame whose `MN` is not in the registry: `reject` or `register`.
    #[serde(default)]
    pub unknown_mn: UnknownMn,
    /// The CRC variant of devices whose registry entry names none.
    #[serde(default = "default_crc")]
    pub default_crc: String,
    /// MQTT topic filters whose payloads are HJ 212 frames (gateways wrapping them).
    #[serde(default)]
    pub mqtt_topics: Vec<String>,
}

fn default_max_connections() -> usize {
    2000
}
fn default_idle_timeout_secs() -> u64 {
    // Devices send a reading a minute at least, and heartbeats; ten minutes of silence
    // is a dead connection holding a slot.
    600
}
fn default_max_frames_per_sec() -> u32 {
    // A device uploading its backlog sends fast, but a hundred frames a second from one
    // device is a fault or an attack.
    100
}
fn default_crc() -> String {
    "hj212".into()
}

impl Default for Hj212Config {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl Hj212Config {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if CrcVariant::parse(&self.default_crc).is_none() {
            p.push(format!(
                "hj212.default_crc {:?}: use hj212, modbus or none",
                self.default_crc
            ));
        }
        if self.max_connections == 0 || self.max_frames_per_sec == 0 || self.idle_timeout_secs == 0
        {
            p.push(
                "hj212.max_connections, max_frames_per_sec and idle_timeout_secs must be positive"
                    .into(),
            );
        }
        for t in &self.mqtt_topics {
            if !rumqttc::mqttbytes::valid_filter(t) {
                p.push(format!(
                    "hj212.mqtt_topics: {t:?} is not an MQTT topic filter"
                ));
            }
        }
        p
    }
}

/// Start-up failures.
#[derive(Debug, Error)]
pub enum TcpError {
    #[error("the HJ 212 listener cannot listen on {addr}: {source} (set [hj212] listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Low bits of a token id: the frame counter of its connection (the rest is the
/// connection id).
const FRAME_BITS: u32 = 24;

/// The connection id of a token id.
fn conn_of(id: u64) -> u64 {
    id >> FRAME_BITS
}

/// Replies queued per connection, in batches from the router.
const CONN_ACK_BATCHES: usize = 256;

/// A reply that takes longer than this to write ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What connections share.
struct Shared {
    source: SourceIndex,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    default_crc: CrcVariant,
    idle: Duration,
    max_frames_per_sec: u32,
    routes: Routes,
}

/// A started listener.
pub struct TcpSource {
    /// Ends after the stop, once every connection wrote its last replies.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds the listener and serves devices until the context's shutdown turns true.
pub async fn start(
    cfg: &Hj212Config,
    addr: SocketAddr,
    registry: Arc<Registry>,
    source: SourceIndex,
    messages: mpsc::Sender<Message>,
    acks: mpsc::Receiver<Vec<Settled>>,
    ctx: SourceContext,
) -> Result<TcpSource, TcpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| TcpError::Listen { addr, source })?;
    let shared = Arc::new(Shared {
        source,
        clock: ctx.clock,
        metrics: ctx.metrics,
        registry,
        default_crc: CrcVariant::parse(&cfg.default_crc).unwrap_or_default(),
        idle: Duration::from_secs(cfg.idle_timeout_secs),
        max_frames_per_sec: cfg.max_frames_per_sec,
        routes: Routes::default(),
    });
    info!(listen = %addr, "HJ 212 listener: devices can connect");
    let router = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move { shared.routes.run(acks, conn_of, "hj212").await })
    };
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let mut stop = ctx.shutdown;
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while !*stop.borrow() {
            let (stream, peer) = tokio::select! {
                _ = stop.changed() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accepting an HJ 212 connection failed");
                        continue;
                    }
                },
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                Metrics::add(&shared.metrics.hj212_refused, 1);
                debug!(%peer, "HJ 212 connection refused: hj212.max_connections reached");
                continue;
            };
            let (shared, tx, stop) = (Arc::clone(&shared), messages.clone(), stop.clone());
            conns.spawn(async move {
                let _slot = slot;
                serve(stream, peer, shared, tx, stop).await;
            });
        }
        drop(listener);
        drop(messages);
        while conns.join_next().await.is_some() {}
        let _ = router.await;
        info!("HJ 212 listener: stopped");
    });
    Ok(TcpSource { task })
}

/// One device connection.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    to_ingest: mpsc::Sender<Message>,
    stop: watch::Receiver<bool>,
) {
    let (tx, acks) = mpsc::channel(CONN_ACK_BATCHES);
    let id = shared.routes.register(tx);
    shared
        .metrics
        .hj212_connections
        .fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        id,
        shared: Arc::clone(&shared),
        stream,
        peer,
        to_ingest: Some(to_ingest),
        acks,
        pending: VecDeque::new(),
        seq: 0,
        stop,
    };
    let why = conn.run().await;
    debug!(%peer, why, "HJ 212 connection ended");
    shared
        .metrics
        .hj212_connections
        .fetch_sub(1, Ordering::Relaxed);
    shared.routes.deregister(id);
}

struct Conn {
    id: u64,
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    to_ingest: Option<mpsc::Sender<Message>>,
    /// Committed frames' verdicts, from the router.
    acks: mpsc::Receiver<Vec<Settled>>,
    /// Frames handed to the ingest, in order, with the reply each wants.
    pending: VecDeque<(u64, Option<Vec<u8>>)>,
    /// Frame counter of this connection (the low 24 bits of its token ids).
    seq: u64,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn run(&mut self) -> &'static str {
        let mut framer = Framer::new();
        let mut buf = vec![0u8; 4096];
        let mut window = (tokio::time::Instant::now(), 0u32);
        let mut reading = !*self.stop.borrow();
        loop {
            if !reading {
                self.to_ingest = None;
                if self.pending.is_empty() {
                    return "stopped";
                }
            }
            let idle = tokio::time::sleep(self.shared.idle);
            let n = tokio::select! {
                biased;
                done = self.acks.recv() => match done {
                    Some(d) => {
                        if !self.reply(d).await {
                            return "reply write failed";
                        }
                        continue;
                    }
                    None => return "stopped",
                },
                _ = self.stop.changed(), if reading => {
                    reading = false;
                    continue;
                }
                r = self.stream.read(&mut buf), if reading => match r {
                    Ok(0) => {
                        // Killed mid-frame: what is left is counted, nobody else notices.
                        for e in framer.finish() {
                            self.refused_frame(&e);
                        }
                        return "closed by the device";
                    }
                    Ok(n) => n,
                    Err(_) => return "read failed",
                },
                _ = idle, if reading => {
                    Metrics::add(&self.shared.metrics.hj212_refused, 1);
                    return "idle timeout";
                }
            };
            let frames: Vec<_> = framer.feed(&buf[..n]).collect();
            for f in frames {
                match f {
                    Ok(frame) => {
                        if !self.rate_ok(&mut window) {
                            Metrics::add(&self.shared.metrics.hj212_refused, 1);
                            warn!(peer = %self.peer, limit = self.shared.max_frames_per_sec, "HJ 212 device over its frame rate; disconnected");
                            return "frame rate";
                        }
                        if !self.forward(frame).await {
                            reading = false;
                            break;
                        }
                    }
                    Err(e) => self.refused_frame(&e),
                }
            }
        }
    }

    /// Counts a framing error (garbage, a cut frame): these never reach the ingest, so
    /// they are counted here under their rejection reason.
    fn refused_frame(&self, e: &crate::decode::hj212::Hj212Error) {
        self.shared.metrics.reject(e.rejection().reason);
        debug!(peer = %self.peer, error = %e, "HJ 212 framing error");
    }

    fn rate_ok(&self, window: &mut (tokio::time::Instant, u32)) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= self.shared.max_frames_per_sec
    }

    /// The CN=9014 reply a frame asks for, with its device's CRC variant.
    fn wanted_reply(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let env = check_envelope(frame, CrcVariant::None).ok()?;
        let f = parse_segment(env.segment).ok()?;
        let crc = self
            .shared
            .registry
            .hj212_device(&f.mn)
            .and_then(|d| d.crc)
            .unwrap_or(self.shared.default_crc);
        f.reply(crc)?.ok()
    }

    /// Hands a frame to the ingest, writing replies meanwhile. False at the stop.
    async fn forward(&mut self, frame: Vec<u8>) -> bool {
        let Some(tx) = self.to_ingest.clone() else {
            return false;
        };
        let reply = self.wanted_reply(&frame);
        self.seq += 1;
        let id = (self.id << FRAME_BITS) | (self.seq & ((1 << FRAME_BITS) - 1));
        Metrics::add(&self.shared.metrics.hj212_frames, 1);
        loop {
            tokio::select! {
                slot = tx.reserve() => {
                    let Ok(slot) = slot else { return false };
                    slot.send(Message {
                        origin: Origin::Connection { peer: self.peer.to_string() },
                        payload: Bytes::from(frame),
                        received: self.shared.clock.now(),
                        ack: AckToken { source: self.shared.source, id },
                    });
                    self.pending.push_back((id, reply));
                    return true;
                }
                done = self.acks.recv() => match done {
                    Some(d) => {
                        if !self.reply(d).await {
                            return false;
                        }
                    }
                    None => return false,
                },
                _ = self.stop.changed() => return false,
            }
        }
    }

    /// Writes the replies of committed frames that were taken and asked for one.
    async fn reply(&mut self, done: Vec<Settled>) -> bool {
        let mut out = Vec::new();
        for d in done {
            let Some(pos) = self.pending.iter().position(|(i, _)| *i == d.id) else {
                continue;
            };
            if let Some((_, Some(reply))) = self.pending.remove(pos) {
                if d.accepted {
                    out.extend_from_slice(&reply);
                    Metrics::add(&self.shared.metrics.hj212_replies, 1);
                }
            }
        }
        if out.is_empty() {
            return true;
        }
        matches!(
            tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&out)).await,
            Ok(Ok(()))
        )
    }
}
