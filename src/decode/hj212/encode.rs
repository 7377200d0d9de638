//! Builds frames: used by the tests now and by the simulator later, and by the listener
//! for its CN=9014 answers.

use std::fmt::Write as _;

use super::crc::CrcVariant;
use super::error::{Hj212Error, Quote};
use super::segment::{flag_value, Frame, Version};
use super::MAX_SEGMENT_BYTES;

/// The system code of the standard's interaction commands (9011–9014): its CN=9014
/// example answers with `ST=91` whatever the data frame's `ST`.
pub const ST_SYSTEM_INTERACTION: &str = "91";

/// Wraps a data segment in `##`, its length, its CRC and `\r\n`. [`CrcVariant::None`]
/// writes the Appendix A CRC, so a receiver that checks gets a standard frame.
pub fn encode_segment(segment: &str, crc: CrcVariant) -> Result<Vec<u8>, Hj212Error> {
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(Hj212Error::TooLong {
            declared: segment.len(),
        });
    }
    let value = crc
        .compute(segment.as_bytes())
        .unwrap_or_else(|| CrcVariant::Hj212.compute(segment.as_bytes()).unwrap_or(0));
    Ok(format!("##{:04}{segment}{value:04X}\r\n", segment.len()).into_bytes())
}

/// The data segment of `frame`, fields in the standard's order, `DataTime` first in
/// `CP`, then each code's items (`Rtd`, `Avg`, `Min`, `Max`, `Flag`), then the other
/// parameters. Values are written in the shortest form that reads back to the same
/// `f64`.
pub fn segment_text(frame: &Frame) -> Result<String, Hj212Error> {
    let mut s = String::with_capacity(256);
    // `write!` to a String cannot fail.
    if let Some(qn) = &frame.qn {
        let _ = write!(s, "QN={qn};");
    }
    let _ = write!(
        s,
        "ST={};CN={:04};PW={};MN={};",
        frame.st, frame.cn, frame.pw, frame.mn
    );
    if let Some(flag) = frame.flag {
        let _ = write!(s, "Flag={flag};");
    }
    if let Some(split) = frame.split {
        let _ = write!(s, "PNUM={};PNO={};", split.total, split.number);
    }
    s.push_str("CP=&&");
    let mut groups: Vec<String> = Vec::new();
    if let Some(dt) = frame.data_time {
        groups.push(format!("DataTime={}", dt.format()));
    }
    for f in &frame.factors {
        let mut items: Vec<String> = Vec::new();
        for (suffix, value) in [
            ("Rtd", f.rtd),
            ("Avg", f.avg),
            ("Min", f.min),
            ("Max", f.max),
        ] {
            if let Some(v) = value {
                if !v.is_finite() {
                    return Err(Hj212Error::NotANumber {
                        key: Quote::of(format!("{}-{suffix}", f.code).as_bytes()),
                        got: Quote::of(v.to_string().as_bytes()),
                    });
                }
                items.push(format!("{}-{suffix}={v}", f.code));
            }
        }
        if let Some(flag) = f.flag {
            items.push(format!("{}-Flag={}", f.code, flag.as_char()));
        }
        if !items.is_empty() {
            groups.push(items.join(","));
        }
    }
    for (k, v) in &frame.params {
        groups.push(format!("{k}={v}"));
    }
    s.push_str(&groups.join(";"));
    s.push_str("&&");
    Ok(s)
}

/// Encodes `frame` with the chosen CRC.
pub fn encode(frame: &Frame, crc: CrcVariant) -> Result<Vec<u8>, Hj212Error> {
    encode_segment(&segment_text(frame)?, crc)
}

/// The CN=9014 ("data answer") frame a server sends after committing a frame whose Flag
/// asked for one: `QN` echoes the data frame's (left out when it had none, as 2005
/// frames may), `ST` is normally [`ST_SYSTEM_INTERACTION`], `PW` and `MN` are the
/// device's, `Flag` carries the version and asks for no answer, and `CP` is empty, as in
/// the standard's example `QN=…;ST=91;CN=9014;PW=123456;MN=…;Flag=4;CP=&&&&`.
pub fn reply_9014(
    qn: Option<&str>,
    st: &str,
    mn: &str,
    pw: &str,
    version: Version,
    crc: CrcVariant,
) -> Result<Vec<u8>, Hj212Error> {
    let mut s = String::with_capacity(96);
    if let Some(qn) = qn {
        let _ = write!(s, "QN={qn};");
    }
    let _ = write!(
        s,
        "ST={st};CN=9014;PW={pw};MN={mn};Flag={};CP=&&&&",
        flag_value(version, false, false)
    );
    encode_segment(&s, crc)
}

impl Frame {
    /// The CN=9014 answer to this frame, or `None` when its Flag asks for none. Send it
    /// only after the frame's readings are committed.
    pub fn reply(&self, crc: CrcVariant) -> Option<Result<Vec<u8>, Hj212Error>> {
        if !self.wants_reply() {
            return None;
        }
        let version = self.version().unwrap_or(Version::Hj2017);
        Some(reply_9014(
            self.qn.as_deref(),
            ST_SYSTEM_INTERACTION,
            &self.mn,
            &self.pw,
            version,
            crc,
        ))
    }
}
