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
//! **Refresh ahead.** A request served an answer older than half the bound starts the
//! next computation in the background (one at a time per key); the requests after it
//! get the older answer while it is within the bound, then the new one. Under steady
//! demand no request waits for a computation unless one takes longer than half the
//! bound.
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
    /// Shared, and this request started the refresh ahead in the background.
    Refreshing,
}

/// The result a computation hands to everyone waiting for it (`None` until then).
type Slot<V> = Option<Result<V, ApiError>>;

/// One computation of a key.
struct Flight<V> {
    /// The request time at which it started; its read snapshot is no older.
    started: UnixMillis,
    /// Which computation this is, so that a failed one removes only itself.
    id: u64,
    /// Receives the result once the computation ends.
    result: watch::Receiver<Slot<V>>,
}

impl<V> Flight<V> {
    /// Finished. (A failed flight is taken out of the memo before its result is sent,
    /// so a finished flight found in the memo has an answer.)
    fn done(&self) -> bool {
        self.result.borrow().is_some()
    }
}

/// One key's computations.
struct Entry<V> {
    /// The latest, finished or in flight.
    latest: Flight<V>,
    /// The one before it, finished, kept while `latest` is a refresh in flight: it
    /// serves requests within the bound meanwhile.
    previous: Option<Flight<V>>,
}

/// The memo; see the module doc. Shared by the API's handlers behind an `Arc`.
pub(super) struct Memo<K, V> {
    /// Answers older than this (by their computation's start) are never served, in
    /// ms; 0 turns the memo off (every request computes).
    max_staleness_ms: i64,
    /// The entries, at most [`CAPACITY`]. A std mutex: held only to look up or insert,
    /// never across an await.
    entries: Mutex<HashMap<K, Entry<V>>>,
    /// Computations started (the API counts them in its metrics; tests here too).
    computations: AtomicU64,
    /// Requests answered by another request's computation.
    shared: AtomicU64,
    /// The next [`Flight::id`].
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

    /// Computations started so far.
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

    /// How long before `now` `f` started. (A clock set back makes it negative: the
    /// answer is then newer than the request, which the bound allows.)
    fn age(now: UnixMillis, f: &Flight<V>) -> i64 {
        now.0.saturating_sub(f.started.0)
    }

    /// Under the lock: the receiver of an answer within the bound — finished (then,
    /// past half the bound, a refresh is started in the background so that the
    /// requests after it need not wait for one) or in flight — or of a new computation
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
        let bound = self.max_staleness_ms;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = entries.get_mut(&key) {
            let rx = if e.latest.done() {
                (Self::age(now, &e.latest) <= bound).then(|| e.latest.result.clone())
            } else {
                // A refresh in flight: the answer before it while that is within the
                // bound, else the refresh's.
                e.previous
                    .as_ref()
                    .filter(|p| Self::age(now, p) <= bound)
                    .or((Self::age(now, &e.latest) <= bound).then_some(&e.latest))
                    .map(|f| f.result.clone())
            };
            if let Some(rx) = rx {
                self.shared.fetch_add(1, Ordering::SeqCst);
                if e.latest.done() && Self::age(now, &e.latest) > bound / 2 {
                    let next = self.spawn(key.clone(), now, compute);
                    e.previous = Some(std::mem::replace(&mut e.latest, next));
                    return (rx, Served::Refreshing);
                }
                return (rx, Served::Shared);
            }
        }
        self.make_room(&mut entries, now);
        let latest = self.spawn(key.clone(), now, compute);
        let rx = latest.result.clone();
        entries.insert(
            key,
            Entry {
                latest,
                previous: None,
            },
        );
        (rx, Served::Computed)
    }

    /// Starts `compute` in a task of its own: the requests waiting for it must get
    /// their answer even if the request that started it is cancelled (its client went
    /// away), and a background refresh has nobody waiting.
    fn spawn<F, Fut>(self: &Arc<Self>, key: K, now: UnixMillis, compute: F) -> Flight<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        self.computations.fetch_add(1, Ordering::SeqCst);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = watch::channel(None);
        let fut = compute();
        let memo = Arc::clone(self);
        tokio::spawn(async move {
            let result = fut.await;
            if result.is_err() {
                memo.forget(&key, id);
            }
            // Nobody waiting any more is fine.
            let _ = tx.send(Some(result));
        });
        Flight {
            started: now,
            id,
            result: rx,
        }
    }

    /// Takes failed computation `id` out of `key`'s entry (the answer before it, if
    /// any, stays): not kept, so the next request tries again. Called before the
    /// failure is sent, so no later request joins it.
    fn forget(&self, key: &K, id: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(e) = entries.get_mut(key) else {
            return;
        };
        if e.latest.id != id {
            return;
        }
        match e.previous.take() {
            Some(p) => e.latest = p,
            None => {
                entries.remove(key);
            }
        }
    }

    /// Frees a place for one more entry: drops every entry whose latest computation
    /// is past the bound (no request can be served from it any more; whoever waits
    /// for it holds its receiver), then, while still full, the oldest.
    fn make_room(&self, entries: &mut HashMap<K, Entry<V>>, now: UnixMillis) {
        entries.retain(|_, e| Self::age(now, &e.latest) <= self.max_staleness_ms);
        while entries.len() >= CAPACITY {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| (e.latest.started, e.latest.id))
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

    fn t(ms: i64) -> UnixMillis {
        UnixMillis(ms)
    }

    /// A computation's future, boxed so that gated and ready ones have one type.
    type Gated = std::pin::Pin<Box<dyn Future<Output = Result<u32, ApiError>> + Send>>;
    /// A computation, boxed so that one closure can be handed either kind.
    type Compute = Box<dyn FnOnce() -> Gated + Send>;

    /// A computation that answers `v` once `gate` is opened.
    fn gated(gate: &watch::Receiver<bool>, v: u32) -> Compute {
        let mut gate = gate.clone();
        Box::new(move || {
            Box::pin(async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok(v)
            }) as Gated
        })
    }

    /// A computation that answers `v` at once, boxed like [`gated`]'s.
    fn gated_ready(v: u32) -> Compute {
        Box::new(move || Box::pin(std::future::ready(Ok(v))) as Gated)
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
    async fn an_answer_is_never_served_past_the_bound_and_is_refreshed_ahead() {
        let memo: Arc<Memo<&str, u32>> = Arc::new(Memo::new(1_000));
        let ask = |now: i64, compute: Compute| {
            let memo = Arc::clone(&memo);
            async move {
                let (r, s) = memo.get("report", t(now), compute).await;
                (r.unwrap(), s)
            }
        };
        assert_eq!(ask(0, gated_ready(1)).await, (1, Served::Computed));
        // Up to half the bound: the answer, nothing else.
        assert_eq!(ask(500, gated_ready(9)).await, (1, Served::Shared));
        assert_eq!(memo.computations(), 1);
        // Past half the bound: still that answer, and the next computation starts in
        // the background (held at its gate here).
        let (open, gate) = watch::channel(false);
        assert_eq!(ask(501, gated(&gate, 2)).await, (1, Served::Refreshing));
        assert_eq!(memo.computations(), 2);
        // While it runs, the old answer serves up to the bound (inclusive), and no
        // second refresh starts.
        assert_eq!(ask(1_000, gated_ready(9)).await, (1, Served::Shared));
        assert_eq!(memo.computations(), 2);
        // Past the bound the old answer is never served: the request waits for the
        // refresh (started at 501, within the bound).
        let waiting = tokio::spawn(ask(1_001, gated_ready(9)));
        while memo.shared() < 4 {
            tokio::task::yield_now().await;
        }
        open.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), (2, Served::Shared));
        assert_eq!(memo.computations(), 2);
        // Long after (no request for more than the bound): computed afresh and waited
        // for.
        assert_eq!(ask(2_502, gated_ready(3)).await, (3, Served::Computed));
        assert_eq!((memo.computations(), memo.shared()), (3, 4));
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
