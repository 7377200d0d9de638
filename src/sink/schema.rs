//! The InfluxDB schema of a reading: measurement (configurable, default `pm`), tags
//! `site`, `device` (when sent) and `period=hour` for device hourly means, float fields
//! `pm2_5` and `pm10` in µg/m³, string field `flag`, timestamp = the device's sample time.

use super::line_protocol::{self, FieldValue, LineError, Point};
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

/// Appends the line of one reading to `out`: the same line as encoding
/// [`reading_point`] (property-tested below), written straight into `out` (the sink's
/// per-reading path). Only the measurement is checked and escaped here: every other
/// part is valid by its type — site and device ids are non-empty and drawn from
/// `A-Z a-z 0-9 - _ .` (nothing line protocol escapes or refuses), concentrations are
/// finite, flag codes and period names are fixed ASCII words — so the generic
/// encoder's seven name checks and nine escape scans per reading would find nothing.
pub fn encode_reading(r: &Reading, measurement: &str, out: &mut String) -> Result<(), LineError> {
    line_protocol::check_measurement(measurement)?;
    line_protocol::push_measurement(measurement, out);
    // Tags in key order (device < period < site), as the encoder sorts them.
    if let Some(d) = &r.device {
        out.push_str(",device=");
        out.push_str(d.as_str());
    }
    if r.period != Period::Sample {
        out.push_str(",period=");
        out.push_str(r.period.as_str());
    }
    out.push_str(",site=");
    out.push_str(r.site.as_str());
    let mut sep = ' ';
    for p in Pollutant::ALL {
        if let Some(v) = r.value(p) {
            out.push(sep);
            out.push_str(p.field_name());
            out.push('=');
            line_protocol::push_float(v.value(), out);
            sep = ',';
        }
    }
    out.push(sep);
    out.push_str("flag=\"");
    out.push_str(r.flag.code());
    out.push_str("\" ");
    out.push_str(itoa::Buffer::new().format(r.ts.0));
    out.push('\n');
    Ok(())
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The stack-built line is the line of the owned point, for every shape of
        /// reading.
        #[test]
        fn the_reading_line_is_the_point_s_line(
            site in "[A-Za-z0-9._-]{1,12}",
            device in proptest::option::of("[A-Za-z0-9._-]{1,12}"),
            period in 0i64..3,
            flag in "[NFMSDCTB]",
            pm25 in proptest::option::of(0.0f64..2000.0),
            pm10 in proptest::option::of(0.0f64..2000.0),
            ts in 0i64..4_000_000_000_000,
            measurement in "(pm|[a-z_][a-z0-9_, =]{0,5}|time|)",
        ) {
            let r = Reading {
                site: SiteId::parse(&site).unwrap(),
                device: device.map(|d| DeviceId::parse(&d).unwrap()),
                ts: UnixMillis(ts),
                period: Period::from_code(period).unwrap(),
                flag: Flag::parse(&flag).unwrap(),
                pm25: pm25.map(|v| MicrogramsPerCubicMetre::new(v).unwrap()),
                pm10: pm10.map(|v| MicrogramsPerCubicMetre::new(v).unwrap()),
                interval_secs: None,
            };
            let mut line = String::from("before\n");
            match (
                encode_reading(&r, &measurement, &mut line),
                encode(&reading_point(&r, &measurement)),
            ) {
                (Ok(()), Ok(want)) => proptest::prop_assert_eq!(line, format!("before\n{want}")),
                // A refused measurement: the same refusal, and nothing appended.
                (got, want) => {
                    proptest::prop_assert_eq!(got, want.map(|_| ()));
                    proptest::prop_assert_eq!(line, "before\n");
                }
            }
        }
    }
}
