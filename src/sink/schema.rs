//! The InfluxDB schema of a reading: measurement (configurable, default `pm`), tags
//! `site`, `device` (when sent) and `period=hour` for device hourly means, float fields
//! `pm2_5` and `pm10` in µg/m³, string field `flag`, timestamp = the device's sample time.

use super::line_protocol::{FieldValue, Point};
use crate::model::{Period, Pollutant, Reading};

/// The default measurement name.
pub const DEFAULT_MEASUREMENT: &str = "pm";

/// The point for one reading.
pub fn reading_point(r: &Reading, measurement: &str) -> Point {
    let mut tags = vec![("site".to_owned(), r.site.as_str().to_owned())];
    if let Some(d) = &r.device {
        tags.push(("device".to_owned(), d.as_str().to_owned()));
    }
    // Samples carry no period tag (the common case stays the documented `site`/`device`
    // schema); an hourly mean needs one, or it would overwrite the sample stamped at the
    // top of the same hour.
    if r.period != Period::Sample {
        tags.push(("period".to_owned(), r.period.as_str().to_owned()));
    }
    let mut fields = Vec::with_capacity(3);
    for p in Pollutant::ALL {
        if let Some(v) = r.value(p) {
            fields.push((p.field_name().to_owned(), FieldValue::Float(v.value())));
        }
    }
    fields.push(("flag".to_owned(), FieldValue::Str(r.flag.code().to_owned())));
    Point {
        measurement: measurement.to_owned(),
        tags,
        fields,
        ts_ms: r.ts.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceId, Flag, MicrogramsPerCubicMetre, SiteId, UnixMillis};
    use crate::sink::line_protocol::encode;

    #[test]
    fn hourly_means_get_their_own_series() {
        let mut r = Reading {
            site: SiteId::parse("s1").unwrap(),
            device: Some(DeviceId::parse("d1").unwrap()),
            ts: UnixMillis(1_470_013_200_000),
            period: Period::Sample,
            flag: Flag::Maintenance,
            pm25: Some(MicrogramsPerCubicMetre::new(35.5).unwrap()),
            pm10: None,
            interval_secs: None,
        };
        assert_eq!(
            encode(&reading_point(&r, "pm")).unwrap(),
            "pm,device=d1,site=s1 pm2_5=35.5,flag=\"M\" 1470013200000\n"
        );
        r.period = Period::Hour;
        assert!(encode(&reading_point(&r, "pm"))
            .unwrap()
            .starts_with("pm,device=d1,period=hour,site=s1 "));
    }
}
