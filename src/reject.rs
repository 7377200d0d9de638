//! Rejections are data: every reading or message refused on the way in carries one
//! [`RejectReason`] (a stable snake_case code, counted per reason and kept in the store's
//! `rejects` table) and a short human detail.

use std::fmt;

/// Why a payload or one reading in it was refused. The codes are stable: they appear in
/// the `rejects` table, in logs and in metrics, so renaming one is a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The MQTT payload is larger than `mqtt.max_payload_bytes`.
    PayloadTooLarge,
    /// The payload is not UTF-8.
    NotUtf8,
    /// The payload is not JSON.
    BadJson,
    /// The payload (or an array element) is not a JSON object.
    NotAnObject,
    /// An empty array.
    EmptyBatch,
    /// An array with more than `MAX_READINGS_PER_MESSAGE` readings.
    BatchTooLarge,
    /// The topic does not match a configured filter's site position.
    BadTopic,
    /// The site id (topic level) is empty, too long or has forbidden characters.
    BadSiteId,
    /// The site is not in the registry and `[sites] unregistered = "reject"`.
    UnknownSite,
    /// The `device` field is not a valid id.
    BadDeviceId,
    /// No `ts` field.
    MissingTimestamp,
    /// `ts` is neither RFC 3339 with an offset nor Unix seconds/milliseconds.
    BadTimestamp,
    /// `ts` is further ahead of the receive clock than `ingest.max_future_secs`.
    FutureTimestamp,
    /// `ts` is older than the retention window.
    StaleTimestamp,
    /// Neither `pm25` nor `pm10`.
    NoValue,
    /// A field has the wrong JSON type (a string where a number belongs, …).
    WrongType,
    /// A value is NaN or infinite (sent as a string such as `"NaN"`).
    NotFinite,
    /// A concentration below zero.
    NegativeValue,
    /// A concentration above the plausible maximum after unit conversion.
    OutOfRange,
    /// A `unit` other than ug/m3, mg/m3, ng/m3.
    UnknownUnit,
    /// A `flag` that is not an HJ 212-2017 flag letter.
    BadFlag,
    /// A `period` other than `sample` or `hour`.
    BadPeriod,
    /// An `interval_secs` outside 1..=86400.
    BadInterval,
    /// An HJ 212 frame does not start with `##` and four length digits.
    Hj212BadHeader,
    /// An HJ 212 frame's length field is not four digits.
    Hj212BadLength,
    /// An HJ 212 data segment over 1024 bytes.
    Hj212TooLong,
    /// An HJ 212 frame whose declared length is not its data segment's.
    Hj212LengthMismatch,
    /// An HJ 212 frame cut short (a device killed mid-frame).
    Hj212Truncated,
    /// An HJ 212 frame without its closing CRLF.
    Hj212MissingCrlf,
    /// An HJ 212 frame whose CRC is not four hex digits.
    Hj212BadCrcField,
    /// An HJ 212 frame whose CRC does not match (the device's CRC variant).
    Hj212BadCrc,
    /// Bytes between HJ 212 frames that are not a frame.
    Hj212Garbage,
    /// An HJ 212 data segment that is not text.
    Hj212NotText,
    /// An HJ 212 field that is not `key=value`.
    Hj212MalformedField,
    /// An HJ 212 frame without a required field (ST, CN, MN, CP…).
    Hj212MissingField,
    /// An HJ 212 field given twice.
    Hj212DuplicateField,
    /// An HJ 212 field with an invalid value (Flag, PNUM/PNO, MN…).
    Hj212BadField,
    /// An HJ 212 `CP=&&…&&` that cannot be read.
    Hj212BadCp,
    /// An HJ 212 `DataTime` that is not 14 (or 17) digits of a real local time.
    Hj212BadDatatime,
    /// An HJ 212 value that is not a number.
    Hj212NotANumber,
    /// An HJ 212 Flag naming a protocol version this service does not know.
    Hj212UnknownVersion,
    /// An HJ 212 command (CN) that carries no readings this service stores.
    Hj212UnknownCn,
    /// An HJ 212 device (MN) not in the site registry, with `[hj212] unknown_mn = "reject"`.
    Hj212UnknownMn,
    /// An HJ 212 frame whose `PW` is not the registered device password.
    Hj212WrongPassword,
    /// HJ 212 pollutant codes this service does not read (the frame is stored; counted).
    Hj212UnknownCode,
}

impl RejectReason {
    /// Every reason, in a fixed order (used to index counters).
    pub const ALL: [RejectReason; 45] = [
        Self::PayloadTooLarge,
        Self::NotUtf8,
        Self::BadJson,
        Self::NotAnObject,
        Self::EmptyBatch,
        Self::BatchTooLarge,
        Self::BadTopic,
        Self::BadSiteId,
        Self::UnknownSite,
        Self::BadDeviceId,
        Self::MissingTimestamp,
        Self::BadTimestamp,
        Self::FutureTimestamp,
        Self::StaleTimestamp,
        Self::NoValue,
        Self::WrongType,
        Self::NotFinite,
        Self::NegativeValue,
        Self::OutOfRange,
        Self::UnknownUnit,
        Self::BadFlag,
        Self::BadPeriod,
        Self::BadInterval,
        Self::Hj212BadHeader,
        Self::Hj212BadLength,
        Self::Hj212TooLong,
        Self::Hj212LengthMismatch,
        Self::Hj212Truncated,
        Self::Hj212MissingCrlf,
        Self::Hj212BadCrcField,
        Self::Hj212BadCrc,
        Self::Hj212Garbage,
        Self::Hj212NotText,
        Self::Hj212MalformedField,
        Self::Hj212MissingField,
        Self::Hj212DuplicateField,
        Self::Hj212BadField,
        Self::Hj212BadCp,
        Self::Hj212BadDatatime,
        Self::Hj212NotANumber,
        Self::Hj212UnknownVersion,
        Self::Hj212UnknownCn,
        Self::Hj212UnknownMn,
        Self::Hj212WrongPassword,
        Self::Hj212UnknownCode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotUtf8 => "not_utf8",
            Self::BadJson => "bad_json",
            Self::NotAnObject => "not_an_object",
            Self::EmptyBatch => "empty_batch",
            Self::BatchTooLarge => "batch_too_large",
            Self::BadTopic => "bad_topic",
            Self::BadSiteId => "bad_site_id",
            Self::UnknownSite => "unknown_site",
            Self::BadDeviceId => "bad_device_id",
            Self::MissingTimestamp => "missing_timestamp",
            Self::BadTimestamp => "bad_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::StaleTimestamp => "stale_timestamp",
            Self::NoValue => "no_value",
            Self::WrongType => "wrong_type",
            Self::NotFinite => "not_finite",
            Self::NegativeValue => "negative_value",
            Self::OutOfRange => "out_of_range",
            Self::UnknownUnit => "unknown_unit",
            Self::BadFlag => "bad_flag",
            Self::BadPeriod => "bad_period",
            Self::BadInterval => "bad_interval",
            Self::Hj212BadHeader => "hj212_bad_header",
            Self::Hj212BadLength => "hj212_bad_length",
            Self::Hj212TooLong => "hj212_too_long",
            Self::Hj212LengthMismatch => "hj212_length_mismatch",
            Self::Hj212Truncated => "hj212_truncated",
            Self::Hj212MissingCrlf => "hj212_missing_crlf",
            Self::Hj212BadCrcField => "hj212_bad_crc_field",
            Self::Hj212BadCrc => "hj212_bad_crc",
            Self::Hj212Garbage => "hj212_garbage",
            Self::Hj212NotText => "hj212_not_text",
            Self::Hj212MalformedField => "hj212_malformed_field",
            Self::Hj212MissingField => "hj212_missing_field",
            Self::Hj212DuplicateField => "hj212_duplicate_field",
            Self::Hj212BadField => "hj212_bad_field",
            Self::Hj212BadCp => "hj212_bad_cp",
            Self::Hj212BadDatatime => "hj212_bad_datatime",
            Self::Hj212NotANumber => "hj212_not_a_number",
            Self::Hj212UnknownVersion => "hj212_unknown_version",
            Self::Hj212UnknownCn => "hj212_unknown_cn",
            Self::Hj212UnknownMn => "hj212_unknown_mn",
            Self::Hj212WrongPassword => "hj212_wrong_password",
            Self::Hj212UnknownCode => "hj212_unknown_code",
        }
    }

    /// Position in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused payload or reading: the reason code and a short detail for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Longest payload excerpt kept with a rejection, in bytes: enough to recognise the
/// device's mistake, too little to fill the store with a hostile 1 MB payload.
pub const EXCERPT_BYTES: usize = 200;

/// A printable excerpt of at most [`EXCERPT_BYTES`] bytes of the payload: invalid UTF-8
/// and control characters are escaped so a log line or table cell stays one line.
pub fn excerpt(payload: &[u8]) -> String {
    let cut = &payload[..payload.len().min(EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if payload.len() > EXCERPT_BYTES {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_indexed() {
        let mut codes: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), RejectReason::ALL.len());
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        let e = excerpt(&[b'a'; 1_000_000]);
        assert!(e.len() <= EXCERPT_BYTES + 3);
        assert_eq!(excerpt(b"a\nb\x00"), "a\\nb\\u{0}");
    }
}
