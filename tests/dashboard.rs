//! The dashboard in a real browser: headless Chromium (Debian `chromium`), driven over
//! the DevTools protocol, loads `/` from a service fed through MQTT (with a site
//! registry and "now" pinned to 5 July 2016, so the calendar has data, no-data and
//! future days) and is used as a person would: the mouse hovers and clicks calendar
//! days, the date picker and previous/next change the bulletin, table headers sort,
//! the range and site choices redraw the chart, export buttons download files. Checked:
//! month names and Monday-first weekday headers, the tooltip's values against the API,
//! axis tick labels matching the data's range, one map marker per registered site with
//! coordinates, the exports' contents, no script or console error, and the page fitting
//! a 390 px phone screen (emulated over the protocol, as `--window-size` cannot go below
//! 500 px headless). Screenshots: `target/dashboard.png` (laptop, 1280 px wide) and
//! `target/dashboard-phone.png`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use aq_ingest::clock::ManualClock;
use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use aq_ingest::model::UnixMillis;
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

    /// The whole answer to a command, an error included. Every event that arrives
    /// meanwhile is checked: a script error, a console error or an error logged by the
    /// browser (a failed request, say) fails the test.
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
            assert_ne!(v["method"], "Runtime.exceptionThrown", "script error: {v}");
            assert!(
                !(v["method"] == "Runtime.consoleAPICalled" && v["params"]["type"] == "error"),
                "console error: {v}"
            );
            assert!(
                !(v["method"] == "Log.entryAdded" && v["params"]["entry"]["level"] == "error"),
                "browser error: {v}"
            );
        }
    }

    /// Opens `url` in a new page with a `width` × `height` CSS px screen (a phone's
    /// when `mobile`), downloads going to `downloads`.
    fn open(&mut self, url: &str, (width, height): (u32, u32), mobile: bool, downloads: &Path) {
        self.session = None;
        self.call(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": downloads.display().to_string()}),
        );
        let t = self.call("Target.createTarget", json!({"url": "about:blank"}));
        let s = self.call(
            "Target.attachToTarget",
            json!({"targetId": t["targetId"], "flatten": true}),
        );
        self.session = Some(s["sessionId"].as_str().unwrap().to_owned());
        self.call("Runtime.enable", json!({}));
        self.call("Log.enable", json!({}));
        let scale = if mobile { 2 } else { 1 };
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
        );
        if mobile {
            self.call(
                "Emulation.setTouchEmulationEnabled",
                json!({"enabled": true, "maxTouchPoints": 5}),
            );
        }
        self.call("Page.navigate", json!({"url": url}));
        wait_until("the page to finish", Duration::from_secs(30), || {
            self.eval("document.body && (document.body.dataset.ready || document.body.dataset.error) || ''") != json!("")
        });
        assert_eq!(
            self.eval("document.body.dataset.error || null"),
            Value::Null,
            "the page's script failed"
        );
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

    /// Waits until `expr` evaluates to `want`.
    fn wait_for(&mut self, expr: &str, want: Value) {
        let mut last = Value::Null;
        let what = format!("{expr} == {want}");
        wait_until(&what, Duration::from_secs(20), || {
            last = self.eval(expr);
            last == want
        });
    }

    /// The centre of the first element matching `selector`, scrolled into view.
    fn centre(&mut self, selector: &str) -> (f64, f64) {
        let r = self.eval(&format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()",
            s = json!(selector)
        ));
        assert!(r.is_array(), "no element {selector}");
        (r[0].as_f64().unwrap(), r[1].as_f64().unwrap())
    }

    /// Moves the mouse over the element (real input events, as a person's mouse).
    fn hover(&mut self, selector: &str) {
        let (x, y) = self.centre(selector);
        self.mouse("mouseMoved", x, y);
    }

    /// Clicks the element with the mouse.
    fn click(&mut self, selector: &str) {
        let (x, y) = self.centre(selector);
        self.mouse("mouseMoved", x, y);
        self.mouse("mousePressed", x, y);
        self.mouse("mouseReleased", x, y);
    }

    /// Taps the element with a finger (touch events, on a page opened as a phone).
    fn tap(&mut self, selector: &str) {
        let (x, y) = self.centre(selector);
        self.call(
            "Input.dispatchTouchEvent",
            json!({"type": "touchStart", "touchPoints": [{"x": x, "y": y}]}),
        );
        self.call(
            "Input.dispatchTouchEvent",
            json!({"type": "touchEnd", "touchPoints": []}),
        );
    }

    fn mouse(&mut self, kind: &str, x: f64, y: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
        );
    }

    /// A PNG of the whole page (beyond the screen's height).
    fn screenshot(&mut self, path: &Path) {
        let png = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The file `name` once the browser has finished writing it into `dir`.
fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    wait_until(
        &format!("the download {name}"),
        Duration::from_secs(20),
        || path.is_file() && !dir.join(format!("{name}.crdownload")).exists(),
    );
    std::fs::read(path).unwrap()
}

fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name)
}

/// The registry: three sites with coordinates, one without.
const SITES: &str = r#"
[[site]]
id = "a"
name = "Site A"
latitude = 34.72
longitude = 113.62
[[site]]
id = "b"
name = "Site B"
latitude = 34.74
longitude = 113.64
[[site]]
id = "c"
latitude = 34.70
longitude = 113.60
[[site]]
id = "d"
name = "Site D, not surveyed"
"#;

/// What the page is compared with: the API's own answers.
struct Api {
    base: String,
}

impl Api {
    fn json(&self, path: &str) -> Value {
        let (s, b) = http("GET", &format!("{}{path}", self.base), "").unwrap();
        assert_eq!(s, 200, "{path}: {b}");
        serde_json::from_str(&b).unwrap()
    }
}

/// "#rrggbb" as the browser's computed style writes it.
fn rgb(hex: &Value) -> String {
    let h = hex.as_str().unwrap();
    let c = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).unwrap();
    format!("rgb({}, {}, {})", c(1), c(3), c(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_as_a_person_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let port = free_port();
    let sites = dir.path().join("sites.toml");
    std::fs::write(&sites, SITES).unwrap();
    let text = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"t-dash\"\n[store]\npath = \"{}\"\n[log]\nstats_interval_secs = 0\n[sites]\nfile = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"AQ_TEST_NO_SUCH_TOKEN\"\n[[target]]\nname = \"2016H2\"\nfrom = \"2016-07-01\"\nto = \"2016-12-31\"\ngood_days = 100\n",
        broker.url(),
        dir.path().join("aq.db").display(),
        sites.display()
    );
    // "Now" is noon on 5 July 2016 in Beijing: 4 and 5 July have no data, 6 July on is
    // the future.
    let now = UnixMillis(
        chrono::DateTime::parse_from_rfc3339("2016-07-05T12:00:00+08:00")
            .unwrap()
            .timestamp_millis(),
    );
    let svc = Service::start_with_clock(
        Config::parse(&text, "test").unwrap(),
        Arc::new(ManualClock::new(now)),
    )
    .await;
    let m = Arc::clone(&svc.metrics);
    let msgs = vec![
        // a: 1 July excellent, 2 July good with 10:00–13:59 silent (20 hours still make
        // a valid day; the chart shows the gap), 3 July heavy.
        day_msg("a", 1, 20.0, 40.0),
        hours_msg("a", 2, 60.0, 100.0, (0..10).chain(14..24).collect()),
        day_msg("a", 3, 200.0, 300.0),
        // b: over both daily limits on 3 July; c: only 1 July (offline after);
        // d (no coordinates): 2 July; e: not registered.
        day_msg("b", 1, 30.0, 60.0),
        day_msg("b", 3, 80.0, 160.0),
        day_msg("c", 1, 10.0, 20.0),
        day_msg("d", 2, 25.0, 50.0),
        day_msg("e", 1, 15.0, 30.0),
    ];
    let n = msgs.len() as u64;
    publish_all(broker.port, msgs).await;
    wait_for(
        "every message acknowledged",
        Duration::from_secs(30),
        || Metrics::get(&m.messages_acked) == n,
    )
    .await;

    let base = format!("http://127.0.0.1:{port}");
    tokio::task::spawn_blocking(move || {
        let api = Api { base: base.clone() };
        let downloads = tempfile::tempdir().unwrap();
        let mut b = Browser::start();
        b.open(&format!("{base}/"), (1280, 900), false, downloads.path());
        assert_eq!(b.eval("document.body.dataset.fits"), json!("true"));
        progress_and_cumulative_chart(&mut b, &api);
        calendar_by_month(&mut b, &api);
        tooltip_and_click_through(&mut b, &api);
        bulletin_of_any_day(&mut b, &api);
        site_chart(&mut b);
        site_map(&mut b, &api);
        exports(&mut b, downloads.path());
        b.eval("window.scrollTo(0, 0)");
        b.screenshot(&artifact("dashboard.png"));
        phone(&mut b, &base, downloads.path());
        // Whatever is still queued from the page is checked for errors too.
        b.eval("1");
        for s in ["dashboard.png", "dashboard-phone.png"] {
            let len = std::fs::metadata(artifact(s)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 10_000, "no screenshot at target/{s}");
        }
    })
    .await
    .unwrap();
    svc.stop().await;
}

/// The status in words, and the cumulative chart's axes: a tick on the first of each
/// month of the period, days from 0 to just above the target, today marked.
fn progress_and_cumulative_chart(b: &mut Browser, api: &Api) {
    let rep = api.json("/api/v1/targets/2016H2");
    let p = &rep["progress"];
    assert_eq!(rep["as_of"], "2016-07-05");
    assert_eq!(
        b.eval("document.getElementById('good').textContent"),
        json!(p["good"].to_string())
    );
    let words = json!({"achieved": "已达标 achieved", "on_track": "进度正常 on track", "at_risk": "有风险 at risk", "unreachable": "无法完成 unreachable"});
    assert_eq!(
        b.eval("document.getElementById('status').textContent"),
        words[p["status"].as_str().unwrap()]
    );
    let ticks = |b: &mut Browser, sel: &str| {
        b.eval(&format!(
            "[...document.querySelectorAll('{sel}')].map(t => [t.dataset.value, t.textContent])"
        ))
    };
    let x = ticks(b, "#cumulative .tick.x");
    let dates: Vec<&str> = x
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap())
        .collect();
    assert_eq!(
        dates,
        [
            "2016-07-01",
            "2016-08-01",
            "2016-09-01",
            "2016-10-01",
            "2016-11-01",
            "2016-12-01"
        ]
    );
    assert_eq!(x[0][1], "7月 Jul");
    assert_eq!(x[5][1], "12月 Dec");
    let y: Vec<f64> = ticks(b, "#cumulative .tick.y")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap().parse().unwrap())
        .collect();
    let required = p["required"].as_f64().unwrap();
    assert_eq!(y[0], 0.0, "{y:?}");
    assert!(y.windows(2).all(|w| w[0] < w[1]), "{y:?}");
    assert!(
        *y.last().unwrap() >= required && *y.last().unwrap() <= required * 1.5,
        "the y axis does not fit the target {required}: {y:?}"
    );
    let labels =
        b.eval("[...document.querySelectorAll('#cumulative .line-label')].map(t => t.textContent)");
    for want in [
        "进度线 pace".to_string(),
        format!("目标 target {required}"),
        "今天 today 07-05".into(),
        format!("优良 good {}", p["good"]),
    ] {
        assert!(
            labels.as_array().unwrap().contains(&json!(want)),
            "no label {want:?} in {labels}"
        );
    }
    // One point at the start and one at the end of each day up to today.
    let points = b.eval("document.querySelector('#cumulative polyline.good').getAttribute('points').split(' ').length");
    assert_eq!(points, json!(6));
}

/// One block per month with its Chinese and English name, Monday-first weekday
/// columns, each day's colour from the API, no-data days unlike future days, a legend.
fn calendar_by_month(b: &mut Browser, api: &Api) {
    let months = b.eval("[...document.querySelectorAll('.month h3')].map(h => h.textContent)");
    assert_eq!(
        months,
        json!([
            "2016年7月 July 2016",
            "2016年8月 August 2016",
            "2016年9月 September 2016",
            "2016年10月 October 2016",
            "2016年11月 November 2016",
            "2016年12月 December 2016"
        ])
    );
    let heads = b.eval("[...document.querySelectorAll('.month')].map(m => [...m.querySelectorAll('.wd')].map(h => h.textContent).join(' '))");
    for h in heads.as_array().unwrap() {
        assert_eq!(h, "一Mon 二Tue 三Wed 四Thu 五Fri 六Sat 日Sun");
    }
    // 1 July 2016 was a Friday: fifth column; 1 August a Monday: first.
    let column = |b: &mut Browser, d: &str| {
        b.eval(&format!("(() => {{ const c = document.querySelector('[data-date=\"{d}\"]'); return [...c.parentNode.children].indexOf(c) % 7; }})()"))
    };
    assert_eq!(column(b, "2016-07-01"), json!(4));
    assert_eq!(column(b, "2016-08-01"), json!(0));
    assert_eq!(
        b.eval("document.querySelectorAll('#calendar .day').length"),
        json!(184)
    );
    let days = api.json("/api/v1/district/daily?from=2016-07-01&to=2016-07-03");
    for d in days.as_array().unwrap() {
        let bg = b.eval(&format!(
            "getComputedStyle(document.querySelector('[data-date=\"{}\"]')).backgroundColor",
            d["date"].as_str().unwrap()
        ));
        assert_eq!(bg, json!(rgb(&d["color"])), "{d}");
    }
    let kind = |b: &mut Browser, d: &str| {
        b.eval(&format!(
            "document.querySelector('[data-date=\"{d}\"]').className"
        ))
    };
    assert_eq!(kind(b, "2016-07-04"), json!("day nodata"));
    assert_eq!(kind(b, "2016-07-05"), json!("day nodata"));
    assert_eq!(kind(b, "2016-07-06"), json!("day future"));
    assert_eq!(kind(b, "2016-12-31"), json!("day future"));
    let look = |b: &mut Browser, d: &str| {
        b.eval(&format!("(() => {{ const s = getComputedStyle(document.querySelector('[data-date=\"{d}\"]')); return s.backgroundImage + s.backgroundColor; }})()"))
    };
    assert_ne!(
        look(b, "2016-07-04"),
        look(b, "2016-07-06"),
        "no-data days look like future days"
    );
    let legend = b.eval("document.getElementById('legend').textContent");
    for want in [
        "优 excellent",
        "严重污染 severely polluted",
        "无数据 no data",
        "未来 future",
    ] {
        assert!(legend.as_str().unwrap().contains(want), "{legend}");
    }
}

/// The mouse over a day shows its values (those of the API); a click opens its bulletin.
fn tooltip_and_click_through(b: &mut Browser, api: &Api) {
    let d = api.json("/api/v1/district/daily?from=2016-07-03&to=2016-07-03")[0].clone();
    b.hover("[data-date='2016-07-03']");
    b.wait_for("document.getElementById('tip').hidden", json!(false));
    let tip = b.eval("document.getElementById('tip').textContent");
    let tip = tip.as_str().unwrap();
    for want in [
        "2016-07-03 星期日 Sun".to_string(),
        format!(
            "AQI {} {} {}",
            d["aqi"],
            d["category_zh"].as_str().unwrap(),
            d["category"].as_str().unwrap()
        ),
        format!("首要污染物 Primary: {}", d["primary"].as_str().unwrap()),
        format!("PM2.5 {} · PM10 {} µg/m³", d["pm25"], d["pm10"]),
        format!(
            "有效小时 Valid hours: PM2.5 {} · PM10 {}",
            d["valid_hours_pm25"], d["valid_hours_pm10"]
        ),
        format!("站点 Sites counted: {}", d["sites"]),
    ] {
        assert!(tip.contains(&want), "tooltip without {want:?}: {tip}");
    }
    assert_eq!(d["sites"], 2);
    b.hover("[data-date='2016-07-04']");
    b.wait_for(
        "document.getElementById('tip').textContent.includes('无数据 no data')",
        json!(true),
    );
    b.hover("[data-date='2016-07-06']");
    b.wait_for(
        "document.getElementById('tip').textContent.includes('未来 future')",
        json!(true),
    );

    // The first day shown is the last with data; a click on 2 July opens 2 July.
    assert_eq!(
        b.eval("document.getElementById('day').dataset.date"),
        json!("2016-07-03")
    );
    b.click("[data-date='2016-07-02']");
    b.wait_for(
        "document.getElementById('day').dataset.date",
        json!("2016-07-02"),
    );
    assert_eq!(
        b.eval("document.getElementById('date').value"),
        json!("2016-07-02")
    );
    assert_eq!(
        b.eval("document.querySelector('.day.selected').dataset.date"),
        json!("2016-07-02")
    );
    assert_eq!(rows(b, ""), json!(["a", "d", "b", "c", "e"]));
    assert_eq!(rows(b, ".offline"), json!(["b", "c", "e"]));
}

/// The sites of the bulletin's rows matching `class` (all when empty), in order.
fn rows(b: &mut Browser, class: &str) -> Value {
    b.eval(&format!(
        "[...document.querySelectorAll('#bulletin tbody tr{class}')].map(r => r.dataset.site)"
    ))
}

/// The date picker and previous/next change the bulletin; exceedances and offline
/// sites are marked; the headers sort the table.
fn bulletin_of_any_day(b: &mut Browser, api: &Api) {
    b.eval("(() => { const i = document.getElementById('date'); i.value = '2016-07-03'; i.dispatchEvent(new Event('change')); })()");
    b.wait_for(
        "document.getElementById('day').dataset.date",
        json!("2016-07-03"),
    );
    let bulletin = api.json("/api/v1/bulletin/2016-07-03");
    assert_eq!(rows(b, ""), json!(["a", "b", "c", "d", "e"]));
    assert_eq!(bulletin["sites"][1]["pm25_exceeds_daily_limit"], true);
    assert_eq!(rows(b, ".exceeds"), json!(["a", "b"]));
    assert_eq!(rows(b, ".offline"), json!(["c", "d", "e"]));
    let b_cells = b.eval("[...document.querySelectorAll('#bulletin tr[data-site=b] td.exceed')].map(td => td.textContent)");
    assert_eq!(b_cells, json!(["160", "80", "PM10 PM2.5"]));
    let district = b.eval("document.getElementById('district').textContent");
    assert!(
        district
            .as_str()
            .unwrap()
            .contains(&format!("AQI {}", bulletin["district"]["aqi"])),
        "{district}"
    );
    b.click("#prev");
    b.wait_for(
        "document.getElementById('day').dataset.date",
        json!("2016-07-02"),
    );
    b.click("#next");
    b.wait_for(
        "document.getElementById('day').dataset.date",
        json!("2016-07-03"),
    );

    b.click("#bulletin th[data-key=site]");
    assert_eq!(rows(b, ""), json!(["a", "b", "c", "d", "e"]));
    b.click("#bulletin th[data-key=site]");
    assert_eq!(rows(b, ""), json!(["e", "d", "c", "b", "a"]));
    assert_eq!(
        b.eval("document.querySelector('#bulletin th[data-key=site]').getAttribute('aria-sort')"),
        json!("descending")
    );
    // PM2.5, highest first; the offline sites (no value) last.
    b.click("#bulletin th[data-key=pm25]");
    assert_eq!(
        rows(b, "").as_array().unwrap()[..2],
        [json!("a"), json!("b")]
    );
    b.click("#bulletin th[data-key=pm25]");
    assert_eq!(
        rows(b, "").as_array().unwrap()[..2],
        [json!("b"), json!("a")]
    );
}

/// Tick labels (value, text) of the site chart's `axis`.
fn site_ticks(b: &mut Browser, axis: &str) -> Vec<(String, String)> {
    let v = b.eval(&format!("[...document.querySelectorAll('#site-chart .tick.{axis}')].map(t => [t.dataset.value, t.textContent])"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t[0].as_str().unwrap().to_owned(),
                t[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn choose(b: &mut Browser, select: &str, value: &str) {
    b.eval(&format!("(() => {{ const s = document.getElementById('{select}'); s.value = '{value}'; s.dispatchEvent(new Event('change')); }})()"));
}

/// The site chart: a dated time axis and a µg/m³ axis covering the data, the table
/// set's daily limits labelled, silent hours as gaps, day/week/month, up to four sites.
fn site_chart(b: &mut Browser) {
    // A week of hours up to the bulletin's day (3 July), site a.
    assert_eq!(
        b.eval("document.getElementById('site-box').dataset.range"),
        json!("2016-06-27/2016-07-03")
    );
    let x = site_ticks(b, "x");
    assert_eq!(x.first().unwrap().0, "2016-06-27");
    assert_eq!(x.last().unwrap().0, "2016-07-04");
    assert!(x.iter().any(|(_, label)| label == "07-01"), "{x:?}");
    let y: Vec<f64> = site_ticks(b, "y")
        .iter()
        .map(|t| t.0.parse().unwrap())
        .collect();
    // a's highest hour is PM10 300 (3 July): the axis reaches it, not far beyond.
    assert!(
        *y.last().unwrap() >= 300.0 && *y.last().unwrap() < 450.0,
        "{y:?}"
    );
    let limits = b
        .eval("[...document.querySelectorAll('#site-chart .limit-label')].map(t => t.textContent)");
    assert_eq!(limits, json!(["PM2.5 日限值 75", "PM10 日限值 150"]));
    // PM2.5 and PM10 each in two runs around the silent hours of 2 July.
    assert_eq!(
        b.eval("document.querySelectorAll('#site-chart polyline').length"),
        json!(4)
    );

    choose(b, "range", "day");
    b.wait_for(
        "document.getElementById('site-box').dataset.range",
        json!("2016-07-03/2016-07-03"),
    );
    let x = site_ticks(b, "x");
    assert_eq!(
        (x[0].1.as_str(), x.last().unwrap().1.as_str()),
        ("00:00", "24:00"),
        "{x:?}"
    );
    choose(b, "range", "month");
    b.wait_for(
        "document.getElementById('site-box').dataset.range",
        json!("2016-06-04/2016-07-03"),
    );
    let x = site_ticks(b, "x");
    assert!(
        x.first().unwrap().0 == "2016-06-04" && x.iter().all(|t| t.0.as_str() <= "2016-07-04"),
        "{x:?}"
    );
    // Daily values: 1–3 July in one run per pollutant.
    assert_eq!(
        b.eval("document.querySelectorAll('#site-chart polyline').length"),
        json!(2)
    );

    // Compare: b added; at four sites the fifth cannot be picked.
    b.click("#site-picks input[value=b]");
    b.wait_for(
        "document.querySelectorAll('#site-chart [data-site=b]').length > 0",
        json!(true),
    );
    assert!(b
        .eval("document.getElementById('site-legend').textContent")
        .as_str()
        .unwrap()
        .contains('b'));
    b.click("#site-picks input[value=c]");
    b.click("#site-picks input[value=d]");
    assert_eq!(
        b.eval("document.querySelector('#site-picks input[value=e]').disabled"),
        json!(true)
    );
    b.click("#site-picks input[value=d]");
    assert_eq!(
        b.eval("document.querySelector('#site-picks input[value=e]').disabled"),
        json!(false)
    );
    b.wait_for(
        "document.getElementById('site-box').dataset.sites",
        json!("a,b,c"),
    );
    let legend = b.eval(
        "[...document.querySelectorAll('#site-legend span:not(.note)')].map(s => s.textContent)",
    );
    assert_eq!(legend, json!(["a", "b", "c", "PM2.5", "PM10"]));
}

/// One marker per registered site with coordinates, coloured by the day's AQI; the
/// site without coordinates listed beside the map.
fn site_map(b: &mut Browser, api: &Api) {
    let markers =
        b.eval("[...document.querySelectorAll('#map .site-marker')].map(g => g.dataset.site)");
    let markers: BTreeSet<&str> = markers
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(markers, BTreeSet::from(["a", "b", "c"]));
    assert_eq!(
        b.eval("[...document.querySelectorAll('#no-coords li')].map(li => li.dataset.site)"),
        json!(["d"])
    );
    let bulletin = api.json("/api/v1/bulletin/2016-07-03");
    let fill = |b: &mut Browser, s: &str| {
        b.eval(&format!("document.querySelector('#map .site-marker[data-site={s}] circle').getAttribute('fill')"))
    };
    assert_eq!(fill(b, "b"), bulletin["sites"][1]["color"]);
    assert_eq!(fill(b, "a"), bulletin["sites"][0]["color"]);
    assert_eq!(fill(b, "c"), json!("#fff"), "c was offline on 3 July");
    // West is left, north is up.
    let pos = b.eval("['a', 'b', 'c'].map(s => { const c = document.querySelector(`#map .site-marker[data-site=${s}] circle`); return [+c.getAttribute('cx'), +c.getAttribute('cy')]; })");
    let (a, bb, c) = (&pos[0], &pos[1], &pos[2]);
    assert!(
        c[0].as_f64() < a[0].as_f64() && a[0].as_f64() < bb[0].as_f64(),
        "{pos}"
    );
    assert!(
        bb[1].as_f64() < a[1].as_f64() && a[1].as_f64() < c[1].as_f64(),
        "{pos}"
    );
}

/// The export buttons download the bulletin as CSV, a series as CSV and the calendar
/// as SVG and PNG.
fn exports(b: &mut Browser, dir: &Path) {
    b.click("[data-csv=bulletin]");
    let csv = String::from_utf8(downloaded(dir, "bulletin-2016-07-03.csv")).unwrap();
    assert!(csv.starts_with("date,site,status,pm10,pm25,aqi"), "{csv}");
    assert!(csv.contains("\n2016-07-03,b,reporting,160,80,"), "{csv}");
    b.click("#series-csv button");
    let series = String::from_utf8(downloaded(dir, "a-2016-06-04-2016-07-03.csv")).unwrap();
    assert!(series.starts_with("date,pm25,pm10,aqi"), "{series}");
    assert_eq!(series.lines().count(), 1 + 30, "{series}");
    b.click("#cal-svg");
    let svg = String::from_utf8(downloaded(dir, "calendar-2016H2.svg")).unwrap();
    assert!(
        svg.contains("<svg")
            && svg.contains("2016年7月 July 2016")
            && svg.contains("2016年12月 December 2016")
    );
    assert_eq!(
        svg.matches("<rect x=").count() - 8,
        184,
        "one square per day plus the legend's 8"
    );
    b.click("#cal-png");
    let png = downloaded(dir, "calendar-2016H2.png");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

/// On a phone (390 × 844 CSS px, mobile viewport) the page fits the screen's width,
/// wide tables scrolling inside their box, and the calendar and charts are drawn.
fn phone(b: &mut Browser, base: &str, downloads: &Path) {
    // Opened on a given day by its address.
    b.open(&format!("{base}/#2016-07-02"), (390, 844), true, downloads);
    assert_eq!(
        b.eval("document.getElementById('day').dataset.date"),
        json!("2016-07-02")
    );
    // A mobile browser widens its layout viewport to content that does not fit; so the
    // page fits when the viewport stays at the screen's width and nothing scrolls
    // sideways within it.
    let widths = b.eval("[window.innerWidth, document.documentElement.clientWidth, document.documentElement.scrollWidth]");
    assert!(
        widths[0] == json!(390) && b.eval("document.body.dataset.fits") == json!("true"),
        "the page is wider than a 390 px phone screen: [viewport, client, content] = {widths}"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('.month').length"),
        json!(6)
    );
    let chart = b.eval("document.getElementById('cumulative').getBoundingClientRect().width");
    assert!(chart.as_f64().unwrap() <= 390.0, "{chart}");
    assert_eq!(
        b.eval("document.querySelectorAll('#map .site-marker').length"),
        json!(3)
    );
    b.eval("window.scrollTo(0, 0)");
    b.screenshot(&artifact("dashboard-phone.png"));
    // A tap on a day shows its values and its bulletin below; a second tap on the same
    // day goes to the bulletin.
    b.tap("[data-date='2016-07-01']");
    b.wait_for(
        "document.getElementById('day').dataset.date",
        json!("2016-07-01"),
    );
    assert_eq!(
        b.eval("document.getElementById('tip').hidden"),
        json!(false)
    );
    let tip = b.eval("document.getElementById('tip').textContent");
    assert!(
        tip.as_str().unwrap().starts_with("2016-07-01 星期五 Fri"),
        "{tip}"
    );
    let bulletin_top = "Math.round(document.getElementById('day').getBoundingClientRect().top)";
    assert!(
        b.eval(bulletin_top).as_i64().unwrap() > 844,
        "the bulletin is in view already"
    );
    b.tap("[data-date='2016-07-01']");
    b.wait_for(
        &format!("{bulletin_top} <= 0 && {bulletin_top} > -10"),
        json!(true),
    );
}
