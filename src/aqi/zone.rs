//! The time zone days are counted in: Beijing natural days (00:00–24:00 at UTC+8, no
//! DST) by default. Only fixed whole-hour offsets are supported, which is what makes UTC
//! hour buckets line up with local hours: readings are bucketed by UTC hour in the store
//! and by local day here.

use chrono::{Duration, NaiveDate};

use crate::model::{UnixMillis, MS_PER_DAY};

/// Zone offsets are whole seconds, so the arithmetic is in seconds (no overflow for any
/// stored instant).
const SECS_PER_DAY: i64 = MS_PER_DAY / 1000;

/// A fixed UTC offset, whole hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    offset_secs: i32,
}

impl Default for Zone {
    fn default() -> Self {
        Zone::BEIJING
    }
}

impl Zone {
    /// China Standard Time, UTC+8 (Asia/Shanghai).
    pub const BEIJING: Zone = Zone {
        offset_secs: 8 * 3600,
    };

    /// Parses `Asia/Shanghai` (and the other names of China's single zone), `UTC`, or an
    /// offset like `+08:00`.
    pub fn parse(s: &str) -> Result<Zone, String> {
        match s {
            "Asia/Shanghai" | "Asia/Chongqing" | "Asia/Harbin" | "PRC" | "Asia/Hong_Kong"
            | "Asia/Taipei" | "Asia/Macau" => return Ok(Zone::BEIJING),
            "UTC" | "Etc/UTC" | "Z" => return Ok(Zone { offset_secs: 0 }),
            _ => {}
        }
        let bad = || {
            format!("time zone {s:?}: use Asia/Shanghai, UTC or a whole-hour offset like +08:00")
        };
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if m != 0 || !(0..=14).contains(&h) {
            return Err(bad());
        }
        Ok(Zone {
            offset_secs: sign * h * 3600,
        })
    }

    /// The local date of an instant.
    pub fn date_of(self, t: UnixMillis) -> NaiveDate {
        let local_secs = t.0.div_euclid(1000) + i64::from(self.offset_secs);
        let days = local_secs.div_euclid(SECS_PER_DAY);
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + Duration::days(days)
    }

    /// The instant a local date starts.
    pub fn start_of(self, d: NaiveDate) -> UnixMillis {
        let days = (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
        UnixMillis((days * SECS_PER_DAY - i64::from(self.offset_secs)) * 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_days_turn_at_16_utc() {
        let z = Zone::BEIJING;
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let t = |s: &str| {
            UnixMillis(
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap()
                    .timestamp_millis(),
            )
        };
        assert_eq!(z.date_of(t("2016-07-31T15:59:59.999Z")), d("2016-07-31"));
        assert_eq!(z.date_of(t("2016-07-31T16:00:00Z")), d("2016-08-01"));
        assert_eq!(z.start_of(d("2016-08-01")), t("2016-07-31T16:00:00Z"));
        assert_eq!(Zone::parse("+08:00").unwrap(), Zone::BEIJING);
        assert!(Zone::parse("+05:30").is_err());
        assert!(Zone::parse("Europe/Berlin").is_err());
    }
}
