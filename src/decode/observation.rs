//! The decoders' output: one reading as a device stated it, before policy.

use crate::model::{ConcentrationUnit, Flag, Period, UnixMillis};

/// One reading as a device stated it, typed but not yet checked against policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub ts: UnixMillis,
    /// Concentrations in `unit`, as sent.
    pub pm25: Option<f64>,
    pub pm10: Option<f64>,
    /// The unit the payload states; `None`: the site's configured unit (µg/m³ unless
    /// the site registry says otherwise).
    pub unit: Option<ConcentrationUnit>,
    pub flag: Flag,
    pub device: Option<String>,
    pub interval_secs: Option<u32>,
    pub period: Period,
}
