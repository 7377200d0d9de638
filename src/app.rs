//! Wiring only: opens the store, builds the bounded channels, spawns the stages and
//! shuts them down in order.
//!
//! Shutdown is by channel closure (only the source watches the shutdown signal):
//! source stops taking messages → its channel closes → ingest commits what it has and
//! hands the last acks back → the source writes them and disconnects; the
//! sink sees ingest's nudge channel close and writes the outbox for at most
//! `influx.shutdown_flush_secs`, then logs what is still pending.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::alerts::Alerts;
use crate::api;
use crate::broker;
use crate::clock::Clock;
use crate::config::Config;
use crate::derived::Derived;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::model::UnixMillis;
use crate::sink::influx::InfluxSink;
use crate::source::{mqtt, topic::SiteFilter};
use crate::store::{Store, StoreLock};
use crate::validate::Policy;

/// Committed batches waiting for their PUBACKs to be written. Batches, not messages;
/// the source drains this queue even while it waits on ingest, so it cannot deadlock.
const ACK_QUEUE_BATCHES: usize = 64;

/// How often the daily cache is refreshed when no sink sets the pace.
const DAILY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// How often old readings and rejects are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

const MS_PER_DAY: i64 = 86_400_000;

/// Runs the service until `shutdown` resolves, then stops it in order.
pub async fn run(
    mut cfg: Config,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // One service per store, held until this function returns.
    let _lock = StoreLock::acquire(&cfg.store).context("locking the store")?;
    let registry = Arc::new(cfg.registry());
    info!(sites = registry.sites().count(), file = %cfg.sites.file.display(), "site registry");
    let mut store = Store::open(&cfg.store).context("opening the store")?;
    // The derived series go with the readings when a sink wants them.
    let derived = cfg
        .influx
        .as_ref()
        .filter(|i| i.derived)
        .map(|i| Derived::new(&i.measurement, &cfg.aqi));
    if let Some(d) = derived.clone() {
        store.emit_hourly_with(Box::new(move |h| d.hour_line(h)));
    }
    info!(path = %cfg.store.path.display(), "store open");
    let filters = cfg
        .mqtt
        .topics
        .iter()
        .map(|t| SiteFilter::parse(t))
        .collect::<Result<Vec<_>, _>>()?;

    let (stop_tx, stop_rx) = watch::channel(false);

    // The sink, when configured, with the nudge channel ingest uses to wake it. One
    // slot: a nudge only says "look at the outbox"; more would add nothing.
    let (nudge_tx, sink_task) = match &cfg.influx {
        Some(icfg) => {
            let (tx, rx) = mpsc::channel(1);
            let sink = InfluxSink::new(
                icfg.clone(),
                &cfg.store,
                Arc::clone(&metrics),
                Arc::clone(&clock),
            )
            .context("starting the InfluxDB sink")?;
            info!(url = %icfg.url, api = ?icfg.api, "influx sink enabled");
            (Some(tx), Some(tokio::spawn(sink.run(rx))))
        }
        None => (None, None),
    };

    // With the embedded broker the source connects to it over loopback, through the
    // same code as to an external broker, with the broker's credentials.
    let mut mqtt_cfg = cfg.mqtt.clone();
    if cfg.broker.embedded {
        broker::start(&cfg.broker)?;
        mqtt_cfg.url = cfg.broker.client_url();
        mqtt_cfg.username = cfg.broker.username.clone();
        mqtt_cfg.password_env = cfg.broker.password_env.clone();
        info!(listen = %cfg.broker.listen, "embedded MQTT broker listening");
        let topic = cfg.mqtt.topics[0]
            .replacen('+', "erqi-001", 1)
            .replace('#', "x");
        info!(
            "publish a reading: mosquitto_pub -h {} -p {} -q 1 -t '{topic}' -m '{{\"ts\":\"2016-08-01T08:58:57+08:00\",\"pm25\":35.2,\"pm10\":80.1}}'",
            if cfg.broker.listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { cfg.broker.listen.ip().to_string() },
            cfg.broker.listen.port()
        );
    }
    let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE_BATCHES);
    let source = mqtt::start(
        &mqtt_cfg,
        Arc::clone(&clock),
        Arc::clone(&metrics),
        ack_rx,
        stop_rx.clone(),
    )
    .context("starting the MQTT source")?;
    info!(url = %mqtt_cfg.url, topics = ?cfg.mqtt.topics, client_id = %cfg.mqtt.client_id, "mqtt source started");

    let ingest = Ingest {
        store,
        filters,
        policy: Policy {
            max_future_ms: (cfg.ingest.max_future_secs as i64).saturating_mul(1000),
            max_age_ms: match cfg.store.retention_days {
                0 => None,
                d => Some((d as i64).saturating_mul(MS_PER_DAY)),
            },
        },
        max_payload_bytes: cfg.mqtt.max_payload_bytes,
        max_batch_messages: cfg.ingest.max_batch_messages,
        batch_gap: Duration::from_millis(cfg.ingest.batch_gap_ms),
        max_batch_delay: Duration::from_millis(cfg.ingest.max_batch_delay_ms),
        clock: Arc::clone(&clock),
        metrics: Arc::clone(&metrics),
        registry: Arc::clone(&registry),
        alerts: cfg.alerts.enabled.then(|| {
            (
                Alerts::new(
                    &cfg.alerts.topic,
                    cfg.api.hourly_alert_pm10_ug,
                    cfg.aqi.default_interval_secs,
                ),
                source.client.clone(),
            )
        }),
    };
    let ingest_task = tokio::spawn(ingest.run(source.messages, ack_tx, nudge_tx));

    // The HTTP API and dashboard, with their own store connection.
    let api_task = if cfg.api.enabled {
        let listener = tokio::net::TcpListener::bind(cfg.api.listen)
            .await
            .with_context(|| {
                format!(
                    "the API cannot listen on {} (set [api] listen)",
                    cfg.api.listen
                )
            })?;
        info!(listen = %cfg.api.listen, "HTTP API and dashboard: http://{}/", cfg.api.listen);
        let app = api::router(
            cfg.clone(),
            Arc::clone(&registry),
            Store::open(&cfg.store).context("opening the store for the API")?,
            Arc::clone(&metrics),
            Arc::clone(&clock),
        );
        let mut stop = stop_rx.clone();
        Some(tokio::spawn(api::serve(listener, app, async move {
            let _ = stop.wait_for(|s| *s).await;
        })))
    } else {
        None
    };

    let housekeeping = tokio::spawn(housekeeping(
        cfg.clone(),
        derived,
        Arc::clone(&clock),
        Arc::clone(&metrics),
        stop_rx,
    ));

    shutdown.await;
    info!("shutting down: no new messages; committing and acknowledging what is in flight");
    let _ = stop_tx.send(true);

    match ingest_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "ingest stopped with an error"),
        Err(e) => error!(error = %e, "ingest task panicked"),
    }
    if let Err(e) = source.task.await {
        error!(error = %e, "mqtt source panicked");
    }
    if let Some(t) = sink_task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "influx sink stopped with an error"),
            Err(e) => error!(error = %e, "influx sink panicked"),
        }
    }
    let _ = housekeeping.await;
    if let Some(t) = api_task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "HTTP API stopped with an error"),
            Err(e) => error!(error = %e, "HTTP API panicked"),
        }
    }
    log_stats(&metrics);
    info!("stopped");
    Ok(())
}

/// Periodic counters in the log and retention pruning, until shutdown.
async fn housekeeping(
    cfg: Config,
    derived: Option<Derived>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let stats_every = match cfg.log.stats_interval_secs {
        0 => Duration::from_secs(u64::MAX / 4),
        s => Duration::from_secs(s),
    };
    let mut stats = tokio::time::interval(stats_every);
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    // The daily cache is refreshed here, on a timer, so that reads never write; the
    // derived series (when a sink wants them) follow each refresh.
    let daily_every = cfg.influx.as_ref().map_or(DAILY_REFRESH_INTERVAL, |i| {
        Duration::from_secs(i.derived_daily_interval_secs)
    });
    let mut daily = tokio::time::interval(daily_every);
    stats.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = stats.tick() => log_stats(&metrics),
            _ = daily.tick() => {
                let (store_cfg, d, now) = (cfg.store.clone(), derived.clone(), clock.now());
                let aqi = cfg.aqi.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let mut s = Store::open(&store_cfg)?;
                    s.refresh_daily(&aqi)?;
                    match d {
                        Some(d) => s.emit_derived_days(now, |pending, rows| d.day_lines(pending, rows)),
                        None => Ok(0),
                    }
                })
                .await;
                match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, "daily derived series failed; retried at the next interval"),
                    Err(e) => warn!(error = %e, "daily derived task failed"),
                }
            }
            _ = prune.tick() => {
                let store_cfg = cfg.store.clone();
                // Retention 0 keeps every reading; rejects are still capped.
                let cutoff = (cfg.store.retention_days > 0).then(|| {
                    UnixMillis(clock.now().0 - (cfg.store.retention_days as i64) * MS_PER_DAY)
                });
                // Readings the InfluxDB writer has not delivered stay, whatever their age.
                let sink = cfg.influx.is_some().then_some(crate::sink::influx::SINK_NAME);
                let r = tokio::task::spawn_blocking(move || Store::open(&store_cfg)?.prune(cutoff, sink)).await;
                match r {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => info!(readings = n, "pruned readings past retention"),
                    Ok(Err(e)) => warn!(error = %e, "pruning failed; retried next hour"),
                    Err(e) => warn!(error = %e, "pruning task failed"),
                }
            }
        }
    }
}

fn log_stats(m: &Metrics) {
    m.log_counters();
}
