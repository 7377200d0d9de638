//! The dashboard in a real browser: headless Chromium (Debian `chromium`) loads `/`
//! from a service fed through MQTT; the rendered page shows the target status, a
//! calendar with one cell per day of the period coloured by HJ 633 category, the
//! bulletin, and no script errors. It fits a phone's screen: Chromium emulating a
//! 390 × 844 phone (over the DevTools protocol, as `--window-size` cannot go below 500
//! px in headless mode) finds no sideways scrolling. Screenshots are written as test
//! artifacts to `target/dashboard.png` and `target/dashboard-phone.png`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use common::*;

fn day_msg(site: &str, day: u32, pm25: f64, pm10: f64) -> (String, Vec<u8>) {
    hours_msg(site, day, pm25, pm10, (0..24).collect())
}

fn hours_msg(site: &str, day: u32, pm25: f64, pm10: f64, hours: Vec<u32>) -> (String, Vec<u8>) {
    let items: Vec<String> = hours
        .into_iter()
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

/// Messages from Chromium waiting to be read (the reader thread waits when it is full).
const DEVTOOLS_QUEUE: usize = 256;

/// Headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: it reads commands on fd 3 and writes on fd 4, each
/// message NUL-terminated JSON). A shell hands it our stdin and stdout pipes as fds 3
/// and 4 — no unsafe code needed.
struct Browser {
    child: Child,
    to: std::process::ChildStdin,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let bin = require("chromium");
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 1>/dev/null 0</dev/null"#)
            .arg(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::sync_channel(DEVTOOLS_QUEUE);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            while reader
                .read_until(0, &mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                buf.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        Browser {
            child,
            to,
            from: rx,
            next: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends a command (to the attached page, when there is one) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let v = self.call_raw(method, params);
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// The whole answer to a command, an error included.
    fn call_raw(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut msg = json!({"id": self.next, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            if v["id"] == json!(self.next) {
                return v;
            }
            // An event: a script error or console error on the page fails the test.
            assert_ne!(v["method"], "Runtime.exceptionThrown", "script error: {v}");
            assert!(
                !(v["method"] == "Runtime.consoleAPICalled" && v["params"]["type"] == "error"),
                "console error: {v}"
            );
        }
    }

    /// Opens a page emulating a phone screen of `width` × `height` CSS px.
    fn open_phone(&mut self, url: &str, width: u32, height: u32) {
        let t = self.call("Target.createTarget", json!({"url": "about:blank"}));
        let s = self.call(
            "Target.attachToTarget",
            json!({"targetId": t["targetId"], "flatten": true}),
        );
        self.session = Some(s["sessionId"].as_str().unwrap().to_owned());
        self.call("Runtime.enable", json!({}));
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 3, "mobile": true}),
        );
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The value of `expr` in the page (null when it has none, or while a navigation
    /// replaces the page's context).
    fn eval(&mut self, expr: &str) -> Value {
        self.call_raw(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        )["result"]["result"]["value"]
            .clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        // Silent 10:00–13:59: 20 hours still make a valid day, and the site chart
        // shows the silence as a gap.
        hours_msg("a", 2, 60.0, 100.0, (0..10).chain(14..24).collect()),
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
    // The site chart: PM2.5 and PM10 each drawn as two runs around the silent hours.
    let chart = &dom[dom.find(r#"id="site-chart""#).unwrap()..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert_eq!(chart.matches("<polyline").count(), 4, "{chart}");

    assert!(dom.contains(r#"data-fits="true""#), "wider than the window");

    // On a phone (390 × 844 CSS px, mobile viewport): the page fits the screen's width,
    // with wide tables scrolling inside their box.
    let phone_shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-phone.png");
    {
        let url = url.clone();
        let shot = phone_shot.clone();
        tokio::task::spawn_blocking(move || {
            let mut b = Browser::start();
            b.open_phone(&url, 390, 844);
            wait_until("the page finished on the phone", Duration::from_secs(20), || {
                b.eval("document.body && document.body.dataset.ready || ''") == json!("1")
            });
            // A mobile browser widens its layout viewport to content that does not
            // fit; so the page fits when the viewport stays at the screen's width and
            // nothing scrolls sideways within it.
            let widths = b.eval("[window.innerWidth, document.documentElement.clientWidth, document.documentElement.scrollWidth]");
            assert!(
                widths[0] == json!(390) && b.eval("document.body.dataset.fits") == json!("true"),
                "the page is wider than a 390 px phone screen: [viewport, client, content] = {widths}"
            );
            let png = b.call("Page.captureScreenshot", json!({"format": "png"}));
            let png = base64::engine::general_purpose::STANDARD
                .decode(png["data"].as_str().unwrap())
                .unwrap();
            std::fs::write(&shot, png).unwrap();
        })
        .await
        .unwrap();
    }

    // A screenshot for people to look at (the phone's is written above).
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        "--window-size=1280,1400",
        &format!("--screenshot={}", shot.display()),
        &url,
    ]);
    for s in [&shot, &phone_shot] {
        assert!(
            std::fs::metadata(s)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "no screenshot at {}",
            s.display()
        );
    }
    svc.stop().await;
}
