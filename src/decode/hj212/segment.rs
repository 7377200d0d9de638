//! The data segment: `QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&`, parsed
//! into a [`Frame`]. Inside `CP`, `;` separates pollutants and `,` a pollutant's items;
//! every item is `key=value`. See the module doc of [`super`] for what is accepted.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::error::{Hj212Error, Quote};
use crate::aqi::zone::Zone;
use crate::model::{Flag, UnixMillis};

/// The HJ 212 edition a frame follows, from bits 2–7 of `Flag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HJ/T 212-2005 (bits 0; also frames without `Flag`).
    Hjt2005,
    /// HJ 212-2017 (bits 1: `Flag=4`, `5`, `6`, `7`).
    Hj2017,
    /// HJ 212-2025, in force since 2026-01-01 (bits 2: `Flag=8`, `9`, …), read with the
    /// 2017 field rules.
    Hj2025,
}

impl Version {
    /// The value of Flag bits 2–7.
    pub fn bits(self) -> u8 {
        match self {
            Version::Hjt2005 => 0,
            Version::Hj2017 => 1,
            Version::Hj2025 => 2,
        }
    }

    /// The version named by Flag bits 2–7, if known.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Version::Hjt2005),
            1 => Some(Version::Hj2017),
            2 => Some(Version::Hj2025),
            _ => None,
        }
    }
}

/// Flag bit 0 (`A`): the sender wants a CN=9014 answer.
pub const FLAG_REPLY: u8 = 1;
/// Flag bit 1 (`D`): the frame is one part of a split packet (`PNUM`/`PNO` present).
pub const FLAG_SPLIT: u8 = 2;

/// The `Flag` value for a version and the two bits.
pub fn flag_value(version: Version, wants_reply: bool, split: bool) -> u8 {
    version.bits() << 2
        | if wants_reply { FLAG_REPLY } else { 0 }
        | if split { FLAG_SPLIT } else { 0 }
}

/// `PNUM`/`PNO` of one part of a split packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// `PNUM`: how many parts, ≥ 1.
    pub total: u16,
    /// `PNO`: this part, 1..=total.
    pub number: u16,
}

/// `DataTime`: a local wall-clock time in the device's zone (Beijing time in practice),
/// the *start* of the record's interval for minute, hour and day records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataTime {
    /// The local time, milliseconds included.
    pub local: NaiveDateTime,
    /// Sent in the 17-digit form `YYYYMMDDhhmmsszzz` (kept so the encoder writes it back).
    pub with_millis: bool,
}

impl DataTime {
    /// The instant this local time names in `zone` (a fixed offset, so never ambiguous).
    pub fn to_unix_millis(self, zone: Zone) -> UnixMillis {
        let day_start = zone.start_of(self.local.date());
        let t = self.local.time();
        let ms =
            i64::from(t.num_seconds_from_midnight()) * 1000 + i64::from(t.nanosecond() / 1_000_000);
        UnixMillis(day_start.0 + ms)
    }

    /// Parses the 14-digit or 17-digit form.
    pub fn parse(s: &str) -> Result<DataTime, Hj212Error> {
        let bad = || Hj212Error::BadDataTime {
            got: Quote::of(s.as_bytes()),
        };
        let b = s.as_bytes();
        if !(b.len() == 14 || b.len() == 17) || !b.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let n = |from: usize, to: usize| -> u32 {
            b[from..to]
                .iter()
                .fold(0, |n, &d| n * 10 + u32::from(d - b'0'))
        };
        let year = i32::try_from(n(0, 4)).map_err(|_| bad())?;
        let date = NaiveDate::from_ymd_opt(year, n(4, 6), n(6, 8)).ok_or_else(bad)?;
        let millis = if b.len() == 17 { n(14, 17) } else { 0 };
        // Seconds must be < 60: chrono reads a millisecond field ≥ 1000 as a leap second,
        // and n(14, 17) < 1000 keeps that out.
        let time = NaiveTime::from_hms_milli_opt(n(8, 10), n(10, 12), n(12, 14), millis)
            .ok_or_else(bad)?;
        Ok(DataTime {
            local: date.and_time(time),
            with_millis: b.len() == 17,
        })
    }

    /// The form it was sent in.
    pub fn format(self) -> String {
        if self.with_millis {
            self.local.format("%Y%m%d%H%M%S%3f").to_string()
        } else {
            self.local.format("%Y%m%d%H%M%S").to_string()
        }
    }
}

/// The pollutant and meteorological codes this service reads. Every other code is
/// ignored (and listed by [`Frame::ignored_codes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Factor {
    /// `a34002`, µg/m³ (unit per device).
    Pm10,
    /// `a34004`, µg/m³ (unit per device).
    Pm25,
    /// `a34001`, total suspended particulates.
    Tsp,
    /// `a01001`, air temperature, °C.
    Temperature,
    /// `a01002`, relative humidity, %.
    Humidity,
    /// `a01007`, wind speed, m/s.
    WindSpeed,
    /// `a01008`, wind direction, degrees.
    WindDirection,
    /// `LA`, A-weighted sound level, dB(A).
    Noise,
}

impl Factor {
    /// Every factor read.
    pub const ALL: [Factor; 8] = [
        Factor::Pm10,
        Factor::Pm25,
        Factor::Tsp,
        Factor::Temperature,
        Factor::Humidity,
        Factor::WindSpeed,
        Factor::WindDirection,
        Factor::Noise,
    ];

    /// The HJ 212 code.
    pub fn code(self) -> &'static str {
        match self {
            Factor::Pm10 => "a34002",
            Factor::Pm25 => "a34004",
            Factor::Tsp => "a34001",
            Factor::Temperature => "a01001",
            Factor::Humidity => "a01002",
            Factor::WindSpeed => "a01007",
            Factor::WindDirection => "a01008",
            Factor::Noise => "LA",
        }
    }

    /// The factor an HJ 212 code names, if it is one this service reads.
    pub fn from_code(code: &str) -> Option<Factor> {
        Factor::ALL.into_iter().find(|f| f.code() == code)
    }
}

/// An HJ/T 212-2005 air-station data flag (a digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StationFlag {
    /// `0`: calibration.
    Calibration,
    /// `1`: meteorological.
    Meteorological,
    /// `2`: abnormal.
    Abnormal,
    /// `3`: normal.
    Normal,
}

/// A pollutant's `-Flag` as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataFlag {
    /// An HJ 212-2017 letter: N, F, M, S, D, C, T, B.
    Letter(Flag),
    /// An HJ/T 212-2005 air-station digit, 0–3.
    Station(StationFlag),
    /// Another single ASCII letter or digit (HJ/T 212-2005 `P` power failure, …).
    Other(char),
}

impl DataFlag {
    /// Parses one flag character; `None` for anything that is not one ASCII letter or
    /// digit.
    pub fn parse(s: &str) -> Option<DataFlag> {
        let mut chars = s.chars();
        let c = chars.next()?;
        if chars.next().is_some() || !c.is_ascii_alphanumeric() {
            return None;
        }
        Some(match c {
            '0' => DataFlag::Station(StationFlag::Calibration),
            '1' => DataFlag::Station(StationFlag::Meteorological),
            '2' => DataFlag::Station(StationFlag::Abnormal),
            '3' => DataFlag::Station(StationFlag::Normal),
            c => match Flag::parse(s) {
                Some(f) if c.is_ascii_uppercase() => DataFlag::Letter(f),
                _ => DataFlag::Other(c),
            },
        })
    }

    /// The character sent.
    pub fn as_char(self) -> char {
        match self {
            DataFlag::Letter(f) => f.code().chars().next().unwrap_or('N'),
            DataFlag::Station(StationFlag::Calibration) => '0',
            DataFlag::Station(StationFlag::Meteorological) => '1',
            DataFlag::Station(StationFlag::Abnormal) => '2',
            DataFlag::Station(StationFlag::Normal) => '3',
            DataFlag::Other(c) => c,
        }
    }

    /// The service's flag. Only `N` and the station `3` are normal, so only they enter
    /// means. Station `0` is calibration, `2` (abnormal) a fault; station `1`
    /// (meteorological) has no counterpart and becomes maintenance, and unknown letters
    /// (2005's `P` power failure, …) a fault: stored, never counted.
    pub fn to_model(self) -> Flag {
        match self {
            DataFlag::Letter(f) => f,
            DataFlag::Station(StationFlag::Normal) => Flag::Normal,
            DataFlag::Station(StationFlag::Calibration) => Flag::Calibration,
            DataFlag::Station(StationFlag::Abnormal) => Flag::Fault,
            DataFlag::Station(StationFlag::Meteorological) => Flag::Maintenance,
            DataFlag::Other(_) => Flag::Fault,
        }
    }
}

/// One code's items inside `CP`: `code-Rtd`, `-Avg`, `-Min`, `-Max`, `-Flag`.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorValues {
    /// The code as sent (`a34004`, `LA`, `B01`, …).
    pub code: String,
    /// `-Rtd`: the real-time value (CN=2011).
    pub rtd: Option<f64>,
    /// `-Avg`: the interval mean (CN=2051, 2061, 2031).
    pub avg: Option<f64>,
    /// `-Min`.
    pub min: Option<f64>,
    /// `-Max`.
    pub max: Option<f64>,
    /// `-Flag`; absent means normal, as in the JSON payload.
    pub flag: Option<DataFlag>,
}

impl FactorValues {
    /// Empty items for `code`.
    pub fn new(code: impl Into<String>) -> Self {
        FactorValues {
            code: code.into(),
            rtd: None,
            avg: None,
            min: None,
            max: None,
            flag: None,
        }
    }

    /// The factor, if this service reads the code.
    pub fn factor(&self) -> Option<Factor> {
        Factor::from_code(&self.code)
    }
}

/// One decoded frame: the header fields, `DataTime`, every code's items and the other
/// `CP` parameters, in the order sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `QN`, the request number (a millisecond timestamp); often absent in 2005 frames.
    /// The CN=9014 answer echoes it.
    pub qn: Option<String>,
    /// `ST`, the system code (22 air quality, 39 construction dust, 91 system
    /// interaction, …).
    pub st: String,
    /// `CN`, the command code (2011 real-time, 2051 minute, 2061 hour, 2031 day, …).
    pub cn: u16,
    /// `PW`, the access password (checked by the caller against the registry).
    pub pw: String,
    /// `MN`, the device's unique id (14 characters in 2005, up to 24 in 2017).
    pub mn: String,
    /// `Flag` as sent; `None` when the frame has no `Flag` (2005 devices).
    pub flag: Option<u8>,
    /// `PNUM`/`PNO`, present when Flag bit 1 is set.
    pub split: Option<Split>,
    /// `DataTime`, when `CP` has one.
    pub data_time: Option<DataTime>,
    /// Every code's items, known and unknown, in the order first seen.
    pub factors: Vec<FactorValues>,
    /// Other `CP` items (`RtdInterval=30`, `HeartbeatTime=120`, `code-ZsRtd=…`, …),
    /// kept as sent.
    pub params: Vec<(String, String)>,
}

impl Frame {
    /// The protocol version (frames without `Flag` are HJ/T 212-2005); `None` only for
    /// version bits the decoder refuses.
    pub fn version(&self) -> Option<Version> {
        Version::from_bits(self.flag.unwrap_or(0) >> 2)
    }

    /// Flag bit 0: the device wants a CN=9014 answer, to be sent only after the frame's
    /// readings are committed.
    pub fn wants_reply(&self) -> bool {
        self.flag.is_some_and(|f| f & FLAG_REPLY != 0)
    }

    /// The items of a factor this service reads.
    pub fn factor(&self, factor: Factor) -> Option<&FactorValues> {
        self.factors.iter().find(|f| f.code == factor.code())
    }

    /// Codes this service does not read: ignored, reported here so the caller can count
    /// them.
    pub fn ignored_codes(&self) -> impl Iterator<Item = &str> {
        self.factors
            .iter()
            .filter(|f| f.factor().is_none())
            .map(|f| f.code.as_str())
    }
}

/// Parses a data segment (as [`check_envelope`](super::check_envelope) returns it).
pub fn parse_segment(segment: &[u8]) -> Result<Frame, Hj212Error> {
    let s = std::str::from_utf8(segment).map_err(|e| Hj212Error::NotText {
        at: e.valid_up_to(),
    })?;
    // CP comes last and is the only field whose value may hold `;`, so it is found
    // first: `CP=&&` at the start or right after a `;`.
    let cp_at = s
        .match_indices("CP=&&")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || s.as_bytes()[i - 1] == b';')
        .ok_or(Hj212Error::MissingField { field: "CP" })?;
    let cp_all = &s[cp_at + "CP=&&".len()..];
    let cp = cp_all.strip_suffix("&&").ok_or(Hj212Error::BadCp {
        reason: "does not end with &&",
    })?;
    let mut h = Header::default();
    for field in s[..cp_at].split(';').filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| Hj212Error::MalformedField {
                got: Quote::of(field.as_bytes()),
            })?;
        h.set(key, value)?;
    }
    let mut frame = h.finish()?;
    parse_cp(cp, &mut frame)?;
    Ok(frame)
}

/// The header fields seen so far, each at most once.
#[derive(Default)]
struct Header<'a> {
    qn: Option<&'a str>,
    st: Option<&'a str>,
    cn: Option<&'a str>,
    pw: Option<&'a str>,
    mn: Option<&'a str>,
    flag: Option<&'a str>,
    pnum: Option<&'a str>,
    pno: Option<&'a str>,
}

impl<'a> Header<'a> {
    fn set(&mut self, key: &'a str, value: &'a str) -> Result<(), Hj212Error> {
        let slot = match key {
            "QN" => &mut self.qn,
            "ST" => &mut self.st,
            "CN" => &mut self.cn,
            "PW" => &mut self.pw,
            "MN" => &mut self.mn,
            "Flag" => &mut self.flag,
            "PNUM" => &mut self.pnum,
            "PNO" => &mut self.pno,
            // Vendor additions before CP carry nothing this service reads.
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(Hj212Error::DuplicateField {
                field: Quote::of(key.as_bytes()),
            });
        }
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<Frame, Hj212Error> {
        let missing = |field| Hj212Error::MissingField { field };
        let bad = |field, v: &str, expected| Hj212Error::BadField {
            field,
            got: Quote::of(v.as_bytes()),
            expected,
        };
        let qn = match self.qn {
            None => None,
            Some(v) if is_token(v, 1, 20, |c| c.is_ascii_alphanumeric()) => Some(v.to_owned()),
            Some(v) => return Err(bad("QN", v, "1 to 20 letters or digits")),
        };
        let st = self.st.ok_or(missing("ST"))?;
        if !is_token(st, 1, 5, |c| c.is_ascii_digit()) {
            return Err(bad("ST", st, "1 to 5 digits"));
        }
        let cn_text = self.cn.ok_or(missing("CN"))?;
        let cn = small_number(cn_text, 4, 4).ok_or_else(|| bad("CN", cn_text, "4 digits"))?;
        let pw = self.pw.ok_or(missing("PW"))?;
        if !is_token(pw, 0, 32, |c| c.is_ascii_graphic()) {
            return Err(bad("PW", pw, "up to 32 printable ASCII characters"));
        }
        let mn = self.mn.ok_or(missing("MN"))?;
        if !is_token(mn, 1, 32, |c| c.is_ascii_graphic()) {
            return Err(bad("MN", mn, "1 to 32 printable ASCII characters"));
        }
        let flag = match self.flag {
            None => None,
            Some(v) => Some(
                small_number(v, 1, 3)
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| bad("Flag", v, "a number 0..=255"))?,
            ),
        };
        let flag_bits = flag.unwrap_or(0);
        if Version::from_bits(flag_bits >> 2).is_none() {
            return Err(Hj212Error::UnknownVersion {
                version: flag_bits >> 2,
            });
        }
        // PNUM/PNO only mean something when Flag says the packet is split; a device
        // that sends them anyway is not refused for it.
        let split = if flag_bits & FLAG_SPLIT != 0 {
            let pnum = self.pnum.ok_or(missing("PNUM"))?;
            let pno = self.pno.ok_or(missing("PNO"))?;
            let total = small_number(pnum, 1, 4)
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad("PNUM", pnum, "a number 1..=9999"))?;
            let number = small_number(pno, 1, 4)
                .filter(|&n| (1..=total).contains(&n))
                .ok_or_else(|| bad("PNO", pno, "a number 1..=PNUM"))?;
            Some(Split { total, number })
        } else {
            None
        };
        Ok(Frame {
            qn,
            st: st.to_owned(),
            cn,
            pw: pw.to_owned(),
            mn: mn.to_owned(),
            flag,
            split,
            data_time: None,
            factors: Vec::new(),
            params: Vec::new(),
        })
    }
}

fn is_token(s: &str, min: usize, max: usize, ok: impl Fn(char) -> bool) -> bool {
    (min..=max).contains(&s.len()) && s.chars().all(ok)
}

/// A run of `min..=max` ASCII digits (at most 4), as a number.
fn small_number(s: &str, min: usize, max: usize) -> Option<u16> {
    if !is_token(s, min, max, |c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Which of a code's items a suffix names.
#[derive(Clone, Copy)]
enum Item {
    Rtd,
    Avg,
    Min,
    Max,
    Flag,
}

fn parse_cp(cp: &str, frame: &mut Frame) -> Result<(), Hj212Error> {
    for item in cp.split([';', ',']).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| Hj212Error::MalformedField {
                got: Quote::of(item.as_bytes()),
            })?;
        if key == "DataTime" {
            if frame.data_time.is_some() {
                return Err(Hj212Error::DuplicateField {
                    field: Quote::of(key.as_bytes()),
                });
            }
            frame.data_time = Some(DataTime::parse(value)?);
            continue;
        }
        let factor_item = key.rsplit_once('-').and_then(|(code, suffix)| {
            let item = match suffix {
                "Rtd" => Item::Rtd,
                "Avg" => Item::Avg,
                "Min" => Item::Min,
                "Max" => Item::Max,
                "Flag" => Item::Flag,
                _ => return None,
            };
            (!code.is_empty()).then_some((code, item))
        });
        match factor_item {
            Some((code, item)) => set_item(frame, code, item, key, value)?,
            None => frame.params.push((key.to_owned(), value.to_owned())),
        }
    }
    Ok(())
}

fn set_item(
    frame: &mut Frame,
    code: &str,
    item: Item,
    key: &str,
    value: &str,
) -> Result<(), Hj212Error> {
    let known = Factor::from_code(code).is_some();
    // Parsed before the code gets an entry, so an unknown code whose items are all
    // unreadable leaves no empty entry behind.
    let parsed = match item {
        Item::Flag => DataFlag::parse(value).map(Parsed::Flag),
        _ => parse_number(value).map(Parsed::Number),
    };
    let parsed = match parsed {
        Some(p) => p,
        // An unknown code is ignored, its oddities with it.
        None if !known => return Ok(()),
        None if matches!(item, Item::Flag) => {
            return Err(Hj212Error::BadField {
                field: "pollutant flag",
                got: Quote::of(value.as_bytes()),
                expected: "one letter (N, F, M, S, D, C, T, B) or digit",
            })
        }
        None => {
            return Err(Hj212Error::NotANumber {
                key: Quote::of(key.as_bytes()),
                got: Quote::of(value.as_bytes()),
            })
        }
    };
    let i = match frame.factors.iter().position(|f| f.code == code) {
        Some(i) => i,
        None => {
            frame.factors.push(FactorValues::new(code));
            frame.factors.len() - 1
        }
    };
    let values = &mut frame.factors[i];
    let duplicate = || Hj212Error::DuplicateField {
        field: Quote::of(key.as_bytes()),
    };
    // Real devices repeat a code's flag when they send its items in two groups; only a
    // contradiction is refused.
    match parsed {
        Parsed::Flag(flag) => match values.flag {
            Some(old) if old != flag => Err(duplicate()),
            _ => {
                values.flag = Some(flag);
                Ok(())
            }
        },
        Parsed::Number(number) => {
            let slot = match item {
                Item::Rtd => &mut values.rtd,
                Item::Avg => &mut values.avg,
                Item::Min => &mut values.min,
                Item::Max => &mut values.max,
                // A flag item parses to `Parsed::Flag`, never to a number.
                Item::Flag => return Ok(()),
            };
            match *slot {
                Some(old) if old != number => Err(duplicate()),
                _ => {
                    *slot = Some(number);
                    Ok(())
                }
            }
        }
    }
}

/// A parsed pollutant item.
enum Parsed {
    Flag(DataFlag),
    Number(f64),
}

/// A decimal number as HJ 212 writes them: optional sign, digits, optional fraction.
/// `f64::from_str` alone would also take `NaN`, `inf` and exponents.
fn parse_number(s: &str) -> Option<f64> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || int.len() > 40 || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    s.parse().ok().filter(|v: &f64| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seg: &str) -> Frame {
        parse_segment(seg.as_bytes()).unwrap()
    }

    fn err(seg: &str) -> Hj212Error {
        parse_segment(seg.as_bytes()).unwrap_err()
    }

    const HEAD: &str =
        "QN=20160801085857223;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;";

    #[test]
    fn header_and_cp_items() {
        let f = frame(&format!("{HEAD}CP=&&DataTime=20160801085857;a34002-Rtd=80.1,a34002-Flag=N;a34004-Rtd=35.2,a34004-Flag=N&&"));
        assert_eq!(f.qn.as_deref(), Some("20160801085857223"));
        assert_eq!((f.st.as_str(), f.cn, f.pw.as_str()), ("22", 2011, "123456"));
        assert_eq!(f.flag, Some(5));
        assert_eq!(f.version(), Some(Version::Hj2017));
        assert!(f.wants_reply());
        let pm10 = f.factor(Factor::Pm10).unwrap();
        assert_eq!(pm10.rtd, Some(80.1));
        assert_eq!(pm10.flag, Some(DataFlag::Letter(Flag::Normal)));
        assert_eq!(f.factor(Factor::Pm25).unwrap().rtd, Some(35.2));
        assert_eq!(f.ignored_codes().count(), 0);
        let dt = f.data_time.unwrap();
        assert_eq!(dt.format(), "20160801085857");
        assert_eq!(
            dt.to_unix_millis(Zone::BEIJING),
            UnixMillis(1_470_013_137_000)
        );
    }

    #[test]
    fn datatime_forms() {
        let dt = DataTime::parse("20160801085857123").unwrap();
        assert!(dt.with_millis);
        assert_eq!(
            dt.to_unix_millis(Zone::BEIJING),
            UnixMillis(1_470_013_137_123)
        );
        assert_eq!(dt.format(), "20160801085857123");
        for bad in [
            "2016080108585",
            "201608010858571",
            "20160230085857",
            "20160801245857",
            "20160801086057",
            "2016080108585x",
            "20160801085860999",
            "",
        ] {
            assert!(
                matches!(DataTime::parse(bad), Err(Hj212Error::BadDataTime { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn flags_and_versions() {
        let v = |flag: &str| frame(&format!("ST=22;CN=2011;PW=1;MN=m;{flag}CP=&&&&")).version();
        assert_eq!(v(""), Some(Version::Hjt2005));
        assert_eq!(v("Flag=0;"), Some(Version::Hjt2005));
        assert_eq!(v("Flag=3;PNUM=1;PNO=1;"), Some(Version::Hjt2005));
        assert_eq!(v("Flag=4;"), Some(Version::Hj2017));
        // One public implementation's tests send Flag=9 for HJ 212-2025.
        assert_eq!(v("Flag=9;"), Some(Version::Hj2025));
        assert_eq!(
            err("ST=22;CN=2011;PW=1;MN=m;Flag=12;CP=&&&&"),
            Hj212Error::UnknownVersion { version: 3 }
        );
        let split = frame("ST=22;CN=2011;PW=1;MN=m;Flag=7;PNUM=3;PNO=2;CP=&&&&");
        assert_eq!(
            split.split,
            Some(Split {
                total: 3,
                number: 2
            })
        );
        assert_eq!(
            err("ST=22;CN=2011;PW=1;MN=m;Flag=7;PNUM=3;CP=&&&&"),
            Hj212Error::MissingField { field: "PNO" }
        );
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;Flag=7;PNUM=3;PNO=4;CP=&&&&"),
            Hj212Error::BadField { field: "PNO", .. }
        ));
        assert_eq!(
            frame("ST=22;CN=2011;PW=1;MN=m;Flag=4;PNUM=3;PNO=2;CP=&&&&").split,
            None
        );
    }

    #[test]
    fn data_flags_map_onto_the_service_flags() {
        let cases = [
            ("N", Flag::Normal),
            ("F", Flag::Stopped),
            ("M", Flag::Maintenance),
            ("S", Flag::Manual),
            ("D", Flag::Fault),
            ("C", Flag::Calibration),
            ("T", Flag::OverRange),
            ("B", Flag::CommFailure),
            ("3", Flag::Normal),
            ("0", Flag::Calibration),
            ("2", Flag::Fault),
            ("1", Flag::Maintenance),
            ("P", Flag::Fault),
        ];
        for (c, want) in cases {
            let f = DataFlag::parse(c).unwrap();
            assert_eq!(f.to_model(), want, "{c}");
            assert_eq!(f.as_char().to_string(), c);
        }
        assert_eq!(DataFlag::parse("NN"), None);
        assert_eq!(DataFlag::parse(""), None);
        assert_eq!(DataFlag::parse("n"), Some(DataFlag::Other('n')));
    }

    #[test]
    fn each_segment_fault_has_its_reason() {
        use Hj212Error::*;
        assert_eq!(
            err("ST=22;CN=2011;PW=1;MN=m;Flag=4"),
            MissingField { field: "CP" }
        );
        assert_eq!(
            err("ST=22;CN=2011;PW=1;MN=m;Flag=4;CP=&&DataTime=20160801085857"),
            BadCp {
                reason: "does not end with &&"
            }
        );
        assert_eq!(
            err("CN=2011;PW=1;MN=m;CP=&&&&"),
            MissingField { field: "ST" }
        );
        assert_eq!(err("ST=22;PW=1;MN=m;CP=&&&&"), MissingField { field: "CN" });
        assert_eq!(
            err("ST=22;CN=2011;MN=m;CP=&&&&"),
            MissingField { field: "PW" }
        );
        assert_eq!(
            err("ST=22;CN=2011;PW=1;CP=&&&&"),
            MissingField { field: "MN" }
        );
        assert!(matches!(
            err("ST=22;CN=2011;CN=2011;PW=1;MN=m;CP=&&&&"),
            DuplicateField { .. }
        ));
        assert!(matches!(
            err("ST=22;CN=201;PW=1;MN=m;CP=&&&&"),
            BadField { field: "CN", .. }
        ));
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=;CP=&&&&"),
            BadField { field: "MN", .. }
        ));
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;Flag=x;CP=&&&&"),
            BadField { field: "Flag", .. }
        ));
        assert!(matches!(
            err("QN=2016-08;ST=22;CN=2011;PW=1;MN=m;CP=&&&&"),
            BadField { field: "QN", .. }
        ));
        assert!(matches!(
            err("ST;CN=2011;PW=1;MN=m;CP=&&&&"),
            MalformedField { .. }
        ));
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;CP=&&DataTime=2016&&"),
            BadDataTime { .. }
        ));
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;CP=&&DataTime=20160801085857;DataTime=20160801085857&&"),
            DuplicateField { .. }
        ));
        for v in ["", "x", "NaN", "inf", "1e5", "1.2.3", "--1", "."] {
            assert!(
                matches!(
                    err(&format!("ST=22;CN=2011;PW=1;MN=m;CP=&&a34004-Rtd={v}&&")),
                    NotANumber { .. }
                ),
                "{v:?}"
            );
        }
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;CP=&&a34004-Rtd=1;a34004-Rtd=2&&"),
            DuplicateField { .. }
        ));
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;CP=&&a34004-Flag=N;a34004-Flag=D&&"),
            DuplicateField { .. }
        ));
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;CP=&&a34004-Flag=NN&&"),
            BadField { .. }
        ));
        assert!(matches!(
            err("ST=22;CN=2011;PW=1;MN=m;CP=&&a34004&&"),
            MalformedField { .. }
        ));
        assert_eq!(parse_segment(b"ST=22;\xff"), Err(NotText { at: 6 }));
    }

    #[test]
    fn unknown_codes_are_kept_aside_and_never_fatal() {
        let f = frame("ST=22;CN=2011;PW=1;MN=m;CP=&&a99999-Rtd=oops,a99999-Flag=??;B01-Rtd=36.91;a34004-Rtd=1,a34004-Flag=N;a34004-ZsRtd=2,a34004-Flag=N;CON-RT=0&&");
        // a99999's items are unreadable: it leaves no entry.
        assert_eq!(f.ignored_codes().collect::<Vec<_>>(), ["B01"]);
        assert_eq!(f.factors[0].rtd, Some(36.91));
        assert_eq!(f.factor(Factor::Pm25).unwrap().rtd, Some(1.0));
        assert_eq!(
            f.params,
            [
                ("a34004-ZsRtd".to_owned(), "2".to_owned()),
                ("CON-RT".to_owned(), "0".to_owned())
            ]
        );
    }
}
