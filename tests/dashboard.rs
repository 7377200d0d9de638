//! The dashboard in a real browser: headless Chromium (Debian `chromium`) loads `/`
//! from a service fed through MQTT; the rendered page shows the target status, a
//! calendar with one cell per day of the period coloured by HJ 633 category, the
//! bulletin, and no script errors. A screenshot is written as a test artifact to
//! `target/dashboard.png`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use common::*;

fn day_msg(site: &str, day: u32, pm25: f64, pm10: f64) -> (String, Vec<u8>) {
    let items: Vec<String> = (0..24)
        .map(|h| format!(r#"{{"ts":"2016-07-{day:02}T{h:02}:00:00+08:00","pm25":{pm25},"pm10":{pm10},"period":"hour"}}"#))
        .collect();
    (
        format!("aq/{site}/readings"),
        format!("[{}]", items.join(",")).into_bytes(),
    )
}

fn chromium(args: &[&str]) -> (String, String) {
    let bin = require("chromium");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_status_calendar_and_bulletin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let port = free_port();
    let text = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"t-dash\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"AQ_TEST_NO_SUCH_TOKEN\"\n[[target]]\nname = \"2016H2\"\nfrom = \"2016-07-01\"\nto = \"2016-12-31\"\ngood_days = 100\n",
        broker.url(),
        dir.path().join("aq.db").display()
    );
    let svc = Service::start(Config::parse(&text, "test").unwrap()).await;
    let m = Arc::clone(&svc.metrics);
    // 1 July excellent (优, green), 2 July good (良, yellow), 3 July heavy (重度, purple).
    let msgs = vec![
        day_msg("a", 1, 20.0, 40.0),
        day_msg("a", 2, 60.0, 100.0),
        day_msg("a", 3, 200.0, 300.0),
    ];
    publish_all(broker.port, msgs).await;
    wait_for("3 messages acknowledged", Duration::from_secs(30), || {
        Metrics::get(&m.messages_acked) == 3
    })
    .await;

    let url = format!("http://127.0.0.1:{port}/");
    let (dom, log) = chromium(&["--dump-dom", &url]);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not finish: {dom}"
    );
    assert!(!dom.contains("data-error"), "script error: {dom}");
    assert!(
        !log.contains("Uncaught") && !log.contains(":ERROR:CONSOLE"),
        "console errors: {log}"
    );
    // Status in words; as of today the 2016 target is over: 2 good days of 101.
    assert!(dom.contains("无法完成 unreachable"), "{dom}");
    assert!(dom.contains(r#"<span class="big" id="good">2</span>"#));
    // The calendar: one cell per day of the 184-day period, coloured by category.
    let cells = dom.matches("data-date=\"2016-").count();
    assert_eq!(cells, 184);
    let cell = |date: &str| {
        let i = dom.find(&format!("data-date=\"{date}\"")).unwrap();
        dom[i..i + 120].to_string()
    };
    assert!(
        cell("2016-07-01").contains("rgb(0, 228, 0)"),
        "{}",
        cell("2016-07-01")
    );
    assert!(
        cell("2016-07-02").contains("rgb(255, 255, 0)"),
        "{}",
        cell("2016-07-02")
    );
    assert!(
        cell("2016-07-03").contains("rgb(153, 0, 76)"),
        "{}",
        cell("2016-07-03")
    );
    assert!(
        cell("2016-07-04").contains("rgb(221, 221, 221)"),
        "no data is grey: {}",
        cell("2016-07-04")
    );
    // The bulletin of the last day with data lists the site.
    assert!(dom.contains("<td>a</td>"), "{dom}");

    // A screenshot for people to look at.
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        "--window-size=1280,1400",
        &format!("--screenshot={}", shot.display()),
        &url,
    ]);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot"
    );
    svc.stop().await;
}
