//! Target-report benchmark (prints its figures): `cargo bench --bench report`.
//!
//! A store holding the hourly aggregates of 238 sites × 184 days at one-minute cadence
//! (what 63 million readings leave behind: 1.05 million site-hours, 60 samples each) is
//! built directly, then the district target report for the half year is computed from
//! it repeatedly; the median and worst times are printed.

#[path = "fixture.rs"]
mod fixture;

use std::time::{Duration, Instant};

use aq_ingest::aqi::AqiConfig;
use aq_ingest::report::{build, Spec};
use aq_ingest::store::Store;
use fixture::{DAYS, SITES};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let cfg = fixture::build(dir.path());
    println!(
        "built {} site-hours in {:.1} s",
        SITES as i64 * DAYS * 24,
        t0.elapsed().as_secs_f64()
    );

    let t1 = Instant::now();
    let n = aq_ingest::store::Maintainer::open(&cfg)
        .unwrap()
        .refresh_daily(&aq_ingest::aqi::AqiConfig::default())
        .unwrap();
    let store = Store::open(&cfg).unwrap();
    println!(
        "first refresh of the daily cache ({n} site-days, after a bulk load): {:.0} ms",
        t1.elapsed().as_secs_f64() * 1000.0
    );
    let target = fixture::target();
    let aqi = AqiConfig::default();
    let spec = Spec {
        from: target.from,
        to: target.to,
        as_of: target.to,
        site: None,
        target: Some(target.clone()),
    };
    let time = |store: &Store| {
        let mut times: Vec<Duration> = Vec::new();
        let mut good = 0;
        for _ in 0..21 {
            let t = Instant::now();
            let r = build(store, &aqi, spec.clone()).unwrap();
            times.push(t.elapsed());
            good = r.progress.unwrap().good;
        }
        times.sort();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        (ms(&times[times.len() / 2]), ms(times.last().unwrap()), good)
    };
    let (median, worst, good) = time(&store);
    println!(
        "district target report, {SITES} sites × {DAYS} days, cache fresh: median {median:.2} ms, worst {worst:.2} ms ({good} good days)"
    );
    // Where the cost would be without the district cache: the site-days themselves.
    let t = Instant::now();
    let rows = store
        .daily_fresh(
            aq_ingest::aqi::zone::Zone::BEIJING,
            60,
            target.from,
            target.to,
            None,
        )
        .unwrap();
    println!(
        "  (reading the {} cached site-days instead would take {:.1} ms)",
        rows.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    // In service, commits touch today between two refreshes: one new reading per site
    // on the period's last day, so the report recomputes that day's 238 site-days.
    let today = fixture::START_MS + (DAYS - 1) * 86_400_000 + 12 * 3_600_000;
    let readings: Vec<_> = (0..SITES)
        .map(|i| fixture::reading(&fixture::site(i), today, 40.0))
        .collect();
    aq_ingest::store::Writer::open(&cfg)
        .unwrap()
        .commit_batch_durable(&readings, &[], aq_ingest::model::UnixMillis(0))
        .unwrap();
    let (median, worst, _) = time(&store);
    println!(
        "district target report with today's {SITES} site-days touched since the refresh: median {median:.2} ms, worst {worst:.2} ms"
    );
}
