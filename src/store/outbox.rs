//! The sinks' outbox: the readings committed after a sink's cursor, in commit order.
//! A sink reads a page after its cursor, delivers it, and moves the cursor past what the
//! server accepted or refused line by line (dead letters) in one transaction. Nothing is
//! copied or deleted: the readings table is the queue.

use rusqlite::{params, OptionalExtension};

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

/// Records refused lines for an operator, inside the caller's transaction.
fn record_dead_letters(
    tx: &rusqlite::Transaction<'_>,
    dead: &[DeadLetter],
    now: UnixMillis,
) -> Result<(), StoreError> {
    let mut dl = tx.prepare_cached(
        "INSERT INTO dead_letters (at_ms, status, reason, line) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for d in dead {
        dl.execute(params![now.0, d.kind.to_status_column(), d.reason, d.line])?;
    }
    Ok(())
}

impl Store {
    /// The sink's cursor: the highest seq it has finished with (0 for a new sink, which
    /// therefore starts with every stored reading).
    pub fn cursor(&self, sink: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM sink_cursors WHERE sink = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// At most `max_rows` readings after `cursor`, in commit order.
    pub fn pending(&self, cursor: i64, max_rows: usize) -> Result<Vec<(i64, Reading)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, site, ts_ms, period, device, flag, pm25, pm10, interval_secs
             FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![cursor, max_rows as i64])?;
        let mut out = Vec::with_capacity(max_rows.min(10_000));
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let corrupt = |what: &str| StoreError::Corrupt(format!("reading seq {seq}: {what}"));
            let site: String = r.get(1)?;
            let device: Option<String> = r.get(4)?;
            let flag: String = r.get(5)?;
            let conc = |v: Option<f64>| {
                v.map(MicrogramsPerCubicMetre::new)
                    .transpose()
                    .map_err(|_| corrupt("concentration"))
            };
            let reading = Reading {
                site: SiteId::parse(&site).map_err(|_| corrupt("site"))?,
                device: device
                    .map(|d| DeviceId::parse(&d))
                    .transpose()
                    .map_err(|_| corrupt("device"))?,
                ts: UnixMillis(r.get(2)?),
                period: Period::from_code(r.get(3)?).ok_or_else(|| corrupt("period"))?,
                flag: Flag::parse(&flag).ok_or_else(|| corrupt("flag"))?,
                pm25: conc(r.get(6)?)?,
                pm10: conc(r.get(7)?)?,
                interval_secs: r.get(8)?,
            };
            out.push((seq, reading));
        }
        Ok(out)
    }

    /// Moves the sink's cursor to `through` and records `dead` letters, in one
    /// transaction (durable when it returns). Through [`Outbox`] outside the crate.
    pub(crate) fn advance_durable(
        &mut self,
        sink: &str,
        through: i64,
        dead: &[DeadLetter],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.sink_done_durable(sink, Some(through), None, dead, now)
    }

    /// How many readings (and derived lines) wait after `cursor`, and when the oldest
    /// reading of them was received.
    pub fn pending_stats(&self, cursor: i64) -> Result<(u64, Option<UnixMillis>), StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT count(*) FROM readings WHERE seq > ?1) + (SELECT count(*) FROM derived_outbox)",
            [cursor],
            |r| r.get(0),
        )?;
        let oldest: Option<i64> = self
            .conn
            .query_row(
                "SELECT received_ms FROM readings WHERE seq > ?1 ORDER BY seq LIMIT 1",
                [cursor],
                |r| r.get(0),
            )
            .optional()?;
        Ok((n as u64, oldest.map(UnixMillis)))
    }

    /// The oldest derived-series lines, at most `max_rows`.
    pub fn derived_head(&self, max_rows: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, line FROM derived_outbox ORDER BY seq LIMIT ?1")?;
        let rows = stmt.query_map([max_rows as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// After a delivery, in one transaction (durable when it returns): moves the sink's
    /// cursor to `readings` (when given), removes the derived lines through `derived`
    /// (when given), and records the dead letters of both.
    pub(crate) fn sink_done_durable(
        &mut self,
        sink: &str,
        readings: Option<i64>,
        derived: Option<i64>,
        dead: &[DeadLetter],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            record_dead_letters(&tx, dead, now)?;
            if let Some(through) = readings {
                tx.execute(
                    "INSERT INTO sink_cursors (sink, seq) VALUES (?1, ?2)
                     ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq)",
                    params![sink, through],
                )?;
            }
            if let Some(through) = derived {
                tx.execute("DELETE FROM derived_outbox WHERE seq <= ?1", [through])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Dead letters per kind and reason, most first.
    pub fn dead_letter_summary(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT status, reason, count(*) FROM dead_letters GROUP BY status, reason
             ORDER BY count(*) DESC, status, reason",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeadLetterCount {
                kind: DeadLetterKind::from_status_column(r.get(0)?),
                reason: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queues the lines InfluxDB refused for another try (after an operator fixed the
    /// cause, e.g. a field-type conflict), in the order they were refused, and removes
    /// them from the dead letters. Lines that never were line protocol
    /// ([`DeadLetterKind::Unencodable`]: a reading the encoder refused) stay. Safe beside a running service: the writer
    /// picks them up like any derived line. Returns how many were queued.
    pub(crate) fn requeue_dead_letters(&mut self, now: UnixMillis) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let unencodable = DeadLetterKind::Unencodable.to_status_column();
        let n = tx.execute(
            "INSERT INTO derived_outbox (line, created_ms)
             SELECT line, ?1 FROM dead_letters WHERE status <> ?2 ORDER BY id",
            params![now.0, unencodable],
        )?;
        tx.execute("DELETE FROM dead_letters WHERE status <> ?1", [unencodable])?;
        tx.commit()?;
        Ok(n as u64)
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
        let tx = self.conn.transaction()?;
        let mut out = Resend {
            readings: tx.query_row("SELECT count(*) FROM readings", [], |r| r.get::<_, i64>(0))?
                as u64,
            ..Resend::default()
        };
        tx.execute("DELETE FROM sink_cursors WHERE sink = ?1", [sink])?;
        if let Some(line) = hour_line {
            tx.execute("DELETE FROM derived_outbox", [])?;
            {
                let mut hours = tx.prepare(
                    "SELECT site, hour_ms, n25, sum25, cov25, nd25, dev25, n10, sum10, cov10, nd10, dev10
                     FROM hourly ORDER BY hour_ms, site",
                )?;
                let mut ins = tx.prepare_cached(
                    "INSERT INTO derived_outbox (line, created_ms) VALUES (?1, ?2)",
                )?;
                let mut rows = hours.query([])?;
                while let Some(r) = rows.next()? {
                    if let Some(l) = line(&super::hourly::site_hour_row(r)?) {
                        ins.execute(params![l, now.0])?;
                        out.hourly_lines += 1;
                    }
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

    /// The sink's cursor: the last reading seq it delivered or dead-lettered.
    pub fn cursor(&self) -> Result<i64, StoreError> {
        self.store.cursor(self.sink)
    }

    /// Up to `max_rows` readings after `cursor`, in commit order.
    pub fn pending(&self, cursor: i64, max_rows: usize) -> Result<Vec<(i64, Reading)>, StoreError> {
        self.store.pending(cursor, max_rows)
    }

    /// The oldest derived-series lines, at most `max_rows`.
    pub fn derived_head(&self, max_rows: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.store.derived_head(max_rows)
    }

    /// How many lines wait after `cursor`, and when the oldest reading was received.
    pub fn pending_stats(&self, cursor: i64) -> Result<(u64, Option<UnixMillis>), StoreError> {
        self.store.pending_stats(cursor)
    }

    /// [`Store::advance_durable`] for this sink.
    pub fn advance_durable(
        &mut self,
        through: i64,
        dead: &[DeadLetter],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.store.advance_durable(self.sink, through, dead, now)
    }

    /// After a delivery, in one transaction (durable when it returns): the cursor to
    /// `readings`, the derived lines through `derived` removed, the dead letters kept.
    pub fn done_durable(
        &mut self,
        readings: Option<i64>,
        derived: Option<i64>,
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
