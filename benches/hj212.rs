//! HJ 212 decode-rate benchmark (prints its figures): `cargo bench --bench hj212`.
//!
//! One core, one typical construction-dust frame (CN=2011 with PM10, PM2.5, TSP,
//! temperature, humidity, wind speed and direction, noise; 2017 flags; Appendix A CRC):
//! envelope check + CRC + segment parse + `to_observations`, repeated; then the same
//! frames cut from a byte stream by the framer first, in 1 460-byte reads (one TCP
//! segment). The median of several rounds is printed as frames/s.

use std::hint::black_box;
use std::time::Instant;

use aq_ingest::aqi::zone::Zone;
use aq_ingest::decode::hj212::{decode, encode_segment, to_observations, CrcVariant, Framer};
use aq_ingest::model::ConcentrationUnit;

const SEGMENT: &str = "QN=20260801085857223;ST=39;CN=2011;PW=123456;MN=410103A8900016F000169DC0;Flag=5;CP=&&DataTime=20260801085800;a34002-Rtd=80.1,a34002-Flag=N;a34004-Rtd=35.2,a34004-Flag=N;a34001-Rtd=120.5,a34001-Flag=N;a01001-Rtd=28.4,a01001-Flag=N;a01002-Rtd=61.0,a01002-Flag=N;a01007-Rtd=2.3,a01007-Flag=N;a01008-Rtd=135,a01008-Flag=N;LA-Rtd=62.5,LA-Flag=N&&";

const FRAMES_PER_ROUND: usize = 200_000;
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let frame = encode_segment(SEGMENT, CrcVariant::Hj212).expect("frame");
    let unit = ConcentrationUnit::MicrogramsPerCubicMetre;
    println!(
        "frame: {} bytes, CN=2011, 8 codes, Appendix A CRC",
        frame.len()
    );

    let rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let mut n = 0;
            for _ in 0..FRAMES_PER_ROUND {
                let f = decode(black_box(&frame), CrcVariant::Hj212).expect("decodes");
                n += to_observations(&f, Zone::BEIJING, unit).expect("obs").len();
            }
            assert_eq!(n, FRAMES_PER_ROUND);
            FRAMES_PER_ROUND as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    let r = median(rates);
    println!(
        "decode + to_observations: {:.0} frames/s on one core ({:.2} µs/frame, {:.0} MB/s)",
        r,
        1e6 / r,
        r * frame.len() as f64 / 1e6
    );

    let stream: Vec<u8> = frame.repeat(FRAMES_PER_ROUND);
    let rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let mut framer = Framer::new();
            let mut n = 0;
            for chunk in stream.chunks(1460) {
                for bytes in framer.feed(black_box(chunk)) {
                    let f = decode(&bytes.expect("framed"), CrcVariant::Hj212).expect("decodes");
                    n += to_observations(&f, Zone::BEIJING, unit).expect("obs").len();
                }
            }
            assert_eq!(n, FRAMES_PER_ROUND);
            FRAMES_PER_ROUND as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    let r = median(rates);
    println!(
        "framer + decode + to_observations: {:.0} frames/s on one core ({:.2} µs/frame)",
        r,
        1e6 / r
    );
}
