//! The embedded MQTT broker (rumqttd), for a single machine with no broker installed:
//! `aq-ingest serve` with `[broker] embedded = true` starts it in-process and the ingest
//! subscribes to it over loopback through the same source code path as to an external
//! broker.
//!
//! Trade-off, documented in the README: rumqttd keeps messages in memory. A device's
//! reading that the broker has acknowledged but the service has not yet committed (a
//! window of milliseconds) is lost if the *process* dies. Deployments that must survive
//! crashes with no loss at all use an external mosquitto with persistence.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use serde::Deserialize;
use thiserror::Error;

/// The `[broker]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Start the embedded broker. With `false`, `mqtt.url` names an external broker.
    #[serde(default)]
    pub embedded: bool,
    /// Where devices connect. `0.0.0.0:1883` accepts devices on the network.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// When set, clients must log in with this user name and the password from
    /// `password_env` (the service's own client uses them too).
    pub username: Option<String>,
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// Most simultaneous client connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest accepted MQTT payload, in bytes.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// A second listener speaking MQTT over TLS (rustls), for devices on the network;
    /// needs `tls_cert_file` and `tls_key_file` (PEM). The service itself keeps using
    /// the plain listener on loopback.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_password_env() -> String {
    "AQ_BROKER_PASSWORD".into()
}
fn default_max_connections() -> usize {
    // 238 sites today; room for growth and for analysts' clients.
    2000
}
fn default_max_payload_bytes() -> usize {
    1024 * 1024
}

impl Default for BrokerConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl BrokerConfig {
    /// The address the service's own client connects to: the listener, on loopback when
    /// it listens on all interfaces.
    pub fn client_url(&self) -> String {
        format!("mqtt://{}:{}", self.client_host(), self.listen.port())
    }

    /// The host part of [`BrokerConfig::client_url`] (IPv6 in brackets).
    pub fn client_host(&self) -> String {
        let ip = if self.listen.ip().is_unspecified() {
            if self.listen.is_ipv4() {
                "127.0.0.1".to_owned()
            } else {
                "[::1]".to_owned()
            }
        } else if self.listen.is_ipv6() {
            format!("[{}]", self.listen.ip())
        } else {
            self.listen.ip().to_string()
        };
        ip
    }

    /// Every problem with this section.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_connections == 0 {
            p.push("broker.max_connections must be positive".into());
        }
        if self.max_payload_bytes < 1024 {
            p.push("broker.max_payload_bytes must be at least 1024".into());
        }
        if self.username.as_deref() == Some("") {
            p.push("broker.username is empty".into());
        }
        if self.tls_listen.is_some() {
            for (name, f) in [
                ("tls_cert_file", &self.tls_cert_file),
                ("tls_key_file", &self.tls_key_file),
            ] {
                match f {
                    None => p.push(format!("broker.tls_listen needs broker.{name}")),
                    Some(f) if !f.is_file() => {
                        p.push(format!("broker.{name} {} does not exist", f.display()))
                    }
                    Some(_) => {}
                }
            }
        }
        p
    }
}

/// Start-up failures.
#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("embedded broker cannot listen on {addr}: {source} (is another broker running? set [broker] listen, or embedded = false to use it)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("broker.username is set but ${0} is empty: set the password in the environment")]
    NoPassword(String),
    #[error("embedded broker thread: {0}")]
    Thread(std::io::Error),
}

/// Starts the broker on its own threads (rumqttd runs its own runtimes). It runs until
/// the process exits: nothing it holds needs flushing, it keeps no disk state.
pub fn start(cfg: &BrokerConfig) -> Result<(), BrokerError> {
    // rumqttd reports a failed bind only in its log; check first for a clear error.
    TcpListener::bind(cfg.listen).map_err(|source| BrokerError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let auth = match &cfg.username {
        Some(user) => {
            let pass = std::env::var(&cfg.password_env).unwrap_or_default();
            if pass.is_empty() {
                return Err(BrokerError::NoPassword(cfg.password_env.clone()));
            }
            Some(HashMap::from([(user.clone(), pass)]))
        }
        None => None,
    };
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: cfg.max_payload_bytes,
        max_inflight_count: 1000,
        auth,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "aq-v4".into(),
        listen: cfg.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    let mut servers = HashMap::from([("1".to_owned(), server)]);
    if let (Some(addr), Some(cert), Some(key)) =
        (cfg.tls_listen, &cfg.tls_cert_file, &cfg.tls_key_file)
    {
        TcpListener::bind(addr).map_err(|source| BrokerError::Listen { addr, source })?;
        servers.insert(
            "2".to_owned(),
            rumqttd::ServerSettings {
                name: "aq-v4-tls".into(),
                listen: addr,
                tls: Some(rumqttd::TlsConfig::Rustls {
                    capath: None,
                    certpath: cert.display().to_string(),
                    keypath: key.display().to_string(),
                }),
                next_connection_delay_ms: 1,
                connections,
            },
        );
    }
    let mut broker = rumqttd::Broker::new(broker_config(cfg, servers));
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped; devices cannot publish");
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}

/// rumqttd's settings: the router's limits and the listeners.
fn broker_config(
    cfg: &BrokerConfig,
    servers: HashMap<String, rumqttd::ServerSettings>,
) -> rumqttd::Config {
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: 1000,
            // The router's in-memory commit log per filter: 10 × 100 MiB.
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(servers),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_connects_over_loopback() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.client_url(), "mqtt://127.0.0.1:1883");
        c.listen = "0.0.0.0:1884".parse().unwrap();
        assert_eq!(c.client_url(), "mqtt://127.0.0.1:1884");
        c.listen = "[::]:1885".parse().unwrap();
        assert_eq!(c.client_url(), "mqtt://[::1]:1885");
    }
}
