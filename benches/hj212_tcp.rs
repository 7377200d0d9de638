//! HJ 212 end to end through the TCP listener, beside JSON over MQTT, in one run (a
//! load-test command that prints its figures): `cargo bench --bench hj212_tcp [READINGS
//! PER DEVICE]` (default 30).
//!
//! The release binary runs on the shipped defaults (embedded broker, power-loss
//! durability; ports moved to free ones, the store in a temporary directory) plus
//! `[hj212] listen` and a registry of 1 000 sites with the simulator's MNs.
//!
//! - **HJ 212 / TCP**: 1 000 simulated devices (`aq_ingest::sim::hj212::Device`), each on
//!   its own connection, all connected at once, each sending its readings as CN=2011
//!   frames with up to 4 unanswered and at most 90 frames/s (under the listener's
//!   default `max_frames_per_sec` of 100, which would close the connection), a frame
//!   counting only once its CN=9014 answer — sent after the commit — arrived. Printed:
//!   readings/s committed and answered (first frame sent to last answer), and the answer
//!   latency (frame written → answer read) p50/p99/max.
//! - **JSON / MQTT**: the same readings (a day later, so none is a duplicate) as JSON
//!   from 1 000 MQTT 3.1.1 clients to the embedded broker at QoS 1, one reading per
//!   message, the same window of 4 in flight; a reading counts once its PUBACK (also
//!   sent after the commit) arrived, not paced (the HJ 212 devices' pacing offers 90 000
//!   frames/s in all: the window and the service are the limits on both sides). Printed:
//!   readings/s and PUBACK latency.
//!
//! Both runs use the same process, store and cores (load generator and service share
//! the machine), so the ratio is the meaningful figure.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aq_ingest::aqi::zone::Zone;
use aq_ingest::model::{Flag, UnixMillis};
use aq_ingest::sim::hj212::{mn_of, Answered, Device, DeviceConfig, SIM_PASSWORD};
use aq_ingest::sim::{SimReading, Simulator};
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

const DEVICES: usize = 1000;
const WINDOW: usize = 4;

fn reading(site: usize, i: usize, base: i64) -> SimReading {
    let (pm25, pm10) = reading_values(site, i);
    SimReading {
        site,
        ts: UnixMillis(base + i as i64 * 60_000),
        pm25,
        pm10,
        flag: Flag::Normal,
    }
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn stored(dir: &std::path::Path) -> i64 {
    count(
        &db(&dir.join("data")),
        "SELECT coalesce(max(seq), 0) FROM readings",
    )
}

/// HJ 212 over TCP: returns (elapsed, latencies, answered).
fn run_tcp(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    per_device: usize,
    base: i64,
) -> (Duration, Vec<Duration>, u64) {
    let sim = Simulator {
        sites: DEVICES,
        interval_secs: 60,
        seed: 1,
        zone: Zone::BEIJING,
    };
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let l2 = Arc::clone(&latencies);
    let cfg = DeviceConfig {
        window: WINDOW,
        max_frames_per_sec: 90.0,
        retries: 100,
        on_reply: Some(Arc::new(move |a: &Answered| {
            l2.lock().unwrap().push(a.latency)
        })),
        ..DeviceConfig::default()
    };
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..DEVICES)
        .map(|s| {
            let (sim, cfg, addr) = (sim.clone(), cfg.clone(), addr.to_owned());
            rt.spawn(async move {
                let d = Device::spawn(&sim, addr, s, cfg);
                for i in 0..per_device {
                    d.send(reading(s, i, base)).await;
                }
                d.finish().await
            })
        })
        .collect();
    let mut total = aq_ingest::sim::hj212::DeviceReport::default();
    for t in tasks {
        total.add(&rt.block_on(t).unwrap());
    }
    let elapsed = t0.elapsed();
    assert_eq!(total.unanswered, 0, "{total:?}");
    if total.resent > 0 || total.connections > DEVICES as u64 {
        println!(
            "  (HJ 212 devices re-sent {} frames over {} connections)",
            total.resent, total.connections
        );
    }
    let l = latencies.lock().unwrap().clone();
    (elapsed, l, total.delivered)
}

/// JSON over MQTT to the embedded broker: returns (elapsed, latencies, acknowledged).
fn run_mqtt(
    rt: &tokio::runtime::Runtime,
    port: u16,
    per_device: usize,
    base: i64,
) -> (Duration, Vec<Duration>, u64) {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..DEVICES)
        .map(|s| {
            rt.spawn(async move {
                let mut o = MqttOptions::new(format!("bench-json-{s}"), "127.0.0.1", port);
                o.set_keep_alive(Duration::from_secs(60))
                    .set_inflight(WINDOW as u16);
                let (client, mut el) = AsyncClient::new(o, WINDOW * 2);
                let topic = format!("aq/{}/readings", Simulator::site_id(s));
                let mut next = 0;
                let mut queued: std::collections::VecDeque<Instant> = Default::default();
                let mut in_flight: HashMap<u16, Instant> = HashMap::new();
                let mut lat = Vec::with_capacity(per_device);
                while lat.len() < per_device {
                    while next < per_device && queued.len() + in_flight.len() < WINDOW {
                        let r = reading(s, next, base);
                        let payload = format!(
                            r#"{{"ts":{},"pm25":{},"pm10":{},"interval_secs":60}}"#,
                            r.ts.0, r.pm25, r.pm10
                        );
                        if client
                            .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                            .is_err()
                        {
                            break;
                        }
                        queued.push_back(Instant::now());
                        next += 1;
                    }
                    match el.poll().await {
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            if let Some(t) = queued.pop_front() {
                                in_flight.insert(pkid, t);
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => {
                            if let Some(t) = in_flight.remove(&a.pkid) {
                                lat.push(t.elapsed());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => panic!("MQTT device {s}: {e}"),
                    }
                }
                let _ = client.try_disconnect();
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(rt.block_on(t).unwrap());
    }
    let n = all.len() as u64;
    (t0.elapsed(), all, n)
}

fn main() {
    let per_device: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mqtt_port, api_port, hj_port) = (free_port(), free_port(), free_port());
    let mut cfg = shipped_config_in(d, mqtt_port, api_port);
    set(&mut cfg, "hj212", "listen", format!("127.0.0.1:{hj_port}"));
    std::fs::write(d.join("aq.toml"), toml::to_string(&cfg).unwrap()).unwrap();
    let registry: String = (0..DEVICES)
        .map(|s| {
            format!(
                "[[site]]\nid = \"{}\"\nmn = \"{}\"\nhj212_password = \"{SIM_PASSWORD}\"\nhj212_crc = \"hj212\"\nunit = \"ug/m3\"\n\n",
                Simulator::site_id(s),
                mn_of(s)
            )
        })
        .collect();
    std::fs::write(d.join("sites.toml"), registry).unwrap();

    let mut svc = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .current_dir(d)
            .args(["--config", "aq.toml"])
            .env_remove("RUST_LOG"),
        d.join("service.log"),
    );
    wait_until_alive(
        "the HJ 212 and MQTT ports",
        &svc,
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect(("127.0.0.1", hj_port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", mqtt_port)).is_ok()
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = DEVICES * per_device;
    let base = base_ts_ms() - 10 * 86_400_000;
    println!(
        "HJ 212 over TCP vs JSON over MQTT: {DEVICES} devices connected at once, {per_device} readings each ({n} in all), {WINDOW} in flight per device; shipped defaults (power-loss durability)"
    );

    let before = stored(d);
    let (t_tcp, mut l_tcp, answered) =
        run_tcp(&rt, &format!("127.0.0.1:{hj_port}"), per_device, base);
    let in_store = stored(d) - before;
    assert_eq!(answered as usize, n);
    assert!(
        in_store as usize >= n,
        "answered {answered} but {in_store} stored"
    );
    println!(
        "  HJ 212 / TCP listener: {:>8.0} readings/s committed and answered ({:.2} s); answer latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / t_tcp.as_secs_f64(),
        t_tcp.as_secs_f64(),
        percentile(&mut l_tcp, 0.50),
        percentile(&mut l_tcp, 0.99),
        percentile(&mut l_tcp, 1.0),
    );

    let before = stored(d);
    let (t_mqtt, mut l_mqtt, acked) = run_mqtt(&rt, mqtt_port, per_device, base + 86_400_000);
    let in_store = stored(d) - before;
    assert_eq!(acked as usize, n);
    assert!(
        in_store as usize >= n,
        "acknowledged {acked} but {in_store} stored"
    );
    println!(
        "  JSON / MQTT (embedded): {:>7.0} readings/s committed and acknowledged ({:.2} s); PUBACK latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / t_mqtt.as_secs_f64(),
        t_mqtt.as_secs_f64(),
        percentile(&mut l_mqtt, 0.50),
        percentile(&mut l_mqtt, 0.99),
        percentile(&mut l_mqtt, 1.0),
    );
    println!(
        "  HJ 212 / JSON rate ratio: {:.2}",
        t_mqtt.as_secs_f64() / t_tcp.as_secs_f64()
    );
    unsafe_sigterm(svc.pid());
    let st = svc.exit_within(Duration::from_secs(90));
    assert!(
        st.is_some_and(|s| s.success()),
        "the service did not stop cleanly"
    );
}
