//! The sinks' outbox: the readings committed after a sink's cursor, in commit order.
//! A sink reads a page after its cursor, delivers it, and moves the cursor past what the
//! server accepted or refused line by line (dead letters) in one transaction. Nothing is
//! copied: the readings table is the queue.
//!
//! A cursor is kept per writer ([`Cursor`]). On SQLite there is one writer (id 0) and
//! seq order is commit order. On PostgreSQL several instances commit at once and a
//! sequence value is taken at insert but visible at commit, so one high-water mark
//! could pass a row that commits later; within one writer, whose commits are
//! sequential on one session, seq order is commit order again. So each writer's rows
//! are read after that writer's own mark, which is exact. The derived lines, which any
//! instance may add, are removed by their seqs, never by a range.

use std::collections::BTreeMap;

use super::sql::{p, Columns, Db, Engine};
use super::{Store, StoreError};
use crate::model::{DeviceId, Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};

use std::fmt;

/// A line the server refused, to be kept for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: i64,
    pub kind: DeadLetterKind,
    pub reason: String,
    pub line: String,
}

/// Why a line is a dead letter, which decides whether it may be queued again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeadLetterKind {
    /// The server refused the line with this HTTP status (400, 422, …): once the cause
    /// is fixed (a field-type conflict, say) it can be queued again.
    Refused { status: u16 },
    /// The encoder could not make line protocol of the reading: nothing to send again.
    Unencodable,
}

impl DeadLetterKind {
    /// The `status` column's value for [`DeadLetterKind::Unencodable`] (no HTTP status is
    /// 0). The storage encoding is decoded here and nowhere else.
    const UNENCODABLE_STATUS: u16 = 0;

    fn to_status_column(self) -> u16 {
        match self {
            Self::Refused { status } => status,
            Self::Unencodable => Self::UNENCODABLE_STATUS,
        }
    }

    fn from_status_column(status: u16) -> Self {
        match status {
            Self::UNENCODABLE_STATUS => Self::Unencodable,
            status => Self::Refused { status },
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { status } => write!(f, "HTTP {status}"),
            Self::Unencodable => f.write_str("unencodable"),
        }
    }
}

/// How many dead letters share a kind and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCount {
    pub kind: DeadLetterKind,
    pub reason: String,
    pub count: u64,
}

/// A reading's place in the outbox: the writer that committed it and its seq (unique
/// across writers; commit order within one writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub writer: i64,
    pub seq: i64,
}

/// Where a sink stands: per writer, the last seq it has finished with (0 for a writer
/// it has not seen, whose rows are then all pending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<i64, i64>);

impl From<Pos> for Cursor {
    /// The cursor that has finished `at` and everything of its writer before it.
    fn from(at: Pos) -> Cursor {
        let mut c = Cursor::default();
        c.advance(at);
        c
    }
}

impl Cursor {
    /// The mark for `writer`.
    pub fn of(&self, writer: i64) -> i64 {
        self.0.get(&writer).copied().unwrap_or(0)
    }

    /// Marks `at` (and everything of its writer before it) done.
    pub fn advance(&mut self, at: Pos) {
        let e = self.0.entry(at.writer).or_insert(0);
        *e = (*e).max(at.seq);
    }

    /// Whether `other` is ahead of this cursor for some writer.
    pub fn behind(&self, other: &Cursor) -> bool {
        other.0.iter().any(|(w, s)| *s > self.of(*w))
    }
}

/// Registers a new writer (PostgreSQL) inside the caller's transaction; returns its id.
pub(super) fn register_writer(db: &Db) -> Result<i64, StoreError> {
    let r = db
        .row("INSERT INTO writers DEFAULT VALUES RETURNING id", p![])?
        .ok_or_else(|| StoreError::Corrupt("INSERT … RETURNING gave no row".into()))?;
    r.i64(0)
}

/// The writers whose rows a sink reads: 0 on SQLite, the registered ones on PostgreSQL.
fn writers(db: &Db) -> Result<Vec<i64>, StoreError> {
    match db.engine() {
        Engine::Sqlite => Ok(vec![0]),
        Engine::Postgres => db
            .rows("SELECT id FROM writers ORDER BY id", p![])?
            .iter()
            .map(|r| r.i64(0))
            .collect(),
    }
}

/// The pruning statement: readings before `?1`, but (when `?2` names a sink) only
/// those the sink has finished with.
pub(super) fn prune_readings_sql(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => {
            "DELETE FROM readings WHERE ts_ms < ?1 AND (?2 IS NULL
                OR seq <= coalesce((SELECT seq FROM sink_cursors WHERE sink = ?2), 0))"
        }
        Engine::Postgres => {
            "DELETE FROM readings r WHERE ts_ms < ?1 AND (CAST(?2 AS TEXT) IS NULL
                OR r.seq <= coalesce((SELECT c.seq FROM sink_cursors c
                                      WHERE c.sink = ?2 AND c.writer = r.writer), 0))"
        }
    }
}

/// Most rows reserved up front for a page of the outbox (a sink's default batch).
const OUTBOX_PAGE_HINT: usize = 5000;

/// A reading read back as selected by [`Store::pending`].
fn pending_row(r: &impl Columns) -> Result<(Pos, Reading), StoreError> {
    let pos = Pos {
        writer: r.i64(0)?,
        seq: r.i64(1)?,
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("reading seq {}: {what}", pos.seq));
    let conc = |v: Option<f64>| {
        v.map(MicrogramsPerCubicMetre::new)
            .transpose()
            .map_err(|_| corrupt("concentration"))
    };
    let reading = Reading {
        site: SiteId::parse(r.text(2)?).map_err(|_| corrupt("site"))?,
        device: r
            .opt_text(6)?
            .map(DeviceId::parse)
            .transpose()
            .map_err(|_| corrupt("device"))?,
        ts: UnixMillis(r.i64(3)?),
        period: Period::from_code(r.i64(4)?).ok_or_else(|| corrupt("period"))?,
        flag: Flag::parse(r.text(5)?).ok_or_else(|| corrupt("flag"))?,
        pm25: conc(r.opt_f64(7)?)?,
        pm10: conc(r.opt_f64(8)?)?,
        interval_secs: r
            .opt_i64(9)?
            .map(u32::try_from)
            .transpose()
            .map_err(|_| corrupt("interval"))?,
    };
    Ok((pos, reading))
}

/// Records refused lines for an operator, inside the caller's transaction.
fn record_dead_letters(db: &Db, dead: &[DeadLetter], now: UnixMillis) -> Result<(), StoreError> {
    for d in dead {
        db.exec(
            "INSERT INTO dead_letters (at_ms, status, reason, line) VALUES (?1, ?2, ?3, ?4)",
            p![
                now.0,
                i64::from(d.kind.to_status_column()),
                &d.reason,
                &d.line
            ],
        )?;
    }
    Ok(())
}

impl Store {
    /// The sink's cursor (empty for a new sink, which therefore starts with every
    /// stored reading).
    pub fn cursor(&self, sink: &str) -> Result<Cursor, StoreError> {
        let sql = match self.db.engine() {
            Engine::Sqlite => "SELECT 0, seq FROM sink_cursors WHERE sink = ?1",
            Engine::Postgres => "SELECT writer, seq FROM sink_cursors WHERE sink = ?1",
        };
        let mut c = Cursor::default();
        for r in self.db.rows(sql, p![sink])? {
            c.advance(Pos {
                writer: r.i64(0)?,
                seq: r.i64(1)?,
            });
        }
        Ok(c)
    }

    /// At most `max_rows` readings after `cursor`, in seq order (commit order per
    /// writer: each writer's rows are a prefix of what it has pending).
    pub fn pending(
        &self,
        cursor: &Cursor,
        max_rows: usize,
    ) -> Result<Vec<(Pos, Reading)>, StoreError> {
        let sql = match self.db.engine() {
            Engine::Sqlite => {
                "SELECT 0, seq, site, ts_ms, period, flag, device, pm25, pm10, interval_secs
                 FROM readings WHERE seq > ?2 AND ?1 = 0 ORDER BY seq LIMIT ?3"
            }
            Engine::Postgres => {
                "SELECT writer, seq, site, ts_ms, period, flag, device, pm25, pm10, interval_secs
                 FROM readings WHERE writer = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            }
        };
        let mut out = Vec::with_capacity(max_rows.min(OUTBOX_PAGE_HINT));
        let mut stmt = self.db.prepare(sql)?;
        for w in writers(&self.db)? {
            stmt.each(p![w, cursor.of(w), max_rows as i64], |r| {
                out.push(pending_row(r)?);
                Ok(())
            })?;
        }
        out.sort_unstable_by_key(|(pos, _)| pos.seq);
        out.truncate(max_rows);
        Ok(out)
    }

    /// Moves the sink's cursor to `through` and records `dead` letters, in one
    /// transaction (durable when it returns). Through [`Outbox`] outside the crate.
    pub(crate) fn advance_durable(
        &mut self,
        sink: &str,
        through: &Cursor,
        dead: &[DeadLetter],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.sink_done_durable(sink, Some(through), &[], dead, now)
    }

    /// How many readings (and derived lines) wait after `cursor`, and when the oldest
    /// reading of them was received (the first pending of each writer).
    pub fn pending_stats(&self, cursor: &Cursor) -> Result<(u64, Option<UnixMillis>), StoreError> {
        let (count, first) = match self.db.engine() {
            Engine::Sqlite => (
                "SELECT count(*) FROM readings WHERE seq > ?2 AND ?1 = 0",
                "SELECT received_ms FROM readings WHERE seq > ?2 AND ?1 = 0 ORDER BY seq LIMIT 1",
            ),
            Engine::Postgres => (
                "SELECT count(*) FROM readings WHERE writer = ?1 AND seq > ?2",
                "SELECT received_ms FROM readings WHERE writer = ?1 AND seq > ?2
                 ORDER BY seq LIMIT 1",
            ),
        };
        let one =
            |sql: &str, params: &[super::sql::Param<'_>]| -> Result<Option<i64>, StoreError> {
                match self.db.row(sql, params)? {
                    Some(r) => r.opt_i64(0),
                    None => Ok(None),
                }
            };
        let mut n = one("SELECT count(*) FROM derived_outbox", p![])?.unwrap_or(0);
        let mut oldest: Option<i64> = None;
        for w in writers(&self.db)? {
            n += one(count, p![w, cursor.of(w)])?.unwrap_or(0);
            if let Some(t) = one(first, p![w, cursor.of(w)])? {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        Ok((n as u64, oldest.map(UnixMillis)))
    }

    /// The oldest derived-series lines, at most `max_rows`.
    pub fn derived_head(&self, max_rows: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.db
            .rows(
                "SELECT seq, line FROM derived_outbox ORDER BY seq LIMIT ?1",
                p![max_rows as i64],
            )?
            .iter()
            .map(|r| Ok((r.i64(0)?, r.text(1)?.to_owned())))
            .collect()
    }

    /// After a delivery, in one transaction (durable when it returns): moves the sink's
    /// cursor to `readings` (when given), removes the derived lines `derived`, and
    /// records the dead letters of both.
    pub(crate) fn sink_done_durable(
        &mut self,
        sink: &str,
        readings: Option<&Cursor>,
        derived: &[i64],
        dead: &[DeadLetter],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin(super::sql::Begin::Write)?;
        record_dead_letters(&tx, dead, now)?;
        if let Some(through) = readings {
            let sql = match tx.engine() {
                Engine::Sqlite => {
                    "INSERT INTO sink_cursors (sink, seq) SELECT ?1, ?3 WHERE ?2 = 0
                     ON CONFLICT (sink) DO UPDATE SET seq = CASE
                        WHEN excluded.seq > sink_cursors.seq THEN excluded.seq
                        ELSE sink_cursors.seq END"
                }
                Engine::Postgres => {
                    "INSERT INTO sink_cursors (sink, writer, seq) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sink, writer) DO UPDATE SET seq = CASE
                        WHEN excluded.seq > sink_cursors.seq THEN excluded.seq
                        ELSE sink_cursors.seq END"
                }
            };
            for (w, seq) in &through.0 {
                tx.exec(sql, p![sink, *w, *seq])?;
            }
        }
        // The lines done, as runs of consecutive seqs (a commit's lines are one run):
        // one statement per run instead of per line. Exact: a run names every seq in
        // it.
        let mut seqs = derived.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let mut delete = tx.prepare("DELETE FROM derived_outbox WHERE seq BETWEEN ?1 AND ?2")?;
        let mut rest = &seqs[..];
        while let Some(&first) = rest.first() {
            let run = rest
                .iter()
                .enumerate()
                .take_while(|(i, s)| **s == first + *i as i64)
                .count();
            delete.exec(p![first, rest[run - 1]])?;
            rest = &rest[run..];
        }
        drop(delete);
        tx.commit()
    }

    /// Dead letters per kind and reason, most first.
    pub fn dead_letter_summary(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        self.db
            .rows(
                "SELECT status, reason, count(*) FROM dead_letters GROUP BY status, reason
                 ORDER BY count(*) DESC, status, reason",
                p![],
            )?
            .iter()
            .map(|r| {
                Ok(DeadLetterCount {
                    kind: DeadLetterKind::from_status_column(
                        u16::try_from(r.i64(0)?)
                            .map_err(|_| StoreError::Corrupt("dead letter status".into()))?,
                    ),
                    reason: r.text(1)?.to_owned(),
                    count: r.i64(2)? as u64,
                })
            })
            .collect()
    }

    /// Queues the lines InfluxDB refused for another try (after an operator fixed the
    /// cause, e.g. a field-type conflict), in the order they were refused, and removes
    /// them from the dead letters. Lines that never were line protocol
    /// ([`DeadLetterKind::Unencodable`]: a reading the encoder refused) stay. Safe beside a running service: the writer
    /// picks them up like any derived line. Returns how many were queued.
    pub(crate) fn requeue_dead_letters(&mut self, now: UnixMillis) -> Result<u64, StoreError> {
        let tx = self.db.begin(super::sql::Begin::Write)?;
        let unencodable = i64::from(DeadLetterKind::Unencodable.to_status_column());
        let n = tx.exec(
            "INSERT INTO derived_outbox (line, created_ms)
             SELECT line, CAST(?1 AS BIGINT) FROM dead_letters WHERE status <> ?2 ORDER BY id",
            p![now.0, unencodable],
        )?;
        tx.exec(
            "DELETE FROM dead_letters WHERE status <> ?1",
            p![unencodable],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Prepares a full re-send to a new or emptied InfluxDB, in one transaction: forgets
    /// `sink`'s cursor (so every stored reading is pending again) and, when `hour_line`
    /// is given, refills the derived outbox with one line per stored site-hour and
    /// marks every cached site-day for its daily lines. Run it with the service
    /// stopped: a running writer keeps its cursor in memory.
    pub(crate) fn resend(
        &mut self,
        sink: &str,
        hour_line: Option<&super::HourlyLines>,
        now: UnixMillis,
    ) -> Result<Resend, StoreError> {
        // The write lock up front: it counts before it writes (see `Store::commit`).
        let tx = self.db.begin(super::sql::Begin::Exclusive)?;
        let readings = tx
            .row("SELECT count(*) FROM readings", p![])?
            .map_or(Ok(0), |r| r.i64(0))?;
        let mut out = Resend {
            readings: readings as u64,
            ..Resend::default()
        };
        tx.exec("DELETE FROM sink_cursors WHERE sink = ?1", p![sink])?;
        if let Some(line) = hour_line {
            tx.exec("DELETE FROM derived_outbox", p![])?;
            let hours = tx.rows(
                &format!(
                    "SELECT {} FROM hourly ORDER BY hour_ms, site",
                    super::hourly::COLUMNS
                ),
                p![],
            )?;
            for r in &hours {
                if let Some(l) = line(&super::hourly::site_hour_row(r)?) {
                    tx.exec(
                        "INSERT INTO derived_outbox (line, created_ms) VALUES (?1, ?2)",
                        p![&l, now.0],
                    )?;
                    out.hourly_lines += 1;
                }
            }
            out.site_days = super::daily::mark_every_site_day_pending(&tx)?;
        }
        tx.commit()?;
        Ok(out)
    }
}

/// What [`Store::resend`] queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resend {
    /// Stored readings, all pending again.
    pub readings: u64,
    /// Derived hourly lines queued.
    pub hourly_lines: u64,
    /// Site-days marked for their daily lines (with their district days).
    pub site_days: u64,
}

/// A sink's handle on the store: its own connection, reading its outbox (the readings
/// after its cursor, and the derived lines) and moving its cursor after a delivery.
/// The only handle outside the crate that moves a cursor or records dead letters.
pub struct Outbox {
    store: Store,
    /// The sink's name in the cursor table.
    sink: &'static str,
}

impl Outbox {
    /// Opens the store for the sink named `sink`.
    pub fn open(cfg: &super::StoreConfig, sink: &'static str) -> Result<Outbox, StoreError> {
        Ok(Outbox {
            store: Store::open(cfg)?,
            sink,
        })
    }

    /// The sink's cursor: per writer, the last reading seq it delivered or
    /// dead-lettered.
    pub fn cursor(&self) -> Result<Cursor, StoreError> {
        self.store.cursor(self.sink)
    }

    /// Up to `max_rows` readings after `cursor`, in commit order per writer.
    pub fn pending(
        &self,
        cursor: &Cursor,
        max_rows: usize,
    ) -> Result<Vec<(Pos, Reading)>, StoreError> {
        self.store.pending(cursor, max_rows)
    }

    /// The oldest derived-series lines, at most `max_rows`.
    pub fn derived_head(&self, max_rows: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.store.derived_head(max_rows)
    }

    /// The stored aggregates of the site-hours `keys`, in their order (see
    /// [`Store::site_hours`]).
    pub fn site_hours(
        &self,
        keys: &[(String, i64)],
    ) -> Result<Vec<crate::aqi::daily::SiteHour>, StoreError> {
        self.store.site_hours(keys)
    }

    /// How many lines wait after `cursor`, and when the oldest reading was received.
    pub fn pending_stats(&self, cursor: &Cursor) -> Result<(u64, Option<UnixMillis>), StoreError> {
        self.store.pending_stats(cursor)
    }

    /// [`Store::advance_durable`] for this sink.
    pub fn advance_durable(
        &mut self,
        through: &Cursor,
        dead: &[DeadLetter],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.store.advance_durable(self.sink, through, dead, now)
    }

    /// After a delivery, in one transaction (durable when it returns): the cursor to
    /// `readings`, the derived lines `derived` removed, the dead letters kept.
    pub fn done_durable(
        &mut self,
        readings: Option<&Cursor>,
        derived: &[i64],
        dead: &[DeadLetter],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.store
            .sink_done_durable(self.sink, readings, derived, dead, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_round_trips_through_its_column() {
        for k in [
            DeadLetterKind::Unencodable,
            DeadLetterKind::Refused { status: 400 },
            DeadLetterKind::Refused { status: 422 },
        ] {
            assert_eq!(DeadLetterKind::from_status_column(k.to_status_column()), k);
        }
        assert_eq!(DeadLetterKind::Unencodable.to_string(), "unencodable");
        assert_eq!(
            DeadLetterKind::Refused { status: 400 }.to_string(),
            "HTTP 400"
        );
    }
}
