//! The JSON payload: one object or an array of objects (see the README's "Payload
//! format"). Each element decodes on its own, so one bad reading in an array does not
//! sink the others.

use chrono::DateTime;
use serde_json::{Map, Value};

use super::Observation;
use crate::model::{ConcentrationUnit, Flag, Period, UnixMillis};
use crate::reject::{RejectReason, Rejection};

/// Most readings accepted in one message. A device's backlog upload fits easily; a
/// hostile array cannot make one message cost unbounded work.
pub const MAX_READINGS_PER_MESSAGE: usize = 10_000;

/// Integer timestamps below this are Unix seconds, at or above it milliseconds.
/// 10^11 seconds is the year 5138 and 10^11 ms is 1973, so no real time is ambiguous.
pub const SECONDS_MS_BOUNDARY: i64 = 100_000_000_000;

/// Decodes a payload. `Err` refuses the whole message; each `Ok` element is one reading
/// or its own rejection.
pub fn decode(payload: &[u8]) -> Result<Vec<Result<Observation, Rejection>>, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectReason::NotUtf8, e.to_string()))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::new(RejectReason::BadJson, e.to_string()))?;
    match value {
        Value::Object(obj) => Ok(vec![decode_object(&obj)]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(Rejection::new(RejectReason::EmptyBatch, "empty array"));
            }
            if items.len() > MAX_READINGS_PER_MESSAGE {
                return Err(Rejection::new(
                    RejectReason::BatchTooLarge,
                    format!(
                        "{} readings, at most {MAX_READINGS_PER_MESSAGE}",
                        items.len()
                    ),
                ));
            }
            Ok(items
                .iter()
                .map(|item| match item {
                    Value::Object(obj) => decode_object(obj),
                    other => Err(not_object(other)),
                })
                .collect())
        }
        other => Err(not_object(&other)),
    }
}

fn not_object(v: &Value) -> Rejection {
    Rejection::new(
        RejectReason::NotAnObject,
        format!("expected an object, got {}", type_name(v)),
    )
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, v: &Value) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!("{field}: expected {expected}, got {}", type_name(v)),
    )
}

fn decode_object(obj: &Map<String, Value>) -> Result<Observation, Rejection> {
    let ts = match obj.get("ts") {
        None | Some(Value::Null) => {
            return Err(Rejection::new(RejectReason::MissingTimestamp, "no ts"));
        }
        Some(v) => parse_ts(v)?,
    };
    let pm25 = concentration(obj, "pm25")?;
    let pm10 = concentration(obj, "pm10")?;
    if pm25.is_none() && pm10.is_none() {
        return Err(Rejection::new(
            RejectReason::NoValue,
            "neither pm25 nor pm10",
        ));
    }
    let unit = match obj.get("unit") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(ConcentrationUnit::parse(s).ok_or_else(|| {
            Rejection::new(
                RejectReason::UnknownUnit,
                format!("unit {:?}: use ug/m3, mg/m3 or ng/m3", clip(s)),
            )
        })?),
        Some(v) => return Err(wrong_type("unit", "a string", v)),
    };
    let flag = match obj.get("flag") {
        None | Some(Value::Null) => Flag::Normal,
        Some(Value::String(s)) => Flag::parse(s).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadFlag,
                format!(
                    "flag {:?}: use an HJ 212 flag letter (N, F, M, S, D, C, T, B)",
                    clip(s)
                ),
            )
        })?,
        Some(v) => return Err(wrong_type("flag", "a string", v)),
    };
    let device = match obj.get("device") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(wrong_type("device", "a string", v)),
    };
    let period = match obj.get("period") {
        None | Some(Value::Null) => Period::Sample,
        Some(Value::String(s)) => Period::parse(s).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadPeriod,
                format!("period {:?}: use sample or hour", clip(s)),
            )
        })?,
        Some(v) => return Err(wrong_type("period", "a string", v)),
    };
    let interval_secs = match obj.get("interval_secs") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s @ 1..=86_400) => Some(s as u32),
            _ => {
                return Err(Rejection::new(
                    RejectReason::BadInterval,
                    format!("interval_secs {n}: use a whole number 1..=86400"),
                ))
            }
        },
        Some(v) => return Err(wrong_type("interval_secs", "a number", v)),
    };
    Ok(Observation {
        ts,
        pm25,
        pm10,
        unit,
        flag,
        device,
        interval_secs,
        period,
    })
}

/// Cuts a device-supplied string for an error message.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn concentration(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => {
            // Devices that cannot print JSON numbers send NaN as a string. Name that
            // case: "not a number" helps the operator more than "wrong type".
            let t = s.trim().to_ascii_lowercase();
            let t = t.trim_start_matches(['+', '-']);
            if matches!(t, "nan" | "inf" | "infinity") {
                Err(Rejection::new(
                    RejectReason::NotFinite,
                    format!("{key} is {:?}", clip(s)),
                ))
            } else {
                Err(wrong_type(key, "a number", &Value::String(s.clone())))
            }
        }
        Some(v) => Err(wrong_type(key, "a number", v)),
    }
}

fn parse_ts(v: &Value) -> Result<UnixMillis, Rejection> {
    let bad = |detail: String| Rejection::new(RejectReason::BadTimestamp, detail);
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| UnixMillis(t.timestamp_millis()))
            .map_err(|e| {
                bad(format!(
                    "ts {:?}: {e}; use RFC 3339 with an offset, e.g. 2016-08-01T08:58:57+08:00",
                    clip(s)
                ))
            }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i < 0 {
                    return Err(bad(format!("ts {i} is before 1970")));
                }
                Ok(UnixMillis(if i < SECONDS_MS_BOUNDARY {
                    i * 1000
                } else {
                    i
                }))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !(0.0..1e15).contains(&f) {
                    return Err(bad(format!("ts {n} out of range")));
                }
                let ms = if f < SECONDS_MS_BOUNDARY as f64 {
                    f * 1000.0
                } else {
                    f
                };
                Ok(UnixMillis(ms.round() as i64))
            }
        }
        other => Err(wrong_type("ts", "a string or number", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(payload: &str) -> Result<Observation, Rejection> {
        let mut v = decode(payload.as_bytes())?;
        assert_eq!(v.len(), 1);
        v.pop().unwrap()
    }

    fn reason(payload: &str) -> RejectReason {
        one(payload).unwrap_err().reason
    }

    #[test]
    fn decodes_a_full_object() {
        let o = one(r#"{"ts":"2016-08-01T08:58:57+08:00","pm25":35.2,"pm10":80,"unit":"mg/m3","flag":"N","device":"d1","interval_secs":60,"period":"sample"}"#).unwrap();
        assert_eq!(o.ts, UnixMillis(1_470_013_137_000));
        assert_eq!(o.pm25, Some(35.2));
        assert_eq!(o.pm10, Some(80.0));
        assert_eq!(o.unit, Some(ConcentrationUnit::MilligramsPerCubicMetre));
        assert_eq!(o.device.as_deref(), Some("d1"));
        assert_eq!(o.interval_secs, Some(60));
    }

    #[test]
    fn timestamps_in_seconds_and_millis() {
        assert_eq!(
            one(r#"{"ts":1470013137,"pm10":1}"#).unwrap().ts,
            UnixMillis(1_470_013_137_000)
        );
        assert_eq!(
            one(r#"{"ts":1470013137123,"pm10":1}"#).unwrap().ts,
            UnixMillis(1_470_013_137_123)
        );
        assert_eq!(
            one(r#"{"ts":1470013137.5,"pm10":1}"#).unwrap().ts,
            UnixMillis(1_470_013_137_500)
        );
    }

    #[test]
    fn each_mistake_has_its_reason() {
        use RejectReason::*;
        assert_eq!(reason(r#"{"pm10":1}"#), MissingTimestamp);
        assert_eq!(
            reason(r#"{"ts":"2016-08-01 08:58:57","pm10":1}"#),
            BadTimestamp
        );
        assert_eq!(reason(r#"{"ts":-5,"pm10":1}"#), BadTimestamp);
        assert_eq!(reason(r#"{"ts":true,"pm10":1}"#), WrongType);
        assert_eq!(reason(r#"{"ts":1470013137}"#), NoValue);
        assert_eq!(reason(r#"{"ts":1470013137,"pm10":"12"}"#), WrongType);
        assert_eq!(reason(r#"{"ts":1470013137,"pm10":"NaN"}"#), NotFinite);
        assert_eq!(reason(r#"{"ts":1470013137,"pm25":"-Infinity"}"#), NotFinite);
        assert_eq!(
            reason(r#"{"ts":1470013137,"pm10":1,"unit":"ppm"}"#),
            UnknownUnit
        );
        assert_eq!(reason(r#"{"ts":1470013137,"pm10":1,"flag":"Q"}"#), BadFlag);
        assert_eq!(
            reason(r#"{"ts":1470013137,"pm10":1,"period":"day"}"#),
            BadPeriod
        );
        assert_eq!(
            reason(r#"{"ts":1470013137,"pm10":1,"interval_secs":0}"#),
            BadInterval
        );
        assert_eq!(
            reason(r#"{"ts":1470013137,"pm10":1,"device":7}"#),
            WrongType
        );
    }

    #[test]
    fn whole_message_rejections() {
        use RejectReason::*;
        let r = |p: &[u8]| decode(p).unwrap_err().reason;
        assert_eq!(r(b"\xff\xfe"), NotUtf8);
        assert_eq!(r(b"{"), BadJson);
        assert_eq!(r(b"42"), NotAnObject);
        assert_eq!(r(b"[]"), EmptyBatch);
        assert_eq!(r(b"{\"ts\":1e400,\"pm10\":1}"), BadJson);
    }

    #[test]
    fn one_bad_element_does_not_sink_the_array() {
        let v = decode(br#"[{"ts":1470013137,"pm10":1},7,{"ts":1470013138,"pm10":"x"},{"ts":1470013139,"pm25":2}]"#).unwrap();
        assert_eq!(v.len(), 4);
        assert!(v[0].is_ok());
        assert_eq!(v[1].as_ref().unwrap_err().reason, RejectReason::NotAnObject);
        assert_eq!(v[2].as_ref().unwrap_err().reason, RejectReason::WrongType);
        assert!(v[3].is_ok());
    }
}
