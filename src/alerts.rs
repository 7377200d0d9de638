//! Hourly PM10 alerts: when a site's valid hourly PM10 mean crosses the alert level
//! (`api.hourly_alert_pm10_ug`), a retained message on `{alerts.topic}/{site}` says so;
//! when a later hour is back below, a retained "clear" replaces it. So a dashboard or a
//! phone app subscribing to `{topic}/#` sees every site's current state at once.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use crate::aqi::daily::SiteHour;
use crate::model::UnixMillis;

/// The `[alerts]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Alerts go to `{topic}/{site}`, retained.
    #[serde(default = "default_topic")]
    pub topic: String,
}

fn default_true() -> bool {
    true
}
fn default_topic() -> String {
    "aq/alerts".into()
}

impl Default for AlertsConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// One message to publish (retained).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub topic: String,
    pub payload: String,
}

/// Per-site alert state; pure, fed with the site-hours each commit changed.
#[derive(Debug)]
pub struct Alerts {
    topic: String,
    threshold_ug: f64,
    default_interval_secs: u32,
    /// Per site: the latest hour evaluated and whether it is in alert.
    state: HashMap<String, (UnixMillis, bool)>,
}

impl Alerts {
    pub fn new(topic: &str, threshold_ug: f64, default_interval_secs: u32) -> Self {
        Alerts {
            topic: topic.trim_end_matches('/').to_owned(),
            threshold_ug,
            default_interval_secs,
            state: HashMap::new(),
        }
    }

    /// The alerts and clears that these changed hours cause. Only a site's latest hour
    /// counts: a late backlog of old hours does not raise an alert about the past.
    pub fn evaluate(&mut self, hours: &[SiteHour]) -> Vec<Alert> {
        let mut out = Vec::new();
        for h in hours {
            let Some(mean) = h.pm10.valid_mean(self.default_interval_secs) else {
                continue;
            };
            let pm10 = mean.as_ug();
            let over = pm10 > self.threshold_ug;
            let prev = self.state.get(&h.site).copied();
            if prev.is_some_and(|(hour, _)| h.hour < hour) {
                continue;
            }
            let was = prev.is_some_and(|(_, alert)| alert);
            self.state.insert(h.site.clone(), (h.hour, over));
            if over != was {
                out.push(Alert {
                    topic: format!("{}/{}", self.topic, h.site),
                    payload: json!({
                        "site": h.site,
                        "state": if over { "alert" } else { "clear" },
                        "hour": h.hour.to_string(),
                        "pm10": (pm10 * 10.0).round() / 10.0,
                        "threshold": self.threshold_ug,
                    })
                    .to_string(),
                });
            }
        }
        out
    }
}

/// Where alerts go: implemented by a source that can publish (the MQTT source's client).
/// Must never block: the ingest calls it right after a commit.
pub trait Publish: Send + Sync {
    /// Queues one retained alert message; an error says why it could not be queued.
    fn try_publish(&self, alert: Alert) -> Result<(), String>;
}

/// The alert evaluator with its publisher and counters, as the ingest stage holds it.
pub struct Alerter {
    pub alerts: Alerts,
    pub publish: Box<dyn Publish>,
}

impl Alerter {
    /// Publishes the alerts these changed hours cause; returns (published, failed).
    pub fn after_commit(&mut self, hours: &[SiteHour]) -> (u64, u64) {
        let (mut ok, mut failed) = (0, 0);
        for a in self.alerts.evaluate(hours) {
            match self.publish.try_publish(a) {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, "could not queue an alert message");
                }
            }
        }
        (ok, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::validity::HourAgg;

    fn hour(site: &str, h: i64, pm10: i64) -> SiteHour {
        SiteHour {
            site: site.into(),
            hour: UnixMillis(1_470_009_600_000 + h * 3_600_000),
            pm25: HourAgg::default(),
            pm10: HourAgg {
                n: 60,
                sum_milli: 60 * pm10 * 1000,
                covered_secs: 3600,
                ..HourAgg::default()
            },
        }
    }

    #[test]
    fn crossing_up_alerts_once_and_crossing_down_clears() {
        let mut a = Alerts::new("aq/alerts/", 300.0, 60);
        assert!(a.evaluate(&[hour("s", 0, 100)]).is_empty());
        let up = a.evaluate(&[hour("s", 1, 400)]);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].topic, "aq/alerts/s");
        assert!(up[0].payload.contains("\"state\":\"alert\""));
        // Still over: no repeat.
        assert!(a.evaluate(&[hour("s", 2, 350)]).is_empty());
        // A late backlog of an older clean hour changes nothing.
        assert!(a.evaluate(&[hour("s", 0, 10)]).is_empty());
        let down = a.evaluate(&[hour("s", 3, 80)]);
        assert!(down[0].payload.contains("\"state\":\"clear\""));
        // Exactly at the level is not over it.
        assert!(a.evaluate(&[hour("t", 3, 300)]).is_empty());
    }
}
