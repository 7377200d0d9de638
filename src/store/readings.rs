//! Inserting readings, each once by its identity (site, timestamp, period): which of a
//! batch were new. SQLite runs a prepared statement per reading (a call into the same
//! process); PostgreSQL one statement for the batch (`unnest` of column arrays,
//! `ON CONFLICT DO NOTHING RETURNING` the identities inserted), since every statement
//! there is a network round trip.

use std::collections::HashMap;

use super::sql::{p, Db, Engine, Param};
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
        Engine::Sqlite => readings.iter().map(|r| insert_one(tx, r, now)).collect(),
        Engine::Postgres => insert_batch(tx, readings, writer, now),
    }
}

fn insert_one(tx: &Db, r: &Reading, now: UnixMillis) -> Result<bool, StoreError> {
    let changed = tx.exec(
        "INSERT INTO readings
         (site, ts_ms, period, device, flag, pm25, pm10, interval_secs, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
        p![
            r.site.as_str(),
            r.ts.0,
            r.period.code(),
            r.device.as_ref().map(|d| d.as_str()),
            r.flag.code(),
            r.pm25.map(|v| v.value()),
            r.pm10.map(|v| v.value()),
            r.interval_secs.map(i64::from),
            now.0,
        ],
    )?;
    Ok(changed > 0)
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
