//! Policy: turns a decoded [`Observation`] into a [`Reading`] or a [`Rejection`] with a
//! reason. Pure: the receive time is passed in.

use crate::decode::Observation;
use crate::model::{
    ConcentrationError, ConcentrationUnit, DeviceId, MicrogramsPerCubicMetre, Reading, SiteId,
    UnixMillis, MAX_CONCENTRATION_UG_M3,
};
use crate::reject::{RejectReason, Rejection};

/// How far ahead of the receive clock a timestamp may be. Device clocks drift; five
/// minutes tolerates drift while refusing readings stamped in the wrong time zone (8 h
/// ahead) or the wrong year.
pub const DEFAULT_MAX_FUTURE_SECS: u64 = 300;

/// Readings stamped before this instant (2000-01-01T00:00:00Z) are refused whatever the
/// retention: no PM monitor reporting over HJ 212 (2005) or MQTT predates it, and a
/// device whose clock reset to 1970 must not write a 30-year-old "reading".
pub const EARLIEST_ACCEPTED: UnixMillis = UnixMillis(946_684_800_000);

/// The validation policy, built from config.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Largest accepted `ts - receive time`, in milliseconds.
    pub max_future_ms: i64,
    /// Largest accepted `receive time - ts`, in milliseconds: the store's retention, so
    /// nothing is stored only to be pruned at once. `None`: kept forever.
    pub max_age_ms: Option<i64>,
}

/// Checks the site id from the topic. Done once per message, not per reading.
pub fn site(raw: &str) -> Result<SiteId, Rejection> {
    SiteId::parse(raw).map_err(|e| {
        Rejection::new(
            RejectReason::BadSiteId,
            format!("site id {:?}: {}", clip(raw), e.as_str()),
        )
    })
}

/// What the site registry says about a site, for validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SiteDefaults {
    /// The unit of payloads that do not state one.
    pub unit: Option<ConcentrationUnit>,
    /// The cadence of payloads that do not state `interval_secs`.
    pub interval_secs: Option<u32>,
}

/// Validates one observation for `site`, received at `now`.
pub fn reading(
    site: &SiteId,
    obs: Observation,
    now: UnixMillis,
    policy: &Policy,
) -> Result<Reading, Rejection> {
    reading_with(site, obs, now, policy, SiteDefaults::default())
}

/// [`reading`], with the site's registered unit and cadence as defaults.
pub fn reading_with(
    site: &SiteId,
    obs: Observation,
    now: UnixMillis,
    policy: &Policy,
    defaults: SiteDefaults,
) -> Result<Reading, Rejection> {
    let unit = obs
        .unit
        .or(defaults.unit)
        .unwrap_or(ConcentrationUnit::MicrogramsPerCubicMetre);
    if obs.ts.0 > now.0.saturating_add(policy.max_future_ms) {
        return Err(Rejection::new(
            RejectReason::FutureTimestamp,
            format!("ts {} is ahead of the receive time {}", obs.ts, now),
        ));
    }
    let too_old = policy
        .max_age_ms
        .is_some_and(|age| obs.ts.0 < now.0.saturating_sub(age));
    if obs.ts < EARLIEST_ACCEPTED || too_old {
        return Err(Rejection::new(
            RejectReason::StaleTimestamp,
            format!(
                "ts {} is older than the retention window (or before {})",
                obs.ts, EARLIEST_ACCEPTED
            ),
        ));
    }
    let device = match obs.device {
        None => None,
        Some(d) => Some(DeviceId::parse(&d).map_err(|e| {
            Rejection::new(
                RejectReason::BadDeviceId,
                format!("device {:?}: {}", clip(&d), e.as_str()),
            )
        })?),
    };
    let conv = |key: &str, v: Option<f64>| -> Result<Option<MicrogramsPerCubicMetre>, Rejection> {
        let Some(v) = v else { return Ok(None) };
        let ug = unit.to_micrograms(v);
        MicrogramsPerCubicMetre::new(ug)
            .map(Some)
            .map_err(|e| match e {
                ConcentrationError::NotFinite => {
                    Rejection::new(RejectReason::NotFinite, format!("{key} is not finite"))
                }
                ConcentrationError::Negative => Rejection::new(
                    RejectReason::NegativeValue,
                    format!("{key} {v} is negative"),
                ),
                ConcentrationError::TooLarge => Rejection::new(
                    RejectReason::OutOfRange,
                    format!(
                        "{key} {v} is {ug} µg/m³, above {MAX_CONCENTRATION_UG_M3}: check the unit"
                    ),
                ),
            })
    };
    Ok(Reading {
        site: site.clone(),
        device,
        ts: obs.ts,
        period: obs.period,
        flag: obs.flag,
        pm25: conv("pm25", obs.pm25)?,
        pm10: conv("pm10", obs.pm10)?,
        interval_secs: obs.interval_secs.or(defaults.interval_secs),
    })
}

fn clip(s: &str) -> String {
    let cut: String = s.chars().take(32).collect();
    cut.escape_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConcentrationUnit, Flag, Period, MS_PER_DAY};

    const NOW: UnixMillis = UnixMillis(1_470_013_137_000);
    const POLICY: Policy = Policy {
        max_future_ms: 300_000,
        max_age_ms: Some(MS_PER_DAY),
    };

    fn obs(ts: i64, pm10: f64, unit: ConcentrationUnit) -> Observation {
        Observation {
            ts: UnixMillis(ts),
            pm25: None,
            pm10: Some(pm10),
            unit: Some(unit),
            flag: Flag::Normal,
            device: None,
            interval_secs: None,
            period: Period::Sample,
        }
    }

    fn check(o: Observation) -> Result<Reading, RejectReason> {
        reading(&site("s1").unwrap(), o, NOW, &POLICY).map_err(|r| r.reason)
    }

    #[test]
    fn time_window_edges() {
        let ug = ConcentrationUnit::MicrogramsPerCubicMetre;
        assert!(check(obs(NOW.0 + 300_000, 1.0, ug)).is_ok());
        assert_eq!(
            check(obs(NOW.0 + 300_001, 1.0, ug)),
            Err(RejectReason::FutureTimestamp)
        );
        assert!(check(obs(NOW.0 - MS_PER_DAY, 1.0, ug)).is_ok());
        assert_eq!(
            check(obs(NOW.0 - 86_400_001, 1.0, ug)),
            Err(RejectReason::StaleTimestamp)
        );
    }

    #[test]
    fn ancient_readings_are_refused_even_when_kept_forever() {
        let forever = Policy {
            max_age_ms: None,
            ..POLICY
        };
        let ug = ConcentrationUnit::MicrogramsPerCubicMetre;
        let s = site("s1").unwrap();
        assert!(reading(&s, obs(EARLIEST_ACCEPTED.0, 1.0, ug), NOW, &forever).is_ok());
        assert_eq!(
            reading(&s, obs(EARLIEST_ACCEPTED.0 - 1, 1.0, ug), NOW, &forever)
                .unwrap_err()
                .reason,
            RejectReason::StaleTimestamp
        );
    }

    #[test]
    fn units_are_converted_before_the_range_check() {
        let mg = ConcentrationUnit::MilligramsPerCubicMetre;
        let r = check(obs(NOW.0, 0.15, mg)).unwrap();
        assert!((r.pm10.unwrap().value() - 150.0).abs() < 1e-9);
        // 15 mg/m³ is 15 000 µg/m³: a unit mistake, not a dust storm.
        assert_eq!(check(obs(NOW.0, 15.0, mg)), Err(RejectReason::OutOfRange));
        assert_eq!(
            check(obs(NOW.0, -1.0, ConcentrationUnit::MicrogramsPerCubicMetre)),
            Err(RejectReason::NegativeValue)
        );
    }

    #[test]
    fn device_ids_are_checked() {
        let mut o = obs(NOW.0, 1.0, ConcentrationUnit::MicrogramsPerCubicMetre);
        o.device = Some("dev 1".into());
        assert_eq!(check(o), Err(RejectReason::BadDeviceId));
        assert_eq!(site("a,b").unwrap_err().reason, RejectReason::BadSiteId);
    }
}
