//! A shared, bounded memo of computed API answers with single-flight, for answers that
//! are expensive and asked for by many clients at once (the target report: under ingest
//! it recomputes every site-day touched since the last cache refresh, 238 of them in
//! the district, on every request — CPU-bound work that eight analysts on two cores
//! would otherwise repeat eight times).
//!
//! **Staleness bound.** An answer is served to a request that arrives at `now` only
//! if its computation started no earlier than `now - max_staleness_ms`. The
//! computation takes its read snapshot after it started, so every answer reflects the
//! store as of a moment no more than `max_staleness_ms` before the request arrived
//! (`api.report_max_staleness_ms`, default [`DEFAULT_MAX_STALENESS_MS`]). Within that
//! bound a report is exactly what a fresh computation gave for the store as it was
//! then; a request after it computes afresh.
//!
//! **Single-flight.** A request whose key has a computation in flight (started within
//! the bound) waits for it instead of starting its own, so N concurrent requests cost
//! one computation. The computation runs in its own task: a leader whose client goes
//! away does not leave the others without an answer.
//!
//! **Bounded.** At most [`CAPACITY`] keys; expired entries go first, then the oldest.
//! A failed computation is shared with the requests that were waiting for it and then
//! forgotten, so the next request tries again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::error::ApiError;
use crate::model::UnixMillis;

/// The default staleness bound: one second. Long enough that, under a steady ingest
/// (a commit every few milliseconds) and a burst of analysts, one computation serves
/// every request of that second; short against the minute between cache refreshes and
/// far below anything an official reading a daily count could notice.
pub const DEFAULT_MAX_STALENESS_MS: u64 = 1_000;

/// How many keys (target × `as_of` × table sets) the memo holds at most: a few targets
/// times a few dates being looked at right now. `as_of` is the client's choice, so the
/// key space is not bounded by the config.
pub(super) const CAPACITY: usize = 32;

/// How a request's answer came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    /// This request started the computation (or the memo is off).
    Computed,
    /// Another request's computation, finished or in flight, within the bound.
    Shared,
}

/// The result a computation hands to everyone waiting for it (`None` until then).
type Slot<V> = Option<Result<V, ApiError>>;

/// One key's latest computation.
struct Entry<V> {
    /// The request time at which the computation started; its read snapshot is no
    /// older.
    started: UnixMillis,
    /// Which computation this is, so that a failed one removes only itself.
    id: u64,
    /// Receives the result once the computation ends.
    result: watch::Receiver<Slot<V>>,
}

/// The memo; see the module doc. Shared by the API's handlers behind an `Arc`.
pub(super) struct Memo<K, V> {
    /// Answers older than this (by their computation's start) are never served, in
    /// ms; 0 turns the memo off (every request computes).
    max_staleness_ms: i64,
    /// The entries, at most [`CAPACITY`]. A std mutex: held only to look up or insert,
    /// never across an await.
    entries: Mutex<HashMap<K, Entry<V>>>,
    /// Computations started (exported as a metric; tests count them).
    computations: AtomicU64,
    /// Requests answered by another request's computation.
    shared: AtomicU64,
    /// The next [`Entry::id`].
    next_id: AtomicU64,
}

impl<K, V> Memo<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(super) fn new(max_staleness_ms: u64) -> Self {
        Memo {
            max_staleness_ms: i64::try_from(max_staleness_ms).unwrap_or(i64::MAX),
            entries: Mutex::new(HashMap::new()),
            computations: AtomicU64::new(0),
            shared: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    /// Computations started so far (the API counts them in its metrics).
    #[cfg(test)]
    fn computations(&self) -> u64 {
        self.computations.load(Ordering::SeqCst)
    }

    /// Requests answered by another request's computation so far.
    #[cfg(test)]
    fn shared(&self) -> u64 {
        self.shared.load(Ordering::SeqCst)
    }

    /// The answer for `key` to a request arriving at `now`: a computation started
    /// within the bound (finished or in flight), else `compute`'s, started now.
    pub(super) async fn get<F, Fut>(
        self: &Arc<Self>,
        key: K,
        now: UnixMillis,
        compute: F,
    ) -> (Result<V, ApiError>, Served)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        if self.max_staleness_ms == 0 {
            self.computations.fetch_add(1, Ordering::SeqCst);
            return (compute().await, Served::Computed);
        }
        let (mut rx, served) = self.join_or_start(key, now, compute);
        let result = match rx.wait_for(Option::is_some).await {
            Ok(slot) => slot.clone().expect("waited for Some"),
            // The task ended without a result: it panicked (logged by tokio).
            Err(_) => Err(ApiError::internal(
                "a shared computation ended without a result",
            )),
        };
        (result, served)
    }

    /// Under the lock: the receiver of a computation within the bound, or of a new one
    /// spawned here.
    fn join_or_start<F, Fut>(
        self: &Arc<Self>,
        key: K,
        now: UnixMillis,
        compute: F,
    ) -> (watch::Receiver<Slot<V>>, Served)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = entries.get(&key) {
            // (A clock set back makes the difference negative: the answer is then
            // newer than the request, which the bound allows.)
            if now.0.saturating_sub(e.started.0) <= self.max_staleness_ms {
                self.shared.fetch_add(1, Ordering::SeqCst);
                return (e.result.clone(), Served::Shared);
            }
        }
        self.make_room(&mut entries, now);
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        entries.insert(
            key.clone(),
            Entry {
                started: now,
                id,
                result: rx.clone(),
            },
        );
        self.computations.fetch_add(1, Ordering::SeqCst);
        let fut = compute();
        let memo = Arc::clone(self);
        // Its own task: the requests waiting for it must get their answer even if the
        // request that started it is cancelled (its client went away).
        tokio::spawn(async move {
            let result = fut.await;
            if result.is_err() {
                // Not kept: the next request tries again. Removed before the result is
                // sent, so no later request joins a failure.
                let mut entries = memo.entries.lock().unwrap_or_else(PoisonError::into_inner);
                if entries.get(&key).is_some_and(|e| e.id == id) {
                    entries.remove(&key);
                }
            }
            // Nobody waiting any more is fine.
            let _ = tx.send(Some(result));
        });
        (rx, Served::Computed)
    }

    /// Frees a place for one more entry: drops every entry past the bound (no request
    /// can be served from it any more; whoever waits for it holds its receiver), then,
    /// while still full, the oldest.
    fn make_room(&self, entries: &mut HashMap<K, Entry<V>>, now: UnixMillis) {
        entries.retain(|_, e| now.0.saturating_sub(e.started.0) <= self.max_staleness_ms);
        while entries.len() >= CAPACITY {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| (e.started, e.id))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
    }

    /// How many entries are held (for the bound's test).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn t(ms: i64) -> UnixMillis {
        UnixMillis(ms)
    }

    /// A computation that answers `v` once `gate` is opened.
    fn gated(
        gate: &watch::Receiver<bool>,
        v: u32,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, ApiError>> + Send>>
    {
        let mut gate = gate.clone();
        move || {
            Box::pin(async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok(v)
            })
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_requests_share_one_computation() {
        let memo: Arc<Memo<&str, u32>> = Arc::new(Memo::new(1_000));
        let (open, gate) = watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (memo, compute) = (Arc::clone(&memo), gated(&gate, 100 + i));
            tasks.push(tokio::spawn(async move {
                memo.get("report", t(10_000 + i64::from(i)), compute).await
            }));
        }
        // On this one-thread runtime the spawned requests run while we yield: wait
        // until all eight have asked (one computes, seven join), with the computation
        // still held at its gate.
        while memo.computations() + memo.shared() < 8 {
            tokio::task::yield_now().await;
        }
        assert_eq!((memo.computations(), memo.shared()), (1, 7));
        open.send(true).unwrap();
        let mut served = Vec::new();
        for task in tasks {
            let (r, s) = task.await.unwrap();
            // Every one gets the leader's answer, not its own.
            assert_eq!(r.unwrap(), 100);
            served.push(s);
        }
        assert_eq!(
            served.iter().filter(|s| **s == Served::Computed).count(),
            1,
            "{served:?}"
        );
        assert_eq!(memo.computations(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_is_served_within_the_bound_and_recomputed_after_it() {
        let memo: Arc<Memo<&str, u32>> = Arc::new(Memo::new(1_000));
        let calls = Arc::new(AtomicU32::new(0));
        let ask = |now: i64| {
            let (memo, calls) = (Arc::clone(&memo), Arc::clone(&calls));
            async move {
                let (r, s) = memo
                    .get("report", t(now), move || async move {
                        // The "data" as of this computation: how many computations ran.
                        Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await;
                (r.ok(), s)
            }
        };
        assert_eq!(ask(0).await, (Some(1), Served::Computed));
        // Within the bound (inclusive): the same answer, no new computation.
        assert_eq!(ask(999).await, (Some(1), Served::Shared));
        assert_eq!(ask(1_000).await, (Some(1), Served::Shared));
        // One millisecond past it: computed afresh, and that is what is served next.
        assert_eq!(ask(1_001).await, (Some(2), Served::Computed));
        assert_eq!(ask(1_500).await, (Some(2), Served::Shared));
        assert_eq!(memo.computations(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failure_is_shared_with_its_waiters_and_not_kept() {
        let memo: Arc<Memo<&str, u32>> = Arc::new(Memo::new(1_000));
        let (r, s) = memo
            .get("report", t(0), || async { Err(ApiError::internal("boom")) })
            .await;
        assert_eq!((r.unwrap_err().code, s), ("internal", Served::Computed));
        // The next request, within the bound, computes again rather than get the error.
        let (r, s) = memo.get("report", t(1), || async { Ok(7) }).await;
        assert_eq!((r.unwrap(), s), (7, Served::Computed));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn zero_turns_the_memo_off() {
        let memo: Arc<Memo<&str, u32>> = Arc::new(Memo::new(0));
        for i in 0..3 {
            let (r, s) = memo.get("report", t(0), move || async move { Ok(i) }).await;
            assert_eq!((r.unwrap(), s), (i, Served::Computed));
        }
        assert_eq!((memo.computations(), memo.shared()), (3, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_memo_holds_at_most_its_capacity() {
        let memo: Arc<Memo<u32, u32>> = Arc::new(Memo::new(1_000));
        for k in 0..(CAPACITY as u32 * 3) {
            let (r, _) = memo.get(k, t(0), move || async move { Ok(k) }).await;
            assert_eq!(r.unwrap(), k);
            assert!(memo.len() <= CAPACITY, "{} entries", memo.len());
        }
        // The newest key is still there; the oldest was evicted and is computed again.
        let before = memo.computations();
        let last = CAPACITY as u32 * 3 - 1;
        assert_eq!(
            memo.get(last, t(0), || async { Ok(0) }).await.1,
            Served::Shared
        );
        assert_eq!(
            memo.get(0, t(0), || async { Ok(0) }).await.1,
            Served::Computed
        );
        assert_eq!(memo.computations(), before + 1);
    }
}
