//! Instructions per reading on the default data path, in one process and without a
//! network, so that `valgrind --tool=callgrind` can count them (this machine's `perf`
//! has no hardware counters): `scripts/cpu [N]`.
//!
//! It drives the real ingest stage (`Ingest::run`: decode, validate, the SQLite commit
//! with power-loss durability, the hourly aggregates and derived lines, the tokens
//! handed back after the commit) with N single-reading JSON messages over 238 sites,
//! 1 000 queued at a time (a commit of 1 000 messages, as a busy live stream gets;
//! `AQ_CPU_BATCH=K` for K),
//! and after every `SINK_EVERY` batches does what the InfluxDB sink does with the
//! outbox: the queued derived lines (the newest of each point), the readings after its
//! cursor encoded as line protocol, the hourly line of each site-hour they add to (read
//! from the aggregates), gzipped with `--gzip`, and the cursor moved in one commit —
//! everything but the HTTP request. With `--array`, each message carries an array of
//! 100 readings.
//!
//! The script runs it twice (N and 3N) and divides the difference in instructions by
//! 2N, so start-up (migrations, the runtime) does not count. `AQ_CPU_HISTORY_DAYS=D`
//! starts from a long-running store instead of an empty one (see [`history`]); run
//! natively, the bench also prints the measured part's user and system CPU, the
//! kernel's share that instruction counts miss.

#[path = "fixture.rs"]
mod fixture;

use std::io::Write;
use std::sync::Arc;

use aq_ingest::clock::SystemClock;
use aq_ingest::config::Config;
use aq_ingest::ingest::Ingest;
use aq_ingest::metrics::Metrics;
use aq_ingest::model::Reading;
use aq_ingest::model::UnixMillis;
use aq_ingest::plan::Plan;
use aq_ingest::sink::schema;
use aq_ingest::sink::tail::{News, Tail, NEWS_SLOTS};
use aq_ingest::source::{AckToken, Acker, Message, Origin};
use aq_ingest::store::{Outbox, Writer};

const SITES: usize = 238;
/// Readings per commit (`AQ_CPU_BATCH` changes it: the per-commit part of the cost is
/// what two sizes' counts differ by).
fn batch_readings() -> usize {
    std::env::var("AQ_CPU_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1)
}
/// The sink reads the outbox after this many commits (~5 000 lines, its default batch).
const SINK_EVERY: usize = 5;
/// Readings per message with `--array`.
const ARRAY: usize = 100;

/// 2016-08-01T00:00:00Z: inside the store's accepted range, and not in the future.
const BASE_MS: i64 = 1_470_009_600_000;

fn payload(k: usize, per_message: usize) -> Vec<u8> {
    // Message k is site k % SITES's (k / SITES)-th upload; its readings are a minute
    // apart, after those of the site's earlier uploads.
    let one = |i: usize| {
        let minute = (k / SITES * per_message + i) as i64;
        let ts = BASE_MS + minute * 60_000;
        let pm25 = 20.0 + ((k + i) % 97) as f64 * 0.5;
        format!(
            r#"{{"ts":{ts},"pm25":{pm25},"pm10":{},"interval_secs":60}}"#,
            pm25 * 1.8
        )
    };
    if per_message == 1 {
        return one(0).into_bytes();
    }
    let items: Vec<String> = (0..per_message).map(one).collect();
    format!("[{}]", items.join(",")).into_bytes()
}

/// What the sink holds between drains: the commits' news, and how many readings came
/// from the in-memory tail and how many from the outbox.
struct Sink {
    hour_line: aq_ingest::derived::Derived,
    news: tokio::sync::mpsc::Receiver<News>,
    tail: Tail,
    from_tail: usize,
    from_outbox: usize,
}

/// Does what the sink does: takes the news, reads the derived lines, then the readings
/// after the cursor from the in-memory tail (or, when it does not start there, the
/// outbox), encodes them, gzips with `--gzip`, moves the cursor.
fn drain(outbox: &mut Outbox, sink: &mut Sink) -> usize {
    while let Ok(n) = sink.news.try_recv() {
        sink.tail.take(n);
    }
    let cursor = outbox.cursor().unwrap();
    // As the sink does: of several lines for one point, only the newest is sent; the
    // seqs of all are done.
    let derived = aq_ingest::sink::influx::newest_per_point(outbox.derived_head(5000).unwrap());
    let mut body = String::new();
    let mut seqs = Vec::with_capacity(derived.len());
    for (seq, line, also) in &derived {
        body.push_str(line);
        seqs.push(*seq);
        seqs.extend_from_slice(also);
    }
    let mut through = cursor.clone();
    // The site-hours the readings add to, in the order they first appear, found as the
    // sink finds them: per site (looked up by `&str`, no allocation per reading), its
    // hours.
    let mut hours: Vec<(String, i64)> = Vec::new();
    let mut seen: std::collections::HashMap<String, Vec<i64>> = Default::default();
    let mut readings = String::new();
    let mut stage = |pos, r: &Reading| {
        // As the sink does: a line per reading, then one body.
        let mut line = String::with_capacity(128);
        schema::encode_reading(r, "pm", &mut line).unwrap();
        readings.push_str(&line);
        through.advance(pos);
        if let Some(h) = aq_ingest::store::hour_changed_by(r) {
            let site = r.site.as_str();
            let known = match seen.get_mut(site) {
                Some(hs) if hs.contains(&h.0) => true,
                Some(hs) => {
                    hs.push(h.0);
                    false
                }
                None => {
                    seen.insert(site.to_owned(), vec![h.0]);
                    false
                }
            };
            if !known {
                hours.push((site.to_owned(), h.0));
            }
        }
        true
    };
    let n = match sink.tail.after(cursor.of(0), 5000, &mut stage) {
        Some(n) => {
            sink.from_tail += n;
            n
        }
        None => {
            let pending = outbox.pending(&cursor, 5000).unwrap();
            for (pos, r) in &pending {
                stage(*pos, r);
            }
            sink.from_outbox += pending.len();
            pending.len()
        }
    };
    for h in outbox.site_hours(&hours).unwrap() {
        body.push_str(&sink.hour_line.hour_line(&h).unwrap());
    }
    body.push_str(&readings);
    // `gzip = "auto"` compresses only for a server on another host; `--gzip` counts it.
    let gz = if std::env::args().any(|a| a == "--gzip") {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes()).unwrap();
        gz.finish().unwrap()
    } else {
        body.into_bytes()
    };
    outbox
        .done_durable(Some(&through), &seqs, &[], UnixMillis(BASE_MS))
        .unwrap();
    std::hint::black_box(gz.len());
    n
}

/// The part that is counted (`--zero-before=cpu::measured`): the messages are made
/// before. Queues each batch whole (`try_send`: no cooperative yield midway), waits for
/// its tokens, and drains the outbox every `SINK_EVERY` batches.
#[inline(never)]
fn measured(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    ingest: Ingest,
    batches: Vec<Vec<Message>>,
    outbox: &mut Outbox,
) -> usize {
    let (tx, rx) = tokio::sync::mpsc::channel(batch_readings());
    let (acker, mut acks) = Acker::channel();
    let (news_tx, news) = tokio::sync::mpsc::channel(NEWS_SLOTS);
    let mut sink = Sink {
        hour_line: plan.derived.clone().expect("derived series on by default"),
        news,
        tail: Tail::new(4 * 5000),
        from_tail: 0,
        from_outbox: 0,
    };
    let stage = rt.spawn(ingest.run(rx, vec![acker], Some(news_tx)));
    let mut drained = 0;
    for (b, batch) in batches.into_iter().enumerate() {
        let take = batch.len();
        for m in batch {
            tx.try_send(m).expect("room for a whole batch");
        }
        rt.block_on(async {
            let mut acked = 0;
            while acked < take {
                acked += acks.recv().await.unwrap().len();
            }
        });
        if (b + 1) % SINK_EVERY == 0 {
            drained += drain(outbox, &mut sink);
        }
    }
    loop {
        let d = drain(outbox, &mut sink);
        if d == 0 {
            break;
        }
        drained += d;
    }
    drop(tx);
    rt.block_on(stage).unwrap().unwrap();
    eprintln!(
        "sink read {} readings from the in-memory tail, {} from the outbox",
        sink.from_tail, sink.from_outbox
    );
    drained
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let n: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let per_message = if std::env::args().any(|a| a == "--array") {
        ARRAY
    } else {
        1
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = \"{}\"\n[influx]\nurl = \"http://127.0.0.1:9\"\nbucket = \"aq\"\n[log]\nstats_interval_secs = 0\n",
        dir.path().join("aq.db").display()
    );
    let plan = Plan::resolve(Config::parse(&text, "bench").unwrap(), "bench").unwrap();
    let writer = Writer::open(&plan.store).unwrap();
    history(&plan.store.path);
    let mut outbox = Outbox::open(&plan.store, "influx").unwrap();
    // One thread for the async tasks: a batch is queued whole before the ingest runs, so
    // every commit has the same size and the count is repeatable.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let ingest = plan.ingest_stage(writer, Arc::new(SystemClock), Arc::clone(&metrics), None);
    let messages = n / per_message;
    // The same readings per commit whatever the payload shape.
    let batch = (batch_readings() / per_message).min(messages).max(1);
    let received = UnixMillis(BASE_MS + 400 * 86_400_000);
    let mut all: Vec<Message> = (0..messages)
        .map(|k| Message {
            origin: Origin::Topic(format!("aq/site-{:03}/readings", k % SITES)),
            payload: payload(k, per_message).into(),
            received,
            ack: AckToken {
                source: 0,
                id: k as u64,
            },
        })
        .collect();
    let mut batches = Vec::new();
    while !all.is_empty() {
        let rest = all.split_off(batch.min(all.len()));
        batches.push(std::mem::replace(&mut all, rest));
    }
    let before = cpu_ticks();
    let drained = measured(&plan, &rt, ingest, batches, &mut outbox);
    let (user, system) = {
        let after = cpu_ticks();
        (after.0 - before.0, after.1 - before.1)
    };
    eprintln!(
        "measured part, this process: user {:.2} s, system {:.2} s (ticks of 10 ms; meaningless under valgrind)",
        user as f64 / 100.0,
        system as f64 / 100.0
    );
    let stored = Metrics::get(&metrics.readings_stored);
    assert_eq!(stored as usize, n, "every reading stored once");
    println!(
        "{n} readings in {messages} messages, {} commits, {drained} forwarded",
        Metrics::get(&metrics.store_commits)
    );
}

/// With `AQ_CPU_HISTORY_DAYS=D`, the store starts as a long-running one does: each site
/// with D days of hourly aggregates and its last four hours of minute readings (enough
/// for a page of its own in the readings' identity index), all before the
/// measured stream and already delivered. A store that starts empty puts several
/// sites on one index page; a long-running one gives every site its own current page
/// in each index keyed by site, and a commit rewrites each of them.
fn history(path: &std::path::Path) {
    let days: i64 = match std::env::var("AQ_CPU_HISTORY_DAYS") {
        Ok(v) => v.parse().unwrap(),
        Err(_) => return,
    };
    let c = rusqlite::Connection::open(path).unwrap();
    fixture::history(&c, "site-%03d", SITES, BASE_MS, days);
}

/// This process's user and system CPU so far, in ticks of 10 ms (`/proc/self/stat`).
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<u64> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0], f[1])
}
