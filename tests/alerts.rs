//! Hourly PM10 alerts through a real broker: a site whose valid hourly PM10 crosses the
//! alert level gets a retained alert on `aq/alerts/{site}`; a later clean hour replaces
//! it with a retained clear, which a client connecting afterwards still receives. On a
//! PostgreSQL store the instance holding the housekeeping role evaluates them from the
//! stored hours; the same scenario runs on both stores.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aq_ingest::metrics::Metrics;
use common::store::TestStore;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// One hour of minute samples for `site` starting at `hour_ms`.
fn hour_msg(site: &str, hour_ms: i64, pm10: f64) -> (String, Vec<u8>) {
    let items: Vec<String> = (0..60)
        .map(|m| {
            format!(
                r#"{{"ts":{},"pm25":30,"pm10":{pm10},"interval_secs":60}}"#,
                hour_ms + m * 60_000
            )
        })
        .collect();
    (
        format!("aq/{site}/readings"),
        format!("[{}]", items.join(",")).into_bytes(),
    )
}

/// Subscribes to `aq/alerts/#` and returns the first `n` messages' payloads.
async fn alerts(port: u16, n: usize) -> Vec<serde_json::Value> {
    let mut o = MqttOptions::new(format!("alerts-{}", fastrand::u64(..)), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut el) = AsyncClient::new(o, 10);
    c.subscribe("aq/alerts/#", QoS::AtLeastOnce).await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(30), el.poll())
            .await
            .expect("no alert message")
            .unwrap();
        if let Event::Incoming(Packet::Publish(p)) = ev {
            assert_eq!(p.topic, "aq/alerts/dusty");
            out.push(serde_json::from_slice(&p.payload).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_over_the_level_alerts_and_a_clean_hour_clears() {
    let dir = tempfile::tempdir().unwrap();
    over_and_clear(dir.path(), TestStore::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_over_the_level_alerts_and_a_clean_hour_clears_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    over_and_clear(dir.path(), TestStore::postgres()).await;
}

async fn over_and_clear(dir: &std::path::Path, store: TestStore) {
    let broker = Mosquitto::start(dir);
    let svc = Service::start(config_on(&store, &broker.url(), "t-alerts", None)).await;
    let m = Arc::clone(&svc.metrics);
    let h0 = (chrono::Utc::now().timestamp_millis() - 3 * 3_600_000) / 3_600_000 * 3_600_000;

    let watcher = tokio::spawn(alerts(broker.port, 2));
    // Give the watcher its subscription: a retained-less topic, so wait on the broker.
    wait_for("the watcher subscribed", Duration::from_secs(10), || {
        broker.log_text().contains("aq/alerts/#")
    })
    .await;
    publish_all(broker.port, vec![hour_msg("dusty", h0, 400.0)]).await;
    wait_for("the alert", Duration::from_secs(30), || {
        Metrics::get(&m.alerts_published) == 1
    })
    .await;
    publish_all(broker.port, vec![hour_msg("dusty", h0 + 3_600_000, 50.0)]).await;
    wait_for("the clear", Duration::from_secs(30), || {
        Metrics::get(&m.alerts_published) == 2
    })
    .await;
    let got = watcher.await.unwrap();
    assert_eq!(got[0]["state"], "alert");
    assert_eq!(got[0]["pm10"], 400.0);
    assert_eq!(got[0]["threshold"], 300.0);
    assert_eq!(got[1]["state"], "clear");

    // Retained: a client connecting now sees the current state.
    let late = alerts(broker.port, 1).await;
    assert_eq!(late[0]["state"], "clear");
    assert_eq!(Metrics::get(&m.alerts_failed), 0);
    svc.stop().await;
}
