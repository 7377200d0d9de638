//! The one error type of the HJ 212 boundary: envelope, framer, segment and conversion
//! problems, each carrying what an operator needs to fix the device (the CRC it sent and
//! the one its data gives, the length it declared and the one it sent, …). Device input
//! is quoted through [`Quote`], never more than [`QUOTE_BYTES`] bytes of it.

use std::fmt;

use super::crc::CrcVariant;
use super::MAX_SEGMENT_BYTES;
use crate::reject::{RejectReason, Rejection};

/// Most bytes of device input an error message quotes: enough to recognise the field,
/// too few to turn a log line into a copy of a hostile payload.
pub const QUOTE_BYTES: usize = 16;

/// A few bytes of device input kept for an error message: at most [`QUOTE_BYTES`],
/// escaped (`\r`, `\xff`, …), with `…` when cut.
#[derive(Clone, PartialEq, Eq)]
pub struct Quote(String);

impl Quote {
    /// Quotes the start of `bytes`.
    pub fn of(bytes: &[u8]) -> Quote {
        let cut = &bytes[..bytes.len().min(QUOTE_BYTES)];
        let mut s = cut.escape_ascii().to_string();
        if bytes.len() > QUOTE_BYTES {
            s.push('…');
        }
        Quote(s)
    }

    /// The escaped text, without the surrounding quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

impl fmt::Debug for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why an HJ 212 frame (or a stretch of a byte stream) was refused.
///
/// The first group is found by the envelope check and the stream framer, before any
/// parsing; the second by the segment parser; [`Hj212Error::UnknownCn`] by
/// [`to_observations`](super::to_observations) for frames that carry no readings (a
/// caller counts those rather than rejecting them). [`Hj212Error::reason_code`] gives a
/// stable snake_case code per variant for counters and the rejects table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hj212Error {
    /// The frame does not start with `##`.
    #[error("bad header: expected \"##\", got {got}")]
    BadHeader { got: Quote },
    /// The four bytes after `##` are not decimal digits.
    #[error("bad length field: expected 4 decimal digits after \"##\", got {got}")]
    BadLength { got: Quote },
    /// The data segment is longer than the standard's 1024 bytes.
    #[error("data segment of {declared} bytes, at most {MAX_SEGMENT_BYTES} allowed")]
    TooLong { declared: usize },
    /// The length field and the data segment disagree.
    #[error("length field says {declared} bytes, the data segment has {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    /// The input ends before the frame does.
    #[error("truncated frame: {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    /// No `\r\n` where the length field puts the end of the frame.
    #[error("missing CRLF after the CRC, got {got}")]
    MissingCrlf { got: Quote },
    /// The four bytes after the data segment are not hex digits.
    #[error("bad CRC field: expected 4 hex digits, got {got}")]
    BadCrcField { got: Quote },
    /// The CRC in the frame is not the one its data segment gives.
    #[error(
        "bad CRC ({variant}): the frame says {got:04X}, its data segment gives {expected:04X}"
    )]
    Crc {
        /// The algorithm configured for the device.
        variant: CrcVariant,
        /// What the data segment gives under `variant`.
        expected: u16,
        /// What the frame carries.
        got: u16,
    },
    /// Bytes that are not part of any frame, skipped by the framer up to the next `##`.
    #[error("skipped {skipped} bytes of garbage, starting {head}")]
    Garbage { skipped: usize, head: Quote },
    /// The data segment is not UTF-8 (HJ 212 is ASCII).
    #[error("data segment is not text: invalid byte at offset {at}")]
    NotText { at: usize },
    /// A field without `=`.
    #[error("malformed field {got}: expected key=value")]
    MalformedField { got: Quote },
    /// A required field is absent.
    #[error("missing field {field}")]
    MissingField { field: &'static str },
    /// A field given twice (with different values, for pollutant items).
    #[error("duplicate field {field}")]
    DuplicateField { field: Quote },
    /// A header field whose value breaks the standard's syntax.
    #[error("bad {field} {got}: expected {expected}")]
    BadField {
        field: &'static str,
        got: Quote,
        expected: &'static str,
    },
    /// The `CP=&&…&&` part is malformed.
    #[error("bad CP: {reason}")]
    BadCp { reason: &'static str },
    /// `DataTime` is not a real local time in one of the two accepted forms.
    #[error(
        "bad DataTime {got}: expected a real local time as YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz"
    )]
    BadDataTime { got: Quote },
    /// A pollutant value that is not a decimal number.
    #[error("{key} is not a number: {got}")]
    NotANumber { key: Quote, got: Quote },
    /// Flag bits 2–7 name a protocol version this decoder does not know.
    #[error("protocol version {version} in Flag: expected 0 (HJ/T 212-2005), 1 (HJ 212-2017) or 2 (HJ 212-2025)")]
    UnknownVersion { version: u8 },
    /// A command that carries no readings (heartbeat, reply, parameter upload, …).
    #[error("CN={cn:04} carries no readings")]
    UnknownCn { cn: u16 },
}

impl Hj212Error {
    /// A stable snake_case code for counters, logs and the rejects table.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Hj212Error::BadHeader { .. } => "hj212_bad_header",
            Hj212Error::BadLength { .. } => "hj212_bad_length",
            Hj212Error::TooLong { .. } => "hj212_too_long",
            Hj212Error::LengthMismatch { .. } => "hj212_length_mismatch",
            Hj212Error::Truncated { .. } => "hj212_truncated",
            Hj212Error::MissingCrlf { .. } => "hj212_missing_crlf",
            Hj212Error::BadCrcField { .. } => "hj212_bad_crc_field",
            Hj212Error::Crc { .. } => "hj212_bad_crc",
            Hj212Error::Garbage { .. } => "hj212_garbage",
            Hj212Error::NotText { .. } => "hj212_not_text",
            Hj212Error::MalformedField { .. } => "hj212_malformed_field",
            Hj212Error::MissingField { .. } => "hj212_missing_field",
            Hj212Error::DuplicateField { .. } => "hj212_duplicate_field",
            Hj212Error::BadField { .. } => "hj212_bad_field",
            Hj212Error::BadCp { .. } => "hj212_bad_cp",
            Hj212Error::BadDataTime { .. } => "hj212_bad_datatime",
            Hj212Error::NotANumber { .. } => "hj212_not_a_number",
            Hj212Error::UnknownVersion { .. } => "hj212_unknown_version",
            Hj212Error::UnknownCn { .. } => "hj212_unknown_cn",
        }
    }
}

impl Hj212Error {
    /// The rejection recorded for this error: its stable reason and its message.
    pub fn rejection(&self) -> Rejection {
        let reason = match self {
            Hj212Error::BadHeader { .. } => RejectReason::Hj212BadHeader,
            Hj212Error::BadLength { .. } => RejectReason::Hj212BadLength,
            Hj212Error::TooLong { .. } => RejectReason::Hj212TooLong,
            Hj212Error::LengthMismatch { .. } => RejectReason::Hj212LengthMismatch,
            Hj212Error::Truncated { .. } => RejectReason::Hj212Truncated,
            Hj212Error::MissingCrlf { .. } => RejectReason::Hj212MissingCrlf,
            Hj212Error::BadCrcField { .. } => RejectReason::Hj212BadCrcField,
            Hj212Error::Crc { .. } => RejectReason::Hj212BadCrc,
            Hj212Error::Garbage { .. } => RejectReason::Hj212Garbage,
            Hj212Error::NotText { .. } => RejectReason::Hj212NotText,
            Hj212Error::MalformedField { .. } => RejectReason::Hj212MalformedField,
            Hj212Error::MissingField { .. } => RejectReason::Hj212MissingField,
            Hj212Error::DuplicateField { .. } => RejectReason::Hj212DuplicateField,
            Hj212Error::BadField { .. } => RejectReason::Hj212BadField,
            Hj212Error::BadCp { .. } => RejectReason::Hj212BadCp,
            Hj212Error::BadDataTime { .. } => RejectReason::Hj212BadDatatime,
            Hj212Error::NotANumber { .. } => RejectReason::Hj212NotANumber,
            Hj212Error::UnknownVersion { .. } => RejectReason::Hj212UnknownVersion,
            Hj212Error::UnknownCn { .. } => RejectReason::Hj212UnknownCn,
        };
        Rejection::new(reason, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(Quote::of(b"ab\r\n").to_string(), "\"ab\\r\\n\"");
        let long = Quote::of(&[b'x'; 100]);
        assert_eq!(long.as_str(), format!("{}…", "x".repeat(QUOTE_BYTES)));
        assert_eq!(Quote::of(b"\xff").as_str(), "\\xff");
    }
}
