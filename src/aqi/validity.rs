//! GB 3095-2012 data validity, per pollutant: valid hours from hourly aggregates, valid
//! days from valid hours.
//!
//! Choices (named here, listed in the README):
//! - an hour is valid when its normal-flag samples cover at least
//!   [`VALID_HOUR_COVERAGE_SECS`] (the 45-minute rule GB 3095 applies to gases; common
//!   practice for PM); each sample covers its device's `interval_secs`, or
//!   `default_interval_secs` when the device does not say. For a fixed cadence that is
//!   `ceil(0.75 × 3600 / interval)` samples;
//! - a device's own hourly mean (`period: hour`, HJ 212 CN=2061) with a normal flag makes
//!   the hour valid, and takes precedence over the samples ([`DEVICE_HOURLY_MEAN_WINS`]);
//! - a day is valid with at least [`MIN_VALID_HOURS`] valid hours; its mean is the mean
//!   of the valid hourly means.

use super::mean::Milli;

/// Coverage that makes an hour valid: 45 minutes.
pub const VALID_HOUR_COVERAGE_SECS: u64 = 45 * 60;

/// Valid hours that make a day valid (GB 3095-2012 Table 4).
pub const MIN_VALID_HOURS: usize = 20;

/// When a device sends both samples and its own hourly mean for an hour, the hourly
/// mean is the hour's value (certified monitors compute it over their full sampling).
pub const DEVICE_HOURLY_MEAN_WINS: bool = true;

/// One pollutant's aggregate for one site-hour, as kept in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourAgg {
    /// Normal-flag samples.
    pub n: u32,
    /// Their sum, in milli-µg/m³.
    pub sum_milli: i64,
    /// Seconds they cover, from samples that state their interval.
    pub covered_secs: u64,
    /// Samples that did not state an interval (they cover the default).
    pub n_without_interval: u32,
    /// The device's own hourly mean, normal flag, in milli-µg/m³.
    pub device_mean_milli: Option<i64>,
}

impl HourAgg {
    /// The hour's mean when the hour is valid.
    pub fn valid_mean(&self, default_interval_secs: u32) -> Option<Milli> {
        if DEVICE_HOURLY_MEAN_WINS {
            if let Some(m) = self.device_mean_milli {
                return Some(Milli::ratio(i128::from(m), 1));
            }
        }
        let covered = self.covered_secs
            + u64::from(self.n_without_interval) * u64::from(default_interval_secs);
        if self.n > 0 && covered >= VALID_HOUR_COVERAGE_SECS {
            Some(Milli::ratio(i128::from(self.sum_milli), i128::from(self.n)))
        } else {
            self.device_mean_milli
                .map(|m| Milli::ratio(i128::from(m), 1))
        }
    }
}

/// A pollutant's day at one site: how many valid hours, and the daily mean when valid.
#[derive(Debug, Clone, Copy)]
pub struct DayAgg {
    pub valid_hours: usize,
    pub mean: Option<Milli>,
}

/// The day from its hours' valid means.
pub fn day(hour_means: &[Milli]) -> DayAgg {
    DayAgg {
        valid_hours: hour_means.len(),
        mean: if hour_means.len() >= MIN_VALID_HOURS {
            Milli::mean(hour_means)
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: u32, interval: u64, each_ug: i64) -> HourAgg {
        HourAgg {
            n,
            sum_milli: i64::from(n) * each_ug * 1000,
            covered_secs: u64::from(n) * interval,
            ..HourAgg::default()
        }
    }

    #[test]
    fn forty_four_minutes_is_not_an_hour_forty_five_is() {
        assert!(samples(44, 60, 10).valid_mean(60).is_none());
        assert_eq!(samples(45, 60, 10).valid_mean(60).unwrap().round_ug(), 10);
        // 30-second cadence: ceil(0.75 × 3600 / 30) = 90 samples.
        assert!(samples(89, 30, 10).valid_mean(60).is_none());
        assert!(samples(90, 30, 10).valid_mean(60).is_some());
        // No interval stated: the default cadence decides.
        let h = HourAgg {
            n: 9,
            sum_milli: 90_000,
            n_without_interval: 9,
            ..HourAgg::default()
        };
        assert!(h.valid_mean(300).is_some()); // 9 × 5 min = 45 min
        assert!(h.valid_mean(299).is_none());
    }

    #[test]
    fn a_device_hourly_mean_is_a_valid_hour() {
        let h = HourAgg {
            device_mean_milli: Some(42_000),
            ..samples(3, 60, 10)
        };
        assert_eq!(h.valid_mean(60).unwrap().round_ug(), 42);
    }

    #[test]
    fn nineteen_hours_is_not_a_day_twenty_is() {
        let h = Milli::from_ug(30.0);
        assert!(day(&[h; 19]).mean.is_none());
        assert_eq!(day(&[h; 19]).valid_hours, 19);
        assert_eq!(day(&[h; 20]).mean.unwrap().round_ug(), 30);
    }

    use proptest::prelude::*;

    proptest! {
        /// More data never makes an hour or a day less valid.
        #[test]
        fn more_data_never_makes_a_day_less_valid(
            n in 0u32..80, extra in 0u32..80, interval in 1u64..600, hours in 0usize..24, more_hours in 0usize..5,
        ) {
            let a = samples(n, interval, 10);
            let b = samples(n + extra, interval, 10);
            if a.valid_mean(60).is_some() {
                prop_assert!(b.valid_mean(60).is_some());
            }
            let h = Milli::from_ug(10.0);
            let d1 = day(&vec![h; hours]);
            let d2 = day(&vec![h; hours + more_hours]);
            prop_assert!(d2.valid_hours >= d1.valid_hours);
            if d1.mean.is_some() {
                prop_assert!(d2.mean.is_some());
            }
        }
    }
}
