//! The service config: TOML, unknown keys refused, every semantic problem reported in
//! one pass. Each stage owns its section's struct; this module only composes them.
//! Secrets (MQTT password, InfluxDB token) come from environment variables named here,
//! never from the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::alerts::AlertsConfig;
use crate::api::ApiConfig;
use crate::aqi::target::TargetConfig;
use crate::aqi::AqiConfig;
use crate::broker::BrokerConfig;
use crate::ingest::IngestConfig;
use crate::sink::influx::InfluxConfig;
use crate::sites::{Registry, SitesConfig};
use crate::source::mqtt::MqttConfig;
use crate::source::nats::NatsConfig;
use crate::source::tcp::Hj212Config;
use crate::source::topic::SiteFilter;
use crate::stages::ShutdownConfig;
use crate::store::StoreConfig;

/// The built-in defaults: the shipped `config/default.toml`, compiled in so that the
/// binary runs anywhere with no file.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `[log]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `aq_ingest=debug`, …); `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    /// How often the pipeline counters are logged; 0 turns that off.
    #[serde(default = "default_stats_interval_secs")]
    pub stats_interval_secs: u64,
}

fn default_level() -> String {
    "info".into()
}
fn default_stats_interval_secs() -> u64 {
    60
}

impl Default for LogConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// The whole config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// A NATS JetStream cluster as the device source (its MQTT listeners take the
    /// devices); replaces the MQTT client. No section: MQTT.
    pub nats: Option<NatsConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// No section: the local store is the only store.
    pub influx: Option<InfluxConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub aqi: AqiConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub sites: SitesConfig,
    /// Good-day targets (`[[target]]`).
    #[serde(default)]
    pub target: Vec<TargetConfig>,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// HJ 212 devices: the TCP listener (off unless `listen` is set) and frames over
    /// MQTT.
    #[serde(default)]
    pub hj212: Hj212Config,
}

/// Config failures; `Invalid` lists every problem found.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
}

impl Config {
    /// Loads `path`, or the embedded defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                Self::parse(&text, &p.display().to_string())
            }
            None => Self::parse(EMBEDDED_DEFAULT, "built-in defaults"),
        }
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }

    /// What is worth a warning but valid (check-config lists them; the service logs
    /// them at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.aqi.warnings();
        w.extend(self.target.iter().flat_map(|t| t.warnings()));
        w
    }

    /// The `[nats]` section's problems, and how it fits the rest.
    fn nats_problems(&self) -> Vec<String> {
        let Some(n) = &self.nats else {
            return Vec::new();
        };
        let mut topics = self.mqtt.topics.clone();
        topics.extend(self.hj212.mqtt_topics.iter().cloned());
        let mut p = n.problems(&topics);
        if self.broker.embedded {
            p.push("[nats] and [broker] embedded = true are two device brokers: set [broker] embedded = false".into());
        }
        if self.mqtt.share_group.is_some() {
            p.push("mqtt.share_group has no meaning with [nats]: instances share the durable consumer (nats.durable)".into());
        }
        p
    }

    /// Every semantic problem, not just the first.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = self.mqtt.broker() {
            p.push(e.to_string());
        }
        if self.mqtt.topics.is_empty() {
            p.push("mqtt.topics is empty".into());
        }
        for t in &self.mqtt.topics {
            if let Err(e) = SiteFilter::parse(t) {
                p.push(format!("mqtt.topics: {e}"));
            }
        }
        if let Some(g) = &self.mqtt.share_group {
            if g.is_empty() || g.contains(['/', '+', '#']) {
                p.push(format!(
                    "mqtt.share_group {g:?} must be one topic level (no '/', '+' or '#')"
                ));
            }
        }
        if self.mqtt.share_group.is_some() && self.store.backend != crate::store::Backend::Postgres
        {
            p.push("mqtt.share_group splits the readings between instances, which only a shared store can hold: set [store] backend = \"postgres\"".into());
        }
        p.extend(self.nats_problems());
        if self.store.backend == crate::store::Backend::Postgres && self.store.url.is_none() {
            p.push("[store] backend = \"postgres\" needs url".into());
        }
        if self.mqtt.client_id.is_empty() || self.mqtt.client_id.len() > 128 {
            p.push("mqtt.client_id must be 1..=128 bytes".into());
        }
        if self.mqtt.queue_capacity < 16 {
            p.push("mqtt.queue_capacity must be at least 16".into());
        }
        if self.mqtt.max_payload_bytes == 0 {
            p.push("mqtt.max_payload_bytes must be positive".into());
        }
        for f in [
            &self.mqtt.tls_ca_file,
            &self.mqtt.tls_client_cert_file,
            &self.mqtt.tls_client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if !f.is_file() {
                p.push(format!("mqtt TLS file {} does not exist", f.display()));
            }
        }
        if self.store.path.as_os_str().is_empty() {
            p.push("store.path is empty".into());
        }
        if self.ingest.max_batch_messages == 0 {
            p.push("ingest.max_batch_messages must be positive".into());
        }
        if self.ingest.max_batch_readings == 0 {
            p.push("ingest.max_batch_readings must be positive".into());
        }
        if let Some(i) = &self.influx {
            p.extend(i.problems());
        }
        p.extend(self.broker.problems());
        p.extend(self.shutdown.problems());
        p.extend(self.hj212.problems());
        if let Err(e) = Registry::load(&self.sites) {
            p.extend(e);
        }
        p.extend(self.aqi.problems());
        for t in &self.target {
            p.extend(t.problems());
        }
        let mut names: Vec<&str> = self.target.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            p.push("two [[target]] sections share a name".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_parses_and_validates() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.mqtt.topics, vec!["aq/+/readings".to_string()]);
        // One command on a fresh machine: the defaults need no external broker.
        assert!(cfg.broker.embedded);
        assert!(cfg.influx.is_none());
        // The district's target: more than 100 good days in the second half of 2016.
        let t = &cfg.target[0];
        assert_eq!((t.required(), t.days()), (101, 184));
        let file = Config::load(Some(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/default.toml"
        ))))
        .unwrap();
        assert_eq!(file.store.path, cfg.store.path);
    }

    #[test]
    fn a_shared_store_is_configured_whole_or_refused() {
        let problems = |text: &str| match Config::parse(text, "t") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        // Sharing the readings needs a store several instances share.
        let e = problems("[mqtt]\nshare_group = \"aq\"\n");
        assert!(e.contains("backend = \"postgres\""), "{e}");
        let e = problems("[store]\nbackend = \"postgres\"\n");
        assert!(e.contains("needs url"), "{e}");
        let e = problems(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://aq@db/aq\"\n[mqtt]\nshare_group = \"a/b\"\n",
        );
        assert!(e.contains("one topic level"), "{e}");
        let ok = Config::parse(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://aq@db/aq\"\n[mqtt]\nshare_group = \"aq\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(ok.mqtt.subscriptions(), vec!["$share/aq/aq/+/readings"]);
        // A password belongs in the environment, not in the file.
        let with_password = crate::store::StoreConfig::postgres("postgres://aq:secret@db/aq");
        assert!(crate::store::Store::open(&with_password)
            .err()
            .is_some_and(|e| e.to_string().contains("AQ_STORE_PASSWORD")));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::parse("[mqtt]\nurll = \"x\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("urll"), "{e}");
        let e =
            Config::parse("[nats]\nurls = [\"nats://a:4222\"]\nack_wait = 3\n", "t").unwrap_err();
        assert!(e.to_string().contains("ack_wait"), "{e}");
    }

    #[test]
    fn nats_section_is_checked() {
        let ok = Config::parse(
            "[nats]\nurls = [\"nats://a:4222\", \"nats://b:4222\"]\nmqtt_url = \"mqtt://a:1883\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(ok.nats.unwrap().stream, "$MQTT_msgs");
        let e = Config::parse(
            "[broker]\nembedded = true\n[mqtt]\nshare_group = \"g\"\n[nats]\nurls = [\"http://a\"]\ndurable = \"a.b\"\nmax_in_flight = 0\nack_wait_secs = 0\n",
            "t",
        )
        .unwrap_err();
        match e {
            ConfigError::Invalid { problems, .. } => {
                let all = problems.join("\n");
                for want in [
                    "nats.urls",
                    "nats.durable",
                    "max_in_flight",
                    "ack_wait_secs",
                    "embedded",
                    "share_group",
                ] {
                    assert!(all.contains(want), "{want} not in {all}");
                }
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn all_problems_at_once() {
        let e = Config::parse(
            r#"
[mqtt]
url = "http://x"
topics = ["aq/readings"]
[ingest]
max_batch_messages = 0
[influx]
url = "http://h"
"#,
            "t",
        )
        .unwrap_err();
        match e {
            ConfigError::Invalid { problems, .. } => assert_eq!(problems.len(), 4, "{problems:?}"),
            other => panic!("{other}"),
        }
    }
}
