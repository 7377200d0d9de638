//! The sink's in-memory tail is an exact cache of the outbox: whenever it answers, it
//! gives the same positions and the same readings, in the same order, as reading the
//! SQLite outbox after the same cursor would — through commits with redelivered
//! readings (inserted partly), batches that never reach the sink (a full channel), a
//! capped tail, and a cursor that moves by pages of any size. A sink that used it
//! would therefore deliver every reading once, and the test checks that too.

use std::collections::BTreeSet;
use std::sync::Arc;

use aq_ingest::model::{Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};
use aq_ingest::sink::tail::{Tail, TailBatch};
use aq_ingest::store::{Outbox, Pos, StoreConfig, Writer};

/// Reading `i` of site `s`.
fn reading(s: usize, i: i64) -> Reading {
    Reading {
        site: SiteId::parse(&format!("site-{s:02}")).unwrap(),
        device: None,
        ts: UnixMillis(1_470_009_600_000 + i * 60_000),
        period: if i % 29 == 3 {
            Period::Hour
        } else {
            Period::Sample
        },
        flag: Flag::Normal,
        pm25: Some(MicrogramsPerCubicMetre::new((i % 300) as f64 / 2.0).unwrap()),
        pm10: Some(MicrogramsPerCubicMetre::new((s as i64 * 7 + i) as f64 % 500.0).unwrap()),
        interval_secs: Some(60),
    }
}

fn run(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        path: dir.path().join("aq.db"),
        ..StoreConfig::default()
    };
    let mut writer = Writer::open(&cfg).unwrap();
    let mut outbox = Outbox::open(&cfg, "influx").unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tail = Tail::new(rng.usize(50..400));
    let mut cursor = outbox.cursor().unwrap();
    let mut delivered: Vec<i64> = Vec::new();
    let (mut answered, mut fell_back, mut dropped, mut unpinned) = (0, 0, 0, 0);
    let mut next_i = 0i64;
    for _ in 0..300 {
        // A commit: new readings, and now and then re-uploads of earlier ones (in the
        // same batch too), so that only some of its readings are inserted.
        let n = rng.usize(1..40);
        let mut batch: Vec<Reading> = (0..n)
            .map(|_| {
                let fresh = next_i == 0 || rng.u8(..10) < 8;
                let i = if fresh {
                    next_i += 1;
                    next_i
                } else {
                    rng.i64(0..next_i)
                };
                reading(rng.usize(0..5), i)
            })
            .collect();
        if rng.u8(..10) == 0 {
            let again = batch[rng.usize(0..batch.len())].clone();
            batch.push(again);
        }
        let batch = Arc::new(batch);
        let committed = writer
            .commit_batch(&batch, &[], UnixMillis(1_470_009_600_000), false)
            .unwrap();
        // A commit that skipped duplicates used up seqs for them: its rows' seqs are
        // not known, and the sink reads it from the outbox.
        let Some(appended) = committed.appended else {
            assert!(committed.outcome.duplicates > 0, "seed {seed}: unpinned");
            unpinned += 1;
            continue;
        };
        assert_eq!(appended.count as u64, committed.outcome.stored);
        // The channel is sometimes full: that batch never reaches the tail.
        if rng.u8(..10) == 0 {
            dropped += 1;
        } else {
            tail.push(TailBatch {
                appended,
                readings: Arc::clone(&batch) as Arc<dyn AsRef<[Reading]> + Send + Sync>,
            });
        }
        // The sink takes a page now and then, of any size.
        if rng.bool() {
            let max = rng.usize(1..120);
            let want = outbox.pending(&cursor, max).unwrap();
            let mut got: Vec<(Pos, Reading)> = Vec::new();
            match tail.after(cursor.of(0), max, |p, r| {
                got.push((p, r.clone()));
                true
            }) {
                Some(k) => {
                    answered += 1;
                    assert_eq!(k, got.len());
                    assert!(
                        k > 0 || want.is_empty(),
                        "the tail answered nothing while the outbox has rows"
                    );
                    assert_eq!(got[..], want[..got.len()], "seed {seed}");
                }
                None => {
                    fell_back += 1;
                    got = want;
                }
            }
            for (p, _) in &got {
                delivered.push(p.seq);
                cursor.advance(*p);
            }
            if !got.is_empty() {
                outbox
                    .advance_durable(&cursor, &[], UnixMillis(1_470_009_600_000))
                    .unwrap();
            }
        }
    }
    // Drain the rest the same way.
    loop {
        let want = outbox.pending(&cursor, 50).unwrap();
        let mut got = Vec::new();
        if tail
            .after(cursor.of(0), 50, |p, r| {
                got.push((p, r.clone()));
                true
            })
            .is_none()
        {
            got = want.clone();
        }
        assert_eq!(got[..], want[..got.len()]);
        if got.is_empty() {
            assert!(want.is_empty());
            break;
        }
        for (p, _) in &got {
            delivered.push(p.seq);
            cursor.advance(*p);
        }
    }
    let distinct: BTreeSet<i64> = delivered.iter().copied().collect();
    assert_eq!(distinct.len(), delivered.len(), "a row twice (seed {seed})");
    let stored = outbox
        .pending(&Default::default(), usize::MAX >> 1)
        .unwrap();
    let all: BTreeSet<i64> = stored.iter().map(|(p, _)| p.seq).collect();
    assert_eq!(distinct, all, "rows skipped (seed {seed})");
    // The scenario exercised both paths.
    assert!(
        answered > 0 && fell_back > 0 && dropped > 0 && unpinned > 0,
        "{answered} {fell_back} {dropped} {unpinned}"
    );
}

#[test]
fn the_tail_answers_exactly_as_the_outbox_would() {
    for seed in 0..12 {
        run(seed);
    }
}
