//! MQTT over TLS (rustls with ring): the service connects to a real mosquitto TLS
//! listener that requires client certificates, trusting a custom CA, and stores what a
//! device publishes.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_custom_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki, &["client"]);

    // mosquitto with a plain listener (for the device) and a TLS one requiring client
    // certificates (for the service).
    let plain = free_port();
    let tls = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\ncafile {p}/ca.pem\ncertfile {p}/server.pem\nkeyfile {p}/server.key\nrequire_certificate true\n",
            p = pki.display()
        ),
    )
    .unwrap();
    require("mosquitto");
    let broker = spawn_logged(
        Command::new("mosquitto").arg("-c").arg(&conf),
        dir.path().join("mosquitto.log"),
    );
    wait_until("mosquitto TLS listener", Duration::from_secs(10), || {
        assert!(
            !broker.log_text().contains("Error"),
            "mosquitto: {}",
            broker.log_text()
        );
        std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()
    });

    let text = format!(
        "[mqtt]\nurl = \"mqtts://127.0.0.1:{tls}\"\nclient_id = \"t-tls\"\ntls_ca_file = \"{p}/ca.pem\"\ntls_client_cert_file = \"{p}/client.pem\"\ntls_client_key_file = \"{p}/client.key\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nenabled = false\n",
        dir.path().join("aq.db").display(),
        p = pki.display()
    );
    let cfg = Config::parse(&text, "test").unwrap();
    let svc = Service::start(cfg).await;
    let m = Arc::clone(&svc.metrics);
    let base = base_ts_ms();
    publish_all(plain, (0..20).map(|i| reading_msg(1, i, base)).collect()).await;
    wait_for("20 readings over TLS", Duration::from_secs(30), || {
        Metrics::get(&m.readings_stored) == 20
    })
    .await;
    svc.stop().await;
    assert_eq!(count(&db(dir.path()), "SELECT count(*) FROM readings"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_takes_devices_over_tls_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki, &["client"]);
    std::env::set_var("AQ_TEST_BROKER_PASSWORD", "device-secret");
    let (plain, tls) = (free_port(), free_port());
    let text = format!(
        "[broker]\nembedded = true\nlisten = \"127.0.0.1:{plain}\"\nusername = \"device\"\npassword_env = \"AQ_TEST_BROKER_PASSWORD\"\ntls_listen = \"127.0.0.1:{tls}\"\ntls_cert_file = \"{p}/server.pem\"\ntls_key_file = \"{p}/server.key\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nenabled = false\n",
        dir.path().join("aq.db").display(),
        p = pki.display()
    );
    let svc = Service::start(Config::parse(&text, "test").unwrap()).await;
    let m = Arc::clone(&svc.metrics);
    let publish = |password: &str| {
        Command::new(require("mosquitto_pub"))
            // By name: an IP address is not a valid TLS server name (SNI), and rustls
            // refuses clients that send one.
            .args(["-h", "localhost", "-p", &tls.to_string(), "--cafile"])
            .arg(pki.join("ca.pem"))
            .args([
                "-u",
                "device",
                "-P",
                password,
                "-q",
                "1",
                "-t",
                "aq/tls-site/readings",
            ])
            .args(["-m", r#"{"ts":"2016-08-01T08:00:00+08:00","pm10":42}"#])
            .output()
            .unwrap()
    };
    let ok = publish("device-secret");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    wait_for("the reading over TLS", Duration::from_secs(20), || {
        Metrics::get(&m.readings_stored) == 1
    })
    .await;
    // The TLS works; a wrong password is refused (rumqttd drops the connection).
    let refused = publish("wrong");
    assert!(!refused.status.success(), "a wrong password was accepted");
    svc.stop().await;
    assert_eq!(
        count(
            &db(dir.path()),
            "SELECT count(*) FROM readings WHERE site = 'tls-site'"
        ),
        1
    );
}
