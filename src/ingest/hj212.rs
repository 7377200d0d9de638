//! HJ 212 frames in the ingest: the envelope checked, the segment parsed, the device
//! found by its `MN` in the site registry (which names its site, password, CRC variant
//! and unit), then the frame's readings validated like any other.
//!
//! The CRC is checked after the segment is parsed because the variant is a per-device
//! setting and the device is named inside the segment. A payload (an HJ 212 TCP frame,
//! or an MQTT message on an HJ 212 topic) may hold several frames; a frame that fails
//! refuses the payload (no CN=9014 reply), the others' readings are still stored.

use super::{Ingest, Recorder};
use crate::aqi::zone::Zone;
use crate::decode::hj212::{check_envelope, parse_segment, to_observations, CrcVariant, Framer};
use crate::metrics::Metrics;
use crate::model::{ConcentrationUnit, Reading};
use crate::reject::{RejectReason, Rejection};
use crate::sites::{Hj212Device, UnknownMn};
use crate::source::Message;
use crate::validate::{self, SiteDefaults};

/// How HJ 212 frames are attributed and checked, resolved from `[hj212]`.
#[derive(Debug, Clone, Default)]
pub struct Hj212Rules {
    pub unknown_mn: UnknownMn,
    /// The CRC variant of devices whose registry entry names none.
    pub default_crc: CrcVariant,
    /// Local time of `DataTime`.
    pub zone: Zone,
    /// MQTT topic filters whose payloads are HJ 212 frames.
    pub mqtt_topics: Vec<String>,
}

impl Hj212Rules {
    /// Whether an MQTT topic carries HJ 212 frames.
    pub fn is_hj212_topic(&self, topic: &str) -> bool {
        self.mqtt_topics
            .iter()
            .any(|f| crate::source::topic::matches(topic, f))
    }
}

/// Takes every frame of an HJ 212 payload; `Err` if any frame was refused.
pub(super) fn take(
    ingest: &Ingest,
    m: &Message,
    rec: &mut Recorder<'_>,
    readings: &mut Vec<Reading>,
) -> Result<(), Rejection> {
    let mut framer = Framer::new();
    let mut frames = 0;
    let mut refused = None;
    for frame in framer.feed(&m.payload) {
        frames += 1;
        let r = frame
            .map_err(|e| e.rejection())
            .and_then(|f| take_frame(ingest, &f, m, rec, readings));
        if let Err(r) = r {
            // The first refusal refuses the payload; the others are recorded too.
            match refused {
                None => refused = Some(r),
                Some(_) => rec.reject(r),
            }
        }
    }
    for e in framer.finish() {
        let r = e.rejection();
        match refused {
            None => refused = Some(r),
            Some(_) => rec.reject(r),
        }
    }
    match refused {
        Some(r) => Err(r),
        None if frames == 0 => Err(Rejection::new(
            RejectReason::Hj212BadHeader,
            "no HJ 212 frame in the payload",
        )),
        None => Ok(()),
    }
}

/// One whole frame (`##` to CRLF).
fn take_frame(
    ingest: &Ingest,
    bytes: &[u8],
    m: &Message,
    rec: &mut Recorder<'_>,
    readings: &mut Vec<Reading>,
) -> Result<(), Rejection> {
    let rules = &ingest.settings.hj212;
    let envelope = check_envelope(bytes, CrcVariant::None).map_err(|e| e.rejection())?;
    let frame = parse_segment(envelope.segment).map_err(|e| e.rejection())?;
    let device = device(ingest, &frame.mn)?;
    if let Some(want) = &device.password {
        if !crate::credentials::same(want.as_bytes(), frame.pw.as_bytes()) {
            return Err(Rejection::new(
                RejectReason::Hj212WrongPassword,
                format!("device {}: PW is not the registered password", frame.mn),
            ));
        }
    }
    if let Some(want) = device.version {
        if frame.version() != Some(want) {
            return Err(Rejection::new(
                RejectReason::Hj212UnknownVersion,
                format!(
                    "device {} is registered as {want:?}; its frame's Flag says {:?}",
                    frame.mn,
                    frame.version()
                ),
            ));
        }
    }
    let variant = device.crc.unwrap_or(rules.default_crc);
    if let Some(expected) = variant.compute(envelope.segment) {
        if expected != envelope.crc {
            return Err(Rejection::new(
                RejectReason::Hj212BadCrc,
                format!(
                    "CRC {:04X} expected ({}), frame has {:04X}",
                    expected,
                    variant.as_str(),
                    envelope.crc
                ),
            ));
        }
    }
    let unknown: Vec<&str> = frame.ignored_codes().collect();
    if !unknown.is_empty() {
        // Not fatal: the frame's PM readings are stored; the codes are counted.
        rec.reject(Rejection::new(
            RejectReason::Hj212UnknownCode,
            format!("ignored codes: {}", unknown.join(",")),
        ));
    }
    let site = validate::site(&device.site)?;
    let unit = device
        .defaults
        .unit
        .unwrap_or(ConcentrationUnit::MicrogramsPerCubicMetre);
    let observations = to_observations(&frame, rules.zone, unit).map_err(|e| e.rejection())?;
    Metrics::add(&ingest.metrics.readings_received, observations.len() as u64);
    for o in observations {
        match validate::reading_with(
            &site,
            o,
            m.received,
            &ingest.settings.policy,
            device.defaults,
        ) {
            Ok(r) => readings.push(r),
            Err(r) => rec.reject(r),
        }
    }
    Ok(())
}

/// The registered device, or one made up per `[hj212] unknown_mn`.
fn device(ingest: &Ingest, mn: &str) -> Result<Hj212Device, Rejection> {
    if let Some(d) = ingest.registry.hj212_device(mn) {
        return Ok(d);
    }
    match ingest.settings.hj212.unknown_mn {
        UnknownMn::Register if ingest.registry.allows(mn) => Ok(Hj212Device {
            site: mn.to_owned(),
            password: None,
            crc: None,
            version: None,
            defaults: SiteDefaults::default(),
        }),
        _ => Err(Rejection::new(
            RejectReason::Hj212UnknownMn,
            format!(
                "device MN {} is not in the site registry",
                crate::decode::hj212::Quote::of(mn.as_bytes())
            ),
        )),
    }
}
