//! Inserting readings, each once by its identity (site, timestamp, period): which of a
//! batch were new. SQLite runs one prepared multi-row statement per `INSERT_CHUNK`
//! readings (a call into the same process; the rows per statement save the
//! statement's own cost, which was about a quarter of an insert); PostgreSQL one
//! statement for the batch (`unnest` of column arrays,
//! `ON CONFLICT DO NOTHING RETURNING` the identities inserted), since every statement
//! there is a network round trip.

use std::collections::HashMap;

use super::sql::{p, Columns, Db, Engine, Param};
use super::StoreError;
use crate::model::{Reading, UnixMillis};

/// Inserts `readings` (in this order: callers on PostgreSQL pass them in key order)
/// received at `now`, committed by `writer` (PostgreSQL's writer id); returns, per
/// reading, whether it was new. A reading repeated within the batch is new once.
pub(super) fn insert(
    tx: &Db,
    readings: &[&Reading],
    writer: i64,
    now: UnixMillis,
) -> Result<Vec<bool>, StoreError> {
    match tx.engine() {
        Engine::Sqlite => insert_chunked(tx, readings, now),
        Engine::Postgres => insert_batch(tx, readings, writer, now),
    }
}

/// Readings per multi-row INSERT on SQLite: one statement execution (and, with
/// AUTOINCREMENT, one read and one update of `sqlite_sequence`) per this many
/// readings instead of per reading. 1 + 64 × 8 parameters is far below SQLite's limit.
const INSERT_CHUNK: usize = 64;

/// SQLite's readings INSERT for one row or for [`INSERT_CHUNK`] rows, built once.
fn insert_sql(rows: usize) -> &'static str {
    static ONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static CHUNK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match rows {
        1 => ONE.get_or_init(|| build_insert_sql(1)),
        INSERT_CHUNK => CHUNK.get_or_init(|| build_insert_sql(INSERT_CHUNK)),
        _ => unreachable!("readings go in one at a time or {INSERT_CHUNK} at a time"),
    }
}

/// SQLite's readings INSERT for `rows` rows. `?1` is the commit's receive time, bound
/// once for every row; each row's own eight values follow.
///
/// `OR IGNORE` rather than `ON CONFLICT DO NOTHING`: both skip a reading whose identity
/// is stored, but the upsert clause leaves the NOT NULL constraints able to abort the
/// statement halfway, so SQLite keeps a statement journal of every page a multi-row
/// insert touches in case it must undo the rows before. The values bound to the NOT
/// NULL columns come from non-optional fields and are never NULL, so ignoring a NULL
/// instead of aborting can never happen and changes nothing but the journal.
fn build_insert_sql(rows: usize) -> String {
    const WIDTH: usize = 8;
    let mut sql = String::from(
        "INSERT OR IGNORE INTO readings
         (site, ts_ms, period, device, flag, pm25, pm10, interval_secs, received_ms) VALUES ",
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for c in 0..WIDTH {
            sql.push_str(&format!("?{}, ", row * WIDTH + c + 2));
        }
        sql.push_str("?1)");
    }
    sql
}

/// SQLite: full chunks go in one multi-row statement. When it inserted them all (the
/// common case) that is the answer. When it inserted fewer (a redelivery, or the same
/// reading twice in the chunk), the rows it inserted are those with a seq above the
/// largest before it (this connection holds the write lock; AUTOINCREMENT never
/// reuses a seq) up to the last one it inserted, and each reading's stored seq is
/// looked up: a reading is new when its row is one of those and no earlier reading of
/// the chunk claimed it.
/// (Tried and dropped: a savepoint per chunk with a row-by-row retry, whose
/// sub-journal went to a temporary file — kernel time the instruction count missed;
/// `RETURNING seq`, +3 600 instructions per reading.)
fn insert_chunked<'r>(
    tx: &Db,
    readings: &[&'r Reading],
    now: UnixMillis,
) -> Result<Vec<bool>, StoreError> {
    let params = |r: &'r Reading, out: &mut Vec<Param<'r>>| {
        out.extend_from_slice(p![
            r.site.as_str(),
            r.ts.0,
            r.period.code(),
            r.device.as_ref().map(|d| d.as_str()),
            r.flag.code(),
            r.pm25.map(|v| v.value()),
            r.pm10.map(|v| v.value()),
            r.interval_secs.map(i64::from),
        ]);
    };
    let conn = tx.sqlite_conn().expect("the SQLite path");
    let mut new = Vec::with_capacity(readings.len());
    let mut one = tx.prepare(insert_sql(1))?;
    let mut many = None;
    let mut last_seq = tx.prepare("SELECT coalesce(max(seq), 0) FROM readings")?;
    let mut buf = Vec::with_capacity(1 + INSERT_CHUNK * 8);
    for chunk in readings.chunks(INSERT_CHUNK) {
        if chunk.len() == INSERT_CHUNK {
            let many = match &mut many {
                Some(m) => m,
                None => many.insert(tx.prepare(insert_sql(INSERT_CHUNK))?),
            };
            buf.clear();
            buf.push(Param::Int(now.0));
            chunk.iter().for_each(|r| params(r, &mut buf));
            let mut before = 0;
            last_seq.each(p![], |r| {
                before = r.i64(0)?;
                Ok(())
            })?;
            let n = many.exec(&buf)?;
            if n == INSERT_CHUNK as u64 {
                new.extend(std::iter::repeat_n(true, INSERT_CHUNK));
            } else {
                let inserted = before + 1..=conn.last_insert_rowid();
                claim_inserted(tx, chunk, inserted, &mut new)?;
            }
            continue;
        }
        for r in chunk {
            buf.clear();
            buf.push(Param::Int(now.0));
            params(r, &mut buf);
            new.push(one.exec(&buf)? > 0);
        }
    }
    Ok(new)
}

/// For a chunk that inserted only some of its readings, the seqs in `inserted`: pushes,
/// per reading, whether its stored row is one of them, each claimed once in chunk
/// order.
fn claim_inserted(
    tx: &Db,
    chunk: &[&Reading],
    inserted: std::ops::RangeInclusive<i64>,
    new: &mut Vec<bool>,
) -> Result<(), StoreError> {
    let mut find =
        tx.prepare("SELECT seq FROM readings WHERE site = ?1 AND ts_ms = ?2 AND period = ?3")?;
    let mut claimed = std::collections::HashSet::new();
    for r in chunk {
        let mut seq = None;
        find.each(p![r.site.as_str(), r.ts.0, r.period.code()], |row| {
            seq = Some(row.i64(0)?);
            Ok(())
        })?;
        new.push(seq.is_some_and(|s| inserted.contains(&s) && claimed.insert(s)));
    }
    Ok(())
}

fn insert_batch(
    tx: &Db,
    readings: &[&Reading],
    writer: i64,
    now: UnixMillis,
) -> Result<Vec<bool>, StoreError> {
    if readings.is_empty() {
        return Ok(Vec::new());
    }
    let sites: Vec<&str> = readings.iter().map(|r| r.site.as_str()).collect();
    let ts: Vec<i64> = readings.iter().map(|r| r.ts.0).collect();
    let period: Vec<i64> = readings.iter().map(|r| r.period.code()).collect();
    let device: Vec<Option<&str>> = readings
        .iter()
        .map(|r| r.device.as_ref().map(|d| d.as_str()))
        .collect();
    let flag: Vec<&str> = readings.iter().map(|r| r.flag.code()).collect();
    let pm25: Vec<Option<f64>> = readings.iter().map(|r| r.pm25.map(|v| v.value())).collect();
    let pm10: Vec<Option<f64>> = readings.iter().map(|r| r.pm10.map(|v| v.value())).collect();
    let interval: Vec<Option<i64>> = readings
        .iter()
        .map(|r| r.interval_secs.map(i64::from))
        .collect();
    let rows = tx.rows(
        "INSERT INTO readings
         (site, ts_ms, period, device, flag, pm25, pm10, interval_secs, received_ms, writer)
         SELECT s, t, p, d, f, a, b, i, ?9, ?10
         FROM unnest(CAST(?1 AS TEXT[]), CAST(?2 AS BIGINT[]), CAST(?3 AS BIGINT[]),
                     CAST(?4 AS TEXT[]), CAST(?5 AS TEXT[]), CAST(?6 AS DOUBLE PRECISION[]),
                     CAST(?7 AS DOUBLE PRECISION[]), CAST(?8 AS BIGINT[]))
              AS u(s, t, p, d, f, a, b, i)
         ON CONFLICT DO NOTHING RETURNING site, ts_ms, period",
        &[
            Param::Texts(&sites),
            Param::Ints(&ts),
            Param::Ints(&period),
            Param::OptTexts(&device),
            Param::Texts(&flag),
            Param::OptReals(&pm25),
            Param::OptReals(&pm10),
            Param::OptInts(&interval),
            Param::Int(now.0),
            Param::Int(writer),
        ],
    )?;
    // How many of each identity were inserted (one at most): the first reading with
    // that identity in the batch is the new one.
    let mut inserted: HashMap<(String, i64, i64), u32> = HashMap::with_capacity(rows.len());
    for r in &rows {
        *inserted
            .entry((r.text(0)?.to_owned(), r.i64(1)?, r.i64(2)?))
            .or_default() += 1;
    }
    Ok(readings
        .iter()
        .map(|r| {
            let key = (r.site.as_str().to_owned(), r.ts.0, r.period.code());
            match inserted.get_mut(&key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        })
        .collect())
}
