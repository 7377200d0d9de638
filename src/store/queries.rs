//! Read queries for the API: site activity, raw series, rejects, health.

use rusqlite::params;

use super::{Store, StoreError};
use crate::model::{DeviceId, Flag, MicrogramsPerCubicMetre, Period, Reading, SiteId, UnixMillis};

impl Store {
    /// Every site with its latest reading time and latest receive time (ms). One index
    /// seek per site, not a scan of the readings.
    pub fn site_activity(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts_ms, received_ms FROM readings WHERE site = ?1 ORDER BY ts_ms DESC LIMIT 1",
        )?;
        let mut rx_stmt = self.conn.prepare_cached(
            "SELECT max(received_ms) FROM (SELECT received_ms FROM readings WHERE site = ?1 ORDER BY ts_ms DESC LIMIT 100)",
        )?;
        for site in self.sites()? {
            let (ts, _): (i64, i64) = stmt.query_row([&site], |r| Ok((r.get(0)?, r.get(1)?)))?;
            // The latest upload is among the latest readings (a backlog can be old data
            // received now; the last hundred readings cover it well enough).
            let rx: i64 = rx_stmt.query_row([&site], |r| r.get(0))?;
            out.push((site, ts, rx));
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts_ms, period, device, flag, pm25, pm10, interval_secs FROM readings
             WHERE site = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms, period",
        )?;
        let site_id =
            SiteId::parse(site).map_err(|_| StoreError::Corrupt(format!("site {site:?}")))?;
        let rows = stmt.query_map(params![site, from.0, to.0], |r| {
            let device: Option<String> = r.get(2)?;
            let flag: String = r.get(3)?;
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                device,
                flag,
                r.get::<_, Option<f64>>(4)?,
                r.get::<_, Option<f64>>(5)?,
                r.get::<_, Option<u32>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ts, period, device, flag, pm25, pm10, interval) = row?;
            let corrupt = |w: &str| StoreError::Corrupt(format!("{site} {ts}: {w}"));
            let conc = |v: Option<f64>| {
                v.map(MicrogramsPerCubicMetre::new)
                    .transpose()
                    .map_err(|_| corrupt("value"))
            };
            out.push(Reading {
                site: site_id.clone(),
                device: device
                    .map(|d| DeviceId::parse(&d))
                    .transpose()
                    .map_err(|_| corrupt("device"))?,
                ts: UnixMillis(ts),
                period: Period::from_code(period).ok_or_else(|| corrupt("period"))?,
                flag: Flag::parse(&flag).ok_or_else(|| corrupt("flag"))?,
                pm25: conc(pm25)?,
                pm10: conc(pm10)?,
                interval_secs: interval,
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT topic, count(*) FROM rejects WHERE at_ms >= ?1 AND at_ms < ?2 GROUP BY topic ORDER BY count(*) DESC",
        )?;
        let rows = stmt.query_map(params![from.0, to.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether the store takes a write lock now.
    pub fn check_writable(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.rollback()?;
        Ok(())
    }

    /// The database size (main file and WAL), in bytes.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
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
