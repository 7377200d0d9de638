//! Faults: the service killed with SIGKILL mid-stream, VictoriaMetrics down under load,
//! the broker restarted. After each, every published reading is stored exactly once.
//! The store-side faults run on SQLite and on PostgreSQL.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aq_ingest::metrics::Metrics;
use common::store::TestStore;
use common::*;

fn stored(dir: &std::path::Path) -> i64 {
    // The service may not have created the file yet on its first start.
    if !dir.join("aq.db").exists() {
        return 0;
    }
    let c = db(dir);
    c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap_or(0)
}

fn start_binary(dir: &std::path::Path, cfg: &std::path::Path, run: usize) -> Proc {
    spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .arg("--config")
            .arg(cfg)
            .arg("serve")
            .env("RUST_LOG", "info"),
        dir.join(format!("service-{run}.log")),
    )
}

/// Messages for sites × per_site readings, offset so that runs do not collide.
fn batch(sites: usize, from: usize, to: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .flat_map(|i| (0..sites).map(move |s| reading_msg(s, i, base)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_three_points_loses_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_at_three_points(dir.path(), TestStore::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_three_points_loses_nothing_and_stores_nothing_twice_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_at_three_points(dir.path(), TestStore::postgres()).await;
}

// Long because it is one scenario: three kills at three points of one stream.
async fn sigkill_at_three_points(dir: &std::path::Path, store: TestStore) {
    let broker = Mosquitto::start(dir);
    let cfg = dir.join("aq.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nurl = \"{}\"\nclient_id = \"t-kill\"\nreconnect_min_ms = 50\nreconnect_max_secs = 1\n{}[log]\nstats_interval_secs = 0\n[api]\nenabled = false\n",
            broker.url(),
            // The shipped durability (power loss) on SQLite.
            store.toml().replace("durability = \"process_crash\"\n", "")
        ),
    )
    .unwrap();
    let stored = || store.count("SELECT count(*) FROM readings");
    let mut svc = start_binary(dir, &cfg, 0);
    wait_until("first subscription", Duration::from_secs(20), || {
        svc.log_text().contains("mqtt: subscribed")
    });

    // A device fleet streams 10 000 readings at a steady pace while we kill the service.
    let base = base_ts_ms();
    let total = 10_000usize;
    let msgs = batch(50, 0, 200, base);
    assert_eq!(msgs.len(), total);
    let port = broker.port;
    let publisher = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(25));
        for chunk in msgs.chunks(50) {
            pace.tick().await;
            publish_all(port, chunk.to_vec()).await;
        }
    });

    // Point 1: steady state, a fifth of the stream stored.
    wait_until("2000 stored", Duration::from_secs(60), || stored() >= 2000);
    svc.kill();
    let mut svc = start_binary(dir, &cfg, 1);
    // Point 2: at reconnect, while the broker redelivers the unacknowledged window.
    wait_until("reconnect", Duration::from_secs(20), || {
        svc.log_text().contains("mqtt: connected")
    });
    svc.kill();
    let mut svc = start_binary(dir, &cfg, 2);
    // Point 3: late in the stream.
    wait_until("8000 stored", Duration::from_secs(60), || stored() >= 8000);
    svc.kill();
    let svc = start_binary(dir, &cfg, 3);

    publisher.await.unwrap();
    wait_until("every reading stored", Duration::from_secs(60), || {
        stored() >= total as i64
    });
    // Ordered shutdown after the stream: a clean exit.
    let mut svc = svc;
    unsafe_sigterm(svc.pid());
    assert!(svc.wait().success());

    assert_stored_exactly_in(&store, base, 50, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_down_under_load_loses_nothing_and_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    victoria_metrics_down(dir.path(), TestStore::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_down_under_load_loses_nothing_and_blocks_nobody_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    victoria_metrics_down(dir.path(), TestStore::postgres()).await;
}

// Long because it is one scenario: load, the sink's server down, back, then checks.
async fn victoria_metrics_down(dir: &std::path::Path, store: TestStore) {
    let broker = Mosquitto::start(dir);
    let mut vm = Victoria::start(dir);
    let influx = format!(
        "[influx]\nurl = \"{}\"\nbucket = \"aq\"\nflush_interval_secs = 0.1\nretry_min_ms = 20\nretry_max_secs = 1\nrequest_timeout_secs = 2\nderived = false\n",
        vm.url()
    );
    let svc = Service::start(config_on(&store, &broker.url(), "t-vm-down", Some(&influx))).await;
    let m = Arc::clone(&svc.metrics);
    let base = base_ts_ms();
    publish_all(broker.port, batch(30, 0, 100, base)).await;
    wait_for("3000 written", Duration::from_secs(60), || {
        Metrics::get(&m.lines_written) == 3000
    })
    .await;

    vm.stop();
    publish_all(broker.port, batch(30, 100, 250, base)).await;
    // Ingest goes on: every message is committed and acknowledged while the sink fails.
    wait_for("7500 acknowledged", Duration::from_secs(60), || {
        Metrics::get(&m.messages_acked) == 7500
    })
    .await;
    assert_eq!(Metrics::get(&m.readings_stored), 7500);
    wait_for("the sink to notice", Duration::from_secs(30), || {
        m.sink_failing.load(Ordering::Relaxed)
            && m.write_errors(aq_ingest::metrics::WriteErrorClass::Network) > 0
    })
    .await;
    assert_eq!(Metrics::get(&m.lines_written), 3000);
    assert_eq!(store.outbox_depth(), 4500);

    vm.restart();
    wait_for("7500 written", Duration::from_secs(90), || {
        Metrics::get(&m.lines_written) == 7500
    })
    .await;
    svc.stop().await;
    assert!(!m.sink_failing.load(Ordering::Relaxed));
    assert_eq!(store.outbox_depth(), 0);
    let pm10: Vec<_> = vm
        .export("pm")
        .into_iter()
        .filter(|p| p.0 == "pm_pm10")
        .collect();
    assert_eq!(pm10.len(), 7500);
    let distinct: std::collections::HashSet<_> = pm10.iter().map(|p| (p.1.clone(), p.2)).collect();
    assert_eq!(distinct.len(), 7500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_with_persistence_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let url = broker.url();
    let cfg = || config(dir.path(), &url, "t-broker", None);
    // The service subscribes once, then is down: its persistent session stays.
    Service::start(cfg()).await.stop().await;
    let base = base_ts_ms();
    // 4000 readings queue in the broker for the session...
    publish_all(broker.port, batch(40, 0, 100, base)).await;
    // ...and survive a broker restart only if the broker persisted them.
    broker.stop();
    broker.restart();
    let svc = Service::start(cfg()).await;
    let m = Arc::clone(&svc.metrics);
    let d = dir.path().to_owned();
    wait_for("the queued 4000 stored", Duration::from_secs(60), || {
        stored(&d) == 4000
    })
    .await;

    // A restart while the service is connected: it reconnects, resumes the session and
    // takes what is published after.
    broker.stop();
    wait_for(
        "the service to see the broker gone",
        Duration::from_secs(20),
        || !m.mqtt_connected.load(Ordering::Relaxed),
    )
    .await;
    broker.restart();
    wait_for("reconnect", Duration::from_secs(30), || {
        Metrics::get(&m.mqtt_connects) >= 2 && m.mqtt_subscribed.load(Ordering::Relaxed)
    })
    .await;
    publish_all(broker.port, batch(40, 100, 200, base)).await;
    wait_for("8000 stored", Duration::from_secs(60), || {
        stored(&d) == 8000
    })
    .await;
    svc.stop().await;
    assert_stored_exactly(dir.path(), base, 40, 200);
    assert!(
        !broker.log_text().contains("Error saving"),
        "{}",
        broker.log_text()
    );
}

/// Captured log lines, for a test to wait on an event it cannot otherwise observe.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An array larger than `ingest.max_batch_readings` is committed in slices, and its
/// message is acknowledged only once every slice has committed: with the second of
/// three slices failing (an injected fault) the first is in the store and no token has
/// come back; once the fault is gone, all of it is stored and then both messages are
/// acknowledged, once.
#[tokio::test(flavor = "current_thread")]
async fn an_array_larger_than_a_commit_is_acknowledged_after_its_last_slice() {
    use aq_ingest::clock::SystemClock;
    use aq_ingest::config::Config;
    use aq_ingest::model::UnixMillis;
    use aq_ingest::plan::Plan;
    use aq_ingest::source::{AckToken, Acker, Message, Origin};
    use aq_ingest::store::Writer;

    // The ingest task runs on this thread (current-thread runtime), so its events reach
    // this subscriber.
    let logs = LogBuffer::default();
    let sink = logs.clone();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish(),
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = \"{}\"\n[ingest]\nmax_batch_readings = 7\n",
        dir.path().join("aq.db").display()
    );
    let plan = Plan::resolve(Config::parse(&text, "test").unwrap(), "test").unwrap();
    assert_eq!(plan.ingest.max_batch_readings, 7);
    let writer = Writer::open(&plan.store).unwrap();
    let base = base_ts_ms();
    // Message 0: 10 readings (slice 1 and the start of slice 2); message 1: 10 more
    // (the rest of slice 2, and slice 3). Slice 2 holds the poisoned reading.
    let array = |from: usize| {
        let items: Vec<String> = (from..from + 10)
            .map(|i| {
                format!(
                    r#"{{"ts":{},"pm25":10,"pm10":20,"interval_secs":60}}"#,
                    base + i as i64 * 60_000
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    };
    let poisoned = base + 12 * 60_000;
    let c = db(dir.path());
    c.execute_batch(&format!(
        "CREATE TRIGGER poison BEFORE INSERT ON readings WHEN NEW.ts_ms = {poisoned}
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
    ))
    .unwrap();

    let metrics = Arc::new(Metrics::default());
    let ingest = plan.ingest_stage(writer, Arc::new(SystemClock), Arc::clone(&metrics), None);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let (acker, mut acks) = Acker::channel();
    // Both messages are queued before the stage runs: one batch.
    for k in 0..2 {
        tx.try_send(Message {
            origin: Origin::Topic("aq/big/readings".into()),
            payload: array(k * 10).into_bytes().into(),
            received: UnixMillis(chrono::Utc::now().timestamp_millis()),
            ack: AckToken {
                source: 0,
                id: k as u64,
            },
        })
        .unwrap();
    }
    let stage = tokio::spawn(ingest.run(rx, vec![acker], None));

    wait_for(
        "the second slice's commit to fail",
        Duration::from_secs(30),
        || String::from_utf8_lossy(&logs.0.lock().unwrap()).contains("store commit failed"),
    )
    .await;
    let count = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        count(&c),
        7,
        "the first slice is committed, the second is not"
    );
    assert!(
        acks.try_recv().is_err(),
        "a message was acknowledged before all its readings were committed"
    );
    assert!(
        Metrics::get(&metrics.store_commit_failures) >= 1,
        "the failed commit is counted"
    );

    c.execute_batch("DROP TRIGGER poison").unwrap();
    let settled = tokio::time::timeout(Duration::from_secs(60), acks.recv())
        .await
        .expect("acknowledged once the fault is gone")
        .unwrap();
    assert_eq!(
        count(&c),
        20,
        "every reading is stored when the tokens come back"
    );
    let ids: Vec<(u64, bool)> = settled.iter().map(|s| (s.id, s.accepted)).collect();
    assert_eq!(ids, vec![(0, true), (1, true)]);
    assert_eq!(
        Metrics::get(&metrics.store_commits),
        3,
        "slices of 7, 7 and 6"
    );
    assert_eq!(Metrics::get(&metrics.readings_stored), 20);
    drop(tx);
    stage.await.unwrap().unwrap();
    assert!(acks.recv().await.is_none(), "no token comes back twice");
}

/// The derived hourly series through a VictoriaMetrics outage and a SIGKILL during it,
/// on the service binary: an hour whose first part was delivered before the outage and
/// whose rest arrived during it, and hours that arrived wholly during it. When the
/// outbox is empty again, the newest line of every site-hour in VictoriaMetrics counts
/// exactly the samples the store holds for that hour: the request that carries an
/// hour's last readings carries the hour as stored when it goes.
// Long because it is one scenario: delivered, outage, kill, recovery, then checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_lines_end_at_the_stored_hours_after_an_outage_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let broker = Mosquitto::start(dir);
    let mut vm = Victoria::start(dir);
    let cfg = dir.join("aq.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nurl = \"{}\"\nclient_id = \"t-hours\"\nreconnect_min_ms = 50\nreconnect_max_secs = 1\n[store]\npath = \"{}\"\n[influx]\nurl = \"{}\"\nbucket = \"aq\"\nflush_interval_secs = 0.1\nretry_min_ms = 20\nretry_max_secs = 1\nrequest_timeout_secs = 2\n[log]\nstats_interval_secs = 0\n[api]\nenabled = false\n",
            broker.url(),
            dir.join("aq.db").display(),
            vm.url()
        ),
    )
    .unwrap();
    let store = TestStore::sqlite(dir);
    let readings = || store.count("SELECT count(*) FROM readings");
    // On a whole hour, so that minute 75 splits the second hour.
    let base = base_ts_ms() / 3_600_000 * 3_600_000;
    let mut svc = start_binary(dir, &cfg, 0);
    wait_until("subscribed", Duration::from_secs(20), || {
        svc.log_text().contains("mqtt: subscribed")
    });
    publish_all(broker.port, batch(20, 0, 75, base)).await;
    wait_until(
        "the first 75 minutes delivered",
        Duration::from_secs(60),
        || readings() == 20 * 75 && store.outbox_depth() == 0,
    );

    vm.stop();
    publish_all(broker.port, batch(20, 75, 200, base)).await;
    wait_until("everything stored", Duration::from_secs(60), || {
        readings() == 20 * 200
    });
    assert!(
        store.outbox_depth() > 0,
        "undelivered while the server is down"
    );
    svc.kill();
    let mut svc = start_binary(dir, &cfg, 1);
    vm.restart();
    wait_until("everything delivered", Duration::from_secs(90), || {
        store.outbox_depth() == 0
    });
    unsafe_sigterm(svc.pid());
    assert!(svc.wait().success());

    let stored: std::collections::BTreeMap<(String, i64), f64> = store
        .rows("SELECT site, hour_ms, n25 FROM hourly")
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].parse().unwrap()), r[2].parse().unwrap()))
        .collect();
    assert_eq!(stored.len(), 20 * 4, "20 sites × hours 0..=3");
    // Per site-hour, every count VictoriaMetrics was sent (it keeps each version).
    let mut sent: std::collections::BTreeMap<(String, i64), Vec<f64>> = Default::default();
    for (field, site, ts, v) in vm.export("pm_hourly") {
        if field == "pm_hourly_pm2_5_samples" {
            sent.entry((site, ts)).or_default().push(v);
        }
    }
    let newest: std::collections::BTreeMap<_, f64> = sent
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().copied().fold(0.0, f64::max)))
        .collect();
    assert_eq!(
        newest, stored,
        "the newest count of each hour is the stored one"
    );
    // The split hour went out before the outage with its first 15 minutes.
    let split = sent[&("site-000".to_owned(), base + 3_600_000)].clone();
    assert!(split.contains(&15.0) && split.contains(&60.0), "{split:?}");
}
