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

    let mut store = Store::open(&cfg).unwrap();
    let t1 = Instant::now();
    let n = store
        .refresh_daily(aq_ingest::aqi::zone::Zone::BEIJING, 60)
        .unwrap();
    println!(
        "first refresh of the daily cache ({n} site-days, after a bulk load): {:.0} ms",
        t1.elapsed().as_secs_f64() * 1000.0
    );
    let target = fixture::target();
    let aqi = AqiConfig::default();
    let mut times: Vec<Duration> = Vec::new();
    let mut good = 0;
    for _ in 0..11 {
        let t = Instant::now();
        let r = build(
            &store,
            &aqi,
            Spec {
                from: target.from,
                to: target.to,
                as_of: target.to,
                site: None,
                target: Some(target.clone()),
            },
        )
        .unwrap();
        times.push(t.elapsed());
        good = r.progress.unwrap().good;
    }
    times.sort();
    // Where the time goes: reading the day values vs computing the district days.
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
        "  of which reading {} cached site-days: {:.1} ms",
        rows.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "district target report, {SITES} sites × {DAYS} days: median {:.1} ms, worst {:.1} ms ({good} good days)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
}
