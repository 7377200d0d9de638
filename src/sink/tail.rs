//! The committed tail: the readings the latest commits added to the outbox, handed from
//! the ingest to the sink in memory, so that in a steady stream the sink does not read
//! back from the store what was committed a moment ago (that read was ~5 000
//! instructions per reading, an eighth of the whole path).
//!
//! The outbox stays the truth. The tail is a cache of its newest rows that the sink
//! uses only when it is *exactly* what the outbox would return: its first batch starts
//! right after the sink's cursor and its batches follow one another without a gap.
//! Anything else — a batch dropped because the channel or the tail was full, a commit
//! whose seqs could not be pinned down, a restart with a backlog, PostgreSQL (whose
//! writers' seqs interleave) — makes the sink read the outbox until its cursor has
//! passed the gap. So dropping a batch costs a store read, never a reading.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::model::Reading;
use crate::store::{Appended, Pos};

/// Readings a commit may have for its tail to be handed over in memory; a larger batch
/// (arrays of readings in a backlog) is left to the outbox read, so that the channel
/// never holds more than `NEWS_SLOTS` × this many readings.
pub const TAIL_MAX_BATCH: usize = 8_192;

/// Slots in the ingest → sink channel. The ingest never waits for one: when they are
/// full the sink has plenty to do, and the batch is read from the outbox instead.
pub const NEWS_SLOTS: usize = 8;

/// What the ingest tells the sink after a commit: "look at the outbox", and, when it
/// could, what the commit appended.
pub struct News {
    pub tail: Option<TailBatch>,
}

/// One commit's appended readings: `readings[i]` for each `i` with `appended.inserted[i]`,
/// at seqs `first_seq`, `first_seq + 1`, … in that order (SQLite, writer 0).
pub struct TailBatch {
    pub appended: Appended,
    pub readings: Arc<dyn AsRef<[Reading]> + Send + Sync>,
}

impl TailBatch {
    fn last_seq(&self) -> i64 {
        self.appended.first_seq + self.appended.count as i64 - 1
    }
}

/// The batches received and not yet behind the sink's cursor, in commit order, holding
/// at most `max_readings` readings.
pub struct Tail {
    batches: VecDeque<TailBatch>,
    held: usize,
    max_readings: usize,
}

impl Tail {
    pub fn new(max_readings: usize) -> Tail {
        Tail {
            batches: VecDeque::new(),
            held: 0,
            max_readings,
        }
    }

    /// Keeps `b` unless that would hold more than the cap (then it is dropped: a gap
    /// that the outbox read fills).
    pub fn push(&mut self, b: TailBatch) {
        let n = b.appended.count;
        if n == 0 || self.held + n > self.max_readings {
            return;
        }
        self.held += n;
        self.batches.push_back(b);
    }

    /// Keeps what a commit's news carries.
    pub fn take(&mut self, news: News) {
        if let Some(b) = news.tail {
            self.push(b);
        }
    }

    /// Readings held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Drops the batches wholly at or before `cursor_seq`; then, when the tail holds
    /// the reading at `cursor_seq + 1` and what follows without a gap, calls `each`
    /// for up to `max` of them in seq order (stopping early when it returns false) and
    /// returns how many it was called for. `None`: the outbox must be read.
    pub fn after(
        &mut self,
        cursor_seq: i64,
        max: usize,
        mut each: impl FnMut(Pos, &Reading) -> bool,
    ) -> Option<usize> {
        while let Some(front) = self.batches.front() {
            if front.last_seq() > cursor_seq {
                break;
            }
            self.held -= front.appended.count;
            self.batches.pop_front();
        }
        let first = self.batches.front()?;
        if first.appended.first_seq > cursor_seq + 1 {
            return None;
        }
        let mut next = cursor_seq + 1;
        let mut given = 0;
        for b in &self.batches {
            if b.last_seq() < next {
                continue; // given at an earlier look (the sink staged it)
            }
            if b.appended.first_seq > next {
                break; // a gap: what follows comes from the outbox next time
            }
            let readings = (*b.readings).as_ref();
            let new = readings
                .iter()
                .zip(&b.appended.inserted)
                .filter_map(|(r, new)| new.then_some(r));
            for (seq, r) in (b.appended.first_seq..).zip(new) {
                if seq >= next {
                    if given == max || !each(Pos { writer: 0, seq }, r) {
                        return Some(given);
                    }
                    given += 1;
                    next = seq + 1;
                }
            }
        }
        Some(given)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flag, MicrogramsPerCubicMetre, Period, SiteId, UnixMillis};

    fn reading(i: i64) -> Reading {
        Reading {
            site: SiteId::parse("s1").unwrap(),
            device: None,
            ts: UnixMillis(1_470_009_600_000 + i * 60_000),
            period: Period::Sample,
            flag: Flag::Normal,
            pm25: Some(MicrogramsPerCubicMetre::new(10.0).unwrap()),
            pm10: None,
            interval_secs: None,
        }
    }

    /// A batch of `n` readings (ts i0.., one duplicate every `dup_every`) at `first`.
    fn batch(first: i64, i0: i64, n: usize, dup_every: usize) -> TailBatch {
        let readings: Vec<Reading> = (0..n as i64).map(|i| reading(i0 + i)).collect();
        let inserted: Vec<bool> = (0..n)
            .map(|i| dup_every == 0 || i % dup_every != 0)
            .collect();
        TailBatch {
            appended: Appended {
                first_seq: first,
                count: inserted.iter().filter(|x| **x).count(),
                inserted,
            },
            readings: Arc::new(readings),
        }
    }

    fn seqs(t: &mut Tail, cursor: i64, max: usize) -> Option<Vec<i64>> {
        let mut out = Vec::new();
        t.after(cursor, max, |p, _| {
            out.push(p.seq);
            true
        })
        .map(|_| out)
    }

    #[test]
    fn gives_what_follows_the_cursor_and_only_without_a_gap() {
        let mut t = Tail::new(1000);
        t.push(batch(11, 0, 4, 0)); // 11..=14
        t.push(batch(15, 4, 6, 3)); // 4 of 6 new: 15..=18
        assert_eq!(seqs(&mut t, 10, 100), Some((11..=18).collect()));
        assert_eq!(seqs(&mut t, 12, 3), Some(vec![13, 14, 15]));
        // Behind the cursor: dropped; the cursor inside a batch starts mid-batch.
        assert_eq!(seqs(&mut t, 16, 100), Some(vec![17, 18]));
        assert_eq!(t.held(), 4);
        // The cursor before the first batch: the outbox must be read.
        assert_eq!(seqs(&mut t, 9, 100), None);
        // A gap after 18: given up to it.
        t.push(batch(25, 10, 2, 0));
        assert_eq!(seqs(&mut t, 16, 100), Some(vec![17, 18]));
        assert_eq!(seqs(&mut t, 18, 100), None);
        assert_eq!(seqs(&mut t, 24, 100), Some(vec![25, 26]));
        assert_eq!(seqs(&mut t, 26, 100), None);
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn over_the_cap_a_batch_is_dropped_and_makes_a_gap() {
        let mut t = Tail::new(10);
        t.push(batch(1, 0, 6, 0));
        t.push(batch(7, 6, 6, 0)); // dropped: 12 > 10
        t.push(batch(13, 12, 4, 0));
        assert_eq!(seqs(&mut t, 0, 100), Some((1..=6).collect()));
        assert_eq!(seqs(&mut t, 6, 100), None);
        assert_eq!(seqs(&mut t, 12, 100), Some((13..=16).collect()));
    }

    #[test]
    fn the_callback_can_stop_early() {
        let mut t = Tail::new(100);
        t.push(batch(1, 0, 5, 0));
        let mut n = 0;
        assert_eq!(
            t.after(0, 100, |_, _| {
                n += 1;
                n < 3
            }),
            Some(2)
        );
    }
}
