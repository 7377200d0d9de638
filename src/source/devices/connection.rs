//! One device connection: CONNECT and its credentials, then PUBLISHes handed to the
//! ingest and acknowledged only when the ingest says they are committed (PUBACK for
//! QoS 1, PUBREC for QoS 2), subscriptions to the alert board, keep-alive.
//!
//! The task never stops draining its acknowledgements: while it waits for room (the
//! pending-bytes limit) or for a slot in the ingest's queue, committed batches keep
//! coming back and are written, which is what frees the room it waits for. After the
//! service's stop it reads nothing more, writes the acknowledgements of what the ingest
//! still commits, and closes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit};
use tracing::{debug, warn};

use super::codec::{self, ConnectAnswer, Incoming, Outgoing, Version};
use super::Shared;
use crate::metrics::Metrics;
use crate::source::{AckToken, Message, Origin, Settled};

/// A device has this long to send its CONNECT after the TCP (and TLS) handshake.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A write to a device that takes longer than this ends the connection: a device that
/// does not read its PUBACKs cannot hold the others' acknowledgements.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Committed batches queued for one connection's acknowledgements.
pub(super) const CONN_ACK_BATCHES: usize = 256;

/// Why a connection ended, for the debug log.
#[derive(Debug)]
enum End {
    Closed,
    Disconnect,
    KeepAlive,
    Protocol(String),
    /// A 3.1.1 client published where it may not (closed, counted).
    Unauthorized,
    Io(std::io::Error),
    Stopped,
}

/// Packs what acknowledging a publish takes into the source-neutral token id:
/// connection id (high bits), QoS (bits 16–17), packet id (low 16).
pub(super) fn pack(conn: u64, qos: u8, pkid: u16) -> u64 {
    (conn << 18) | (u64::from(qos & 3) << 16) | u64::from(pkid)
}

/// The connection id of a packed token.
pub(super) fn conn_of(id: u64) -> u64 {
    id >> 18
}

fn unpack(id: u64) -> (u8, u16) {
    (((id >> 16) & 3) as u8, (id & 0xFFFF) as u16)
}

/// Serves one connection until it ends.
pub(super) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    cert_cn: Option<String>,
    shared: Arc<Shared>,
    to_ingest: mpsc::Sender<Message>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut inbuf = BytesMut::with_capacity(4096);
    let connect = tokio::time::timeout(
        CONNECT_TIMEOUT,
        read_connect(&mut reader, &mut inbuf, shared.max_packet),
    )
    .await;
    let (version, client_id, keep_alive, login) = match connect {
        Ok(Ok(Incoming::Connect {
            version,
            client_id,
            keep_alive_secs,
            login,
        })) => (version, client_id, keep_alive_secs, login),
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
            Metrics::add(&shared.metrics.device_refused, 1);
            debug!(%peer, "device connection closed before a valid CONNECT");
            return;
        }
    };
    let Some(who) = shared.authenticate(cert_cn.as_deref(), login.as_ref()) else {
        Metrics::add(&shared.metrics.device_refused, 1);
        shared.log_refusal(&peer, &client_id, "bad user name or password");
        refuse_connect(version, &mut writer).await;
        return;
    };
    let (ack_tx, acks) = mpsc::channel(CONN_ACK_BATCHES);
    let id = shared.register(ack_tx);
    let mut conn = Conn {
        id,
        who,
        client_id: client_id.clone(),
        peer,
        shared: Arc::clone(&shared),
        writer,
        version,
        to_ingest: Some(to_ingest),
        acks,
        inflight: VecDeque::new(),
        out: BytesMut::with_capacity(1024),
        subscriptions: Vec::new(),
        live: None,
        keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
        stop,
    };
    shared
        .metrics
        .device_connections
        .fetch_add(1, Ordering::Relaxed);
    let end = conn.run(&mut reader, inbuf, &peer).await;
    shared
        .metrics
        .device_connections
        .fetch_sub(1, Ordering::Relaxed);
    shared.deregister(id);
    match end {
        End::Protocol(e) => {
            Metrics::add(&shared.metrics.device_refused, 1);
            shared.log_refusal(&peer, &client_id, &e);
        }
        End::Io(e) => debug!(%peer, client_id, error = %e, "device connection failed"),
        other => debug!(%peer, client_id, end = ?other, "device connection ended"),
    }
}

/// Answers a refused CONNECT ("bad user name or password"); the caller then closes.
async fn refuse_connect<W: AsyncWrite + Unpin>(version: Version, writer: &mut W) {
    let mut out = BytesMut::new();
    let answer = Outgoing::ConnAck(ConnectAnswer::BadCredentials);
    if codec::write(version, answer, &mut out).is_ok() {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&out)).await;
    }
}

/// Reads until a whole CONNECT is in.
async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Incoming, End> {
    loop {
        match codec::read_connect(buf, max) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(End::Protocol(e.to_string())),
        }
        if reader.read_buf(buf).await.map_err(End::Io)? == 0 {
            return Err(End::Closed);
        }
    }
}

/// An accepted connection.
struct Conn<S> {
    /// Its id: the high bits of its tokens, and its route in `Shared`.
    id: u64,
    /// Who logged in: decides what it may publish.
    who: super::Identity,
    client_id: String,
    peer: SocketAddr,
    shared: Arc<Shared>,
    writer: WriteHalf<S>,
    version: Version,
    /// To the ingest; dropped at the service's stop (the ingest's input closes when
    /// every holder has dropped it).
    to_ingest: Option<mpsc::Sender<Message>>,
    /// Committed batches of this connection's tokens, from the router.
    acks: mpsc::Receiver<Vec<Settled>>,
    /// Publishes handed to the ingest and not yet acknowledged, in order, with the
    /// room (pending bytes) each holds; `None`: a refused publish whose refusal waits
    /// its turn (acknowledgements go out in the order the publishes came).
    inflight: VecDeque<(u64, Option<OwnedSemaphorePermit>)>,
    /// Bytes to write, flushed after each read or ack batch.
    out: BytesMut,
    /// Granted alert filters.
    subscriptions: Vec<String>,
    live: Option<broadcast::Receiver<(String, Bytes)>>,
    /// 1.5 × the device's keep-alive: silence that long ends the connection.
    keep_alive: Option<Duration>,
    stop: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Conn<S> {
    async fn run(
        &mut self,
        reader: &mut ReadHalf<S>,
        mut inbuf: BytesMut,
        peer: &SocketAddr,
    ) -> End {
        self.push(Outgoing::ConnAck(ConnectAnswer::Accepted));
        if let Err(e) = self.flush().await {
            return e;
        }
        let mut reading = !*self.stop.borrow();
        let mut last_heard = tokio::time::Instant::now();
        loop {
            if !reading {
                self.to_ingest = None;
                if self.inflight.is_empty() {
                    return End::Stopped;
                }
            }
            // Packets already buffered first (a CONNECT can arrive with publishes).
            if reading && !inbuf.is_empty() {
                match self.handle_buffered(&mut inbuf).await {
                    Ok(true) => {}
                    Ok(false) => reading = false,
                    Err(e) => return e,
                }
                // Time held back for room is ours, not the device's silence.
                last_heard = tokio::time::Instant::now();
                if let Err(e) = self.flush().await {
                    return e;
                }
            }
            let idle = self
                .keep_alive
                .map(|k| last_heard + k)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                biased;
                batch = self.acks.recv() => match batch {
                    Some(ids) => self.acked(ids),
                    // The router is gone: the ingest has finished.
                    None => return End::Stopped,
                },
                _ = self.stop.changed(), if reading => reading = false,
                alert = next_alert(&mut self.live) => self.alert(alert),
                r = reader.read_buf(&mut inbuf), if reading => match r {
                    Ok(0) => return End::Closed,
                    Ok(_) => last_heard = tokio::time::Instant::now(),
                    Err(e) => return End::Io(e),
                },
                _ = tokio::time::sleep_until(idle), if reading && self.keep_alive.is_some() => {
                    debug!(%peer, "device silent past its keep-alive");
                    return End::KeepAlive;
                }
            }
            if let Err(e) = self.flush().await {
                return e;
            }
        }
    }

    /// Handles every whole packet in `inbuf`. False when the service stopped while a
    /// publish waited (it is then not acknowledged: the device sends it again).
    async fn handle_buffered(&mut self, inbuf: &mut BytesMut) -> Result<bool, End> {
        loop {
            let packet = match codec::read(self.version, inbuf, self.shared.max_packet) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(true),
                Err(e) => return Err(End::Protocol(e.to_string())),
            };
            match packet {
                Incoming::Publish {
                    topic,
                    payload,
                    pkid,
                    qos,
                } => {
                    if !self.shared.may_publish(&self.who, &topic) {
                        self.refuse(&topic, pkid, qos)?;
                        continue;
                    }
                    if !self.forward(topic, payload, pkid, qos).await {
                        return Ok(false);
                    }
                }
                Incoming::PubRel { pkid } => self.push(Outgoing::PubComp(pkid)),
                Incoming::Subscribe { pkid, filters } => self.subscribe(pkid, filters),
                Incoming::Unsubscribe { pkid, filters } => {
                    self.subscriptions.retain(|s| !filters.contains(s));
                    self.push(Outgoing::UnsubAck(pkid, filters.len()));
                }
                Incoming::PingReq => self.push(Outgoing::PingResp),
                Incoming::Disconnect => return Err(End::Disconnect),
                Incoming::Connect { .. } => {
                    return Err(End::Protocol("a second CONNECT".into()));
                }
                Incoming::Ignored => {}
            }
        }
    }

    /// Hands a publish to the ingest once there is room for it, writing the
    /// acknowledgements that come back meanwhile. False when the service stopped first.
    async fn forward(&mut self, topic: String, payload: Bytes, pkid: u16, qos: u8) -> bool {
        let shared = Arc::clone(&self.shared);
        let want = u32::try_from(payload.len().max(1)).unwrap_or(u32::MAX);
        let room = match Arc::clone(&shared.room).try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(_) => {
                // Held back: the store is not keeping up. The device's socket is not
                // read until there is room (TCP back-pressure); nothing is dropped.
                Metrics::add(&shared.metrics.device_waits, 1);
                shared
                    .metrics
                    .devices_waiting
                    .fetch_add(1, Ordering::Relaxed);
                let got = loop {
                    tokio::select! {
                        p = Arc::clone(&shared.room).acquire_many_owned(want) => break p.ok(),
                        batch = self.acks.recv() => match batch {
                            Some(ids) => {
                                self.acked(ids);
                                if self.flush().await.is_err() {
                                    break None;
                                }
                            }
                            None => break None,
                        },
                        _ = self.stop.changed() => break None,
                    }
                };
                shared
                    .metrics
                    .devices_waiting
                    .fetch_sub(1, Ordering::Relaxed);
                match got {
                    Some(p) => p,
                    None => return false,
                }
            }
        };
        shared.note_pending();
        let Some(tx) = self.to_ingest.clone() else {
            return false;
        };
        loop {
            tokio::select! {
                slot = tx.reserve() => {
                    let Ok(slot) = slot else { return false };
                    let id = pack(self.id, qos, pkid);
                    Metrics::add(&shared.metrics.messages_received, 1);
                    slot.send(Message {
                        origin: Origin::Topic(topic),
                        payload,
                        received: shared.clock.now(),
                        ack: AckToken { source: shared.source, id },
                    });
                    self.inflight.push_back((id, Some(room)));
                    return true;
                }
                batch = self.acks.recv() => match batch {
                    Some(ids) => {
                        self.acked(ids);
                        if self.flush().await.is_err() {
                            return false;
                        }
                    }
                    None => return false,
                },
                _ = self.stop.changed() => return false,
            }
        }
    }

    /// Queues the acknowledgements of a committed batch and frees its room.
    fn acked(&mut self, done: Vec<Settled>) {
        let mut n = 0;
        for Settled { id, .. } in done {
            // Tokens come back in the order they were sent.
            if let Some(pos) = self.inflight.iter().position(|(i, _)| *i == id) {
                self.inflight.remove(pos);
            }
            match unpack(id) {
                (1, pkid) => self.push(Outgoing::PubAck(pkid)),
                (2, pkid) => self.push(Outgoing::PubRec(pkid)),
                _ => {}
            }
            n += 1;
            self.refusals_due();
        }
        Metrics::add(&self.shared.metrics.messages_acked, n);
        self.shared.note_pending();
    }

    /// A publish this client may not make: never stored, counted, logged (rate-limited).
    /// MQTT 5: a PUBACK "not authorized" in its turn. 3.1.1 has no refusal code, and a
    /// PUBACK would tell the device its reading was taken: the connection is closed.
    fn refuse(&mut self, topic: &str, pkid: u16, qos: u8) -> Result<(), End> {
        Metrics::add(&self.shared.metrics.device_unauthorized, 1);
        self.shared
            .log_unauthorized(&self.peer, &self.client_id, topic);
        if self.version == Version::V311 {
            return Err(End::Unauthorized);
        }
        if qos > 0 {
            self.inflight.push_back((pack(self.id, qos, pkid), None));
            self.refusals_due();
        }
        Ok(())
    }

    /// Writes the refusals now at the head of the queue.
    fn refusals_due(&mut self) {
        while let Some((id, None)) = self.inflight.front() {
            let (_, pkid) = unpack(*id);
            self.inflight.pop_front();
            self.push(Outgoing::PubAckRefused(pkid));
        }
    }

    /// Grants QoS 0 on valid filters (only alerts are ever delivered), sends the
    /// retained alerts they match, and follows the live ones.
    fn subscribe(&mut self, pkid: u16, filters: Vec<String>) {
        let granted: Vec<Option<u8>> = filters
            .iter()
            .map(|f| rumqttc::mqttbytes::valid_filter(f).then_some(0))
            .collect();
        self.push(Outgoing::SubAck(pkid, &granted));
        for (f, g) in filters.into_iter().zip(&granted) {
            if g.is_none() {
                continue;
            }
            for (topic, payload) in self.shared.board.retained_matching(&f) {
                self.push(Outgoing::Publish {
                    topic: &topic,
                    payload: &payload,
                    retain: true,
                });
            }
            self.subscriptions.push(f);
        }
        if self.live.is_none() && !self.subscriptions.is_empty() {
            self.live = Some(self.shared.board.follow());
        }
    }

    fn alert(&mut self, alert: Option<(String, Bytes)>) {
        let Some((topic, payload)) = alert else {
            self.live = None;
            return;
        };
        if self
            .subscriptions
            .iter()
            .any(|f| rumqttc::mqttbytes::matches(&topic, f))
        {
            self.push(Outgoing::Publish {
                topic: &topic,
                payload: &payload,
                retain: false,
            });
        }
    }

    fn push(&mut self, p: Outgoing<'_>) {
        if let Err(e) = codec::write(self.version, p, &mut self.out) {
            warn!(error = %e, "cannot encode a packet for a device");
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.writer.write_all(&self.out).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Protocol(
                "the device does not read what we send".into(),
            )),
        }
    }
}

/// The next live alert, or never when the connection follows none.
async fn next_alert(
    live: &mut Option<broadcast::Receiver<(String, Bytes)>>,
) -> Option<(String, Bytes)> {
    let Some(r) = live else {
        return std::future::pending().await;
    };
    loop {
        match r.recv().await {
            Ok(m) => return Some(m),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_connection_qos_and_packet() {
        let id = pack(123_456_789, 1, 65_535);
        assert_eq!(conn_of(id), 123_456_789);
        assert_eq!(unpack(id), (1, 65_535));
        assert_eq!(unpack(pack(7, 2, 9)), (2, 9));
    }
}
