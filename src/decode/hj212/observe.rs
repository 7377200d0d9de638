//! From a decoded [`Frame`] to the service's [`Observation`]s.

use super::error::Hj212Error;
use super::segment::{Factor, FactorValues, Frame};
use crate::aqi::zone::Zone;
use crate::decode::Observation;
use crate::model::{ConcentrationUnit, Flag, Period};

/// What a frame's CN makes of its readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// CN=2011: real-time samples (`-Rtd`).
    RealTime,
    /// CN=2051: minute means (`-Avg`), `DataTime` the start of the minute.
    Minute,
    /// CN=2061: hourly means (`-Avg`), `DataTime` the start of the hour.
    Hour,
    /// CN=2031: daily means (`-Avg`), `DataTime` the start of the day.
    Day,
    /// Any other CN (heartbeats, answers, parameters, status): no readings.
    Other,
}

impl RecordKind {
    /// The kind of a CN.
    pub fn of(cn: u16) -> RecordKind {
        match cn {
            2011 => RecordKind::RealTime,
            2051 => RecordKind::Minute,
            2061 => RecordKind::Hour,
            2031 => RecordKind::Day,
            _ => RecordKind::Other,
        }
    }
}

impl Frame {
    /// What this frame's CN makes of its readings.
    pub fn record_kind(&self) -> RecordKind {
        RecordKind::of(self.cn)
    }
}

/// The frame's PM readings as observations: at most one per frame, at `DataTime` read
/// as local time in `zone`, in the device's configured `unit` (never the standard's
/// ng/m³ default).
///
/// - CN=2011 gives a [`Period::Sample`] from `-Rtd`; CN=2051 a `Sample` from `-Avg` with
///   `interval_secs = 60`; CN=2061 a [`Period::Hour`] from `-Avg` (a valid hour on its
///   own when normal, like JSON `period: hour`).
/// - CN=2031 (daily means) gives a [`Period::Day`] from `-Avg`: stored as the device's
///   own daily value, never counted as a sample or an hour (the store keeps it out of
///   the hourly aggregates).
/// - Any other CN is [`Hj212Error::UnknownCn`], for the caller to count.
/// - A frame without PM2.5 or PM10 gives no observation (its other codes stay on the
///   frame).
/// - One flag per observation: when PM2.5 and PM10 carry different flags and one is
///   normal, the observation keeps only the normal one(s), so a fault on one pollutant
///   does not discard the other's valid value; when neither is normal, PM2.5's flag is
///   used (neither counts either way).
pub fn to_observations(
    frame: &Frame,
    zone: Zone,
    unit: ConcentrationUnit,
) -> Result<Vec<Observation>, Hj212Error> {
    let (period, interval_secs, pick): (_, _, fn(&FactorValues) -> Option<f64>) =
        match frame.record_kind() {
            RecordKind::RealTime => (Period::Sample, None, |f| f.rtd),
            RecordKind::Minute => (Period::Sample, Some(60), |f| f.avg),
            RecordKind::Hour => (Period::Hour, Some(3600), |f| f.avg),
            RecordKind::Day => (Period::Day, Some(86_400), |f| f.avg),
            RecordKind::Other => return Err(Hj212Error::UnknownCn { cn: frame.cn }),
        };
    let data_time = frame
        .data_time
        .ok_or(Hj212Error::MissingField { field: "DataTime" })?;
    let reading = |factor| {
        frame.factor(factor).and_then(|f| {
            let flag = f.flag.map_or(Flag::Normal, |d| d.to_model());
            pick(f).map(|v| (v, flag))
        })
    };
    let mut pm25 = reading(Factor::Pm25);
    let mut pm10 = reading(Factor::Pm10);
    let flag = match (pm25, pm10) {
        (None, None) => return Ok(Vec::new()),
        (Some((_, a)), Some((_, b))) if a != b => {
            if a.is_normal() {
                pm10 = None;
            } else if b.is_normal() {
                pm25 = None;
            }
            if b.is_normal() {
                b
            } else {
                a
            }
        }
        (Some((_, f)), _) | (None, Some((_, f))) => f,
    };
    Ok(vec![Observation {
        ts: data_time.to_unix_millis(zone),
        pm25: pm25.map(|(v, _)| v),
        pm10: pm10.map(|(v, _)| v),
        unit: Some(unit),
        flag,
        device: Some(frame.mn.clone()),
        interval_secs,
        period,
    }])
}
