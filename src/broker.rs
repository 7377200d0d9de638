//! The `[broker]` config: the embedded broker, for a single machine with no broker
//! installed. With `embedded = true` aq-ingest terminates the devices' MQTT connections
//! itself ([`crate::source::devices`]) and acknowledges a publish only after its commit.

use std::net::SocketAddr;

use serde::Deserialize;

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
    /// Payload bytes taken from devices and not yet committed, at most. At the cap the
    /// devices' sockets are not read until commits free room (back-pressure; nothing is
    /// dropped). Sized for the machine: this is the broker's memory for messages.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// A second listener speaking MQTT over TLS (rustls), for devices on the network;
    /// needs `tls_cert_file` and `tls_key_file` (PEM). The service itself keeps using
    /// the plain listener on loopback.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// PEM CA whose client certificates identify devices on the TLS listener: a
    /// certificate's subject CN names a registry identity (`[[device]] id`), the
    /// alternative to a user name and secret. Clients without one still log in with a
    /// password.
    pub tls_client_ca_file: Option<std::path::PathBuf>,
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
fn default_max_pending_bytes() -> usize {
    // 64 MiB: a fleet's backlog upload after an outage (238 sites × a day of minute
    // readings is ~35 MiB of JSON) passes without waiting, on a machine of any size.
    64 * 1024 * 1024
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
        if self.max_pending_bytes < self.max_payload_bytes
            || self.max_pending_bytes > u32::MAX as usize
        {
            p.push("broker.max_pending_bytes must be at least broker.max_payload_bytes (one message must fit) and below 4 GiB".into());
        }
        if self.username.as_deref() == Some("") {
            p.push("broker.username is empty".into());
        }
        if let Some(ca) = &self.tls_client_ca_file {
            if self.tls_listen.is_none() {
                p.push("broker.tls_client_ca_file needs broker.tls_listen".into());
            } else if !ca.is_file() {
                p.push(format!(
                    "broker.tls_client_ca_file {} does not exist",
                    ca.display()
                ));
            }
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
