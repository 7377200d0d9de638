//! Named stages and the ordered shutdown: the one place that says in which order the
//! service stops, and the one deadline it stops within.
//!
//! `app` registers each running stage under a name, in drain order: **sources stop →
//! ingest commits and acknowledges → sinks flush → the API stops** (housekeeping, which
//! holds nothing, stops first). [`Stages::drain`] walks that list: it fires a stage's
//! stop trigger when it has one (sources, housekeeping, the API; the ingest and sinks
//! stop by the closure of their input channel, so they finish what reached them) and
//! waits for it. Every few seconds it logs the stages still running by name; at the
//! overall deadline it abandons them, logs which, and returns.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How often the drain names the stages it is still waiting for.
pub const PENDING_REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// The `[shutdown]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// The whole ordered shutdown finishes within this many seconds; stages still
    /// running then are abandoned (what they held is redelivered or resent at the next
    /// start: nothing unacknowledged is lost).
    #[serde(default = "default_deadline_secs")]
    pub deadline_secs: u64,
}

fn default_deadline_secs() -> u64 {
    // Above the MQTT ack drain (30 s) and the sink's flush (10 s) together, below
    // systemd's default stop timeout (90 s), after which it sends SIGKILL.
    60
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl ShutdownConfig {
    pub fn problems(&self) -> Vec<String> {
        if self.deadline_secs == 0 {
            vec!["shutdown.deadline_secs must be positive".into()]
        } else {
            Vec::new()
        }
    }
}

/// A stage's stop trigger: called when the drain reaches the stage.
type Stop = Box<dyn FnOnce() + Send>;

struct Stage {
    name: &'static str,
    stop: Option<Stop>,
    task: JoinHandle<Result<(), String>>,
}

/// The running stages, in drain order.
#[derive(Default)]
pub struct Stages {
    stages: Vec<Stage>,
}

impl Stages {
    /// Spawns a stage that stops when its input closes.
    pub fn spawn<E: Display>(
        &mut self,
        name: &'static str,
        fut: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.push(name, None, fut);
    }

    /// Spawns a stage that stops when `stop` is called.
    pub fn spawn_stoppable<E: Display>(
        &mut self,
        name: &'static str,
        stop: impl FnOnce() + Send + 'static,
        fut: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.push(name, Some(Box::new(stop)), fut);
    }

    /// Registers a task spawned elsewhere (a source starts its own), with its trigger.
    pub fn adopt(
        &mut self,
        name: &'static str,
        stop: impl FnOnce() + Send + 'static,
        task: JoinHandle<()>,
    ) {
        self.push(name, Some(Box::new(stop)), async move {
            task.await.map_err(|e| e.to_string())
        });
    }

    fn push<E: Display>(
        &mut self,
        name: &'static str,
        stop: Option<Stop>,
        fut: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let task = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
        self.stages.push(Stage { name, stop, task });
    }

    /// The stages registered, in drain order.
    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name).collect()
    }

    /// Stops every stage in order within `deadline`. Returns the names of the stages
    /// abandoned at the deadline (empty: a clean stop).
    pub async fn drain(self, deadline: Duration) -> Vec<&'static str> {
        let until = tokio::time::Instant::now() + deadline;
        let mut report = tokio::time::interval(PENDING_REPORT_INTERVAL);
        report.tick().await;
        let mut stages = self.stages.into_iter();
        while let Some(mut stage) = stages.next() {
            if let Some(stop) = stage.stop.take() {
                stop();
            }
            loop {
                tokio::select! {
                    r = &mut stage.task => {
                        match r {
                            Ok(Ok(())) => info!(stage = stage.name, "stopped"),
                            Ok(Err(e)) => error!(stage = stage.name, error = %e, "stage stopped with an error"),
                            Err(e) => error!(stage = stage.name, error = %e, "stage panicked"),
                        }
                        break;
                    }
                    _ = report.tick() => {
                        let later = stages.as_slice().iter().filter(|s| !s.task.is_finished()).map(|s| s.name);
                        let pending: Vec<&str> = std::iter::once(stage.name).chain(later).collect();
                        warn!(waiting_for = stage.name, pending = ?pending, "shutdown: stages still running");
                    }
                    _ = tokio::time::sleep_until(until) => {
                        let mut abandoned = vec![stage.name];
                        stage.task.abort();
                        for s in stages {
                            if let Some(stop) = s.stop {
                                stop();
                            }
                            if !s.task.is_finished() {
                                abandoned.push(s.name);
                            }
                            s.task.abort();
                        }
                        error!(
                            deadline_secs = deadline.as_secs(),
                            abandoned = ?abandoned,
                            "shutdown deadline passed; abandoning the stages still running (unacknowledged messages are redelivered, unsent lines stay in the outbox)"
                        );
                        return abandoned;
                    }
                }
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn stages_stop_in_registration_order() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut st = Stages::default();
        for name in ["source", "ingest", "sink"] {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let o = Arc::clone(&order);
            st.spawn_stoppable(
                name,
                move || {
                    let _ = tx.send(());
                },
                async move {
                    let _ = rx.await;
                    o.lock().unwrap().push(name);
                    Ok::<(), String>(())
                },
            );
        }
        assert_eq!(st.names(), ["source", "ingest", "sink"]);
        assert!(st.drain(Duration::from_secs(5)).await.is_empty());
        assert_eq!(*order.lock().unwrap(), ["source", "ingest", "sink"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_stage_is_abandoned_at_the_deadline_by_name() {
        let mut st = Stages::default();
        st.spawn("ingest", async { Ok::<(), String>(()) });
        st.spawn("influx sink", std::future::pending::<Result<(), String>>());
        st.spawn_stoppable("api", || {}, std::future::pending::<Result<(), String>>());
        let t0 = tokio::time::Instant::now();
        let abandoned = st.drain(Duration::from_secs(3)).await;
        assert_eq!(abandoned, ["influx sink", "api"]);
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }
}
