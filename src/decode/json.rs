//! The JSON payload: one object or an array of objects (see the README's "Payload
//! format"). Each element decodes on its own, so one bad reading in an array does not
//! sink the others.

use chrono::DateTime;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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
///
/// The payload is read in one pass by [`Payload`]'s visitor: each object's known keys
/// are kept (the last of a repeated key, as a JSON object map would), unknown ones
/// skipped (read as a `Value` and dropped, so that the parser's nesting limit still
/// refuses a hostile depth as bad JSON), and no tree of the whole message is built — a `Value` tree cost an
/// allocation per key and per object, about half the decoder's time per reading.
pub fn decode(payload: &[u8]) -> Result<Vec<Result<Observation, Rejection>>, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectReason::NotUtf8, e.to_string()))?;
    let bad_json = |e: serde_json::Error| Rejection::new(RejectReason::BadJson, e.to_string());
    let mut de = serde_json::Deserializer::from_str(text);
    let top = Payload::deserialize(&mut de).map_err(bad_json)?;
    de.end().map_err(bad_json)?;
    match top {
        Payload::One(obs) => Ok(vec![obs]),
        Payload::Many(items, len) => {
            if len == 0 {
                return Err(Rejection::new(RejectReason::EmptyBatch, "empty array"));
            }
            if len > MAX_READINGS_PER_MESSAGE {
                return Err(Rejection::new(
                    RejectReason::BatchTooLarge,
                    format!("{len} readings, at most {MAX_READINGS_PER_MESSAGE}"),
                ));
            }
            Ok(items)
        }
        Payload::Other(kind) => Err(not_object(kind)),
    }
}

/// A whole payload as the visitor reads it.
enum Payload {
    One(Result<Observation, Rejection>),
    /// The elements (none kept past [`MAX_READINGS_PER_MESSAGE`]) and how many there were.
    Many(Vec<Result<Observation, Rejection>>, usize),
    /// Not an object or an array: what it was.
    Other(&'static str),
}

/// One array element: an object decoded, or what else it was.
struct Element(Result<Observation, Rejection>);

/// The keys a reading object may have; a key's position is its slot in [`Fields`].
const KEYS: [&str; 8] = [
    "ts",
    "pm25",
    "pm10",
    "unit",
    "flag",
    "device",
    "period",
    "interval_secs",
];
const TS: usize = 0;
const PM25: usize = 1;
const PM10: usize = 2;
const UNIT: usize = 3;
const FLAG: usize = 4;
const DEVICE: usize = 5;
const PERIOD: usize = 6;
const INTERVAL: usize = 7;

/// A known key's value as the decoder needs it: the scalars themselves (a string
/// borrowed from the payload unless it had escapes), containers only as what they
/// were. Building a `Value` here cost an allocation for every string value (the
/// timestamp of every reading) and a drop; this costs neither.
#[derive(Default)]
enum Scalar<'de> {
    /// JSON `null`, or the key was absent: the two mean the same for every field.
    #[default]
    Null,
    Bool,
    Number(serde_json::Number),
    Str(std::borrow::Cow<'de, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    /// "a number", "a string", … for a wrong-type rejection.
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Number(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Number(n.into()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar<'de>, E> {
                // The parser refuses what is out of range, so `n` is finite.
                Ok(serde_json::Number::from_f64(n).map_or(Scalar::Null, Scalar::Number))
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(s.into()))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(s.to_owned().into()))
            }
            // Containers are walked as `Value`s (and dropped) so that the parser's
            // nesting limit refuses a hostile depth as bad JSON.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(Scalar::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<Value, Value>()?.is_some() {}
                Ok(Scalar::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// A reading object's known keys and their values ([`Scalar::Null`] when absent).
#[derive(Default)]
struct Fields<'de>([Scalar<'de>; KEYS.len()]);

/// A key of a reading object: its slot in [`Fields`], or None for one we ignore.
struct Key(Option<usize>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
                Ok(Key(KEYS.iter().position(|n| *n == k)))
            }
        }
        d.deserialize_identifier(V)
    }
}

fn read_fields<'de, A: MapAccess<'de>>(mut map: A) -> Result<Fields<'de>, A::Error> {
    let mut f = Fields::default();
    while let Some(Key(slot)) = map.next_key()? {
        match slot {
            Some(i) => f.0[i] = map.next_value()?,
            None => {
                map.next_value::<Value>()?;
            }
        }
    }
    Ok(f)
}

/// What a JSON value is, for "expected an object, got …" (consumed and dropped).
macro_rules! other_kinds {
    ($out:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(($out)("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(($out)("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(($out)("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(($out)("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(($out)("a string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(($out)("null"))
        }
    };
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Element, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a reading")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Element, A::Error> {
                Ok(Element(decode_object(&read_fields(map)?)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(Element(Err(not_object("an array"))))
            }
            other_kinds!(|kind| Element(Err(not_object(kind))));
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a reading or an array of readings")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Payload, A::Error> {
                Ok(Payload::One(decode_object(&read_fields(map)?)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                let mut len = 0;
                // Past the limit the rest is only counted (the refusal says how many).
                while len < MAX_READINGS_PER_MESSAGE {
                    match seq.next_element::<Element>()? {
                        Some(e) => items.push(e.0),
                        None => return Ok(Payload::Many(items, len)),
                    }
                    len += 1;
                }
                while seq.next_element::<Value>()?.is_some() {
                    len += 1;
                }
                Ok(Payload::Many(items, len))
            }
            other_kinds!(Payload::Other);
        }
        d.deserialize_any(V)
    }
}

fn not_object(kind: &str) -> Rejection {
    Rejection::new(
        RejectReason::NotAnObject,
        format!("expected an object, got {kind}"),
    )
}

fn wrong_type(field: &str, expected: &str, got: &Scalar<'_>) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!("{field}: expected {expected}, got {}", got.kind()),
    )
}

fn decode_object(Fields(obj): &Fields<'_>) -> Result<Observation, Rejection> {
    let ts = match &obj[TS] {
        Scalar::Null => {
            return Err(Rejection::new(RejectReason::MissingTimestamp, "no ts"));
        }
        v => parse_ts(v)?,
    };
    let pm25 = concentration(&obj[PM25], KEYS[PM25])?;
    let pm10 = concentration(&obj[PM10], KEYS[PM10])?;
    if pm25.is_none() && pm10.is_none() {
        return Err(Rejection::new(
            RejectReason::NoValue,
            "neither pm25 nor pm10",
        ));
    }
    let unit = match &obj[UNIT] {
        Scalar::Null => None,
        Scalar::Str(s) => Some(ConcentrationUnit::parse(s).ok_or_else(|| {
            Rejection::new(
                RejectReason::UnknownUnit,
                format!("unit {:?}: use ug/m3, mg/m3 or ng/m3", clip(s)),
            )
        })?),
        v => return Err(wrong_type("unit", "a string", v)),
    };
    let flag = match &obj[FLAG] {
        Scalar::Null => Flag::Normal,
        Scalar::Str(s) => Flag::parse(s).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadFlag,
                format!(
                    "flag {:?}: use an HJ 212 flag letter (N, F, M, S, D, C, T, B)",
                    clip(s)
                ),
            )
        })?,
        v => return Err(wrong_type("flag", "a string", v)),
    };
    let device = match &obj[DEVICE] {
        Scalar::Null => None,
        Scalar::Str(s) => Some(s.clone().into_owned()),
        v => return Err(wrong_type("device", "a string", v)),
    };
    let period = match &obj[PERIOD] {
        Scalar::Null => Period::Sample,
        Scalar::Str(s) => Period::parse(s).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadPeriod,
                format!("period {:?}: use sample or hour", clip(s)),
            )
        })?,
        v => return Err(wrong_type("period", "a string", v)),
    };
    let interval_secs = match &obj[INTERVAL] {
        Scalar::Null => None,
        Scalar::Number(n) => match n.as_u64() {
            Some(s @ 1..=86_400) => Some(s as u32),
            _ => {
                return Err(Rejection::new(
                    RejectReason::BadInterval,
                    format!("interval_secs {n}: use a whole number 1..=86400"),
                ))
            }
        },
        v => return Err(wrong_type("interval_secs", "a number", v)),
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

fn concentration(v: &Scalar<'_>, key: &str) -> Result<Option<f64>, Rejection> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Number(n) => Ok(n.as_f64()),
        Scalar::Str(s) => {
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
                Err(wrong_type(key, "a number", v))
            }
        }
        v => Err(wrong_type(key, "a number", v)),
    }
}

fn parse_ts(v: &Scalar<'_>) -> Result<UnixMillis, Rejection> {
    let bad = |detail: String| Rejection::new(RejectReason::BadTimestamp, detail);
    match v {
        Scalar::Str(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| UnixMillis(t.timestamp_millis()))
            .map_err(|e| {
                bad(format!(
                    "ts {:?}: {e}; use RFC 3339 with an offset, e.g. 2016-08-01T08:58:57+08:00",
                    clip(s)
                ))
            }),
        Scalar::Number(n) => {
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
    fn strings_with_escapes_decode_like_plain_ones() {
        // Escaped strings are not borrowed from the payload: the owned path.
        let o = one(
            r#"{"ts":"2016-08-01T08:58:57\u002B08:00","pm25":1,"device":"d\"1","flag":"\u004E"}"#,
        )
        .unwrap();
        assert_eq!(o.ts, UnixMillis(1_470_013_137_000));
        assert_eq!(o.device.as_deref(), Some("d\"1"));
        assert_eq!(o.flag, Flag::Normal);
        let r = one(r#"{"ts":1470013137,"pm10":"\u004EaN"}"#).unwrap_err();
        assert_eq!(r.reason, RejectReason::NotFinite);
        let r = one(r#"{"ts":1470013137,"pm10":{"v":1}}"#).unwrap_err();
        assert_eq!(r.detail, "pm10: expected a number, got an object");
        let r = one(r#"{"ts":[1],"pm10":1}"#).unwrap_err();
        assert_eq!(r.detail, "ts: expected a string or number, got an array");
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
    fn unknown_keys_are_skipped_and_a_repeated_key_counts_once_as_its_last() {
        let o = one(r#"{"x":{"deep":[1,{"a":null}]},"pm10":1,"ts":1470013137,"pm10":2.5,"y":"z"}"#)
            .unwrap();
        assert_eq!(o.pm10, Some(2.5));
        assert_eq!(o.ts, UnixMillis(1_470_013_137_000));
        assert_eq!(
            one(r#"{"ts":null,"pm10":1}"#).unwrap_err().reason,
            RejectReason::MissingTimestamp
        );
    }

    #[test]
    fn every_kind_of_non_object_is_named_and_a_too_long_array_is_counted() {
        let v = decode(br#"[null,true,1,"s",[1,[2]],{"ts":1470013137,"pm10":1}]"#).unwrap();
        let details: Vec<String> = v[..5]
            .iter()
            .map(|r| r.as_ref().unwrap_err().detail.clone())
            .collect();
        assert_eq!(
            details,
            [
                "expected an object, got null",
                "expected an object, got a boolean",
                "expected an object, got a number",
                "expected an object, got a string",
                "expected an object, got an array"
            ]
        );
        assert!(v[5].is_ok());
        let many = format!("[{}]", vec!["{}"; MAX_READINGS_PER_MESSAGE + 2].join(","));
        let r = decode(many.as_bytes()).unwrap_err();
        assert_eq!(r.reason, RejectReason::BatchTooLarge);
        assert!(r.detail.starts_with("10002 readings"), "{}", r.detail);
        assert_eq!(decode(b"{} x").unwrap_err().reason, RejectReason::BadJson);
        // Too deep is bad JSON wherever it is, never a stack overflow.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            decode(deep.as_bytes()).unwrap_err().reason,
            RejectReason::BadJson
        );
        let deep = format!(
            "{{\"x\":{}{},\"ts\":1,\"pm10\":1}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(
            decode(deep.as_bytes()).unwrap_err().reason,
            RejectReason::BadJson
        );
        assert_eq!(
            decode(b"\"s\"").unwrap_err().reason,
            RejectReason::NotAnObject
        );
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
