//! The resolve step: a loaded [`Config`] becomes a [`Plan`] — exactly what each stage
//! receives — once, with every problem listed together. Nothing downstream sees the
//! whole config, and nothing changes config after load.
//!
//! What is settled here and nowhere else:
//! - the site registry is loaded once (a broken file is an error, never an empty list)
//!   and its `counts_for_district = false` sites join the district exclusions;
//! - the validation policy (future skew, the retention window) from `[ingest]` and
//!   `[store]` units;
//! - the service's own MQTT client settings, which with the embedded broker are the
//!   broker's listener and credentials;
//! - the alert level (`[api] hourly_alert_pm10_ug`, shared by the alerts and the
//!   bulletin), the API's context and the derived-series settings.

use std::sync::Arc;
use std::time::Duration;

use crate::alerts::Alerts;
use crate::api::ApiContext;
use crate::aqi::target::TargetConfig;
use crate::aqi::AqiConfig;
use crate::broker::BrokerConfig;
use crate::config::{Config, ConfigError, LogConfig};
use crate::decode::hj212::CrcVariant;
use crate::derived::Derived;
use crate::ingest::{Hj212Rules, Ingest, IngestSettings};
use crate::model::{UnixMillis, MS_PER_DAY};
use crate::sink::influx::InfluxConfig;
use crate::sites::Registry;
use crate::source::mqtt::MqttConfig;
use crate::source::nats::NatsConfig;
use crate::source::tcp::Hj212Config;
use crate::source::topic::SiteFilter;
use crate::store::StoreConfig;
use crate::validate::Policy;

/// The resolved service: one field per stage, each holding only what that stage uses.
#[derive(Clone)]
pub struct Plan {
    /// Where the config came from, for messages.
    pub origin: String,
    pub store: StoreConfig,
    /// Loaded once; shared by ingest (units, cadences, unregistered sites) and the API.
    pub registry: Arc<Registry>,
    /// The registry file (`aq-ingest device add` writes to it).
    pub sites_file: std::path::PathBuf,
    /// The AQI rules with the district exclusions settled (config list + registry).
    pub aqi: AqiConfig,
    pub targets: Vec<TargetConfig>,
    /// The service's own MQTT client: the external broker, or the embedded one.
    pub mqtt: MqttConfig,
    /// The embedded broker, when it runs.
    pub broker: Option<BrokerConfig>,
    /// The NATS JetStream source, when it replaces the MQTT client (its consumer
    /// filters are `mqtt.topics`).
    pub nats: Option<NatsConfig>,
    pub ingest: IngestSettings,
    /// The HJ 212 TCP listener's settings (`listen` absent: none).
    pub hj212: Hj212Config,
    pub influx: Option<InfluxConfig>,
    /// Derived series settings, when the sink wants them.
    pub derived: Option<Derived>,
    /// The API, when enabled.
    pub api: Option<ApiContext>,
    /// The alert evaluator's settings, when alerts are on.
    pub alerts: Option<AlertSettings>,
    pub housekeeping: Housekeeping,
    pub log: LogConfig,
    /// The whole ordered shutdown must finish within this; stages still running then
    /// are named in the log and abandoned.
    pub shutdown_deadline: Duration,
}

/// What the alerts stage needs.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub topic: String,
    /// Hourly PM10 above this (µg/m³) raises an alert.
    pub threshold_ug: f64,
    pub default_interval_secs: u32,
}

impl AlertSettings {
    /// A fresh evaluator.
    pub fn evaluator(&self) -> Alerts {
        Alerts::new(&self.topic, self.threshold_ug, self.default_interval_secs)
    }
}

/// Timers of the housekeeping stage.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    /// How often the counters are logged; `None`: never.
    pub stats_every: Option<Duration>,
    /// How often the day caches are refreshed (and the daily derived series emitted).
    pub daily_every: Duration,
    /// Readings and rejects older than this are pruned; `None`: kept.
    pub retention: Option<Duration>,
    /// How often pruning runs.
    pub prune_every: Duration,
    /// How often the outbox gauges are recomputed from the store (whatever the sink is
    /// doing: a sink in backoff must not freeze them).
    pub gauges_every: Duration,
}

/// How often the daily cache is refreshed when no sink sets the pace.
pub const DAILY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// How often old readings and rejects are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// How often the outbox gauges are recomputed.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(2);

/// Example payload in the start-up banner and the README.
pub const EXAMPLE_PAYLOAD: &str = r#"{"ts":"2016-08-01T08:58:57+08:00","pm25":35.2,"pm10":80.1}"#;

/// Example site id in the start-up banner.
pub const EXAMPLE_SITE: &str = "erqi-001";

impl Plan {
    /// What makes a site-hour's derived line, when the derived series are on (the
    /// sink's requests and `resend`).
    pub fn hour_lines(&self) -> Option<crate::store::HourlyLines> {
        let d = self.derived.clone()?;
        Some(Box::new(move |h: &_| d.hour_line(h)))
    }

    /// The ingest stage as this plan configures it, committing through `store`.
    pub fn ingest_stage(
        &self,
        store: crate::store::Writer,
        clock: Arc<dyn crate::clock::Clock>,
        metrics: Arc<crate::metrics::Metrics>,
        alerts: Option<crate::alerts::Alerter>,
    ) -> Ingest {
        Ingest {
            settings: self.ingest.clone(),
            store,
            clock,
            metrics,
            registry: Arc::clone(&self.registry),
            alerts,
        }
    }

    /// Resolves a loaded config. `Config::load` has checked each section on its own;
    /// this adds what needs several sections or the filesystem (the registry), and
    /// reports every problem at once.
    pub fn resolve(cfg: Config, origin: &str) -> Result<Plan, ConfigError> {
        let (registry, filters) =
            load_registry_and_filters(&cfg).map_err(|problems| ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            })?;
        let mut mqtt = cfg.mqtt.clone();
        // HJ 212 gateways' topics are subscribed to with the reading topics.
        mqtt.topics.extend(cfg.hj212.mqtt_topics.iter().cloned());
        let broker = cfg.broker.embedded.then(|| cfg.broker.clone());
        if let Some(b) = &broker {
            // The service's own client logs in to the embedded broker like a device.
            mqtt.url = b.client_url();
            mqtt.username = b.username.clone();
            mqtt.password_env = b.password_env.clone();
        }
        let mut aqi = cfg.aqi.clone();
        for id in registry.not_in_district() {
            if !aqi.district_exclude.contains(&id) {
                aqi.district_exclude.push(id);
            }
        }
        let retention = (cfg.store.retention_days > 0).then(|| {
            Duration::from_millis(u64::from(cfg.store.retention_days) * MS_PER_DAY as u64)
        });
        let ingest = ingest_settings(&cfg, filters.clone(), retention);
        let derived = cfg
            .influx
            .as_ref()
            .filter(|i| i.derived)
            .map(|i| Derived::new(&i.measurement, &aqi));
        let registry = Arc::new(registry);
        let api = cfg.api.enabled.then(|| ApiContext {
            api: cfg.api.clone(),
            aqi: aqi.clone(),
            target: cfg.target.clone(),
            filters: filters.clone(),
            token: std::env::var(&cfg.api.token_env)
                .ok()
                .filter(|t| !t.is_empty()),
        });
        let alerts = cfg.alerts.enabled.then(|| AlertSettings {
            topic: cfg.alerts.topic.clone(),
            threshold_ug: cfg.api.hourly_alert_pm10_ug,
            default_interval_secs: cfg.aqi.default_interval_secs,
        });
        let housekeeping = Housekeeping {
            stats_every: (cfg.log.stats_interval_secs > 0)
                .then(|| Duration::from_secs(cfg.log.stats_interval_secs)),
            daily_every: cfg.influx.as_ref().map_or(DAILY_REFRESH_INTERVAL, |i| {
                Duration::from_secs(i.derived_daily_interval_secs)
            }),
            retention,
            prune_every: PRUNE_INTERVAL,
            gauges_every: GAUGE_INTERVAL,
        };
        Ok(Plan {
            origin: origin.to_owned(),
            store: cfg.store,
            registry,
            sites_file: cfg.sites.file.clone(),
            aqi,
            targets: cfg.target,
            mqtt,
            broker,
            nats: cfg.nats,
            ingest,
            hj212: cfg.hj212,
            influx: cfg.influx,
            derived,
            api,
            alerts,
            housekeeping,
            log: cfg.log,
            shutdown_deadline: Duration::from_secs(cfg.shutdown.deadline_secs),
        })
    }

    /// A configured target by name, or the first one.
    pub fn target(&self, name: Option<&str>) -> Result<&TargetConfig, String> {
        find_target(&self.targets, name)
    }

    /// The topic a site's readings go to: the first reading filter with the site in its
    /// `+` level (the simulator and the start-up banner use it).
    pub fn reading_topic(&self, site: &str) -> String {
        reading_topic(&self.mqtt.topics, site)
    }

    /// The retention cutoff at `now`, when readings are pruned at all.
    pub fn prune_cutoff(&self, now: UnixMillis) -> Option<UnixMillis> {
        self.housekeeping
            .retention
            .map(|r| UnixMillis(now.0 - r.as_millis() as i64))
    }
}

/// The registry (read once, here) and the reading topic filters, or every problem.
fn load_registry_and_filters(cfg: &Config) -> Result<(Registry, Vec<SiteFilter>), Vec<String>> {
    let mut problems = Vec::new();
    let registry = Registry::load(&cfg.sites).unwrap_or_else(|p| {
        problems.extend(p);
        Registry::default()
    });
    let mut filters = Vec::new();
    for t in &cfg.mqtt.topics {
        match SiteFilter::parse(t) {
            Ok(f) => filters.push(f),
            Err(e) => problems.push(format!("mqtt.topics: {e}")),
        }
    }
    if problems.is_empty() {
        Ok((registry, filters))
    } else {
        Err(problems)
    }
}

/// The ingest's settings: the validation policy in the units it compares (ms), the
/// payload cap, the batch shape.
fn ingest_settings(
    cfg: &Config,
    filters: Vec<SiteFilter>,
    retention: Option<Duration>,
) -> IngestSettings {
    IngestSettings {
        filters,
        policy: Policy {
            max_future_ms: (cfg.ingest.max_future_secs as i64).saturating_mul(1000),
            max_age_ms: retention.map(|r| r.as_millis() as i64),
        },
        max_payload_bytes: cfg.mqtt.max_payload_bytes,
        max_batch_messages: cfg.ingest.max_batch_messages,
        max_batch_readings: cfg.ingest.max_batch_readings,
        batch_gap: Duration::from_millis(cfg.ingest.batch_gap_ms),
        max_batch_delay: Duration::from_millis(cfg.ingest.max_batch_delay_ms),
        hj212: Hj212Rules {
            unknown_mn: cfg.hj212.unknown_mn,
            default_crc: CrcVariant::parse(&cfg.hj212.default_crc).unwrap_or_default(),
            zone: cfg.aqi.zone(),
            mqtt_topics: cfg.hj212.mqtt_topics.clone(),
        },
    }
}

/// A target by name, or the first one when `name` is `None`.
pub fn find_target<'a>(
    targets: &'a [TargetConfig],
    name: Option<&str>,
) -> Result<&'a TargetConfig, String> {
    match name {
        Some(n) => targets
            .iter()
            .find(|t| t.name == n)
            .ok_or_else(|| format!("no [[target]] named {n:?} in the config")),
        None => targets
            .first()
            .ok_or_else(|| "no [[target]] in the config".to_owned()),
    }
}

/// The first filter with `site` in its first `+` level (and `#` as `x`).
pub fn reading_topic(filters: &[String], site: &str) -> String {
    filters
        .first()
        .map_or("aq/+/readings", String::as_str)
        .replacen('+', site, 1)
        .replace('#', "x")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<Plan, ConfigError> {
        let cfg = Config::parse(text, "t")?;
        Plan::resolve(cfg, "t")
    }

    #[test]
    fn a_broken_registry_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sites.toml");
        std::fs::write(&f, "[[site]]\nid = \"bad id\"\n").unwrap();
        let text = format!("[sites]\nfile = \"{}\"\n", f.display());
        // Config::parse checks the registry too; a file broken after load is caught
        // by the resolve step on its own.
        assert!(Config::parse(&text, "t").is_err());
        let cfg = Config::parse("", "t").unwrap();
        let mut cfg2 = cfg.clone();
        cfg2.sites.file = f;
        match Plan::resolve(cfg2, "t") {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert!(
                    problems.iter().any(|p| p.contains("bad id")),
                    "{problems:?}"
                )
            }
            Ok(_) => panic!("a broken registry resolved"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn registry_exclusions_join_the_district_rules_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sites.toml");
        std::fs::write(
            &f,
            "[[site]]\nid = \"a\"\ncounts_for_district = false\n[[site]]\nid = \"b\"\n",
        )
        .unwrap();
        let text = format!(
            "[sites]\nfile = \"{}\"\n[aqi]\ndistrict_exclude = [\"a\", \"z\"]\n",
            f.display()
        );
        let p = resolve(&text).unwrap();
        assert_eq!(p.aqi.district_exclude, vec!["a", "z"]);
        let api = p.api.as_ref().unwrap();
        assert_eq!(api.aqi.district_exclude, p.aqi.district_exclude);
    }

    #[test]
    fn the_embedded_broker_sets_the_service_client() {
        let p = resolve("[broker]\nembedded = true\nlisten = \"0.0.0.0:18830\"\n").unwrap();
        assert_eq!(p.mqtt.url, "mqtt://127.0.0.1:18830");
        assert!(p.broker.is_some());
        let p = resolve("[broker]\nembedded = false\n[mqtt]\nurl = \"mqtt://h:1\"\n").unwrap();
        assert_eq!(p.mqtt.url, "mqtt://h:1");
        assert!(p.broker.is_none());
    }

    #[test]
    fn units_are_converted_once() {
        let p = resolve(
            "[ingest]\nmax_future_secs = 7\n[store]\npath = \"x.db\"\nretention_days = 2\n",
        )
        .unwrap();
        assert_eq!(p.ingest.policy.max_future_ms, 7000);
        assert_eq!(p.ingest.policy.max_age_ms, Some(2 * MS_PER_DAY));
        assert_eq!(
            p.prune_cutoff(UnixMillis(3 * MS_PER_DAY)),
            Some(UnixMillis(MS_PER_DAY))
        );
    }

    #[test]
    fn topics_follow_the_config() {
        let p = resolve("[mqtt]\ntopics = [\"bureau/erqi/+/pm\"]\n").unwrap();
        assert_eq!(p.reading_topic("s1"), "bureau/erqi/s1/pm");
    }
}
