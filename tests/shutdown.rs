//! The ordered shutdown has one overall deadline: the built binary, with an InfluxDB
//! that accepts connections and never answers, still exits within
//! `[shutdown] deadline_secs` of SIGTERM, names the stuck stage in its log, and has
//! committed and acknowledged the reading first (the sink's lines stay in the outbox).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A server that takes connections and never answers: the sink's request hangs.
fn silent_server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            // Read the request head so that we know one was sent, then keep the
            // connection open without a word.
            let mut buf = [0u8; 256];
            if s.read(&mut buf).is_ok_and(|n| n > 0) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            held.push(s);
        }
    });
    (port, requests)
}

#[test]
fn a_stuck_sink_cannot_hold_the_shutdown_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (influx_port, requests) = silent_server();
    let (port, api_port) = (free_port(), free_port());
    let deadline_secs = 3;
    let cfg = format!(
        r#"
[broker]
embedded = true
listen = "127.0.0.1:{port}"
[store]
path = "aq.db"
durability = "process_crash"
[api]
listen = "127.0.0.1:{api_port}"
[log]
stats_interval_secs = 0
[shutdown]
deadline_secs = {deadline_secs}
[influx]
url = "http://127.0.0.1:{influx_port}"
bucket = "aq"
flush_interval_secs = 0.0
request_timeout_secs = 3600
shutdown_flush_secs = 3600
derived = false
"#
    );
    std::fs::write(dir.path().join("aq.toml"), cfg).unwrap();
    let mut svc = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
            .current_dir(dir.path())
            .args(["--config", "aq.toml"])
            .env_remove("RUST_LOG"),
        dir.path().join("service.log"),
    );
    wait_until(
        "the embedded broker to take devices",
        Duration::from_secs(20),
        || svc.log_text().contains("devices can connect"),
    );
    let st = Command::new(require("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "aq/s1/readings"])
        .args(["-m", r#"{"ts":"2016-08-01T08:58:57+08:00","pm10":80.1}"#])
        .status()
        .unwrap();
    assert!(st.success());
    wait_until(
        "the sink's request to hang on the silent server",
        Duration::from_secs(20),
        || requests.load(Ordering::SeqCst) > 0,
    );

    let t0 = Instant::now();
    unsafe_sigterm(svc.pid());
    // Within the deadline, with room for the process to start and finish its exit (a
    // stuck stage would otherwise hold it for the hour the config allows the request).
    let status = svc.exit_within(Duration::from_secs(deadline_secs + 10));
    let log = svc.log_text();
    let status = status.unwrap_or_else(|| panic!("still running after {:?}:\n{log}", t0.elapsed()));
    assert!(status.success(), "{status:?}\n{log}");
    let named = log
        .lines()
        .any(|l| l.contains("abandon") && l.contains("influx sink"));
    assert!(named, "the stuck stage is named:\n{log}");
    // What came before the sink was finished: committed and acknowledged.
    assert!(log.contains("messages_acked=1"), "{log}");
    let c = db(dir.path());
    assert_eq!(count(&c, "SELECT count(*) FROM readings"), 1);
    assert_eq!(
        count(&c, OUTBOX_DEPTH),
        1,
        "the undelivered line stays queued"
    );
}
