//! Domain types shared by every stage: sites, timestamps, concentrations, flags and the
//! validated [`Reading`]. No I/O here. A value of one of these types has already passed
//! its checks, so code far from the parser never handles a bare `f64` or `String`.

use std::fmt;

use chrono::{DateTime, Utc};

/// Longest accepted site or device id, in bytes. Long enough for HJ 212 MN codes (24
/// characters) with a prefix, short enough to keep tags and URLs sane.
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused; the text names the rule so an operator can fix the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    BadChar,
}

impl IdError {
    pub fn as_str(self) -> &'static str {
        match self {
            IdError::Empty => "empty",
            IdError::TooLong => "longer than 64 bytes",
            IdError::BadChar => "characters outside A-Z a-z 0-9 - _ .",
        }
    }
}

/// Checks the id charset shared by sites and devices: ASCII letters, digits, `-`, `_`, `.`.
///
/// Why so strict: the id becomes an MQTT topic level, an InfluxDB tag value, a URL path
/// segment and a file name in exports. Spaces, commas, `=`, quotes, backslashes and
/// control characters each break one of those, so they are refused at the door.
fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(IdError::BadChar);
    }
    Ok(())
}

/// A monitoring site (construction site), as named in the MQTT topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId(String);

impl SiteId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_id(s).map(|()| SiteId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device (monitor) id, optional in payloads; same charset as sites.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_id(s).map(|()| DeviceId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The length of a day in milliseconds: a UTC day, and a local day too (zones here are
/// fixed offsets, without daylight saving time). The one definition: day arithmetic on
/// [`UnixMillis`] and the day numbers in the store use it.
pub const MS_PER_DAY: i64 = 86_400_000;

/// An instant, as milliseconds since the Unix epoch (UTC). Milliseconds because that is
/// what devices send at best and what every store we write to keeps exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub fn from_datetime(t: DateTime<Utc>) -> Self {
        UnixMillis(t.timestamp_millis())
    }
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.0)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "{}ms", self.0),
        }
    }
}

/// The pollutants this service measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pollutant {
    Pm25,
    Pm10,
}

impl Pollutant {
    pub const ALL: [Pollutant; 2] = [Pollutant::Pm25, Pollutant::Pm10];
    /// The name used in JSON payloads.
    pub fn json_key(self) -> &'static str {
        match self {
            Pollutant::Pm25 => "pm25",
            Pollutant::Pm10 => "pm10",
        }
    }
    /// The InfluxDB field name (`pm2_5`, `pm10`).
    pub fn field_name(self) -> &'static str {
        match self {
            Pollutant::Pm25 => "pm2_5",
            Pollutant::Pm10 => "pm10",
        }
    }
}

/// Largest concentration accepted, in µg/m³, after unit conversion. Real PM monitors
/// saturate well below this (dust storms reach a few thousand µg/m³); larger values are
/// unit mistakes or broken sensors.
pub const MAX_CONCENTRATION_UG_M3: f64 = 10_000.0;

/// Why a concentration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcentrationError {
    NotFinite,
    Negative,
    TooLarge,
}

/// A mass concentration in µg/m³: finite, ≥ 0 and ≤ [`MAX_CONCENTRATION_UG_M3`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct MicrogramsPerCubicMetre(f64);

impl MicrogramsPerCubicMetre {
    pub fn new(v: f64) -> Result<Self, ConcentrationError> {
        if !v.is_finite() {
            Err(ConcentrationError::NotFinite)
        } else if v < 0.0 {
            Err(ConcentrationError::Negative)
        } else if v > MAX_CONCENTRATION_UG_M3 {
            Err(ConcentrationError::TooLarge)
        } else {
            // -0.0 becomes 0.0 so that equal readings compare and encode equal.
            Ok(MicrogramsPerCubicMetre(v + 0.0))
        }
    }
    pub fn value(self) -> f64 {
        self.0
    }
}

/// The unit a device reports in; converted to µg/m³ on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcentrationUnit {
    MicrogramsPerCubicMetre,
    MilligramsPerCubicMetre,
    NanogramsPerCubicMetre,
}

impl ConcentrationUnit {
    /// Accepts the spellings devices use: `ug/m3`, `µg/m³`, `mg/m3`, `ng/m3` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| match c {
                'µ' | 'μ' => 'u',
                '³' => '3',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        match norm.as_str() {
            "ug/m3" => Some(Self::MicrogramsPerCubicMetre),
            "mg/m3" => Some(Self::MilligramsPerCubicMetre),
            "ng/m3" => Some(Self::NanogramsPerCubicMetre),
            _ => None,
        }
    }
    pub fn to_micrograms(self, v: f64) -> f64 {
        match self {
            Self::MicrogramsPerCubicMetre => v,
            Self::MilligramsPerCubicMetre => v * 1000.0,
            Self::NanogramsPerCubicMetre => v / 1000.0,
        }
    }
}

/// The data flag of a reading (HJ 212-2017 `-Flag`). Only `N` (normal) enters means;
/// the others are stored for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// N: normal.
    Normal,
    /// F: device stopped.
    Stopped,
    /// M: maintenance.
    Maintenance,
    /// S: manual input.
    Manual,
    /// D: fault.
    Fault,
    /// C: calibration.
    Calibration,
    /// T: over range.
    OverRange,
    /// B: communication failure.
    CommFailure,
}

impl Flag {
    /// Parses an HJ 212-2017 flag letter (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        // The stored code (and what most devices send): no copy to upper-case it.
        if let [c] = s.as_bytes() {
            if c.is_ascii_uppercase() {
                return Self::from_letter(*c);
            }
        }
        Self::from_letter(match s.trim().to_ascii_uppercase().as_bytes() {
            [c] => *c,
            _ => return None,
        })
    }

    fn from_letter(c: u8) -> Option<Self> {
        Some(match c {
            b'N' => Flag::Normal,
            b'F' => Flag::Stopped,
            b'M' => Flag::Maintenance,
            b'S' => Flag::Manual,
            b'D' => Flag::Fault,
            b'C' => Flag::Calibration,
            b'T' => Flag::OverRange,
            b'B' => Flag::CommFailure,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Flag::Normal => "N",
            Flag::Stopped => "F",
            Flag::Maintenance => "M",
            Flag::Manual => "S",
            Flag::Fault => "D",
            Flag::Calibration => "C",
            Flag::OverRange => "T",
            Flag::CommFailure => "B",
        }
    }
    pub fn is_normal(self) -> bool {
        self == Flag::Normal
    }
}

/// What interval a reading covers: an instantaneous sample, or a device-computed hourly
/// mean (HJ 212 CN=2061). Part of a reading's identity: a sample and an hourly mean may
/// share a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Sample,
    Hour,
    /// A device's own daily value (HJ 212 CN=2031, or JSON `period: "day"`): stored
    /// and forwarded, never used for validity or means (GB 3095 days are computed from
    /// hours).
    Day,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sample" => Some(Period::Sample),
            "hour" => Some(Period::Hour),
            // Daily values come from HJ 212 CN=2031 only; a JSON device sends samples
            // or hourly means.
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Sample => "sample",
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }
    /// The code stored in SQLite.
    pub fn code(self) -> i64 {
        match self {
            Period::Sample => 0,
            Period::Hour => 1,
            Period::Day => 2,
        }
    }
    pub fn from_code(c: i64) -> Option<Self> {
        match c {
            0 => Some(Period::Sample),
            1 => Some(Period::Hour),
            2 => Some(Period::Day),
            _ => None,
        }
    }
}

/// One validated reading. Identity is `(site, ts, period)`: a second reading with the
/// same identity is a redelivery and changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub site: SiteId,
    pub device: Option<DeviceId>,
    /// The device's sample time (start of the interval for hourly means), never the
    /// arrival time.
    pub ts: UnixMillis,
    pub period: Period,
    pub flag: Flag,
    pub pm25: Option<MicrogramsPerCubicMetre>,
    pub pm10: Option<MicrogramsPerCubicMetre>,
    /// The device's sampling interval, when it says; used for hourly validity.
    pub interval_secs: Option<u32>,
}

impl Reading {
    pub fn value(&self, p: Pollutant) -> Option<MicrogramsPerCubicMetre> {
        match p {
            Pollutant::Pm25 => self.pm25,
            Pollutant::Pm10 => self.pm10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_what_breaks_topics_tags_and_urls() {
        for bad in [
            "", " a", "a b", "a,b", "a=b", "a\"b", "a\\b", "a\nb", "a/b", "a+b", "a#b", "工地",
        ] {
            assert!(SiteId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(SiteId::parse(&"x".repeat(65)), Err(IdError::TooLong));
        assert!(SiteId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(
            SiteId::parse("erqi-01_A.2").unwrap().as_str(),
            "erqi-01_A.2"
        );
    }

    #[test]
    fn concentrations_are_finite_nonnegative_and_bounded() {
        assert_eq!(
            MicrogramsPerCubicMetre::new(f64::NAN),
            Err(ConcentrationError::NotFinite)
        );
        assert_eq!(
            MicrogramsPerCubicMetre::new(f64::INFINITY),
            Err(ConcentrationError::NotFinite)
        );
        assert_eq!(
            MicrogramsPerCubicMetre::new(-0.1),
            Err(ConcentrationError::Negative)
        );
        assert_eq!(
            MicrogramsPerCubicMetre::new(10_000.1),
            Err(ConcentrationError::TooLarge)
        );
        assert_eq!(MicrogramsPerCubicMetre::new(-0.0).unwrap().value(), 0.0);
        assert!(MicrogramsPerCubicMetre::new(-0.0)
            .unwrap()
            .value()
            .is_sign_positive());
    }

    #[test]
    fn units_convert_to_micrograms() {
        let mg = ConcentrationUnit::parse("mg/m³").unwrap();
        assert_eq!(mg.to_micrograms(0.075), 75.0);
        let ng = ConcentrationUnit::parse("NG/M3").unwrap();
        assert_eq!(ng.to_micrograms(35_000.0), 35.0);
        assert_eq!(
            ConcentrationUnit::parse("µg/m3"),
            Some(ConcentrationUnit::MicrogramsPerCubicMetre)
        );
        assert_eq!(ConcentrationUnit::parse("ppm"), None);
    }

    #[test]
    fn flags_round_trip() {
        for c in ["N", "F", "M", "S", "D", "C", "T", "B"] {
            assert_eq!(Flag::parse(c).unwrap().code(), c);
        }
        assert_eq!(Flag::parse("n"), Some(Flag::Normal));
        assert_eq!(Flag::parse("X"), None);
    }
}
