//! Housekeeping: the periodic work beside the data path, on one long-lived store
//! connection of its own — the day caches refreshed (and the daily derived series
//! emitted) on a timer so that reads never write, retention pruning, the outbox gauges
//! recomputed from the store (so that a sink asleep in backoff cannot freeze them), the
//! counters in the log, and — on a store shared by several instances, where each
//! commits only its share of a site's readings — the hourly alerts, from the stored
//! hours (see [`AlertSlot`]). A failure here is logged and retried at the next tick; it
//! never stops or blocks the ingest (SQLite's busy timeout makes its writes wait their
//! turn behind the writer's commits).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::alerts::Alerter;
use crate::aqi::AqiConfig;
use crate::clock::Clock;
use crate::derived::Derived;
use crate::metrics::Metrics;
use crate::model::UnixMillis;
use crate::plan::{Housekeeping as Timers, Plan};
use crate::store::{on_blocking_thread, Maintainer, StoreError};

/// How far back the shared-store alerts look: hours older than this are the past (an
/// alert is about a site's latest hour).
const ALERT_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// The alerter of a shared store, evaluated by the instance holding the housekeeping
/// role over the hours stored by every instance. Filled once the sources (which own
/// the publisher) have started; kept across leadership terms.
pub type AlertSlot = Arc<std::sync::Mutex<Option<Alerter>>>;

/// The stage.
pub struct Housekeeping {
    /// Its own connection, opened once (each open re-runs the migration check); `None`
    /// only after a task panicked with it, and then reopened at the next use.
    store: Option<Maintainer>,
    timers: Timers,
    aqi: AqiConfig,
    derived: Option<Derived>,
    /// The sink whose undelivered readings pruning must keep, and whose outbox the
    /// gauges describe; `None` without a sink.
    sink: Option<&'static str>,
    plan: Arc<Plan>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Shared store only: the alerts evaluated here.
    alerts: Option<AlertSlot>,
}

impl Housekeeping {
    /// Opens the stage's store connection.
    pub fn open(
        plan: Arc<Plan>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Housekeeping, StoreError> {
        Ok(Housekeeping {
            store: Some(Maintainer::open(&plan.store)?),
            timers: plan.housekeeping.clone(),
            aqi: plan.aqi.clone(),
            derived: plan.derived.clone(),
            sink: plan
                .influx
                .is_some()
                .then_some(crate::sink::influx::SINK_NAME),
            plan,
            clock,
            metrics,
            alerts: None,
        })
    }

    /// Evaluates the hourly alerts from the stored hours (a shared store).
    pub fn with_alerts(mut self, slot: AlertSlot) -> Self {
        self.alerts = Some(slot);
        self
    }

    /// Runs until `stop` fires (or its sender is dropped).
    pub async fn run(mut self, stop: &mut oneshot::Receiver<()>) -> Result<(), StoreError> {
        // A period long enough to mean "never" without overflowing the timer.
        let never = Duration::from_secs(u64::MAX / 4);
        let mut stats = tokio::time::interval(self.timers.stats_every.unwrap_or(never));
        let mut prune = tokio::time::interval(self.timers.prune_every);
        let mut daily = tokio::time::interval(self.timers.daily_every);
        let mut gauges = tokio::time::interval(self.timers.gauges_every);
        stats.tick().await;
        loop {
            tokio::select! {
                _ = &mut *stop => return Ok(()),
                _ = stats.tick() => self.metrics.log_counters(),
                _ = gauges.tick() => {
                    self.gauges().await;
                    self.alerts().await;
                }
                _ = daily.tick() => self.daily().await,
                _ = prune.tick() => self.prune().await,
            }
        }
    }

    /// Runs `f` on the connection on a blocking thread; a panic there is logged.
    async fn on_store<T: Send + 'static>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Maintainer) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let store = match self.store.take() {
            Some(s) => s,
            None => match crate::store::open_blocking({
                let cfg = self.plan.store.clone();
                move || Maintainer::open(&cfg)
            })
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, task = what, "housekeeping cannot reopen the store; retried at the next interval");
                    return None;
                }
            },
        };
        let f = move |s: &mut Maintainer| {
            let r = f(s);
            // Between ticks the connection needs no page cache: give it back.
            let _ = s.shrink_memory();
            r
        };
        match on_blocking_thread(store, f).await {
            Ok((s, r)) => {
                self.store = Some(s);
                r.map_err(|e| warn!(error = %e, task = what, "housekeeping failed; retried at the next interval"))
                    .ok()
            }
            Err(e) => {
                // The connection went down with the panicking task; the next use opens
                // another.
                warn!(error = %e, task = what, "housekeeping task failed");
                None
            }
        }
    }

    /// The day caches, and the derived daily series when a sink wants them.
    async fn daily(&mut self) {
        let (aqi, d, now) = (self.aqi.clone(), self.derived.clone(), self.clock.now());
        self.on_store("daily refresh", move |s| {
            s.refresh_daily(&aqi)?;
            match d {
                Some(d) => s.emit_derived_days(now, |pending, rows| d.day_lines(pending, rows)),
                None => Ok(0),
            }
        })
        .await;
    }

    /// Retention: readings past it (but never those the sink has not delivered), and
    /// rejects past it or beyond their cap.
    async fn prune(&mut self) {
        let cutoff = self.plan.prune_cutoff(self.clock.now());
        let sink = self.sink;
        if let Some(n) = self
            .on_store("pruning", move |s| s.prune(cutoff, sink))
            .await
            .filter(|n| *n > 0)
        {
            info!(readings = n, "pruned readings past retention");
        }
    }

    /// The shared store's alerts: the latest stored hours of every site, evaluated.
    async fn alerts(&mut self) {
        let Some(slot) = self.alerts.clone() else {
            return;
        };
        let now = self.clock.now();
        let from = UnixMillis(now.0 - ALERT_LOOKBACK.as_millis() as i64);
        let to = UnixMillis(now.0 + 3_600_000);
        let Some(mut hours) = self
            .on_store("alerts", move |s| s.reader().hours(from, to, None))
            .await
        else {
            return;
        };
        hours.sort_by_key(|h| h.hour);
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = guard.as_mut() {
            let (ok, failed) = a.after_commit(&hours);
            Metrics::add(&self.metrics.alerts_published, ok);
            Metrics::add(&self.metrics.alerts_failed, failed);
        }
    }

    /// The outbox gauges, from the store itself.
    async fn gauges(&mut self) {
        let Some(sink) = self.sink else {
            return;
        };
        let now = self.clock.now();
        if let Some((depth, oldest)) = self
            .on_store("outbox gauges", move |s| {
                let cursor = s.reader().cursor(sink)?;
                s.reader().pending_stats(&cursor)
            })
            .await
        {
            self.metrics.outbox_depth.store(depth, Ordering::Relaxed);
            let age = oldest.map_or(0, |t| ((now.0 - t.0).max(0) / 1000) as u64);
            self.metrics
                .outbox_oldest_age_secs
                .store(age, Ordering::Relaxed);
        }
    }
}
