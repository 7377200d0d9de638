//! Arbitrary bytes into the HJ 212 decoder: the envelope check and segment parser
//! (`decode`, `parse_segment`), the conversion to observations, and the stream framer
//! fed in two pieces. Nothing may panic; the framer never holds more than one frame;
//! whatever decodes re-encodes to a frame that decodes the same.

#![no_main]

use aq_ingest::aqi::zone::Zone;
use aq_ingest::decode::hj212::{
    decode, encode, parse_segment, to_observations, CrcVariant, Framer, MAX_FRAME_BYTES,
};
use aq_ingest::model::ConcentrationUnit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for crc in [CrcVariant::Hj212, CrcVariant::Modbus, CrcVariant::None] {
        if let Ok(frame) = decode(data, crc) {
            let _ = to_observations(
                &frame,
                Zone::BEIJING,
                ConcentrationUnit::MicrogramsPerCubicMetre,
            );
            let _ = frame.reply(CrcVariant::Hj212);
            // Re-encoding can only fail by growing past 1024 bytes (`.5` → `0.5`).
            if let Ok(bytes) = encode(&frame, CrcVariant::Hj212) {
                assert_eq!(decode(&bytes, CrcVariant::Hj212).as_ref(), Ok(&frame));
            }
        }
    }
    let _ = parse_segment(data);

    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut framer = Framer::new();
    for chunk in [&data[..cut], &data[cut..]] {
        for frame in framer.feed(chunk).flatten() {
            assert!(frame.starts_with(b"##") && frame.ends_with(b"\r\n"));
            let _ = decode(&frame, CrcVariant::None);
        }
        assert!(framer.pending_bytes() <= MAX_FRAME_BYTES);
    }
    let _ = framer.finish();
});
