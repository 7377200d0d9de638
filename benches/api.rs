//! API latency benchmark (prints its figures): `cargo bench --bench api`.
//!
//! 238 sites × half a year in the store (see `fixture.rs`) plus one site-day of
//! minute-cadence raw readings; while a writer commits new readings continuously (the
//! ingest load, into the target period's last day), it requests a site's raw series for
//! one day, its hourly series for one day, and the district target report, 200 times
//! each, and prints p50, p95 and max (the report computed on every request: the API
//! without its report memo). Then the target report from 1 and from 8 concurrent
//! clients for 5 s each (p50, p99, requests/s, and how many reports were computed),
//! on the service as shipped (the pool of read connections and the report memo with
//! its 1 s staleness bound) and, for comparison in the same run, on the pool without
//! the memo and on one connection without it (the API before either) — clients asking
//! back to back (closed loop), then, on the pool with and without the memo, each client
//! asking every [`PACE`] (open loop).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "fixture.rs"]
mod fixture;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aq_ingest::clock::SystemClock;
use aq_ingest::config::Config;
use aq_ingest::metrics::Metrics;
use aq_ingest::model::{Reading, UnixMillis};
use aq_ingest::store::{Store, Writer};
use common::http;

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(v[v.len() / 2]),
        ms(v[v.len() * 95 / 100]),
        ms(*v.last().unwrap()),
    )
}

/// `clients` threads each requesting `path` for `LOAD_SECS`: back to back when `pace`
/// is None (closed loop: every client always waiting for an answer), else each one
/// request every `pace` (open loop, starts spread over the interval; latency counted
/// from the scheduled time, so a request held up by a late one is not left out). p50
/// and p99 in ms, and requests per second over all of them.
fn load(base: &str, path: &str, clients: usize, pace: Option<Duration>) -> (f64, f64, f64) {
    let url = format!("{base}{path}");
    // Warmed first (one request, not counted): each round measures the steady state,
    // not the first computation after the previous round left the memo to expire.
    assert_eq!(http("GET", &url, "").unwrap().0, 200);
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(LOAD_SECS);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut times = Vec::new();
                let mut next = t0 + pace.map_or(Duration::ZERO, |p| p * i as u32 / clients as u32);
                while next < until {
                    if let Some(p) = pace {
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        let (s, b) = http("GET", &url, "").unwrap();
                        assert_eq!(s, 200, "{b}");
                        times.push(next.elapsed());
                        next += p;
                    } else {
                        let t = Instant::now();
                        let (s, b) = http("GET", &url, "").unwrap();
                        assert_eq!(s, 200, "{b}");
                        times.push(t.elapsed());
                        next = Instant::now();
                    }
                }
                times
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let rate = all.len() as f64 / t0.elapsed().as_secs_f64();
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(all[all.len() / 2]), ms(all[all.len() * 99 / 100]), rate)
}

/// The open-loop rounds' interval between one client's requests: 20 per second per
/// client, far more than an analyst clicking through the dashboard, and well within
/// what the machine serves, so that the latency is the service's and not a queue.
const PACE: Duration = Duration::from_millis(50);

/// How long each concurrent-load round runs.
const LOAD_SECS: u64 = 5;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store_cfg = fixture::build(dir.path());
    // One day of minute readings for the raw series.
    let day = fixture::START_MS + 31 * 86_400_000; // 2016-08-01 Beijing
    let raw: Vec<Reading> = (0..1440)
        .map(|i| fixture::reading("erqi-000", day + i * 60_000, 30.0 + (i % 50) as f64))
        .collect();
    Writer::open(&store_cfg)
        .unwrap()
        .commit_batch_durable(&raw, &[], UnixMillis(0))
        .unwrap();

    let cfg = Config::parse(
        &format!(
            "[store]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"AQ_BENCH_NO_TOKEN\"\n[[target]]\nname = \"2016H2\"\nfrom = \"2016-07-01\"\nto = \"2016-12-31\"\ngood_days = 100\n",
            store_cfg.path.display()
        ),
        "bench",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = aq_ingest::plan::Plan::resolve(cfg, "bench")
        .unwrap()
        .api
        .unwrap();
    // The service as shipped (pool and memo), and beside it the pool without the memo
    // and one connection without it (the API before the pool), so that one run
    // compares them. Each with its own metrics, which count the reports computed.
    let serve = |connections: usize, memo: bool| {
        let mut ctx = ctx.clone();
        if !memo {
            ctx.api.report_max_staleness_ms = 0;
        }
        let metrics = Arc::new(Metrics::default());
        let app = aq_ingest::api::router(
            ctx,
            Arc::new(Default::default()),
            (0..connections)
                .map(|_| Store::open_reader(&store_cfg).unwrap())
                .collect(),
            Arc::clone(&metrics),
            Arc::new(SystemClock),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(aq_ingest::api::serve(listener, app, std::future::pending()));
        (format!("http://{addr}"), metrics)
    };
    let pool = aq_ingest::api::read_connections();
    let shipped = serve(pool, true);
    let no_memo = serve(pool, false);
    let single = serve(1, false);
    let base = no_memo.0.clone();
    let get = |path: &str| {
        // (each request opens its own HTTP/1.0 connection: the figures include that)
        let (s, b) = http("GET", &format!("{base}{path}"), "").unwrap();
        assert_eq!(s, 200, "{path}: {b}");
    };
    // The service refreshes the daily cache on a timer; do it once after the bulk load.
    let t = Instant::now();
    let n = aq_ingest::store::Maintainer::open(&store_cfg)
        .unwrap()
        .refresh_daily(&aq_ingest::aqi::AqiConfig::default())
        .unwrap();
    println!(
        "daily cache refresh after the bulk load ({n} site-days): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );

    // The ingest load: 238 sites' readings committed in batches, as the service does.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, cfg) = (Arc::clone(&stop), Arc::clone(&written), store_cfg.clone());
        std::thread::spawn(move || {
            let mut s = Writer::open(&cfg).unwrap();
            // "Today" is the target period's last day: every commit touches a day the
            // target report covers, so each report recomputes today's 238 site-days
            // from their hours, as it does in service between two cache refreshes.
            // (One second apart, so that the writer stays within the day.)
            let mut t = fixture::START_MS + (fixture::DAYS - 1) * 86_400_000;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Reading> = (0..fixture::SITES)
                    .map(|i| fixture::reading(&fixture::site(i), t, 40.0))
                    .collect();
                s.commit_batch_durable(&batch, &[], UnixMillis(0)).unwrap();
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                t += 1_000;
            }
        })
    };
    let t0 = Instant::now();
    let mut report = Vec::new();
    for (name, path) in [
        (
            "site raw series, one day (1440 readings)",
            "/api/v1/sites/erqi-000/series?resolution=raw&from=2016-08-01&to=2016-08-01",
        ),
        (
            "site hourly series, one day",
            "/api/v1/sites/erqi-001/series?resolution=hour&from=2016-08-01&to=2016-08-01",
        ),
        (
            "floor: the target list (no store access)",
            "/api/v1/targets",
        ),
        (
            "district target report, 184 days (no memo: computed every time)",
            "/api/v1/targets/2016H2?as_of=2016-12-31",
        ),
    ] {
        let times: Vec<Duration> = (0..200)
            .map(|_| {
                let t = Instant::now();
                get(path);
                t.elapsed()
            })
            .collect();
        report.push((name, percentiles(times)));
    }
    let report_path = "/api/v1/targets/2016H2?as_of=2016-12-31";
    let mut concurrent = Vec::new();
    for (label, (base, metrics)) in [
        (
            format!("{pool} connections + report memo (shipped)"),
            &shipped,
        ),
        (format!("{pool} connections, no memo"), &no_memo),
        ("1 connection, no memo".to_string(), &single),
    ] {
        for clients in [1, 8] {
            let before = Metrics::get(&metrics.api_report_computations);
            let figures = load(base, report_path, clients, None);
            let computed = Metrics::get(&metrics.api_report_computations) - before;
            concurrent.push((label.clone(), clients, figures, computed));
        }
    }
    // The same clients at a steady pace (open loop): the latency when the machine is
    // not saturated by the clients themselves.
    let paced = format!("{} ms apart", PACE.as_millis());
    for (label, (base, metrics)) in [
        (
            format!("{pool} connections + report memo (shipped), {paced}"),
            &shipped,
        ),
        (format!("{pool} connections, no memo, {paced}"), &no_memo),
    ] {
        for clients in [1, 8] {
            let before = Metrics::get(&metrics.api_report_computations);
            let figures = load(base, report_path, clients, Some(PACE));
            let computed = Metrics::get(&metrics.api_report_computations) - before;
            concurrent.push((label.clone(), clients, figures, computed));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let rate = written.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    println!(
        "while a writer committed {rate:.0} readings/s ({} sites per commit):",
        fixture::SITES
    );
    for (name, (p50, p95, max)) in report {
        println!("  {name}: p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms");
    }
    println!("the district target report, concurrent clients (each request its own connection):");
    println!("| API | clients | p50 | p99 | req/s | reports computed |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, clients, (p50, p99, rate), computed) in concurrent {
        println!("| {label} | {clients} | {p50:.1} ms | {p99:.1} ms | {rate:.0} | {computed} |");
    }
}
