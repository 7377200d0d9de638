//! Cuts a TCP byte stream into frames. Feed it whatever each read returned: frames
//! split across reads, several frames in one read, garbage between frames; it yields
//! each complete frame (still to be checked by [`decode`](super::decode)) or a framing
//! error, and resynchronises on the next `##`.
//!
//! Memory is bounded: the framer holds at most one frame ([`MAX_FRAME_BYTES`]) plus a
//! few bytes of quoted garbage, whatever the peer sends. Garbage is never buffered: it
//! is counted, and reported as one [`Hj212Error::Garbage`] per run when the next `##`
//! arrives (or every [`MAX_FRAME_BYTES`] bytes of a run that does not end). Whether a
//! peer that sends garbage is disconnected is the listener's policy, not the framer's.

use super::envelope::{digits_value, ENVELOPE_BYTES, MAX_FRAME_BYTES};
use super::error::{Hj212Error, Quote, QUOTE_BYTES};
use super::MAX_SEGMENT_BYTES;

/// The framing state of one connection.
#[derive(Debug, Default)]
pub struct Framer {
    /// The frame being assembled: empty, `#`, or starting with `##`; never longer than
    /// [`MAX_FRAME_BYTES`].
    buf: Vec<u8>,
    /// Garbage bytes in the current run, not yet reported.
    garbage_run: usize,
    /// The first bytes of the current garbage run, for the report.
    garbage_head: Vec<u8>,
    /// Every byte skipped so far: garbage and the bytes of refused frames.
    skipped_total: u64,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one read's bytes; the iterator yields every frame (or framing error) they
    /// complete. Bytes it does not yield stay buffered for the next call, so drain the
    /// iterator before feeding again.
    pub fn feed<'f, 'c>(&'f mut self, chunk: &'c [u8]) -> Frames<'f, 'c> {
        Frames {
            framer: self,
            input: chunk,
        }
    }

    /// Bytes buffered for an incomplete frame.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes skipped since the start: garbage plus the bytes of refused frames.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_total
    }

    /// Ends the stream (the peer closed or was cut off): reports an unreported garbage
    /// run and a frame cut short, and resets the framer.
    pub fn finish(&mut self) -> Vec<Hj212Error> {
        let mut out = Vec::new();
        if self.buf.len() == 1 {
            // A lone `#`: garbage, not a frame.
            self.note_garbage(b"#");
            self.buf.clear();
        }
        if self.garbage_run > 0 {
            out.push(self.take_garbage());
        }
        if !self.buf.is_empty() {
            let expected = if self.buf.len() >= 6 && self.buf[2..6].iter().all(u8::is_ascii_digit) {
                digits_value(&self.buf[2..6]) + ENVELOPE_BYTES
            } else {
                ENVELOPE_BYTES
            };
            out.push(Hj212Error::Truncated {
                expected,
                got: self.buf.len(),
            });
            self.skipped_total += self.buf.len() as u64;
        }
        self.buf.clear();
        out
    }

    /// Counts garbage bytes, keeping the first few for the report.
    fn note_garbage(&mut self, bytes: &[u8]) {
        // One byte more than a quote shows, so the quote knows to mark the cut.
        let room = (QUOTE_BYTES + 1).saturating_sub(self.garbage_head.len());
        self.garbage_head
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.garbage_run += bytes.len();
        self.skipped_total += bytes.len() as u64;
    }

    fn take_garbage(&mut self) -> Hj212Error {
        let e = Hj212Error::Garbage {
            skipped: self.garbage_run,
            head: Quote::of(&self.garbage_head),
        };
        self.garbage_run = 0;
        self.garbage_head.clear();
        e
    }

    /// Drops the first `consumed` buffered bytes, then everything before the next `##`
    /// in what is left (a `#` at the very end is kept: it may start one).
    fn rescan(&mut self, consumed: usize, what: Dropped) {
        let rest = &self.buf[consumed..];
        let keep_from = match rest.windows(2).position(|w| w == b"##") {
            Some(q) => q,
            None if rest.ends_with(b"#") => rest.len() - 1,
            None => rest.len(),
        };
        let dropped = consumed + keep_from;
        let garbage = match what {
            Dropped::Frame => consumed..dropped,
            Dropped::Garbage => 0..dropped,
            Dropped::Refused => {
                // Already reported by the error that refused the frame.
                self.skipped_total += dropped as u64;
                0..0
            }
        };
        if !garbage.is_empty() {
            let g = self.buf[garbage].to_vec();
            self.note_garbage(&g);
        }
        self.buf.drain(..dropped);
    }
}

/// What the first bytes [`Framer::rescan`] drops were.
#[derive(Debug, Clone, Copy)]
enum Dropped {
    /// A frame already yielded.
    Frame,
    /// The start of a frame just refused.
    Refused,
    /// Not a frame after all (the first `#` of `###`).
    Garbage,
}

/// The frames one [`Framer::feed`] completes: each `Ok` is one whole frame, `##` to
/// `\r\n`; each `Err` a framing error (the framer has already resynchronised).
#[derive(Debug)]
pub struct Frames<'f, 'c> {
    framer: &'f mut Framer,
    input: &'c [u8],
}

impl Iterator for Frames<'_, '_> {
    type Item = Result<Vec<u8>, Hj212Error>;

    // Long because the framing state machine (hunting for `##`, the length header, the
    // body, the trailer) reads best as one loop over the buffered bytes.
    fn next(&mut self) -> Option<Self::Item> {
        let f = &mut *self.framer;
        loop {
            if f.garbage_run >= MAX_FRAME_BYTES {
                return Some(Err(f.take_garbage()));
            }
            // Hunting for `##`: garbage is counted, never copied.
            if f.buf.len() < 2 {
                if f.buf.len() == 1 {
                    let (&first, rest) = self.input.split_first()?;
                    if first == b'#' {
                        f.buf.push(b'#');
                        self.input = rest;
                    } else {
                        // The lone `#` was garbage; the byte after it is looked at again.
                        f.note_garbage(b"#");
                        f.buf.clear();
                    }
                    continue;
                }
                if self.input.is_empty() {
                    return None;
                }
                match self.input.windows(2).position(|w| w == b"##") {
                    Some(p) => {
                        f.note_garbage(&self.input[..p]);
                        f.buf.extend_from_slice(b"##");
                        self.input = &self.input[p + 2..];
                    }
                    None => {
                        let keep = usize::from(self.input.ends_with(b"#"));
                        let g = &self.input[..self.input.len() - keep];
                        f.note_garbage(g);
                        if keep == 1 {
                            f.buf.push(b'#');
                        }
                        self.input = &[];
                    }
                }
                continue;
            }
            // In a frame: the length field first.
            if f.buf.len() < 6 {
                let take = (6 - f.buf.len()).min(self.input.len());
                f.buf.extend_from_slice(&self.input[..take]);
                self.input = &self.input[take..];
                if f.buf.len() < 6 {
                    return None;
                }
            }
            if f.buf[2] == b'#' {
                // `###`: the frame starts one byte later.
                f.rescan(1, Dropped::Garbage);
                continue;
            }
            // The frame's start is settled: report the garbage before it first.
            if f.garbage_run > 0 {
                return Some(Err(f.take_garbage()));
            }
            if !f.buf[2..6].iter().all(u8::is_ascii_digit) {
                let e = Hj212Error::BadLength {
                    got: Quote::of(&f.buf[2..6]),
                };
                f.rescan(1, Dropped::Refused);
                return Some(Err(e));
            }
            let declared = digits_value(&f.buf[2..6]);
            if declared > MAX_SEGMENT_BYTES {
                f.rescan(1, Dropped::Refused);
                return Some(Err(Hj212Error::TooLong { declared }));
            }
            let total = declared + ENVELOPE_BYTES;
            if f.buf.len() < total {
                let take = (total - f.buf.len()).min(self.input.len());
                f.buf.extend_from_slice(&self.input[..take]);
                self.input = &self.input[take..];
                if f.buf.len() < total {
                    return None;
                }
            }
            if &f.buf[total - 2..total] != b"\r\n" {
                // Where the frame really ends says whether the length field lied.
                let e = match f.buf[..total].windows(2).position(|w| w == b"\r\n") {
                    Some(p) if p >= 10 => Hj212Error::LengthMismatch {
                        declared,
                        actual: p - 10,
                    },
                    _ => Hj212Error::MissingCrlf {
                        got: Quote::of(&f.buf[total - 2..total]),
                    },
                };
                f.rescan(1, Dropped::Refused);
                return Some(Err(e));
            }
            let frame = f.buf[..total].to_vec();
            // After a resynchronisation the buffer can hold bytes past this frame.
            f.rescan(total, Dropped::Frame);
            return Some(Ok(frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";
    const B: &[u8] =
        b"##0073ST=32;CN=8013;PW=123456;MN=ZG130182201205;Flag=0;CP=&&HeartbeatTime=120&&0500\r\n";

    fn run(chunks: &[&[u8]]) -> (Vec<Result<Vec<u8>, Hj212Error>>, Framer) {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.feed(c));
            assert!(f.pending_bytes() <= MAX_FRAME_BYTES);
        }
        (out, f)
    }

    #[test]
    fn several_frames_in_one_read_and_one_frame_in_many() {
        let both = [A, B, A].concat();
        let (out, f) = run(&[&both]);
        assert_eq!(out, vec![Ok(A.to_vec()), Ok(B.to_vec()), Ok(A.to_vec())]);
        assert_eq!(f.pending_bytes(), 0);
        let bytes: Vec<&[u8]> = both.chunks(1).collect();
        let (out, f) = run(&bytes);
        assert_eq!(out, vec![Ok(A.to_vec()), Ok(B.to_vec()), Ok(A.to_vec())]);
        assert_eq!(f.skipped_bytes(), 0);
    }

    #[test]
    fn garbage_is_skipped_counted_and_reported_once_per_run() {
        let stream = [b"hello # world#".as_slice(), A, b"\r\n\0\0", B].concat();
        let (out, mut f) = run(&[&stream[..3], &stream[3..20], &stream[20..]]);
        assert_eq!(
            out,
            vec![
                Err(Hj212Error::Garbage {
                    skipped: 14,
                    head: Quote::of(b"hello # world#")
                }),
                Ok(A.to_vec()),
                Err(Hj212Error::Garbage {
                    skipped: 4,
                    head: Quote::of(b"\r\n\0\0")
                }),
                Ok(B.to_vec()),
            ]
        );
        assert_eq!(f.skipped_bytes(), 18);
        assert!(f.finish().is_empty());
    }

    #[test]
    fn endless_garbage_is_reported_without_buffering() {
        let junk = vec![b'x'; 10 * MAX_FRAME_BYTES];
        let (out, f) = run(&[&junk[..5000], &junk[5000..]]);
        let skipped: usize = out
            .iter()
            .map(|r| match r {
                Err(Hj212Error::Garbage { skipped, .. }) => *skipped,
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(out.len(), 2);
        assert_eq!(skipped, junk.len());
        assert_eq!(f.pending_bytes(), 0);
    }

    #[test]
    fn a_device_killed_mid_frame_leaves_a_truncated_report() {
        let (out, mut f) = run(&[&A[..40]]);
        assert!(out.is_empty());
        assert_eq!(f.pending_bytes(), 40);
        assert_eq!(
            f.finish(),
            vec![Hj212Error::Truncated {
                expected: 113,
                got: 40
            }]
        );
        assert_eq!(f.pending_bytes(), 0);
        // A new stream on the same framer starts clean.
        let out: Vec<_> = f.feed(B).collect();
        assert_eq!(out, vec![Ok(B.to_vec())]);
    }

    #[test]
    fn bad_frames_are_refused_and_the_next_one_is_found() {
        // A length field that overstates swallows the start of the next frame; the
        // framer refuses it and finds that frame again in its buffer.
        let mut lying = A.to_vec();
        lying[2..6].copy_from_slice(b"0103");
        let stream = [lying.as_slice(), B].concat();
        let (out, _) = run(&[&stream]);
        assert_eq!(
            out[0],
            Err(Hj212Error::LengthMismatch {
                declared: 103,
                actual: 101
            })
        );
        assert_eq!(out[1..], [Ok(B.to_vec())]);

        let stream = [b"##12x4".as_slice(), B].concat();
        let (out, _) = run(&[&stream]);
        assert!(matches!(out[0], Err(Hj212Error::BadLength { .. })));
        assert_eq!(out.last(), Some(&Ok(B.to_vec())));

        let stream = [b"##9999".as_slice(), B].concat();
        let (out, _) = run(&[&stream]);
        assert_eq!(out[0], Err(Hj212Error::TooLong { declared: 9999 }));
        assert_eq!(out.last(), Some(&Ok(B.to_vec())));

        let mut no_crlf = A.to_vec();
        no_crlf.truncate(A.len() - 2);
        let stream = [no_crlf.as_slice(), b"zz", B].concat();
        let (out, _) = run(&[&stream]);
        assert!(matches!(out[0], Err(Hj212Error::MissingCrlf { .. })));
        assert_eq!(out.last(), Some(&Ok(B.to_vec())));
    }
}
