//! Sources: where raw messages come from, and the contract every source keeps with the
//! ingest stage.
//!
//! A source hands the ingest a [`Message`] (its [`Origin`], payload bytes and receive
//! time) with an [`AckToken`]. The ingest commits the message's readings and rejects,
//! then returns the tokens of a committed batch to the source that issued them, in
//! receive order, through that source's [`Acker`]. Only then does the source tell the
//! device or broker that the message is safe (an MQTT PUBACK, an HJ 212 CN=9014 reply).
//! Nothing in this contract names a protocol: an MQTT, TCP or NATS source implements it
//! with its own meaning for the token's `id`.
//!
//! Shutdown is by channel closure: a source stops sending and drops its sender; when
//! every source has, the ingest's input closes, it commits what it holds, returns the
//! last tokens and drops the ackers; each source then finishes its acknowledgements.

pub mod devices;
pub mod mqtt;
pub mod nats;
mod routes;
pub mod tcp;
pub mod topic;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::UnixMillis;

/// What every source shares with the rest of the service.
pub struct SourceContext {
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the service stops taking messages.
    pub shutdown: watch::Receiver<bool>,
}

/// Where a message came from, as far as decoding and validation need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A broker topic: the site is a level of it (see [`topic::SiteFilter`]).
    Topic(String),
    /// A device connection (HJ 212 over TCP): the site comes from the frame's MN.
    Connection {
        /// The peer address, for logs and rejects.
        peer: String,
    },
}

impl Origin {
    /// A short label for logs and the rejects table: the topic, or `tcp:<peer>`.
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Origin::Topic(t) => std::borrow::Cow::Borrowed(t),
            Origin::Connection { peer } => std::borrow::Cow::Owned(format!("tcp:{peer}")),
        }
    }
}

/// Which source issued a token: its index in the ingest's acker list, assigned by
/// `app` when it wires the sources.
pub type SourceIndex = u8;

/// What it takes to acknowledge one message: the issuing source and that source's own
/// token (an MQTT source packs its connection generation and packet id into it). Copy
/// and allocation-free: a busy stream carries tens of thousands per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pub source: SourceIndex,
    pub id: u64,
}

/// A message the ingest has finished with, handed back to its source after the commit:
/// the token's id, and whether the payload was taken (its valid readings are
/// committed) or refused as a whole (the rejection is committed). An MQTT source
/// acknowledges both (a refused payload must not loop); an HJ 212 device gets its
/// CN=9014 reply only for a frame that was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub id: u64,
    pub accepted: bool,
}

/// One received message.
#[derive(Debug)]
pub struct Message {
    pub origin: Origin,
    pub payload: Bytes,
    pub received: UnixMillis,
    pub ack: AckToken,
}

/// The ingest's handle back to one source: committed tokens, one batch at a time, in
/// receive order. Dropping it tells the source that no more will come.
#[derive(Debug)]
pub struct Acker {
    tx: mpsc::Sender<Vec<Settled>>,
}

/// Committed batches waiting for a source to write their acknowledgements. Batches, not
/// messages; a source drains this queue even while it waits on the ingest, so the two
/// cannot deadlock.
pub const ACK_QUEUE_BATCHES: usize = 64;

impl Acker {
    /// A new acker and the receiving end its source reads.
    pub fn channel() -> (Acker, mpsc::Receiver<Vec<Settled>>) {
        let (tx, rx) = mpsc::channel(ACK_QUEUE_BATCHES);
        (Acker { tx }, rx)
    }

    /// Hands a committed batch's tokens back. False when the source is gone (stopped):
    /// its broker or devices then redeliver, and the copies are stored as duplicates.
    pub async fn committed(&self, done: Vec<Settled>) -> bool {
        self.tx.send(done).await.is_ok()
    }
}
