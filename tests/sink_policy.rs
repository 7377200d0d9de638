//! The InfluxDB writer's status policy against a scripted HTTP server, for the answers
//! no local server produces on demand: 400 (bisect and dead-letter, in batches mixing
//! derived lines and readings too), 401 (keep the data),
//! 413 (split), 429 with `Retry-After`, 503, and a server that never answers.

use std::io::Read as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aq_ingest::clock::SystemClock;
use aq_ingest::metrics::{Metrics, WriteErrorClass};
use aq_ingest::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};
use aq_ingest::sink::influx::{InfluxConfig, InfluxSink};
use aq_ingest::sink::{line_protocol, schema};
use aq_ingest::store::StoreConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    target: String,
    headers: Vec<(String, String)>,
    lines: Vec<String>,
}

/// A response: status, extra headers, body. `None` never answers.
type Script =
    Arc<dyn Fn(usize, &Seen) -> Option<(u16, Vec<(&'static str, String)>, String)> + Send + Sync>;

/// Serves HTTP/1.1 with keep-alive; records every request.
async fn scripted_server(script: Script) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let script = Arc::clone(&script);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                loop {
                    let mut request_line = String::new();
                    if r.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let target = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).await.unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
                    }
                    let len: usize = headers
                        .iter()
                        .find(|h| h.0 == "content-length")
                        .map_or(0, |h| h.1.parse().unwrap());
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).await.unwrap();
                    if headers
                        .iter()
                        .any(|h| h.0 == "content-encoding" && h.1 == "gzip")
                    {
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_end(&mut out)
                            .unwrap();
                        body = out;
                    }
                    let text = String::from_utf8(body).unwrap();
                    let s = Seen {
                        at: Instant::now(),
                        target,
                        headers,
                        lines: text.lines().map(str::to_owned).collect(),
                    };
                    let n = {
                        let mut l = log.lock().unwrap();
                        l.push(s.clone());
                        l.len() - 1
                    };
                    let Some((status, extra, body)) = script(n, &s) else {
                        // Never answer; hold the connection open until the client gives up.
                        let mut sink = Vec::new();
                        let _ = r.read_to_end(&mut sink).await;
                        return;
                    };
                    let mut resp =
                        format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                    for (k, v) in extra {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    resp.push_str(&body);
                    if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn reading(i: usize) -> Reading {
    Reading {
        site: SiteId::parse("s1").unwrap(),
        device: None,
        ts: UnixMillis(1_470_000_000_000 + i as i64 * 60_000),
        period: Period::Sample,
        flag: Flag::Normal,
        pm25: None,
        pm10: Some(MicrogramsPerCubicMetre::new(10.0 + i as f64 + 0.5).unwrap()),
        interval_secs: None,
    }
}

/// A store holding `n` readings; returns the lines the sink should send for them.
fn filled_store(dir: &std::path::Path, n: usize) -> (StoreConfig, Vec<String>) {
    let cfg = StoreConfig {
        path: dir.join("aq.db"),
        ..StoreConfig::default()
    };
    let mut s = aq_ingest::store::Writer::open(&cfg).unwrap();
    let batch: Vec<Reading> = (0..n).map(reading).collect();
    let lines = batch
        .iter()
        .map(|r| {
            let line = line_protocol::encode(&schema::reading_point(r, "pm")).unwrap();
            line.trim_end().to_string()
        })
        .collect();
    s.commit_batch_durable(&batch, &[], UnixMillis(0)).unwrap();
    (cfg, lines)
}

struct Running {
    metrics: Arc<Metrics>,
    nudge: Option<tokio::sync::mpsc::Sender<aq_ingest::sink::tail::News>>,
    task: tokio::task::JoinHandle<()>,
    store: StoreConfig,
}

async fn run_sink(url: &str, extra: &str, store: StoreConfig) -> Running {
    start_sink(url, extra, store, None).await
}

/// [`run_sink`] with the derived series on: each request carries its readings'
/// site-hours' lines (as the service makes them, with the default rules).
async fn run_sink_with_hours(url: &str, extra: &str, store: StoreConfig) -> Running {
    let d = aq_ingest::derived::Derived::new("pm", &aq_ingest::aqi::AqiConfig::default());
    start_sink(
        url,
        extra,
        store,
        Some(Box::new(move |h: &_| d.hour_line(h))),
    )
    .await
}

async fn start_sink(
    url: &str,
    extra: &str,
    store: StoreConfig,
    hours: Option<aq_ingest::store::HourlyLines>,
) -> Running {
    // (Tests that are about the flush interval set their own.)
    let flush = if extra.contains("flush_interval_secs") {
        ""
    } else {
        "flush_interval_secs = 0.0\n"
    };
    let cfg: InfluxConfig = toml::from_str(&format!(
        "url = \"{url}\"\norg = \"erqi\"\nbucket = \"aq\"\ntoken_env = \"AQ_TEST_SINK_TOKEN\"\n{flush}retry_min_ms = 10\nretry_max_secs = 1\nrequest_timeout_secs = 1\nshutdown_flush_secs = 1\n{extra}"
    ))
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let clock = Arc::new(SystemClock);
    let sink = InfluxSink::new(cfg, &store, hours, Arc::clone(&metrics), clock).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move { sink.run(&mut rx).await.unwrap() });
    Running {
        metrics,
        nudge: Some(tx),
        task,
        store,
    }
}

impl Running {
    async fn until(&self, what: &str, cond: impl Fn(&Metrics) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(&self.metrics) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            let _ = self
                .nudge
                .as_ref()
                .unwrap()
                .try_send(aq_ingest::sink::tail::News { tail: None });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    async fn stop(mut self) -> rusqlite::Connection {
        drop(self.nudge.take());
        self.task.await.unwrap();
        rusqlite::Connection::open(&self.store.path).unwrap()
    }
}

/// Queues derived-series lines (as the writer and housekeeping do), in order.
fn queue_derived(store: &StoreConfig, lines: &[String]) {
    let c = rusqlite::Connection::open(&store.path).unwrap();
    for l in lines {
        c.execute(
            "INSERT INTO derived_outbox (line, created_ms) VALUES (?1, 0)",
            [format!("{l}\n")],
        )
        .unwrap();
    }
}

/// Readings after the sink's cursor.
const OUTBOX_DEPTH: &str = "SELECT count(*) FROM readings WHERE seq > coalesce((SELECT seq FROM sink_cursors WHERE sink = 'influx'), 0)";

fn count(c: &rusqlite::Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A server that accepts every request (204).
async fn accepting_server() -> (String, Arc<Mutex<Vec<Seen>>>) {
    scripted_server(Arc::new(|_, _| Some((204, vec![], String::new())))).await
}

/// The lines of each request the server saw, in order.
fn requests(seen: &Mutex<Vec<Seen>>) -> Vec<Vec<String>> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| s.lines.clone())
        .collect()
}

fn accepted(seen: &Mutex<Vec<Seen>>, ok: impl Fn(&Seen) -> bool) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| ok(s))
        .flat_map(|s| s.lines.clone())
        .collect()
}

#[tokio::test]
async fn a_server_on_this_host_gets_plain_bodies_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 3);
    let (url, seen) = accepting_server().await;
    let sink = run_sink(&url, "", store).await;
    sink.until("3 written", |m| Metrics::get(&m.lines_written) == 3)
        .await;
    sink.stop().await;
    let s = seen.lock().unwrap()[0].clone();
    assert!(
        !s.headers.iter().any(|h| h.0 == "content-encoding"),
        "{:?}",
        s.headers
    );
    assert_eq!(s.lines, lines);
}

#[tokio::test]
async fn v2_requests_carry_org_bucket_db_token_and_gzip() {
    std::env::set_var("AQ_TEST_SINK_TOKEN", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 3);
    let (url, seen) = accepting_server().await;
    // The scripted server is on loopback, where `auto` would not compress.
    let sink = run_sink(&url, "gzip = true\n", store).await;
    sink.until("3 written", |m| Metrics::get(&m.lines_written) == 3)
        .await;
    sink.stop().await;
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(
        s.target,
        "/api/v2/write?org=erqi&bucket=aq&precision=ms&db=aq"
    );
    let h = |k: &str| s.headers.iter().find(|h| h.0 == k).map(|h| h.1.clone());
    assert_eq!(h("authorization").as_deref(), Some("Token s3cret"));
    assert_eq!(h("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(s.lines, lines);
}

#[tokio::test]
async fn refused_line_is_bisected_out_and_dead_lettered_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 16);
    let poison = lines[11].clone();
    let p = poison.clone();
    let (url, seen) = scripted_server(Arc::new(move |_, s: &Seen| {
        if s.lines.contains(&p) {
            Some((
                400,
                vec![],
                "{\"code\":\"invalid\",\"message\":\"unable to parse\"}".into(),
            ))
        } else {
            Some((204, vec![], String::new()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    sink.until("15 written and 1 dead", |m| {
        Metrics::get(&m.lines_written) == 15 && Metrics::get(&m.lines_dead_lettered) == 1
    })
    .await;
    let c = sink.stop().await;
    let ok = accepted(&seen, |s| !s.lines.contains(&poison));
    let mut want = lines.clone();
    want.remove(11);
    assert_eq!(ok, want, "written once each, in commit order");
    let dead: String = c
        .query_row("SELECT line FROM dead_letters", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dead.trim_end(), poison);
    assert_eq!(count(&c, "SELECT status FROM dead_letters"), 400);
    assert_eq!(count(&c, OUTBOX_DEPTH), 0);
    // Bisection: 1 + 2·log2(16) requests at most.
    assert!(
        seen.lock().unwrap().len() <= 9,
        "{} requests",
        seen.lock().unwrap().len()
    );
}

/// A site-hour touched by several commits has a line queued after each; InfluxDB keeps
/// the last write of a point, so only the newest is sent, and all of them are done.
#[tokio::test]
async fn of_several_derived_lines_for_one_point_only_the_newest_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = filled_store(dir.path(), 5);
    let hour = 1_470_002_400_000i64;
    let queued = [
        format!("pm_hourly,site=s1 pm10=1.5,pm10_samples=1i {hour}"),
        format!("pm_hourly,site=s2 pm10=7.5,pm10_samples=1i {hour}"),
        format!("pm_hourly,site=s1 pm10=2.5,pm10_samples=2i {hour}"),
        format!("pm_hourly,site=s1 pm10=3.5,pm10_samples=3i {hour}"),
    ];
    queue_derived(&store, &queued);
    let (url, seen) = accepting_server().await;
    let sink = run_sink(&url, "", store).await;
    sink.until("all written", |m| Metrics::get(&m.lines_written) == 7)
        .await;
    let m = Arc::clone(&sink.metrics);
    let c = sink.stop().await;
    let sent: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .flat_map(|s| s.lines.clone())
        .collect();
    let mut want = vec![queued[1].clone(), queued[3].clone()];
    want.extend(readings);
    assert_eq!(sent, want, "s1's newest line only, then the readings");
    assert_eq!(
        Metrics::get(&m.lines_superseded),
        2,
        "s1's two older lines, counted"
    );
    assert_eq!(count(&c, "SELECT count(*) FROM derived_outbox"), 0);
    assert_eq!(count(&c, OUTBOX_DEPTH), 0);
}

/// When the newest line of a point is refused (a field-type conflict, say), it alone
/// is dead-lettered: the older lines it stood for were never sent, so the next request
/// sends the newest of them.
#[tokio::test]
async fn a_refused_newest_line_leaves_the_older_lines_of_its_point_to_be_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = filled_store(dir.path(), 2);
    let hour = 1_470_002_400_000i64;
    let queued = [
        format!("pm_hourly,site=s1 pm10=1.5 {hour}"),
        format!("pm_hourly,site=s1 pm10=2.5 {hour}"),
        format!("pm_hourly,site=s1 pm10=\"bad\" {hour}"),
    ];
    queue_derived(&store, &queued);
    let poison = queued[2].clone();
    let (url, seen) = scripted_server(Arc::new(move |_, s: &Seen| {
        if s.lines.contains(&poison) {
            Some((400, vec![], "{\"code\":\"invalid\"}".into()))
        } else {
            Some((204, vec![], String::new()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    sink.until("the readings and the surviving line written", |m| {
        Metrics::get(&m.lines_written) == 3
    })
    .await;
    let c = sink.stop().await;
    let accepted: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| !s.lines.contains(&queued[2]))
        .flat_map(|s| s.lines.clone())
        .filter(|l| l.starts_with("pm_hourly"))
        .collect();
    assert_eq!(
        accepted,
        vec![queued[1].clone()],
        "the newest surviving line"
    );
    let dead: Vec<String> = c
        .prepare("SELECT line FROM dead_letters")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|l| l.unwrap().trim_end().to_string())
        .collect();
    assert_eq!(dead, vec![queued[2].clone()]);
    assert_eq!(count(&c, "SELECT count(*) FROM derived_outbox"), 0);
}

#[tokio::test]
async fn derived_lines_and_readings_share_requests_and_each_poison_line_is_dead_lettered_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = filled_store(dir.path(), 12);
    let derived: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "pm_hourly,site=s1 pm10={i}.5 {}",
                1_470_000_000_000i64 + i * 3_600_000
            )
        })
        .collect();
    queue_derived(&store, &derived);
    let poison = [derived[2].clone(), readings[5].clone()];
    let p = poison.clone();
    let (url, seen) = scripted_server(Arc::new(move |_, s: &Seen| {
        if s.lines.iter().any(|l| p.contains(l)) {
            Some((400, vec![], "{\"code\":\"invalid\"}".into()))
        } else {
            Some((204, vec![], String::new()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    sink.until("14 written and 2 dead", |m| {
        Metrics::get(&m.lines_written) == 14 && Metrics::get(&m.lines_dead_lettered) == 2
    })
    .await;
    let c = sink.stop().await;
    // One request carried both outboxes: the derived lines first, then the readings.
    let first = seen.lock().unwrap()[0].lines.clone();
    assert_eq!(first, [derived.clone(), readings.clone()].concat());
    let ok = accepted(&seen, |s| !s.lines.iter().any(|l| poison.contains(l)));
    let want: Vec<String> = [derived, readings]
        .concat()
        .into_iter()
        .filter(|l| !poison.contains(l))
        .collect();
    assert_eq!(ok, want, "written once each, in order");
    let mut stmt = c
        .prepare("SELECT line FROM dead_letters ORDER BY line")
        .unwrap();
    let dead: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|l| l.unwrap().trim_end().to_owned())
        .collect();
    let mut want_dead = poison.to_vec();
    want_dead.sort();
    assert_eq!(dead, want_dead);
    assert_eq!(count(&c, OUTBOX_DEPTH), 0);
    assert_eq!(count(&c, "SELECT count(*) FROM derived_outbox"), 0);
}

#[tokio::test]
async fn a_bursts_tail_goes_at_once_and_a_trickle_waits_for_the_flush_interval() {
    /// `n` stored readings through a sink with `extra` settings and a server that takes
    /// everything: the lines it should send, the requests seen, and when it started.
    async fn drain(n: usize, extra: &str) -> (Vec<String>, Vec<Seen>, Instant) {
        let dir = tempfile::tempdir().unwrap();
        let (store, lines) = filled_store(dir.path(), n);
        let (url, seen) = accepting_server().await;
        let start = Instant::now();
        let sink = run_sink(&url, extra, store).await;
        sink.until("all written", |m| {
            Metrics::get(&m.lines_written) == n as u64
        })
        .await;
        sink.stop().await;
        let seen = seen.lock().unwrap().clone();
        (lines, seen, start)
    }
    let sent = |seen: &[Seen]| {
        seen.iter()
            .flat_map(|s| s.lines.clone())
            .collect::<Vec<_>>()
    };

    // A burst: 1 000 readings (a fifth of a batch) with a 10-minute flush interval are
    // all written as soon as the outbox stops growing.
    let (lines, seen, _) = drain(1000, "flush_interval_secs = 600.0").await;
    assert_eq!(sent(&seen), lines);

    // After a full batch, even a small remainder is a burst's tail: 203 readings in
    // batches of 100 → 100, 100, then the 3 at once.
    let (lines, seen, _) = drain(203, "flush_interval_secs = 600.0\nbatch_max_lines = 100").await;
    assert_eq!(sent(&seen), lines);
    let sizes: Vec<usize> = seen.iter().map(|s| s.lines.len()).collect();
    assert_eq!(sizes, vec![100, 100, 3]);

    // A burst that goes on: readings committed soon after a request of 1 000 are its
    // tail too, and go once the outbox stops growing, not after the 10-minute flush
    // interval (the end of a live stream: its last commits follow a large request).
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = filled_store(dir.path(), 1000);
        let (url, seen) = accepting_server().await;
        let sink = run_sink(&url, "flush_interval_secs = 600.0", store.clone()).await;
        sink.until("the burst written", |m| {
            Metrics::get(&m.lines_written) == 1000
        })
        .await;
        let more: Vec<Reading> = (1000..1003).map(reading).collect();
        aq_ingest::store::Writer::open(&store)
            .unwrap()
            .commit_batch_durable(&more, &[], UnixMillis(0))
            .unwrap();
        sink.until("the burst's last readings written", |m| {
            Metrics::get(&m.lines_written) == 1003
        })
        .await;
        sink.stop().await;
        let sizes: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.lines.len()).collect();
        assert_eq!(sizes, vec![1000, 3]);
    }

    // A trickle: 3 readings wait for the flush interval to gather more.
    let (lines, seen, start) = drain(3, "flush_interval_secs = 1.5").await;
    assert!(
        seen[0].at - start >= Duration::from_millis(1400),
        "sent after {:?}, before the flush interval",
        seen[0].at - start
    );
    assert_eq!(seen[0].lines, lines, "in one request");
}

#[tokio::test]
async fn unauthorized_keeps_the_data_and_reports_failing_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 10);
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::clone(&fixed);
    let (url, seen) = scripted_server(Arc::new(move |_, _| {
        if f.load(Ordering::SeqCst) {
            Some((204, vec![], String::new()))
        } else {
            Some((401, vec![], "{\"code\":\"unauthorized\"}".into()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    let m = Arc::clone(&sink.metrics);
    sink.until("three 401s", |m| m.write_errors(WriteErrorClass::Auth) >= 3)
        .await;
    assert!(sink.metrics.sink_failing.load(Ordering::Relaxed));
    assert_eq!(Metrics::get(&sink.metrics.lines_written), 0);
    let c = rusqlite::Connection::open(&sink.store.path).unwrap();
    assert_eq!(count(&c, OUTBOX_DEPTH), 10, "nothing dropped while refused");
    fixed.store(true, Ordering::SeqCst);
    sink.until("all written", |m| Metrics::get(&m.lines_written) == 10)
        .await;
    assert!(!sink.metrics.sink_failing.load(Ordering::Relaxed));
    let c = sink.stop().await;
    assert_eq!(count(&c, "SELECT count(*) FROM dead_letters"), 0);
    let s = seen.lock().unwrap();
    // Every attempt carried the whole batch (nothing dropped); the last one succeeded.
    assert!(s.iter().all(|r| r.lines == lines));
    assert_eq!(s.len() as u64, m.write_errors(WriteErrorClass::Auth) + 1);
}

#[tokio::test]
async fn too_large_splits_until_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 10);
    let (url, seen) = scripted_server(Arc::new(|_, s: &Seen| {
        if s.lines.len() > 3 {
            Some((413, vec![], "{\"code\":\"request too large\"}".into()))
        } else {
            Some((204, vec![], String::new()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    sink.until("all written", |m| Metrics::get(&m.lines_written) == 10)
        .await;
    assert!(sink.metrics.write_errors(WriteErrorClass::TooLarge) >= 1);
    let c = sink.stop().await;
    assert_eq!(accepted(&seen, |s| s.lines.len() <= 3), lines);
    assert_eq!(count(&c, "SELECT count(*) FROM dead_letters"), 0);
}

#[tokio::test]
async fn too_many_requests_is_retried_no_sooner_than_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 5);
    let (url, seen) = scripted_server(Arc::new(|n, _| {
        if n == 0 {
            Some((
                429,
                vec![("Retry-After", "1".to_string())],
                "slow down".into(),
            ))
        } else {
            Some((204, vec![], String::new()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    sink.until("all written", |m| Metrics::get(&m.lines_written) == 5)
        .await;
    assert_eq!(sink.metrics.write_errors(WriteErrorClass::Throttled), 1);
    sink.stop().await;
    let s = seen.lock().unwrap();
    // The backoff alone would retry after ~10 ms; the server asked for a second.
    assert!(s[1].at.duration_since(s[0].at) >= Duration::from_millis(990));
    assert_eq!(s[1].lines, lines);
}

#[tokio::test]
async fn unavailable_is_retried_with_backoff_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 5);
    let (url, seen) = scripted_server(Arc::new(|n, _| {
        if n < 3 {
            Some((503, vec![], "unavailable".into()))
        } else {
            Some((204, vec![], String::new()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    sink.until("all written", |m| Metrics::get(&m.lines_written) == 5)
        .await;
    assert_eq!(sink.metrics.write_errors(WriteErrorClass::Throttled), 3);
    sink.stop().await;
    let s = seen.lock().unwrap();
    assert_eq!(s.len(), 4);
    assert!(s.iter().all(|r| r.lines == lines));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lines) = filled_store(dir.path(), 4);
    let (url, seen) = scripted_server(Arc::new(|n, _| {
        if n == 0 {
            None
        } else {
            Some((204, vec![], String::new()))
        }
    }))
    .await;
    let sink = run_sink(&url, "", store).await;
    sink.until("all written", |m| Metrics::get(&m.lines_written) == 4)
        .await;
    assert_eq!(sink.metrics.write_errors(WriteErrorClass::Timeout), 1);
    sink.stop().await;
    assert_eq!(seen.lock().unwrap().last().unwrap().lines, lines);
}

/// Hourly lines beside the readings: made from the stored aggregates when the request
/// goes, one per site-hour the request's readings add to.
mod hourly_lines {
    use super::*;
    use aq_ingest::store::{Store, Writer};

    /// Site `site`'s reading at `minute` after 2016-08-01T00:00Z with `flag` and `period`.
    fn at(site: &str, minute: i64, flag: Flag, period: Period) -> Reading {
        Reading {
            site: SiteId::parse(site).unwrap(),
            ts: UnixMillis(1_470_009_600_000 + minute * 60_000),
            flag,
            period,
            ..reading(0)
        }
    }

    /// The line the service makes of a stored site-hour.
    fn stored_line(store: &StoreConfig, site: &str, minute: i64) -> String {
        let d = aq_ingest::derived::Derived::new("pm", &aq_ingest::aqi::AqiConfig::default());
        let hour = UnixMillis((1_470_009_600_000 + minute * 60_000) / 3_600_000 * 3_600_000);
        let s = Store::open(store).unwrap();
        let h = s.hours(hour, UnixMillis(hour.0 + 1), Some(site)).unwrap();
        d.hour_line(&h[0]).unwrap().trim_end().to_owned()
    }

    fn store(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            path: dir.join("aq.db"),
            ..StoreConfig::default()
        }
    }

    /// A store holding `n` normal samples of s1's first hour; the readings and the
    /// hour's line.
    fn one_hour_stored(store: &StoreConfig, n: i64) -> (Vec<Reading>, String) {
        let readings: Vec<Reading> = (0..n)
            .map(|m| at("s1", m, Flag::Normal, Period::Sample))
            .collect();
        Writer::open(store)
            .unwrap()
            .commit_batch_durable(&readings, &[], UnixMillis(0))
            .unwrap();
        (readings, stored_line(store, "s1", 0))
    }

    /// A server that refuses every request carrying an hourly line (400).
    async fn refusing_hourly_lines() -> (String, Arc<Mutex<Vec<Seen>>>) {
        scripted_server(Arc::new(|_, s: &Seen| {
            if s.lines.iter().any(|l| l.starts_with("pm_hourly")) {
                Some((400, vec![], "{\"code\":\"invalid\"}".into()))
            } else {
                Some((204, vec![], String::new()))
            }
        }))
        .await
    }

    /// The dead letters' lines, in the order they were recorded.
    fn dead_lines(c: &rusqlite::Connection) -> Vec<String> {
        c.prepare("SELECT line FROM dead_letters ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|l| l.unwrap().trim_end().to_owned())
            .collect()
    }

    fn lines_of(rs: &[Reading]) -> Vec<String> {
        rs.iter()
            .map(|r| {
                let l = line_protocol::encode(&schema::reading_point(r, "pm")).unwrap();
                l.trim_end().to_owned()
            })
            .collect()
    }

    /// Two commits before the sink looks: s1's hour gets samples in both, so its line
    /// counts all five; a maintenance-flag reading and a device's daily value add to no
    /// hour, so they bring no line.
    #[tokio::test]
    async fn a_request_carries_the_stored_line_of_each_site_hour_its_readings_add_to() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let n = (Flag::Normal, Period::Sample);
        let first = vec![
            at("s1", 0, n.0, n.1),
            at("s1", 1, n.0, n.1),
            at("s2", 1, n.0, n.1),
            at("s1", 2, n.0, n.1),
            at("s3", 2, Flag::Maintenance, n.1),
            at("s4", 0, n.0, Period::Day),
        ];
        let second = vec![
            at("s1", 3, n.0, n.1),
            at("s1", 61, n.0, n.1),
            at("s1", 4, n.0, n.1),
        ];
        let mut w = Writer::open(&store).unwrap();
        w.commit_batch_durable(&first, &[], UnixMillis(0)).unwrap();
        w.commit_batch_durable(&second, &[], UnixMillis(0)).unwrap();
        drop(w);
        let mut want = vec![
            stored_line(&store, "s1", 0),
            stored_line(&store, "s2", 0),
            stored_line(&store, "s1", 61),
        ];
        assert!(want[0].contains("pm10_samples=5i"), "{}", want[0]);
        want.extend(lines_of(&first));
        want.extend(lines_of(&second));
        let (url, seen) = accepting_server().await;
        let sink = run_sink_with_hours(&url, "", store).await;
        sink.until("all written", |m| Metrics::get(&m.lines_written) == 12)
            .await;
        let c = sink.stop().await;
        let sent = requests(&seen);
        assert_eq!(
            sent,
            vec![want],
            "one request: the hours' lines, then the readings"
        );
        assert_eq!(count(&c, OUTBOX_DEPTH), 0);
    }

    /// Under a small line cap every request carries the line of the hour its readings
    /// add to (its value as stored when it goes), and no request is over the cap.
    #[tokio::test]
    async fn the_line_cap_counts_the_hourly_lines_and_each_request_carries_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (readings, hour) = one_hour_stored(&store, 7);
        let (url, seen) = accepting_server().await;
        let sink = run_sink_with_hours(&url, "batch_max_lines = 4\n", store).await;
        sink.until("all readings written", |m| {
            Metrics::get(&m.lines_written) == 10
        })
        .await;
        sink.stop().await;
        let sent = requests(&seen);
        let want = lines_of(&readings);
        assert_eq!(
            sent,
            vec![
                vec![
                    hour.clone(),
                    want[0].clone(),
                    want[1].clone(),
                    want[2].clone()
                ],
                vec![
                    hour.clone(),
                    want[3].clone(),
                    want[4].clone(),
                    want[5].clone()
                ],
                vec![hour, want[6].clone()],
            ]
        );
    }

    /// A queued hourly line — requeued after a refusal, queued by `resend` or by an
    /// older version — goes as its hour is stored when the request goes: sent with the
    /// value it was queued with, after a newer one, it would overwrite that one.
    #[tokio::test]
    async fn a_queued_hourly_line_goes_as_the_hour_is_stored_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (readings, now) = one_hour_stored(&store, 7);
        let hour = 1_470_009_600_000i64;
        let stale = format!("pm_hourly,site=s1 pm10=1.5,pm10_valid=false,pm10_samples=3i {hour}");
        let other = format!("pm_daily,scope=district,tables=x good=true {hour}");
        queue_derived(&store, &[stale.clone(), other.clone()]);
        let (url, seen) = accepting_server().await;
        let sink = run_sink_with_hours(&url, "", store).await;
        sink.until("all written", |m| Metrics::get(&m.lines_written) == 9)
            .await;
        let c = sink.stop().await;
        let sent = accepted(&seen, |_| true);
        let mut want = vec![now, other];
        want.extend(lines_of(&readings));
        assert_eq!(
            sent, want,
            "the queued hour as stored (once: it covers the readings' hour), the daily line"
        );
        assert_eq!(count(&c, "SELECT count(*) FROM derived_outbox"), 0);
    }

    /// Queued hourly lines are made afresh when sent, and may grow: the byte cap counts
    /// them as a staged hour is counted, so no request outgrows it.
    #[tokio::test]
    async fn refreshed_hourly_lines_stay_within_the_byte_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let sites: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
        let samples: Vec<Reading> = sites
            .iter()
            .map(|s| at(s, 0, Flag::Normal, Period::Sample))
            .collect();
        let mut w = Writer::open(&store).unwrap();
        w.commit_batch_durable(&samples, &[], UnixMillis(0))
            .unwrap();
        // Those already delivered; what waits is readings that add to no hour (so
        // only the queued lines bring hours) and the queued lines.
        let c = rusqlite::Connection::open(&store.path).unwrap();
        c.execute(
            "INSERT INTO sink_cursors (sink, seq) VALUES ('influx', 12)",
            [],
        )
        .unwrap();
        let flagged: Vec<Reading> = (1..30)
            .map(|m| at("s0", m, Flag::Maintenance, Period::Sample))
            .collect();
        w.commit_batch_durable(&flagged, &[], UnixMillis(0))
            .unwrap();
        drop(w);
        let hour = 1_470_009_600_000i64;
        let short: Vec<String> = sites
            .iter()
            .map(|s| format!("pm_hourly,site={s} pm10=1 {hour}"))
            .collect();
        assert!(stored_line(&store, "s0", 0).len() > short[0].len() + 20);
        queue_derived(&store, &short);
        let (url, seen) = accepting_server().await;
        let extra = "batch_max_bytes = 1024\nbatch_max_lines = 100\n";
        let sink = run_sink_with_hours(&url, extra, store).await;
        sink.until("the hours and the readings written", |m| {
            Metrics::get(&m.lines_written) == 12 + 29
        })
        .await;
        let c = sink.stop().await;
        for s in seen.lock().unwrap().iter() {
            let body: usize = s.lines.iter().map(|l| l.len() + 1).sum();
            assert!(body <= 1024, "a request of {body} bytes");
        }
        assert_eq!(count(&c, "SELECT count(*) FROM derived_outbox"), 0);
        assert_eq!(count(&c, OUTBOX_DEPTH), 0);
    }

    /// A refused refreshed line stands for its older queued lines of the same hour
    /// (they would be made into the same line): one dead letter, none left queued.
    #[tokio::test]
    async fn a_refused_refreshed_hourly_line_is_one_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (_, now) = one_hour_stored(&store, 2);
        let hour = 1_470_009_600_000i64;
        queue_derived(
            &store,
            &[
                format!("pm_hourly,site=s1 pm10=1 {hour}"),
                format!("pm_hourly,site=s1 pm10=2 {hour}"),
            ],
        );
        let (url, _) = refusing_hourly_lines().await;
        let sink = run_sink_with_hours(&url, "", store).await;
        sink.until("the readings written", |m| {
            Metrics::get(&m.lines_written) == 2
        })
        .await;
        let c = sink.stop().await;
        assert_eq!(dead_lines(&c), vec![now]);
        assert_eq!(count(&c, "SELECT count(*) FROM derived_outbox"), 0);
    }

    /// A refused hourly line is dead-lettered alone; its readings are written.
    #[tokio::test]
    async fn a_refused_hourly_line_is_dead_lettered_and_its_readings_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (_, hour) = one_hour_stored(&store, 3);
        let (url, seen) = refusing_hourly_lines().await;
        let sink = run_sink_with_hours(&url, "", store).await;
        sink.until("the readings written", |m| {
            Metrics::get(&m.lines_written) == 3
        })
        .await;
        let m = Arc::clone(&sink.metrics);
        let c = sink.stop().await;
        assert_eq!(Metrics::get(&m.lines_dead_lettered), 1);
        assert_eq!(dead_lines(&c), vec![hour]);
        assert_eq!(
            accepted(&seen, |_| true).len(),
            4 + 2 + 1 + 1 + 2,
            "bisected"
        );
        assert_eq!(count(&c, OUTBOX_DEPTH), 0);
    }
}
