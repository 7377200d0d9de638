//! Wiring only: takes a resolved [`Plan`], opens the store roles, builds the bounded
//! channels, starts the stages under their names and stops them in the order
//! [`crate::stages`] states.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use crate::alerts::{Alerter, Publish};
use crate::api;
use crate::clock::Clock;
use crate::config::Config;
use crate::housekeeping::{AlertSlot, Housekeeping};
use crate::metrics::Metrics;
use crate::plan::{Plan, EXAMPLE_PAYLOAD, EXAMPLE_SITE};
use crate::sink::influx::InfluxSink;
use crate::sink::tail::{News, NEWS_SLOTS};
use crate::source::devices::{self, BoardPublisher};
use crate::source::mqtt::{self, MqttAlertPublisher};
use crate::source::nats::{self, NatsAlertPublisher};
use crate::source::tcp;
use crate::source::{Acker, Message, SourceContext, SourceIndex};
use crate::stages::Stages;
use crate::store::roles::{self, Role};
use crate::store::{open_blocking, Backend, Store, StoreLock, Writer};

/// The device source's index among the ingest's ackers.
const DEVICE_SOURCE: SourceIndex = 0;

/// The HJ 212 listener's index among the ingest's ackers.
const HJ212_SOURCE: SourceIndex = 1;

/// Resolves `cfg` and runs the service until `shutdown` resolves (see [`serve`]).
pub async fn run(
    cfg: Config,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let plan = Plan::resolve(cfg, "config")?;
    serve(plan, clock, metrics, shutdown).await
}

/// Runs the service until `shutdown` resolves, then stops it in order.
pub async fn serve(
    plan: Plan,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let plan = Arc::new(plan);
    // One service per store, held until this function returns.
    let _lock = StoreLock::acquire(&plan.store).context("locking the store")?;
    info!(sites = plan.registry.sites().count(), "site registry");
    let writer = open_blocking({
        let cfg = plan.store.clone();
        move || Writer::open(&cfg)
    })
    .await
    .context("opening the store")?;
    info!(store = %plan.store.describe(), "store open");

    // Registered in drain order (see `stages`).
    let mut stages = Stages::default();
    let alert_slot = AlertSlot::default();
    start_housekeeping(&plan, &clock, &metrics, &alert_slot, &mut stages)?;
    let (messages, ackers, alerts) = start_sources(&plan, &clock, &metrics, &mut stages).await?;
    // A shared store: each instance commits a share of a site's readings, so the one
    // holding the housekeeping role evaluates the alerts from the stored hours.
    let alerts = if plan_is_shared(&plan) {
        *alert_slot.lock().unwrap_or_else(|p| p.into_inner()) = alerts;
        None
    } else {
        alerts
    };
    // The sink, when configured, with the channel the ingest uses to wake it after a
    // commit and to hand it what the commit appended (`sink::tail`).
    let (nudge_tx, sink) = match &plan.influx {
        Some(icfg) => {
            let (tx, rx) = mpsc::channel(NEWS_SLOTS);
            info!(url = %icfg.url, api = ?icfg.api, "influx sink enabled");
            (Some(tx), Some(sink_stage(&plan, &clock, &metrics, rx)?))
        }
        None => (None, None),
    };
    let ingest = plan.ingest_stage(writer, Arc::clone(&clock), Arc::clone(&metrics), alerts);
    stages.spawn("ingest", ingest.run(messages, ackers, nudge_tx));
    if let Some(sink) = sink {
        stages.spawn("influx sink", sink);
    }
    start_api(&plan, &clock, &metrics, &mut stages).await?;

    shutdown.await;
    info!(stages = ?stages.names(), "shutting down: no new messages; committing and acknowledging what is in flight");
    stages.drain(plan.shutdown_deadline).await;
    metrics.log_counters();
    info!("stopped");
    Ok(())
}

/// The InfluxDB sink stage: on SQLite the sink itself; on PostgreSQL the sink while
/// this instance holds the InfluxDB writer role (standing by until it does, and
/// again after losing it). It ends when `nudges` closes (the ingest has finished).
fn sink_stage(
    plan: &Arc<Plan>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    mut nudges: mpsc::Receiver<News>,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>>> {
    let icfg = plan.influx.clone().expect("a sink is configured");
    let shared = plan_is_shared(plan);
    let open = {
        let (plan, clock, metrics) = (Arc::clone(plan), Arc::clone(clock), Arc::clone(metrics));
        move || {
            InfluxSink::new(
                icfg.clone(),
                &plan.store,
                plan.hour_lines(),
                Arc::clone(&metrics),
                Arc::clone(&clock),
            )
            .context("starting the InfluxDB sink")
        }
    };
    // On SQLite the sink opens now, so that a bad store fails the start.
    let first = if shared { None } else { Some(open()?) };
    let store = plan.store.clone();
    Ok(async move {
        let Some(store) = shared.then_some(store) else {
            return Ok(first.expect("opened").run(&mut nudges).await?);
        };
        loop {
            let held = tokio::select! {
                held = roles::acquire(&store, Role::InfluxWriter) => held,
                // The ingest finished while another instance writes: nothing to do.
                None = wait_closed(&mut nudges) => return Ok(()),
            };
            // A failure (the database went away) hands the role back and tries again:
            // on a shared store the sink must outlive an outage of the database.
            let ended = match tokio::task::spawn_blocking(open.clone()).await? {
                Ok(sink) => tokio::select! {
                    r = sink.run(&mut nudges) => match r {
                        Ok(()) => return Ok(()),
                        Err(e) => Some(anyhow::Error::from(e)),
                    },
                    _ = held.lost() => None,
                },
                Err(e) => Some(e),
            };
            drop(held);
            if let Some(e) = ended {
                tracing::warn!(error = %format!("{e:#}"), "influx sink stopped; it resumes when the store answers again");
                tokio::time::sleep(roles::TRY_EVERY).await;
            }
        }
    })
}

/// Resolves with `None` when `nudges` closes (nudges themselves are dropped).
async fn wait_closed(nudges: &mut mpsc::Receiver<News>) -> Option<()> {
    while nudges.recv().await.is_some() {}
    None
}

/// Whether several instances share the store (PostgreSQL): the singleton roles are
/// then taken with [`roles`].
fn plan_is_shared(plan: &Plan) -> bool {
    plan.store.backend == Backend::Postgres
}

/// Housekeeping, first in the drain: it holds nothing. On PostgreSQL it runs while
/// this instance holds the housekeeping role.
fn start_housekeeping(
    plan: &Arc<Plan>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    alerts: &AlertSlot,
    stages: &mut Stages,
) -> anyhow::Result<()> {
    let shared = plan_is_shared(plan);
    let open = {
        let (plan, clock, metrics) = (Arc::clone(plan), Arc::clone(clock), Arc::clone(metrics));
        let alerts = Arc::clone(alerts);
        move || {
            let h = Housekeeping::open(Arc::clone(&plan), Arc::clone(&clock), Arc::clone(&metrics))
                .context("opening the store for housekeeping")?;
            Ok::<_, anyhow::Error>(if shared {
                h.with_alerts(Arc::clone(&alerts))
            } else {
                h
            })
        }
    };
    let first = if shared { None } else { Some(open()?) };
    let store = plan.store.clone();
    let (stop, mut stopped) = oneshot::channel();
    stages.spawn_stoppable(
        "housekeeping",
        move || {
            let _ = stop.send(());
        },
        async move {
            let Some(store) = shared.then_some(store) else {
                return anyhow::Ok(first.expect("opened").run(&mut stopped).await?);
            };
            loop {
                let held = tokio::select! {
                    held = roles::acquire(&store, Role::Housekeeping) => held,
                    _ = &mut stopped => return Ok(()),
                };
                let housekeeping = match tokio::task::spawn_blocking(open.clone()).await? {
                    Ok(h) => h,
                    Err(e) => {
                        // The database is away: hand the role back, try again later.
                        drop(held);
                        tracing::warn!(error = %format!("{e:#}"), "housekeeping cannot start; retried");
                        tokio::time::sleep(roles::TRY_EVERY).await;
                        continue;
                    }
                };
                tokio::select! {
                    r = housekeeping.run(&mut stopped) => return Ok(r?),
                    _ = held.lost() => {}
                }
            }
        },
    );
    Ok(())
}

/// The sources: the device source (see [`start_device_source`]) and the HJ 212
/// listener. Returns the ingest's input, the sources' ackers and the alert publisher.
async fn start_sources(
    plan: &Plan,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    stages: &mut Stages,
) -> anyhow::Result<(mpsc::Receiver<Message>, Vec<Acker>, Option<Alerter>)> {
    // Sources feed one bounded channel; its capacity is the MQTT client's queue.
    let (messages_tx, messages_rx) = mpsc::channel(plan.mqtt.queue_capacity.max(16));
    let (acker, acks) = Acker::channel();
    let (stop, stopped) = watch::channel(false);
    // Every source stops on the same signal, fired by the first one the drain reaches.
    let stop = Arc::new(stop);
    let ctx = SourceContext {
        clock: Arc::clone(clock),
        metrics: Arc::clone(metrics),
        shutdown: stopped.clone(),
    };
    let mut ackers = vec![acker];
    if let Some(addr) = plan.hj212.listen {
        let ctx = SourceContext {
            clock: Arc::clone(clock),
            metrics: Arc::clone(metrics),
            shutdown: stopped,
        };
        let (acker, acks) = Acker::channel();
        ackers.push(acker);
        let s = tcp::start(
            &plan.hj212,
            addr,
            Arc::clone(&plan.registry),
            HJ212_SOURCE,
            messages_tx.clone(),
            acks,
            ctx,
        )
        .await?;
        let stop = Arc::clone(&stop);
        stages.adopt("hj212 listener", stopper(stop), s.task);
    }
    let (name, task, publish) = start_device_source(plan, messages_tx, acks, ctx).await?;
    let alerts = plan.alerts.as_ref().map(|a| Alerter {
        alerts: a.evaluator(),
        publish,
    });
    stages.adopt(name, stopper(stop), task);
    Ok((messages_rx, ackers, alerts))
}

/// The device source: the embedded broker, the NATS JetStream consumer or the client
/// of an external MQTT broker. Returns its stage name, task and alert publisher.
async fn start_device_source(
    plan: &Plan,
    messages_tx: mpsc::Sender<Message>,
    acks: mpsc::Receiver<Vec<crate::source::Settled>>,
    ctx: SourceContext,
) -> anyhow::Result<(&'static str, tokio::task::JoinHandle<()>, Box<dyn Publish>)> {
    if let Some(b) = &plan.broker {
        // The listeners open now: the ingest's queue and the writer exist.
        let s = devices::start(
            b,
            Arc::clone(&plan.registry),
            plan.ingest.filters.clone(),
            DEVICE_SOURCE,
            messages_tx,
            acks,
            ctx,
        )
        .await?;
        info!(
            "publish a reading: mosquitto_pub -h {} -p {} -q 1 -t '{}' -m '{EXAMPLE_PAYLOAD}'",
            b.client_host(),
            b.listen.port(),
            plan.reading_topic(EXAMPLE_SITE),
        );
        return Ok(("embedded broker", s.task, Box::new(BoardPublisher(s.board))));
    }
    if let Some(n) = &plan.nats {
        let s = nats::start(n, &plan.mqtt.topics, DEVICE_SOURCE, messages_tx, acks, ctx)
            .await
            .context("starting the NATS source")?;
        info!(urls = ?n.urls, durable = %n.durable, topics = ?plan.mqtt.topics, "nats source started");
        let publish = NatsAlertPublisher::start(s.client);
        return Ok(("nats source", s.task, Box::new(publish)));
    }
    let s = mqtt::start(&plan.mqtt, DEVICE_SOURCE, messages_tx, acks, ctx)
        .context("starting the MQTT source")?;
    info!(url = %plan.mqtt.url, topics = ?plan.mqtt.topics, client_id = %plan.mqtt.client_id, "mqtt source started");
    Ok((
        "mqtt source",
        s.task,
        Box::new(MqttAlertPublisher(s.client)),
    ))
}

/// A stop trigger that fires the sources' shared stop signal.
fn stopper(stop: Arc<watch::Sender<bool>>) -> impl FnOnce() + Send + 'static {
    move || {
        let _ = stop.send(true);
    }
}

/// The HTTP API and dashboard, with their own store connection; last in the drain, so
/// /readyz and /metrics answer while the rest stops.
async fn start_api(
    plan: &Plan,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    stages: &mut Stages,
) -> anyhow::Result<()> {
    let Some(ctx) = &plan.api else {
        return Ok(());
    };
    let listen = ctx.api.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("the API cannot listen on {listen} (set [api] listen)"))?;
    info!(listen = %listen, "HTTP API and dashboard: http://{listen}/");
    let app = api::router(
        ctx.clone(),
        Arc::clone(&plan.registry),
        open_blocking({
            let cfg = plan.store.clone();
            move || {
                (0..api::read_connections())
                    .map(|_| Store::open_reader(&cfg))
                    .collect::<Result<Vec<_>, _>>()
            }
        })
        .await
        .context("opening the store for the API")?,
        Arc::clone(metrics),
        Arc::clone(clock),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    stages.spawn_stoppable(
        "api",
        move || {
            let _ = stop.send(());
        },
        api::serve(listener, app, async move {
            let _ = stopped.await;
        }),
    );
    Ok(())
}
