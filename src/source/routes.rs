//! Acknowledgement routing for sources that serve many connections (the embedded
//! broker, the HJ 212 listener): each connection registers its own queue; one task
//! hands each committed batch's verdicts to the connections they came from. A verdict
//! whose connection has gone is dropped: that device sends the message again and the
//! copy is stored as a duplicate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tracing::warn;

use super::Settled;

/// The connections' acknowledgement queues, by connection id.
#[derive(Debug)]
pub(crate) struct Routes {
    queues: Mutex<HashMap<u64, mpsc::Sender<Vec<Settled>>>>,
    next_id: AtomicU64,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            queues: Mutex::new(HashMap::new()),
            // 0 is never a connection's id.
            next_id: AtomicU64::new(1),
        }
    }
}

impl Routes {
    /// A new connection id, its verdicts to go to `tx`.
    pub(crate) fn register(&self, tx: mpsc::Sender<Vec<Settled>>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut q) = self.queues.lock() {
            q.insert(id, tx);
        }
        id
    }

    pub(crate) fn deregister(&self, id: u64) {
        if let Ok(mut q) = self.queues.lock() {
            q.remove(&id);
        }
    }

    /// Routes every batch from the ingest until it drops its acker, then closes every
    /// queue (which ends the connections). `conn_of` reads the connection id out of a
    /// token id; `what` names the connections in the log.
    pub(crate) async fn run(
        &self,
        mut acks: mpsc::Receiver<Vec<Settled>>,
        conn_of: fn(u64) -> u64,
        what: &'static str,
    ) {
        while let Some(done) = acks.recv().await {
            let mut by_conn: HashMap<u64, Vec<Settled>> = HashMap::new();
            for d in done {
                by_conn.entry(conn_of(d.id)).or_default().push(d);
            }
            let targets: Vec<_> = match self.queues.lock() {
                Ok(q) => by_conn
                    .into_iter()
                    .filter_map(|(c, d)| q.get(&c).map(|tx| (tx.clone(), d)))
                    .collect(),
                Err(_) => Vec::new(),
            };
            for (tx, d) in targets {
                // A connection drains its queue even while it waits on the ingest; a
                // full one belongs to a device that stopped reading (its write times
                // out and it is closed).
                if tx.try_send(d).is_err() {
                    warn!(
                        connection = what,
                        "an acknowledgement queue is full; its device will send again"
                    );
                }
            }
        }
        if let Ok(mut q) = self.queues.lock() {
            q.clear();
        }
    }
}
