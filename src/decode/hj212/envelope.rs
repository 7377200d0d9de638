//! The cheap check that runs before any parsing: `##`, four decimal digits giving the
//! data segment's byte length, the data segment (at most 1024 bytes), four hex digits of
//! CRC (either case) and `\r\n`. Everything here is byte arithmetic on the frame; the
//! data segment is only read by the CRC.

use super::crc::CrcVariant;
use super::error::{Hj212Error, Quote};
use super::MAX_SEGMENT_BYTES;

/// Bytes around the data segment: `##`, 4 length digits, 4 CRC digits, `\r\n`.
pub const ENVELOPE_BYTES: usize = 12;

/// Longest whole frame: the framer never buffers more than this.
pub const MAX_FRAME_BYTES: usize = MAX_SEGMENT_BYTES + ENVELOPE_BYTES;

/// A frame whose envelope passed: its data segment and the CRC it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The data segment, `QN=…;…;CP=&&…&&`.
    pub segment: &'a [u8],
    /// The CRC the frame carries (checked unless the variant is `None`).
    pub crc: u16,
}

/// Checks that `frame` is exactly one frame and that its CRC is right under `crc`.
///
/// Errors, in the order they are looked for: [`Hj212Error::BadHeader`],
/// [`Hj212Error::BadLength`], [`Hj212Error::TooLong`], [`Hj212Error::LengthMismatch`]
/// (the frame ends in `\r\n` elsewhere than the length field says),
/// [`Hj212Error::MissingCrlf`], [`Hj212Error::Truncated`], [`Hj212Error::BadCrcField`],
/// [`Hj212Error::Crc`].
pub fn check_envelope(frame: &[u8], crc: CrcVariant) -> Result<Envelope<'_>, Hj212Error> {
    if !frame.starts_with(b"##") {
        return Err(if b"##".starts_with(frame) {
            Hj212Error::Truncated {
                expected: ENVELOPE_BYTES,
                got: frame.len(),
            }
        } else {
            Hj212Error::BadHeader {
                got: Quote::of(frame),
            }
        });
    }
    let len_field = &frame[2..frame.len().min(6)];
    if !len_field.iter().all(u8::is_ascii_digit) {
        return Err(Hj212Error::BadLength {
            got: Quote::of(len_field),
        });
    }
    if len_field.len() < 4 {
        return Err(Hj212Error::Truncated {
            expected: ENVELOPE_BYTES,
            got: frame.len(),
        });
    }
    let declared = digits_value(len_field);
    if declared > MAX_SEGMENT_BYTES {
        return Err(Hj212Error::TooLong { declared });
    }
    let expected = declared + ENVELOPE_BYTES;
    if frame.len() != expected || !frame.ends_with(b"\r\n") {
        return Err(misplaced_end(frame, declared));
    }
    let crc_field = &frame[6 + declared..6 + declared + 4];
    let got = parse_hex4(crc_field).ok_or_else(|| Hj212Error::BadCrcField {
        got: Quote::of(crc_field),
    })?;
    let segment = &frame[6..6 + declared];
    if let Some(expected) = crc.compute(segment) {
        if expected != got {
            return Err(Hj212Error::Crc {
                variant: crc,
                expected,
                got,
            });
        }
    }
    Ok(Envelope { segment, crc: got })
}

/// Names what is wrong with the end of a frame that is not `declared + 12` bytes ending
/// in `\r\n`.
fn misplaced_end(frame: &[u8], declared: usize) -> Hj212Error {
    let expected = declared + ENVELOPE_BYTES;
    if frame.len() != expected && frame.len() >= ENVELOPE_BYTES && frame.ends_with(b"\r\n") {
        // A whole frame whose length field lies: the most useful thing to say is both
        // numbers.
        let actual = frame.len() - ENVELOPE_BYTES;
        return if actual > MAX_SEGMENT_BYTES {
            Hj212Error::TooLong { declared: actual }
        } else {
            Hj212Error::LengthMismatch { declared, actual }
        };
    }
    if frame.len() + 2 == expected && frame[frame.len() - 4..].iter().all(u8::is_ascii_hexdigit) {
        // Everything up to the CRC is there and nothing after it.
        return Hj212Error::MissingCrlf {
            got: Quote::of(b""),
        };
    }
    if frame.len() < expected {
        return Hj212Error::Truncated {
            expected,
            got: frame.len(),
        };
    }
    Hj212Error::MissingCrlf {
        got: Quote::of(&frame[expected - 2..frame.len().min(expected)]),
    }
}

/// The value of a run of ASCII digits (at most 4, so no overflow).
pub(super) fn digits_value(digits: &[u8]) -> usize {
    digits
        .iter()
        .fold(0, |n, &d| n * 10 + usize::from(d - b'0'))
}

/// Four hex digits, either case.
pub(super) fn parse_hex4(field: &[u8]) -> Option<u16> {
    if field.len() != 4 {
        return None;
    }
    field.iter().try_fold(0u16, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | v as u16)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: &str = "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";

    fn frame(len: &str, seg: &str, crc: &str, end: &str) -> Vec<u8> {
        format!("##{len}{seg}{crc}{end}").into_bytes()
    }

    #[test]
    fn appendix_a_frame_passes_in_either_case() {
        for crc in ["1C80", "1c80"] {
            let f = frame("0101", SEGMENT, crc, "\r\n");
            let env = check_envelope(&f, CrcVariant::Hj212).unwrap();
            assert_eq!(env.segment, SEGMENT.as_bytes());
            assert_eq!(env.crc, 0x1C80);
        }
    }

    #[test]
    fn each_envelope_fault_has_its_reason() {
        use Hj212Error::*;
        let good = frame("0101", SEGMENT, "1C80", "\r\n");
        let e = |f: &[u8], v| check_envelope(f, v).unwrap_err();
        // The misprint and the Modbus value.
        assert_eq!(
            e(&frame("0101", SEGMENT, "1C08", "\r\n"), CrcVariant::Hj212),
            Crc {
                variant: CrcVariant::Hj212,
                expected: 0x1C80,
                got: 0x1C08
            }
        );
        assert_eq!(
            e(&good, CrcVariant::Modbus),
            Crc {
                variant: CrcVariant::Modbus,
                expected: 0x0759,
                got: 0x1C80
            }
        );
        assert!(
            check_envelope(&frame("0101", SEGMENT, "0759", "\r\n"), CrcVariant::Modbus).is_ok()
        );
        assert!(check_envelope(&frame("0101", SEGMENT, "ABCD", "\r\n"), CrcVariant::None).is_ok());
        assert!(matches!(e(b"#!0101", CrcVariant::Hj212), BadHeader { .. }));
        assert!(matches!(e(b"QN=1", CrcVariant::Hj212), BadHeader { .. }));
        assert!(matches!(
            e(&frame("01a1", SEGMENT, "1C80", "\r\n"), CrcVariant::Hj212),
            BadLength { .. }
        ));
        assert_eq!(
            e(&frame("0100", SEGMENT, "1C80", "\r\n"), CrcVariant::Hj212),
            LengthMismatch {
                declared: 100,
                actual: 101
            }
        );
        assert_eq!(
            e(&frame("0102", SEGMENT, "1C80", "\r\n"), CrcVariant::Hj212),
            LengthMismatch {
                declared: 102,
                actual: 101
            }
        );
        assert_eq!(
            e(&frame("1025", SEGMENT, "1C80", "\r\n"), CrcVariant::Hj212),
            TooLong { declared: 1025 }
        );
        assert_eq!(
            e(&frame("0101", SEGMENT, "1C80", ""), CrcVariant::Hj212),
            MissingCrlf {
                got: Quote::of(b"")
            }
        );
        assert_eq!(
            e(&frame("0101", SEGMENT, "1C80", "\n\r"), CrcVariant::Hj212),
            MissingCrlf {
                got: Quote::of(b"\n\r")
            }
        );
        assert_eq!(
            e(&good[..50], CrcVariant::Hj212),
            Truncated {
                expected: 113,
                got: 50
            }
        );
        assert_eq!(
            e(b"#", CrcVariant::Hj212),
            Truncated {
                expected: 12,
                got: 1
            }
        );
        assert_eq!(
            e(b"##01", CrcVariant::Hj212),
            Truncated {
                expected: 12,
                got: 4
            }
        );
        assert!(matches!(
            e(&frame("0101", SEGMENT, "1C8G", "\r\n"), CrcVariant::Hj212),
            BadCrcField { .. }
        ));
        assert!(matches!(
            e(&frame("0101", SEGMENT, "+C80", "\r\n"), CrcVariant::None),
            BadCrcField { .. }
        ));
    }

    #[test]
    fn a_real_1025_byte_segment_is_too_long() {
        let seg = "x".repeat(1025);
        let f = frame("1025", &seg, "0000", "\r\n");
        assert_eq!(
            check_envelope(&f, CrcVariant::None),
            Err(Hj212Error::TooLong { declared: 1025 })
        );
        // Even when the length field understates it.
        let f = frame("1024", &seg, "0000", "\r\n");
        assert_eq!(
            check_envelope(&f, CrcVariant::None),
            Err(Hj212Error::TooLong { declared: 1025 })
        );
    }
}
