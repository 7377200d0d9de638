//! The embedded broker: aq-ingest itself terminates the devices' MQTT connections
//! (3.1.1 and 5, plain and TLS), so that what a device is told matches what is stored:
//!
//! - **Start**: the listeners open only once the ingest's queue and the store's writer
//!   exist; before, a device's connection is refused and it retries.
//! - **Running**: a QoS 1 PUBACK (QoS 2 PUBREC) is written only after the ingest has
//!   committed the message's readings — there is no window in which a reading is
//!   acknowledged and only in memory, so a crash (even SIGKILL) loses nothing a device
//!   was told is safe.
//! - **Held back**: payload bytes handed to the ingest and not yet committed are capped
//!   (`broker.max_pending_bytes`); at the cap a connection's socket is not read until
//!   commits free room (TCP back-pressure: the device's publishes wait in its own
//!   buffer). Nothing acknowledged is ever dropped or evicted.
//! - **Stop**: the listeners close first (new connections are refused); connected
//!   devices' sockets are no longer read; the ingest commits what it holds and the
//!   PUBACKs for it are written; then the connections close. A publish that was not
//!   acknowledged is sent again by the device after it reconnects, and stored once.
//!
//! Subscribers (dashboards, phone apps) may subscribe to any filter, but only alerts
//! ([`board`]) are ever delivered, at QoS 0 and retained: readings go to the store,
//! never to other clients.

mod board;
mod cert_cn;
mod codec;
mod connection;

pub use board::{Board, BoardPublisher};

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tracing::{info, warn};

use super::routes::Routes;
use super::{Message, Settled, SourceContext, SourceIndex};
use crate::broker::BrokerConfig;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::sites::{Device, Registry};
use crate::source::topic::SiteFilter;

/// MQTT framing around a payload (fixed header, topic, properties): the packet cap is
/// the payload cap plus this.
const PACKET_OVERHEAD_BYTES: usize = 64 * 1024;

/// How often a refused device is logged at most (per reason), with the count since.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Start-up failures.
#[derive(Debug, Error)]
pub enum DevicesError {
    #[error("the embedded broker cannot listen on {addr}: {source} (is another broker running? set [broker] listen, or embedded = false to use it)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("broker.username is set but ${0} is empty: set the password in the environment")]
    NoPassword(String),
    #[error("broker TLS: {0}")]
    Tls(String),
}

/// What every connection shares.
pub(crate) struct Shared {
    source: SourceIndex,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// The user name and password devices log in with, when set (and no identities
    /// are listed in the registry).
    login: Option<(String, String)>,
    /// Client identities and the sites they may write.
    registry: Arc<Registry>,
    /// The reading topic filters: where a topic names its site.
    filters: Vec<SiteFilter>,
    /// When refused publishes were last logged, and how many since.
    unauthorized: Mutex<(Option<Instant>, u64)>,
    /// Largest MQTT packet read.
    max_packet: usize,
    /// Room for payload bytes handed to the ingest and not yet committed.
    room: Arc<Semaphore>,
    max_pending: usize,
    board: Arc<Board>,
    /// Each connection's acknowledgement queue, by connection id.
    routes: Routes,
    /// When refusals were last logged, and how many since.
    refusals: Mutex<(Option<Instant>, u64)>,
}

/// Who a connection is.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// No identities are listed: anyone (with the shared login, when set).
    Anyone,
    /// A listed identity.
    Listed(Device),
}

impl Shared {
    /// Who the client certificate or the CONNECT's credentials name, or `None` when
    /// they are refused. Once the registry lists identities, only they get in; a
    /// verified client certificate whose CN is an identity is that identity.
    fn authenticate(
        &self,
        cert_cn: Option<&str>,
        got: Option<&(String, String)>,
    ) -> Option<Identity> {
        if let Some(d) = cert_cn.and_then(|cn| self.registry.device(cn)) {
            return Some(Identity::Listed(d.clone()));
        }
        if !self.registry.has_devices() {
            return self.login_ok(got).then_some(Identity::Anyone);
        }
        let (user, secret) = got?;
        let d = self.registry.device(user)?;
        let hash = d.secret.as_deref()?;
        crate::credentials::verify(secret, hash).then(|| Identity::Listed(d.clone()))
    }

    /// Whether `who` may publish on `topic`: a listed device only on its own sites'
    /// reading topics; a reader never.
    fn may_publish(&self, who: &Identity, topic: &str) -> bool {
        match who {
            Identity::Anyone => true,
            Identity::Listed(d) => crate::source::topic::site_of(&self.filters, topic)
                .is_some_and(|site| d.may_write(site)),
        }
    }

    /// WARN-logs a refused publish at most once per interval, with the count since.
    fn log_unauthorized(&self, peer: &SocketAddr, client: &str, topic: &str) {
        let Ok(mut r) = self.unauthorized.lock() else {
            return;
        };
        r.1 += 1;
        if r.0.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
            warn!(%peer, client, topic, refused_since_last = r.1, "publish refused: this client may not write that site");
            *r = (Some(Instant::now()), 0);
        }
    }

    fn login_ok(&self, got: Option<&(String, String)>) -> bool {
        match (&self.login, got) {
            (None, _) => true,
            (Some((u, p)), Some((gu, gp))) => {
                // Constant time in the secret: no early exit on the first wrong byte.
                crate::credentials::same(u.as_bytes(), gu.as_bytes())
                    & crate::credentials::same(p.as_bytes(), gp.as_bytes())
            }
            (Some(_), None) => false,
        }
    }

    fn register(&self, tx: mpsc::Sender<Vec<Settled>>) -> u64 {
        self.routes.register(tx)
    }

    fn deregister(&self, id: u64) {
        self.routes.deregister(id);
        self.note_pending();
    }

    fn note_pending(&self) {
        let used = self
            .max_pending
            .saturating_sub(self.room.available_permits());
        self.metrics
            .device_pending_bytes
            .store(used as u64, Ordering::Relaxed);
    }

    /// WARN-logs a refused device at most once per interval, with the count since.
    fn log_refusal(&self, peer: &SocketAddr, client_id: &str, why: &str) {
        let Ok(mut r) = self.refusals.lock() else {
            return;
        };
        r.1 += 1;
        if r.0.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
            warn!(%peer, client_id, reason = why, refused_since_last = r.1, "device refused");
            *r = (Some(Instant::now()), 0);
        }
    }
}

/// A started device server.
pub struct DevicesSource {
    /// Ends after the stop, once every connection has written its last acknowledgements.
    pub task: tokio::task::JoinHandle<()>,
    /// Where the alerts go (the alerts stage publishes on it).
    pub board: Arc<Board>,
}

/// Binds the listeners (plain, and TLS when configured) and serves devices until the
/// context's shutdown turns true. Messages go to `messages` stamped with `source`;
/// committed tokens come back on `acks`.
pub async fn start(
    cfg: &BrokerConfig,
    registry: Arc<Registry>,
    filters: Vec<SiteFilter>,
    source: SourceIndex,
    messages: mpsc::Sender<Message>,
    acks: mpsc::Receiver<Vec<Settled>>,
    ctx: SourceContext,
) -> Result<DevicesSource, DevicesError> {
    let login = match &cfg.username {
        Some(user) => {
            let pass = std::env::var(&cfg.password_env).unwrap_or_default();
            if pass.is_empty() {
                return Err(DevicesError::NoPassword(cfg.password_env.clone()));
            }
            Some((user.clone(), pass))
        }
        None => None,
    };
    let tls = match (cfg.tls_listen, &cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(addr), Some(cert), Some(key)) => Some((
            addr,
            tls_acceptor(cert, key, cfg.tls_client_ca_file.as_deref())?,
        )),
        _ => None,
    };
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| DevicesError::Listen { addr, source })
    };
    let plain = bind(cfg.listen).await?;
    let tls = match tls {
        Some((addr, acceptor)) => Some((bind(addr).await?, acceptor)),
        None => None,
    };
    let board = Board::new();
    let shared = Arc::new(Shared {
        source,
        clock: ctx.clock,
        metrics: Arc::clone(&ctx.metrics),
        login,
        registry,
        filters,
        unauthorized: Mutex::new((None, 0)),
        max_packet: cfg.max_payload_bytes + PACKET_OVERHEAD_BYTES,
        room: Arc::new(Semaphore::new(cfg.max_pending_bytes)),
        max_pending: cfg.max_pending_bytes,
        board: Arc::clone(&board),
        routes: Routes::default(),
        refusals: Mutex::new((None, 0)),
    });
    // Taking messages: what readiness and the demo look for.
    ctx.metrics.mqtt_connected.store(true, Ordering::Relaxed);
    ctx.metrics.mqtt_subscribed.store(true, Ordering::Relaxed);
    info!(listen = %cfg.listen, tls_listen = ?cfg.tls_listen, "embedded broker: devices can connect");
    let router = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move { shared.routes.run(acks, connection::conn_of, "device").await })
    };
    let server = Server {
        shared,
        connections: Arc::new(Semaphore::new(cfg.max_connections)),
        stop: ctx.shutdown,
    };
    let metrics = ctx.metrics;
    let task = tokio::spawn(async move {
        server.accept(plain, tls, messages).await;
        // Every connection has ended; the router ends when the ingest drops its acker.
        let _ = router.await;
        metrics.mqtt_connected.store(false, Ordering::Relaxed);
        metrics.mqtt_subscribed.store(false, Ordering::Relaxed);
        info!("embedded broker: stopped");
    });
    Ok(DevicesSource { task, board })
}

/// The accept side.
struct Server {
    shared: Arc<Shared>,
    /// Connection slots (`broker.max_connections`).
    connections: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl Server {
    /// Accepts until the stop, then closes the listeners and waits for every
    /// connection to finish.
    async fn accept(
        mut self,
        plain: TcpListener,
        tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
        messages: mpsc::Sender<Message>,
    ) {
        let mut conns = JoinSet::new();
        let (tls_listener, acceptor) = match tls {
            Some((l, a)) => (Some(l), Some(a)),
            None => (None, None),
        };
        while !*self.stop.borrow() {
            let accepted = tokio::select! {
                _ = self.stop.changed() => break,
                a = plain.accept() => a.map(|(s, p)| (s, p, false)),
                a = accept_opt(tls_listener.as_ref()) => a.map(|(s, p)| (s, p, true)),
                // Reap finished connections as they go.
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let (stream, peer, is_tls) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accepting a device connection failed");
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&self.connections).try_acquire_owned() else {
                Metrics::add(&self.shared.metrics.device_refused, 1);
                self.shared
                    .log_refusal(&peer, "", "broker.max_connections reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (shared, tx, stop) = (
                Arc::clone(&self.shared),
                messages.clone(),
                self.stop.clone(),
            );
            let acceptor = acceptor.clone().filter(|_| is_tls);
            conns.spawn(async move {
                let _slot = slot;
                match acceptor {
                    Some(a) => {
                        match tokio::time::timeout(connection::CONNECT_TIMEOUT, a.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => {
                                // A client certificate verified against the CA: its
                                // subject CN may name an identity.
                                let cn = s
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| cert_cn::subject_cn(c));
                                connection::serve(s, peer, cn, shared, tx, stop).await
                            }
                            _ => Metrics::add(&shared.metrics.device_refused, 1),
                        }
                    }
                    None => connection::serve(stream, peer, None, shared, tx, stop).await,
                }
            });
        }
        // Refuse new devices from here on; ours stop reading and drain their acks.
        drop(plain);
        drop(tls_listener);
        drop(messages);
        info!(
            connections = conns.len(),
            "embedded broker: listeners closed; draining connected devices"
        );
        while conns.join_next().await.is_some() {}
    }
}

async fn accept_opt(
    l: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A rustls server from PEM files; with `client_ca`, client certificates signed by it
/// are asked for and verified (clients without one may still log in with a password).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsAcceptor, DevicesError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| DevicesError::Tls(format!("{}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DevicesError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| DevicesError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| DevicesError::Tls(format!("{}: no private key", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| DevicesError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read(ca)?.as_slice()) {
                let c = c.map_err(|e| DevicesError::Tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| DevicesError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| DevicesError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| DevicesError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
