//! InfluxDB line protocol: a pure encoder that escapes per the spec and refuses what
//! InfluxDB refuses, so a bad point is caught at ingest (and rejected there) rather than
//! poisoning a batch later. Property-tested against InfluxData's own parser
//! (`influxdb-line-protocol`) in this module's tests.

use thiserror::Error;

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Integer(i64),
    Bool(bool),
    Str(String),
}

/// One point: measurement, tags, fields, timestamp in milliseconds (writes use
/// `precision=ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    pub ts_ms: i64,
}

/// What InfluxDB would refuse. Each names the offending part so the operator can act.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    #[error("empty measurement name")]
    EmptyMeasurement,
    #[error("name {0:?} is reserved (names starting with '_' and 'time' are InfluxDB's)")]
    Reserved(String),
    #[error("empty tag or field key")]
    EmptyKey,
    #[error("tag {0:?} has an empty value")]
    EmptyTagValue(String),
    #[error("a name or tag value contains a line break")]
    LineBreak,
    #[error("a name or tag value ends with a backslash, which InfluxDB's parser refuses")]
    EndsWithBackslash,
    #[error("field {0:?} is NaN or infinite")]
    NotFinite(String),
    #[error("a point needs at least one field")]
    NoFields,
}

/// A field value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    Float(f64),
    Integer(i64),
    Bool(bool),
    Str(&'a str),
}

impl FieldValue {
    fn as_ref(&self) -> FieldRef<'_> {
        match self {
            FieldValue::Float(f) => FieldRef::Float(*f),
            FieldValue::Integer(n) => FieldRef::Integer(*n),
            FieldValue::Bool(b) => FieldRef::Bool(*b),
            FieldValue::Str(s) => FieldRef::Str(s),
        }
    }
}

/// A point whose parts are borrowed: what a caller on the hot path (a reading, a
/// site-hour) builds on the stack instead of a [`Point`]'s owned strings.
#[derive(Debug, Clone, Copy)]
pub struct PointRef<'a> {
    pub measurement: &'a str,
    pub tags: &'a [(&'a str, &'a str)],
    pub fields: &'a [(&'a str, FieldRef<'a>)],
    pub ts_ms: i64,
}

/// Appends one encoded line (with a trailing `\n`) to `out`. On error nothing is
/// appended.
pub fn encode_into(p: &Point, out: &mut String) -> Result<(), LineError> {
    let tags: Vec<(&str, &str)> = p.tags.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let fields: Vec<(&str, FieldRef<'_>)> =
        p.fields.iter().map(|(k, v)| (&k[..], v.as_ref())).collect();
    encode_ref_into(
        &PointRef {
            measurement: &p.measurement,
            tags: &tags,
            fields: &fields,
            ts_ms: p.ts_ms,
        },
        out,
    )
}

/// [`encode_into`] for a borrowed point.
pub fn encode_ref_into(p: &PointRef<'_>, out: &mut String) -> Result<(), LineError> {
    check(p)?;
    escape(p.measurement, Escape::Measurement, out);
    // Sorted tags are InfluxDB's recommendation (faster parsing) and make the encoding
    // canonical, so a recomputed point is byte-identical. Callers mostly pass them
    // sorted already.
    let mut sorted;
    let mut tags = p.tags;
    if !tags.is_sorted_by(|a, b| a.0 <= b.0) {
        sorted = tags.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        tags = &sorted;
    }
    for (k, v) in tags {
        out.push(',');
        escape(k, Escape::Key, out);
        out.push('=');
        escape(v, Escape::Key, out);
    }
    out.push(' ');
    for (i, (k, v)) in p.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape(k, Escape::Key, out);
        out.push('=');
        match v {
            FieldRef::Float(f) => push_float(*f, out),
            FieldRef::Integer(n) => {
                out.push_str(itoa::Buffer::new().format(*n));
                out.push('i');
            }
            FieldRef::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldRef::Str(s) => {
                out.push('"');
                escape(s, Escape::StrField, out);
                out.push('"');
            }
        }
    }
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(p.ts_ms));
    out.push('\n');
    Ok(())
}

/// Appends a finite float as `Display` prints it — the shortest text that parses back
/// to the same value, never with an exponent, `80` for 80.0 (line protocol reads a
/// number without `i` as a float) — at a fraction of `write!`'s cost.
///
/// Devices send concentrations with a few decimals (35.2, 80.15), so first
/// [`push_short_decimal`]; otherwise `ryu`'s text when it has no exponent and cannot be
/// one side of a tie (below), else `Display` itself.
///
/// Why `ryu`'s text is then `Display`'s: both print the shortest digits that read back
/// as `f`, the closest to `f` of those, and break a tie between two equally close ones
/// differently (ryu to even, `Display` up: 2048.00006103515625 → …562 and …563). There
/// is no tie when the shortest text has at most 15 significant digits (every decimal
/// of 15 digits survives the trip through a double and back, `f64::DIGITS`, so no
/// other text of that length reads back as `f`), nor when `f`'s exact value has more
/// than 18 significant digits (the midpoint of two texts of n ≤ 17 digits has n + 1),
/// which [`TIE_FREE_FRACTION_BITS`] ensures. Means of concentrations (35.258333333333333)
/// are of the second kind.
pub(super) fn push_float(f: f64, out: &mut String) {
    if push_short_decimal(f, out) {
        return;
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(f);
    let tie_free =
        significant_digits(s) <= UNIQUE_DIGITS || exact_fraction_bits(f) >= TIE_FREE_FRACTION_BITS;
    if s.contains('e') || !tie_free {
        use std::fmt::Write as _;
        let _ = write!(out, "{f}");
    } else {
        out.push_str(s.strip_suffix(".0").unwrap_or(s));
    }
}

/// The most significant digits a decimal can have and still be the only one of its
/// length that reads back as its double.
const UNIQUE_DIGITS: usize = f64::DIGITS as usize;

/// Binary digits after the point in `f`'s exact value (its decimal expansion has as
/// many digits after the point, the last a 5). At least this many make a plain-text
/// value (≥ about 1e-5, at most 5 zeros after the point) at least 19 significant digits.
const TIE_FREE_FRACTION_BITS: u32 = 24;

/// See [`TIE_FREE_FRACTION_BITS`]: for a finite `f`, the exponent of the lowest set bit
/// of its mantissa, negated (0 for an integer).
fn exact_fraction_bits(f: f64) -> u32 {
    let bits = f.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exp) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    if mantissa == 0 {
        return 0;
    }
    (-(exp + mantissa.trailing_zeros() as i32)).max(0) as u32
}

/// Significant digits of a plain decimal text (`-0.00120` → 3: leading zeros, the sign
/// and the point do not count).
fn significant_digits(s: &str) -> usize {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|b| *b == b'0')
        .count()
}

/// Appends `f` when it is exactly the double nearest some `m / 10^d` with at most
/// [`SHORT_DECIMALS`] decimals and `f` below 10^9; false (nothing appended) otherwise.
///
/// Why this is `Display`'s text: `m as f64 / 10^d` is the correctly rounded quotient,
/// the same double a parser gives for the decimal text of `m / 10^d`; so when it equals
/// `f` that text reads back as `f`. Trying d = 0, 1, 2, … in turn finds the fewest
/// decimals that do; and with at most 12 significant digits that text is the only one
/// of its length reading back as `f` (see [`push_float`]), so it is the shortest
/// round-tripping text `Display` prints.
fn push_short_decimal(f: f64, out: &mut String) -> bool {
    const SCALE: [f64; SHORT_DECIMALS + 1] = [1.0, 10.0, 100.0, 1000.0];
    // Below 10^9 every m < 10^12 is exact in a double. (-0.0 is in that range but
    // prints as "-0".)
    if !(0.0..1e9).contains(&f) || f.is_sign_negative() {
        return false;
    }
    for (d, scale) in SCALE.iter().enumerate() {
        let m = (f * scale).round();
        if m / scale != f {
            continue;
        }
        let m = m as u64;
        let p = 10u64.pow(d as u32);
        let mut buf = itoa::Buffer::new();
        out.push_str(buf.format(m / p));
        if d > 0 {
            out.push('.');
            let frac = buf.format(m % p + p);
            out.push_str(&frac[1..]);
        }
        return true;
    }
    false
}

/// The most decimals [`push_short_decimal`] writes.
const SHORT_DECIMALS: usize = 3;

/// Encodes one point as a line with its trailing newline.
pub fn encode(p: &Point) -> Result<String, LineError> {
    let mut s = String::with_capacity(96);
    encode_into(p, &mut s)?;
    Ok(s)
}

/// What a part of a line escapes (all ASCII): the measurement `,` ` ` `\`; tag keys,
/// tag values and field keys also `=` (the backslash itself too: a value ending in `\`
/// would otherwise escape the separator after it); a string field `"` and `\`.
#[derive(Clone, Copy)]
enum Escape {
    Measurement,
    Key,
    StrField,
}

/// Per byte, a bit per [`Escape`] kind that escapes it: one load per byte in the scan
/// that finds most names need no escaping.
static SPECIAL: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b',' as usize] = 0b011;
    t[b' ' as usize] = 0b011;
    t[b'\\' as usize] = 0b111;
    t[b'=' as usize] = 0b010;
    t[b'"' as usize] = 0b100;
    t
};

impl Escape {
    #[inline]
    fn special(self, b: u8) -> bool {
        let bit = match self {
            Escape::Measurement => 0b001,
            Escape::Key => 0b010,
            Escape::StrField => 0b100,
        };
        SPECIAL[usize::from(b)] & bit != 0
    }
}

fn escape(s: &str, what: Escape, out: &mut String) {
    // Ids and names rarely hold a special character: copy them whole.
    if !s.bytes().any(|b| what.special(b)) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_ascii() && what.special(c as u8) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn check_name(name: &str) -> Result<(), LineError> {
    if name.is_empty() {
        return Err(LineError::EmptyKey);
    }
    if name.starts_with('_') || name == "time" {
        return Err(LineError::Reserved(name.to_owned()));
    }
    check_text(name)
}

fn check_text(s: &str) -> Result<(), LineError> {
    if s.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Err(LineError::LineBreak);
    }
    if s.ends_with('\\') {
        return Err(LineError::EndsWithBackslash);
    }
    Ok(())
}

/// Checks a measurement name as [`encode_into`] does.
pub(super) fn check_measurement(m: &str) -> Result<(), LineError> {
    if m.is_empty() {
        return Err(LineError::EmptyMeasurement);
    }
    check_name(m)
}

/// Appends a measurement name, escaped.
pub(super) fn push_measurement(m: &str, out: &mut String) {
    escape(m, Escape::Measurement, out);
}

fn check(p: &PointRef<'_>) -> Result<(), LineError> {
    check_measurement(p.measurement)?;
    for (k, v) in p.tags {
        check_name(k)?;
        if v.is_empty() {
            return Err(LineError::EmptyTagValue((*k).to_owned()));
        }
        check_text(v)?;
    }
    if p.fields.is_empty() {
        return Err(LineError::NoFields);
    }
    for (k, v) in p.fields {
        check_name(k)?;
        if let FieldRef::Float(f) = v {
            if !f.is_finite() {
                return Err(LineError::NotFinite((*k).to_owned()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use influxdb_line_protocol::{parse_lines, FieldValue as PFv};
    use proptest::prelude::*;

    fn point(tags: Vec<(&str, &str)>, fields: Vec<(&str, FieldValue)>) -> Point {
        Point {
            measurement: "pm".into(),
            tags: tags
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ts_ms: 1_470_013_137_000,
        }
    }

    #[test]
    fn encodes_the_reading_schema() {
        let p = point(
            vec![("site", "s1"), ("device", "d 1")],
            vec![
                ("pm2_5", FieldValue::Float(35.2)),
                ("pm10", FieldValue::Float(80.0)),
                ("flag", FieldValue::Str("N".into())),
            ],
        );
        assert_eq!(
            encode(&p).unwrap(),
            "pm,device=d\\ 1,site=s1 pm2_5=35.2,pm10=80,flag=\"N\" 1470013137000\n"
        );
    }

    #[test]
    fn refuses_what_influxdb_refuses() {
        let f = || vec![("v", FieldValue::Float(1.0))];
        assert_eq!(
            encode(&point(vec![("site", "")], f())),
            Err(LineError::EmptyTagValue("site".into()))
        );
        assert_eq!(
            encode(&point(vec![], vec![("v", FieldValue::Float(f64::NAN))])),
            Err(LineError::NotFinite("v".into()))
        );
        assert!(matches!(
            encode(&point(vec![("_x", "a")], f())),
            Err(LineError::Reserved(_))
        ));
        assert!(matches!(
            encode(&point(vec![], vec![("time", FieldValue::Float(1.0))])),
            Err(LineError::Reserved(_))
        ));
        assert_eq!(encode(&point(vec![], vec![])), Err(LineError::NoFields));
        assert_eq!(
            encode(&point(vec![("a", "x\ny")], f())),
            Err(LineError::LineBreak)
        );
    }

    #[test]
    fn backslashes_survive_and_a_trailing_one_is_refused() {
        let p = point(
            vec![("site", "a\\,b"), ("z", "b")],
            vec![("s", FieldValue::Str("end\\".into()))],
        );
        let line = encode(&p).unwrap();
        let parsed: Vec<_> = parse_lines(line.trim_end())
            .collect::<Result<_, _>>()
            .unwrap();
        let tags = parsed[0].series.tag_set.as_ref().unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].1.to_string(), "a\\,b");
        match &parsed[0].field_set[0].1 {
            PFv::String(v) => assert_eq!(v.to_string(), "end\\"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            encode(&point(
                vec![("site", "a\\")],
                vec![("v", FieldValue::Float(1.0))]
            )),
            Err(LineError::EndsWithBackslash)
        );
    }

    fn text() -> impl Strategy<Value = String> {
        // Printable text heavy in the characters line protocol treats specially.
        proptest::string::string_regex("[a-zA-Z0-9 ,=\"\\\\µ工-]{1,12}").unwrap()
    }

    #[test]
    fn exact_fraction_bits_counts_binary_places() {
        assert_eq!(exact_fraction_bits(0.0), 0);
        assert_eq!(exact_fraction_bits(80.0), 0);
        assert_eq!(exact_fraction_bits(0.5), 1);
        assert_eq!(exact_fraction_bits(-2.75), 2);
        assert_eq!(
            exact_fraction_bits(f64::from_bits(0x40a0_0000_0800_0000)),
            14
        ); // 2048 + 2^-14
        assert_eq!(exact_fraction_bits(0.1), 55);
        assert_eq!(exact_fraction_bits(5e-324), 1074);
    }

    #[test]
    fn floats_print_as_display_prints_them() {
        // Exact ties between two shortest texts, where ryu rounds to even and `Display`
        // up: 2048 + 2^-14, 16384 + 2^-13, 2^26 + 2^-9.
        let ties = [
            0x40a0_0000_0800_0000,
            0x40d0_0000_0200_0000,
            0x4190_0000_0002_0000,
        ];
        for f in ties.map(f64::from_bits) {
            let mut s = String::new();
            push_float(f, &mut s);
            assert_eq!(s, format!("{f}"));
        }
        for f in [
            0.0,
            -0.0,
            80.0,
            35.5,
            0.1,
            1e-5,
            1.5e-7,
            1e15,
            1e16,
            1.7e308,
            5e-324,
            0.05,
            0.005,
            35.2,
            80.15,
            999.999,
            1e9,
            999_999_999.999,
            0.1 + 0.2,
            35.199999999999996,
            20_232_703_586_014.813,
            659_739_402.816_406_3,
        ] {
            let mut s = String::new();
            push_float(f, &mut s);
            assert_eq!(s, format!("{f}"));
        }
    }

    proptest! {
        /// The fast float text is `Display`'s, byte for byte: over random bit patterns
        /// of a finite f64, the values devices send, decimals with up to five places,
        /// and doubles with short binary mantissas (2^e · (1 + k/2^s)), whose exact
        /// values can sit halfway between two shortest texts — where ryu and `Display`
        /// break the tie differently.
        #[test]
        fn float_text_is_display_text(
            bits in any::<u64>(),
            ug in 0.0f64..20_000.0,
            m in 0u64..2_000_000_000_000,
            d in 0i32..6,
            big in 1e7f64..1e17,
            (e, k, s) in (-40i32..60, any::<u32>(), 1i32..33),
        ) {
            let decimal: f64 = format!("{m}e-{d}").parse().unwrap();
            let dyadic = (1.0 + f64::from(k % (1 << s.min(31))) / 2f64.powi(s)) * 2f64.powi(e);
            for f in [f64::from_bits(bits), ug, decimal, decimal * 1000.0 / 1000.0, big, dyadic] {
                if f.is_finite() {
                    let mut s = String::new();
                    push_float(f, &mut s);
                    prop_assert_eq!(s, format!("{f}"));
                }
            }
        }

        #[test]
        fn parser_reads_back_what_we_wrote(
            meas in "[a-z][a-z0-9 ,\\\\]{0,8}",
            tags in proptest::collection::btree_map("[a-z][a-z0-9 ,=\\\\]{0,6}", text(), 0..4),
            fkey in "[a-z][a-z0-9 ,=\\\\]{0,6}",
            fval in -1.0e9f64..1.0e9,
            sval in proptest::string::string_regex("[a-zA-Z \",=\\\\\\n]{0,12}").unwrap(),
            ts in 0i64..4_000_000_000_000,
        ) {
            let p = Point {
                measurement: meas.clone(),
                tags: tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                fields: vec![
                    (fkey.clone(), FieldValue::Float(fval)),
                    ("zz_s".into(), FieldValue::Str(sval.clone())),
                ],
                ts_ms: ts,
            };
            let trailing = meas.ends_with('\\') || fkey.ends_with('\\')
                || tags.iter().any(|(k, v)| k.ends_with('\\') || v.ends_with('\\'));
            if trailing {
                prop_assert_eq!(encode(&p), Err(LineError::EndsWithBackslash));
                return Ok(());
            }
            let line = encode(&p).unwrap();
            prop_assert_eq!(line.matches('\n').count() - sval.matches('\n').count(), 1);
            let parsed: Vec<_> = parse_lines(line.trim_end_matches('\n'))
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("{e}: {line:?}")))?;
            prop_assert_eq!(parsed.len(), 1);
            let l = &parsed[0];
            prop_assert_eq!(l.series.measurement.to_string(), meas);
            let got_tags: Vec<(String, String)> = l.series.tag_set.as_ref()
                .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
                .unwrap_or_default();
            let want_tags: Vec<(String, String)> = tags.into_iter().collect();
            prop_assert_eq!(got_tags, want_tags);
            prop_assert_eq!(l.field_set[0].0.to_string(), fkey);
            match &l.field_set[0].1 { PFv::F64(v) => prop_assert_eq!(*v, fval), other => prop_assert!(false, "{:?}", other) }
            match &l.field_set[1].1 { PFv::String(v) => prop_assert_eq!(v.to_string(), sval), other => prop_assert!(false, "{:?}", other) }
            prop_assert_eq!(l.timestamp, Some(ts));
        }
    }
}
