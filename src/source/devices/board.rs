//! The alert board: what device-server subscribers can read. Only alerts are ever
//! delivered to subscribers (readings go to the store, never to other clients), as
//! retained messages — the latest per topic, sent on subscribe — and live ones, at
//! QoS 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::alerts::{Alert, Publish};

/// Live alerts buffered per subscriber; a subscriber that falls this far behind skips
/// to the newest (the retained state is what matters, and it is re-sent on subscribe).
const LIVE_ALERTS_BUFFER: usize = 1024;

/// Retained alerts and the live feed.
#[derive(Debug)]
pub struct Board {
    /// Latest alert per topic.
    retained: Mutex<BTreeMap<String, Bytes>>,
    live: broadcast::Sender<(String, Bytes)>,
}

impl Board {
    pub fn new() -> Arc<Board> {
        Arc::new(Board {
            retained: Mutex::new(BTreeMap::new()),
            live: broadcast::channel(LIVE_ALERTS_BUFFER).0,
        })
    }

    /// Keeps `payload` as the topic's retained alert and sends it to live subscribers.
    pub fn post(&self, topic: String, payload: Bytes) {
        if let Ok(mut r) = self.retained.lock() {
            r.insert(topic.clone(), payload.clone());
        }
        // No subscriber is not an error: the retained copy waits for one.
        let _ = self.live.send((topic, payload));
    }

    /// The retained alerts whose topic matches `filter`.
    pub fn retained_matching(&self, filter: &str) -> Vec<(String, Bytes)> {
        self.retained.lock().map_or_else(
            |_| Vec::new(),
            |r| {
                r.iter()
                    .filter(|(t, _)| rumqttc::mqttbytes::matches(t, filter))
                    .map(|(t, p)| (t.clone(), p.clone()))
                    .collect()
            },
        )
    }

    /// The live feed, from now on.
    pub fn follow(&self) -> broadcast::Receiver<(String, Bytes)> {
        self.live.subscribe()
    }
}

/// Alerts published on the device server's board (the embedded broker's alerts).
pub struct BoardPublisher(pub Arc<Board>);

impl Publish for BoardPublisher {
    fn try_publish(&self, alert: Alert) -> Result<(), String> {
        self.0.post(alert.topic, Bytes::from(alert.payload));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_alert_per_topic_is_retained_and_followers_get_new_ones() {
        let b = Board::new();
        let mut live = b.follow();
        b.post("aq/alerts/a".into(), Bytes::from_static(b"1"));
        b.post("aq/alerts/a".into(), Bytes::from_static(b"2"));
        b.post("aq/alerts/b".into(), Bytes::from_static(b"3"));
        let r = b.retained_matching("aq/alerts/#");
        assert_eq!(
            r,
            vec![
                ("aq/alerts/a".to_string(), Bytes::from_static(b"2")),
                ("aq/alerts/b".to_string(), Bytes::from_static(b"3"))
            ]
        );
        assert!(b.retained_matching("aq/other/#").is_empty());
        assert_eq!(live.try_recv().unwrap().1, Bytes::from_static(b"1"));
    }
}
