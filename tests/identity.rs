//! Only a site's own device writes its readings: identities made with `aq-ingest
//! device add` (the registry keeps only hashes), enforced by the embedded broker and —
//! through `aq-ingest broker-config --mosquitto` — by a real mosquitto.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aq-ingest"))
}

/// `aq-ingest device add …` in `dir`; returns the printed secret.
fn add_device(dir: &Path, args: &[&str]) -> String {
    let out = bin()
        .current_dir(dir)
        .args(["--config", "aq.toml", "device", "add"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("secret ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no secret printed: {text}"))
        .to_owned()
}

/// One QoS 1 publish with mosquitto_pub; `creds` = (user, password).
fn publish(port: u16, v5: bool, creds: Option<(&str, &str)>, topic: &str, payload: &str) -> Output {
    let mut c = Command::new(require("mosquitto_pub"));
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        payload,
    ]);
    if v5 {
        c.args(["-V", "mqttv5"]);
    }
    if let Some((u, p)) = creds {
        c.args(["-u", u, "-P", p]);
    }
    c.output().unwrap()
}

/// Whether the broker acknowledged a QoS 1 publish of `reading(pm10)`.
fn accepted(port: u16, v5: bool, creds: Option<(&str, &str)>, topic: &str, pm10: u32) -> bool {
    publish(port, v5, creds, topic, &reading(pm10))
        .status
        .success()
}

fn reading(pm10: u32) -> String {
    format!(
        r#"{{"ts":"2016-08-01T08:{:02}:00+08:00","pm10":{pm10}}}"#,
        pm10 % 60
    )
}

fn stored(dir: &Path, site: &str) -> Vec<f64> {
    let c = db(&dir.join("data"));
    let mut s = c
        .prepare("SELECT pm10 FROM readings WHERE site = ?1 ORDER BY pm10")
        .unwrap();
    s.query_map([site], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The shipped defaults with free ports and a registry file in `dir`.
fn setup(dir: &Path) -> (u16, u16) {
    let (port, api) = (free_port(), free_port());
    let cfg =
        shipped_config(port, api).replace("file = \"config/sites.toml\"", "file = \"sites.toml\"");
    std::fs::write(dir.join("aq.toml"), cfg).unwrap();
    std::fs::write(
        dir.join("sites.toml"),
        "[[site]]\nid = \"a\"\n\n[[site]]\nid = \"b\"\n",
    )
    .unwrap();
    (port, api)
}

fn metric(api: u16, name: &str) -> f64 {
    let (_, body) = http("GET", &format!("http://127.0.0.1:{api}/metrics"), "").unwrap();
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn the_embedded_broker_lets_a_device_write_only_its_own_site() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, api) = setup(d);
    let a = add_device(d, &["dev-a", "--site", "a"]);
    let b = add_device(d, &["dev-b", "--site", "b"]);
    let viewer = add_device(d, &["viewer", "--reader"]);
    let registry = std::fs::read_to_string(d.join("sites.toml")).unwrap();
    for s in [&a, &b, &viewer] {
        assert!(
            !registry.contains(s.as_str()),
            "a secret in the registry file"
        );
    }
    assert_eq!(registry.matches("secret = \"$7$101$").count(), 3);

    let mut svc = spawn_logged(
        bin().current_dir(d).args(["--config", "aq.toml"]),
        d.join("svc.log"),
    );
    wait_until(
        "the broker to take devices",
        Duration::from_secs(20),
        || svc.log_text().contains("devices can connect"),
    );
    // Its own site: taken.
    assert!(accepted(
        port,
        false,
        Some(("dev-a", &a)),
        "aq/a/readings",
        11
    ));
    assert!(accepted(
        port,
        true,
        Some(("dev-b", &b)),
        "aq/b/readings",
        22
    ));
    // Another site's topic: 3.1.1 closes the connection (no PUBACK), 5 says "not authorized".
    assert!(!accepted(
        port,
        false,
        Some(("dev-a", &a)),
        "aq/b/readings",
        33
    ));
    let v5 = publish(
        port,
        true,
        Some(("dev-a", &a)),
        "aq/b/readings",
        &reading(44),
    );
    assert!(
        String::from_utf8_lossy(&v5.stderr)
            .to_lowercase()
            .contains("not authorized")
            || !v5.status.success(),
        "MQTT 5 refusal: {v5:?}"
    );
    // A reader publishes nothing; wrong secrets, unknown and anonymous clients get in nowhere.
    assert!(!accepted(
        port,
        false,
        Some(("viewer", &viewer)),
        "aq/a/readings",
        55
    ));
    assert!(!accepted(
        port,
        false,
        Some(("dev-a", &b)),
        "aq/a/readings",
        56
    ));
    assert!(!accepted(
        port,
        false,
        Some(("nobody", &a)),
        "aq/a/readings",
        57
    ));
    assert!(!accepted(port, false, None, "aq/a/readings", 58));
    // A good reading after them all: everything before it is settled.
    assert!(accepted(
        port,
        false,
        Some(("dev-b", &b)),
        "aq/b/readings",
        23
    ));
    wait_until("the last reading", Duration::from_secs(20), || {
        stored(d, "b").len() == 2
    });
    assert_eq!(stored(d, "a"), vec![11.0]);
    assert_eq!(
        stored(d, "b"),
        vec![22.0, 23.0],
        "dev-a's readings for b were never stored"
    );
    assert_eq!(
        metric(api, "aq_device_unauthorized_total"),
        3.0,
        "a→b twice, the reader once"
    );
    assert!(metric(api, "aq_device_refused_total") >= 3.0);
    let log = svc.log_text();
    assert!(log.contains("publish refused"), "{log}");
    for s in [&a, &b, &viewer] {
        assert!(!log.contains(s.as_str()), "a secret in the log");
    }
    svc.terminate();

    // Rotation: the old secret stops working, the new one works.
    let out = bin()
        .current_dir(d)
        .args(["--config", "aq.toml", "device", "rotate", "dev-a"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let a2 = String::from_utf8_lossy(&out.stdout)
        .split("secret ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut svc = spawn_logged(
        bin().current_dir(d).args(["--config", "aq.toml"]),
        d.join("svc2.log"),
    );
    wait_until(
        "the broker to take devices",
        Duration::from_secs(20),
        || svc.log_text().contains("devices can connect"),
    );
    assert!(!accepted(
        port,
        false,
        Some(("dev-a", &a)),
        "aq/a/readings",
        12
    ));
    assert!(accepted(
        port,
        false,
        Some(("dev-a", &a2)),
        "aq/a/readings",
        13
    ));
    wait_until(
        "the rotated device's reading",
        Duration::from_secs(20),
        || stored(d, "a").len() == 2,
    );
    assert_eq!(stored(d, "a"), vec![11.0, 13.0]);
    svc.terminate();
}

#[test]
fn mosquitto_enforces_the_same_rule_with_the_generated_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, _) = setup(d);
    let port = free_port();
    let cfg = std::fs::read_to_string(d.join("aq.toml"))
        .unwrap()
        .replace("embedded = true", "embedded = false")
        .replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            &format!("url = \"mqtt://127.0.0.1:{port}\""),
        )
        .replace("# username = \"aq-ingest\"", "username = \"aq-ingest\"")
        .replace(
            "password_env = \"AQ_MQTT_PASSWORD\"",
            "password_env = \"AQ_TEST_SERVICE_PASSWORD\"",
        );
    std::fs::write(d.join("aq.toml"), cfg).unwrap();
    let a = add_device(d, &["dev-a", "--site", "a"]);
    let b = add_device(d, &["dev-b", "--site", "b"]);
    let service_pw = "service-secret-xyz";
    let out = bin()
        .current_dir(d)
        .env("AQ_TEST_SERVICE_PASSWORD", service_pw)
        .args(["--config", "aq.toml", "broker-config", "--mosquitto", "mq"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(d.join("mq/passwd")).unwrap();
    assert!(!passwd.contains(service_pw) && !passwd.contains(&a));
    std::fs::create_dir_all(d.join("mq-data")).unwrap();
    std::fs::write(
        d.join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {0}/mq/passwd\nacl_file {0}/mq/acl\npersistence true\npersistence_location {0}/mq-data/\nuser root\n",
            d.display()
        ),
    )
    .unwrap();
    let mut broker = spawn_logged(
        Command::new(require("mosquitto"))
            .arg("-c")
            .arg(d.join("mosquitto.conf")),
        d.join("mosquitto.log"),
    );
    wait_until("mosquitto", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut svc = spawn_logged(
        bin()
            .current_dir(d)
            .env("AQ_TEST_SERVICE_PASSWORD", service_pw)
            .args(["--config", "aq.toml"]),
        d.join("svc.log"),
    );
    wait_until(
        "the service to subscribe with its own identity",
        Duration::from_secs(20),
        || svc.log_text().contains("mqtt: subscribed"),
    );
    assert!(accepted(
        port,
        false,
        Some(("dev-a", &a)),
        "aq/a/readings",
        11
    ));
    // mosquitto acknowledges a denied QoS 1 publish (3.1.1 has no refusal) and drops it.
    let _ = publish(
        port,
        false,
        Some(("dev-a", &a)),
        "aq/b/readings",
        &reading(33),
    );
    assert!(!accepted(
        port,
        false,
        Some(("dev-a", &b)),
        "aq/a/readings",
        34
    ));
    assert!(!accepted(port, false, None, "aq/a/readings", 35));
    assert!(accepted(
        port,
        false,
        Some(("dev-b", &b)),
        "aq/b/readings",
        22
    ));
    wait_until("dev-b's reading", Duration::from_secs(20), || {
        !stored(d, "b").is_empty()
    });
    wait_until("dev-a's reading", Duration::from_secs(20), || {
        !stored(d, "a").is_empty()
    });
    assert_eq!(stored(d, "b"), vec![22.0], "dev-a could not write site b");
    assert_eq!(stored(d, "a"), vec![11.0]);
    svc.terminate();
    broker.terminate();
}

/// The service run with every secret set (API token, InfluxDB token, the service's MQTT
/// password, a device's secret, an HJ 212 device password): none of them appears in its
/// log or in any API response, whether the request is authorized or not.
#[test]
fn no_secret_reaches_a_log_or_an_api_response() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, api) = setup(d);
    let secrets = [
        ("AQ_API_TOKEN", "api-token-7f3a9c"),
        ("AQ_INFLUX_TOKEN", "influx-token-5b2e81"),
        ("AQ_MQTT_PASSWORD", "mqtt-password-c4d6e2"),
    ];
    let hj212_pw = "hj212-pw-91e0";
    std::fs::write(
        d.join("sites.toml"),
        format!("[[site]]\nid = \"a\"\nmn = \"MN0001\"\nhj212_password = \"{hj212_pw}\"\n"),
    )
    .unwrap();
    let dead = free_port(); // an InfluxDB that is not there: the sink logs its failures
    let cfg = std::fs::read_to_string(d.join("aq.toml")).unwrap()
        + &format!(
            "\n[influx]\nurl = \"http://127.0.0.1:{dead}\"\nbucket = \"aq\"\nretry_max_secs = 1\n"
        );
    std::fs::write(d.join("aq.toml"), cfg).unwrap();
    let device = add_device(d, &["dev-a", "--site", "a"]);
    let mut cmd = bin();
    cmd.current_dir(d)
        .args(["--config", "aq.toml"])
        .env("RUST_LOG", "debug");
    for (k, v) in secrets {
        cmd.env(k, v);
    }
    let mut svc = spawn_logged(&mut cmd, d.join("svc.log"));
    wait_until(
        "the broker to take devices",
        Duration::from_secs(20),
        || svc.log_text().contains("devices can connect"),
    );
    assert!(accepted(
        port,
        false,
        Some(("dev-a", &device)),
        "aq/a/readings",
        11
    ));
    assert!(!accepted(
        port,
        false,
        Some(("dev-a", "wrong")),
        "aq/a/readings",
        12
    ));
    wait_until("the sink to fail", Duration::from_secs(20), || {
        svc.log_text().contains("influx")
    });
    let base = format!("http://127.0.0.1:{api}");
    let auth = format!("Bearer {}", secrets[0].1);
    let mut responses = String::new();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/sites",
        "/api/v1/targets",
        "/api/v1/bulletin/2016-08-01",
        "/api/v1/openapi.json",
        "/",
    ] {
        for headers in [
            vec![("Authorization", auth.as_str())],
            vec![("Authorization", "Bearer wrong")],
            vec![],
        ] {
            let (status, body) = http_with("GET", &format!("{base}{path}"), "", &headers).unwrap();
            responses.push_str(&format!("{path} {status}\n{body}\n"));
        }
    }
    assert!(responses.contains("/api/v1/sites 200"), "{responses}");
    svc.terminate();
    let log = svc.log_text();
    assert!(log.len() > 1000, "a debug log to search: {log}");
    for secret in secrets
        .iter()
        .map(|s| s.1)
        .chain([hj212_pw, device.as_str()])
    {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!responses.contains(secret), "{secret} in an API response");
    }
}

/// The shipped deployment: the broker refuses anonymous clients and takes its password
/// file and ACL from the registry; the compose file has no secret literal (every one is
/// required from the environment, so `docker-compose config` fails without them).
#[test]
fn the_shipped_deployment_has_no_anonymous_broker_and_no_literal_secret() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let conf = std::fs::read_to_string(root.join("deploy/mosquitto.conf")).unwrap();
    let lines: Vec<&str> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(lines.contains(&"allow_anonymous false"), "{conf}");
    assert!(lines.iter().any(|l| l.starts_with("password_file ")));
    assert!(lines.iter().any(|l| l.starts_with("acl_file ")));
    let compose = root.join("docker-compose.yml");
    let out = Command::new(require("docker-compose"))
        .arg("-f")
        .arg(&compose)
        .args(["config", "-q"])
        .env_remove("AQ_INFLUX_TOKEN")
        .env_remove("AQ_INFLUX_ADMIN_PASSWORD")
        .env_remove("AQ_MQTT_PASSWORD")
        .env_remove("AQ_API_TOKEN")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a secret has a default in the compose file"
    );
    let stand_in = "stand-in-secret-value";
    let out = Command::new(require("docker-compose"))
        .arg("-f")
        .arg(&compose)
        .args(["--profile", "ha", "config"])
        .env("AQ_INFLUX_TOKEN", stand_in)
        .env("AQ_INFLUX_ADMIN_PASSWORD", stand_in)
        .env("AQ_MQTT_PASSWORD", stand_in)
        .env("AQ_API_TOKEN", stand_in)
        // The `ha` profile's secrets are passed through to its containers (which refuse
        // to start without them), so that the default stack does not need them.
        .env("AQ_NATS_PASSWORD", stand_in)
        .env("AQ_STORE_PASSWORD", stand_in)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved = String::from_utf8_lossy(&out.stdout);
    // Every secret-looking value is the stand-in: nothing else was written in.
    for line in resolved.lines() {
        let l = line.to_lowercase();
        if l.contains("token:") || l.contains("password:") {
            assert!(line.contains(stand_in), "a literal secret: {line}");
        }
    }
    // The default stack needs only its own four secrets.
    let out = Command::new(require("docker-compose"))
        .arg("-f")
        .arg(&compose)
        .args(["config", "-q"])
        .env("AQ_INFLUX_TOKEN", stand_in)
        .env("AQ_INFLUX_ADMIN_PASSWORD", stand_in)
        .env("AQ_MQTT_PASSWORD", stand_in)
        .env("AQ_API_TOKEN", stand_in)
        .env_remove("AQ_NATS_PASSWORD")
        .env_remove("AQ_STORE_PASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The deployment's own service config refuses unregistered sites and logs in.
    let aq = std::fs::read_to_string(root.join("deploy/aq-ingest.toml")).unwrap();
    assert!(aq.contains("username = \"aq-ingest\"") && aq.contains("embedded = false"));
}

/// On the TLS listener with `tls_client_ca_file`, a verified client certificate's CN is
/// the device's identity (no password): it writes its own site and nothing else.
#[test]
fn a_client_certificate_names_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, _) = setup(d);
    let pki = d.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki, &["dev-a", "dev-b"]);
    std::fs::write(
        d.join("sites.toml"),
        "[[site]]\nid = \"a\"\n[[site]]\nid = \"b\"\n[[device]]\nid = \"dev-a\"\nsites = [\"a\"]\n[[device]]\nid = \"dev-b\"\nsites = [\"b\"]\n",
    )
    .unwrap();
    let tls = free_port();
    let cfg = std::fs::read_to_string(d.join("aq.toml")).unwrap().replace(
        "[broker]\n",
        &format!(
            "[broker]\ntls_listen = \"127.0.0.1:{tls}\"\ntls_cert_file = \"{0}/server.pem\"\ntls_key_file = \"{0}/server.key\"\ntls_client_ca_file = \"{0}/ca.pem\"\n",
            pki.display()
        ),
    );
    std::fs::write(d.join("aq.toml"), cfg).unwrap();
    let mut svc = spawn_logged(
        bin().current_dir(d).args(["--config", "aq.toml"]),
        d.join("svc.log"),
    );
    wait_until(
        "the broker to take devices",
        Duration::from_secs(20),
        || svc.log_text().contains("devices can connect"),
    );
    let publish_as = |cert: Option<&str>, topic: &str, pm10: u32| {
        let mut c = Command::new(require("mosquitto_pub"));
        // By name: rustls refuses an IP address as the TLS server name.
        c.args([
            "-h",
            "localhost",
            "-p",
            &tls.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(["-m", &reading(pm10)])
        .arg("--cafile")
        .arg(pki.join("ca.pem"));
        if let Some(who) = cert {
            c.arg("--cert").arg(pki.join(format!("{who}.pem")));
            c.arg("--key").arg(pki.join(format!("{who}.key")));
        }
        c.output().unwrap().status.success()
    };
    assert!(publish_as(Some("dev-a"), "aq/a/readings", 11));
    assert!(
        !publish_as(Some("dev-a"), "aq/b/readings", 33),
        "dev-a's certificate cannot write site b"
    );
    assert!(
        !publish_as(None, "aq/a/readings", 34),
        "no certificate, no password: refused"
    );
    assert!(publish_as(Some("dev-b"), "aq/b/readings", 22));
    wait_until("both devices' readings", Duration::from_secs(20), || {
        stored(d, "a").len() == 1 && stored(d, "b").len() == 1
    });
    assert_eq!((stored(d, "a"), stored(d, "b")), (vec![11.0], vec![22.0]));
    svc.terminate();
}
