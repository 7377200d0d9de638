//! HJ 212 frames (HJ/T 212-2005, HJ 212-2017, HJ 212-2025): the pure decoder. Bytes in,
//! [`Frame`]s and [`Observation`](crate::decode::Observation)s out; no I/O, no clock.
//!
//! # The format
//!
//! A frame is `##` + four decimal digits giving the data segment's length in bytes + the
//! data segment (at most 1024 bytes) + four hex digits of CRC + `\r\n`. The data segment
//! is `QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&`; inside `CP`, `;`
//! separates pollutants and `,` a pollutant's items, e.g.
//! `DataTime=20160801085857;a34002-Rtd=80.1,a34002-Flag=N;a34004-Rtd=35.2,a34004-Flag=N`.
//!
//! # Stages
//!
//! 1. [`Framer`] cuts a TCP stream into frames (split reads, several frames per read,
//!    garbage skipped to the next `##`), holding at most one frame.
//! 2. [`check_envelope`] is the cheap check before any parsing: header, length field
//!    equal to the real length, ≤ 1024 bytes, hex CRC in either case, `\r\n`, and the CRC
//!    under the device's [`CrcVariant`] (`Hj212` per the standard's Appendix A, `Modbus`
//!    as many devices send, `None`).
//! 3. [`parse_segment`] reads the fields into a [`Frame`]; [`decode`] is 2 + 3.
//! 4. [`to_observations`] turns a frame into observations for the validate stage.
//!
//! [`encode`] and [`reply_9014`] build frames (tests, simulator, answers).
//!
//! # Choices
//!
//! - **Versions.** Flag bits 2–7 give the version: 0 HJ/T 212-2005 (also frames with
//!   no `Flag`), 1 HJ 212-2017, 2 HJ 212-2025, read with the 2017 field rules (one
//!   public implementation's tests send `Flag=9`); others are refused. Flag bit 0 asks
//!   for a CN=9014 answer ([`Frame::wants_reply`], [`Frame::reply`]), to be sent only
//!   after the readings are committed. 2005 frames may lack `QN` and `Flag`; `MN` is 14
//!   characters there, up to 24 in 2017 (1–32 printable characters are accepted, the
//!   registry decides which MN is known).
//! - **Split packets** (Flag bit 1, `PNUM`/`PNO`): each part is decoded on its own. In
//!   the standard every part is a complete frame with its own CRC and its own
//!   `CP=&&…&&`, and each part is answered separately, so a part's readings stand
//!   alone; `PNUM`/`PNO` are checked (1 ≤ PNO ≤ PNUM) and kept in [`Frame::split`].
//!   Field frames split this way carry `DataTime` and whole items in each part. A
//!   device that cuts `CP` in the middle of an item (as one public library's packer
//!   does) sends parts that fail to parse; they are refused with the precise reason,
//!   not reassembled. Two parts of one record give two observations with the same
//!   `(site, ts, period)`: whoever stores them must merge their pollutants rather than
//!   take the second for a redelivery.
//! - **DataTime** is local wall-clock time in the configured [`Zone`](crate::aqi::zone::Zone)
//!   (Beijing), `YYYYMMDDhhmmss` or the 17-digit millisecond form seen in the field; for
//!   minute, hour and day records it is the *start* of the interval.
//! - **CN.** 2011 real-time samples, 2051 minute means, 2061 hourly means (counted as
//!   hours directly, like JSON `period: hour`), 2031 daily means (kept on the frame,
//!   never turned into observations: the model has no daily period and a daily value
//!   must not count as a sample or an hour). Other CNs (heartbeats, answers, commands)
//!   are [`Hj212Error::UnknownCn`] from [`to_observations`], for the caller to count.
//! - **Codes.** a34002 PM10, a34004 PM2.5, a34001 TSP, a01001 temperature, a01002
//!   humidity, a01007 wind speed, a01008 wind direction, LA noise ([`Factor`]); every
//!   code's items are kept on the frame. Other codes are ignored, never fatal, and listed
//!   by [`Frame::ignored_codes`] for counting; their values are not checked.
//! - **Units.** The standard's default for PM is ng/m³; devices send µg/m³ or mg/m³. The
//!   unit comes from the device's registry entry and is put on each observation.
//! - **Data flags.** HJ 212-2017 letters N F M S D C T B map one to one onto
//!   [`Flag`](crate::model::Flag); the HJ/T 212-2005 air-station digits map 3 → normal,
//!   0 → calibration, 2 (abnormal) → fault, 1 (meteorological) → maintenance; other
//!   letters (2005's `P` power failure, …) → fault; no flag → normal. Only normal enters
//!   means.
//!
//! Errors quote at most [`QUOTE_BYTES`] bytes of device input.

mod crc;
mod encode;
mod envelope;
mod error;
mod framer;
mod observe;
mod segment;

#[cfg(test)]
mod tests;

pub use crc::{crc_hj212, crc_modbus, CrcVariant};
pub use encode::{encode, encode_segment, reply_9014, segment_text, ST_SYSTEM_INTERACTION};
/// Longest data segment the standard allows, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 1024;

pub use envelope::{check_envelope, Envelope, ENVELOPE_BYTES, MAX_FRAME_BYTES};
pub use error::{Hj212Error, Quote, QUOTE_BYTES};
pub use framer::{Framer, Frames};
pub use observe::{to_observations, RecordKind};
pub use segment::{
    flag_value, parse_segment, DataFlag, DataTime, Factor, FactorValues, Frame, Split, StationFlag,
    Version, FLAG_REPLY, FLAG_SPLIT,
};

/// Checks one frame's envelope and CRC, then parses its data segment.
pub fn decode(frame: &[u8], crc: CrcVariant) -> Result<Frame, Hj212Error> {
    let envelope = check_envelope(frame, crc)?;
    parse_segment(envelope.segment)
}
