//! Read queries for the API: site activity, raw series, rejects, health.

use super::sql::{p, Begin, Columns, Engine};
use super::{Store, StoreError};
use crate::model::{DeviceId, Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};

impl Store {
    /// Every site with its latest reading time and latest receive time (ms). One index
    /// seek per site, not a scan of the readings.
    pub fn site_activity(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let mut out = Vec::new();
        for site in self.sites()? {
            let Some(last) = self.db.row(
                "SELECT ts_ms FROM readings WHERE site = ?1 ORDER BY ts_ms DESC LIMIT 1",
                p![&site],
            )?
            else {
                continue; // pruned since its hours were written
            };
            // The latest upload is among the latest readings (a backlog can be old data
            // received now; the last hundred readings cover it well enough).
            let rx = self.db.row(
                "SELECT max(received_ms) FROM (SELECT received_ms FROM readings WHERE site = ?1
                 ORDER BY ts_ms DESC LIMIT 100) latest",
                p![&site],
            )?;
            let rx = rx.map_or(Ok(None), |r| r.opt_i64(0))?.unwrap_or(0);
            out.push((site, last.i64(0)?, rx));
        }
        Ok(out)
    }

    /// A site's raw readings with `from <= ts < to`, in time order.
    pub fn raw_series(
        &self,
        site: &str,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Reading>, StoreError> {
        let site_id =
            SiteId::parse(site).map_err(|_| StoreError::Corrupt(format!("site {site:?}")))?;
        let rows = self.db.rows(
            "SELECT ts_ms, period, device, flag, pm25, pm10, interval_secs FROM readings
             WHERE site = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms, period",
            p![site, from.0, to.0],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let ts = r.i64(0)?;
            let corrupt = |w: &str| StoreError::Corrupt(format!("{site} {ts}: {w}"));
            let conc = |v: Option<f64>| {
                v.map(MicrogramsPerCubicMetre::new)
                    .transpose()
                    .map_err(|_| corrupt("value"))
            };
            out.push(Reading {
                site: site_id.clone(),
                device: r
                    .opt_text(2)?
                    .map(DeviceId::parse)
                    .transpose()
                    .map_err(|_| corrupt("device"))?,
                ts: UnixMillis(ts),
                period: Period::from_code(r.i64(1)?).ok_or_else(|| corrupt("period"))?,
                flag: Flag::parse(r.text(3)?).ok_or_else(|| corrupt("flag"))?,
                pm25: conc(r.opt_f64(4)?)?,
                pm10: conc(r.opt_f64(5)?)?,
                interval_secs: r
                    .opt_i64(6)?
                    .map(u32::try_from)
                    .transpose()
                    .map_err(|_| corrupt("interval"))?,
            });
        }
        Ok(out)
    }

    /// Rejections received in `[from, to)`, counted per topic.
    pub fn rejects_by_topic(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.db
            .rows(
                "SELECT topic, count(*) FROM rejects WHERE at_ms >= ?1 AND at_ms < ?2
                 GROUP BY topic ORDER BY count(*) DESC",
                p![from.0, to.0],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?.to_owned(), r.i64(1)?)))
            .collect()
    }

    /// Whether the store takes a write now: SQLite's write lock; on PostgreSQL a
    /// round trip (reconnecting when the server came back) to a server that is not a
    /// read-only standby.
    pub fn check_writable(&mut self) -> Result<(), StoreError> {
        match self.db.engine() {
            Engine::Sqlite => {
                let _tx = self.db.begin(Begin::Exclusive)?;
                Ok(())
            }
            Engine::Postgres => {
                let r = self
                    .db
                    .row("SELECT CAST(pg_is_in_recovery() AS INTEGER)", p![])?;
                match r.map(|r| r.i64(0)) {
                    Some(Ok(0)) => Ok(()),
                    _ => Err(StoreError::ReadOnly),
                }
            }
        }
    }

    /// The database size (SQLite: the main file and the WAL; PostgreSQL: the
    /// database), in bytes.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        if self.db.engine() == Engine::Postgres {
            let r = self
                .db
                .row("SELECT pg_database_size(current_database())", p![])?;
            return Ok(r.map_or(Ok(0), |r| r.i64(0))?.max(0) as u64);
        }
        let Some(path) = self.path() else {
            return Ok(0);
        };
        let main = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let wal = std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(main + wal)
    }
}
