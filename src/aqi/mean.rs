//! Exact means. Concentrations are summed as integer milli-µg/m³ (each sample rounded
//! to 0.001 µg/m³ on the way in — our choice; devices report at most one decimal), and
//! means are kept as reduced fractions, so that a daily mean of exactly 75.5 is 75.5 and
//! rounds half-even to 76, whatever the order the samples arrived in.

use std::cmp::Ordering;

/// Milli-µg/m³ per µg/m³.
pub const MILLI: i128 = 1000;

/// A non-negative rational number of milli-µg/m³.
#[derive(Debug, Clone, Copy)]
pub struct Milli {
    num: i128,
    den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs().max(1)
}

impl Milli {
    /// `num / den` milli-µg/m³; `den` must be positive.
    pub fn ratio(num: i128, den: i128) -> Milli {
        assert!(den > 0, "mean of nothing");
        let g = gcd(num, den);
        Milli {
            num: num / g,
            den: den / g,
        }
    }

    /// A fraction already in lowest terms (as [`Milli::parts`] returns it), without
    /// reducing it again; `den` must be positive.
    pub fn from_parts(num: i128, den: i128) -> Milli {
        debug_assert!(den > 0 && gcd(num, den) == 1);
        Milli { num, den }
    }

    /// A concentration in µg/m³, rounded to the milli unit.
    pub fn from_ug(v: f64) -> Milli {
        Milli::ratio((v * 1000.0).round() as i128, 1)
    }

    /// The mean of `values` (none: `None`). Falls back to f64 only if the exact
    /// denominators would overflow 128 bits, which needs thousands of different sample
    /// counts in one mean.
    pub fn mean(values: &[Milli]) -> Option<Milli> {
        if values.is_empty() {
            return None;
        }
        // Sum the numerators of equal denominators first (daily means of one cadence
        // share theirs), then add the few groups as fractions: exact, and one
        // reduction per group instead of per value.
        let mut groups: Vec<(i128, i128)> = Vec::new();
        for v in values {
            match groups.iter_mut().find(|g| g.1 == v.den) {
                Some(g) => match g.0.checked_add(v.num) {
                    Some(n) => g.0 = n,
                    None => return Some(Self::mean_f64(values)),
                },
                None => groups.push((v.num, v.den)),
            }
        }
        let mut acc = Milli::ratio(0, 1);
        for (num, den) in groups {
            acc = match acc.checked_add(Milli::ratio(num, den)) {
                Some(a) => a,
                None => return Some(Self::mean_f64(values)),
            };
        }
        let n = values.len() as i128;
        Some(
            acc.checked_div_int(n)
                .unwrap_or_else(|| Self::mean_f64(values)),
        )
    }

    /// The inexact fallback, for denominators that would overflow 128 bits.
    fn mean_f64(values: &[Milli]) -> Milli {
        let f: f64 = values.iter().map(|v| v.as_f64()).sum::<f64>() / values.len() as f64;
        Milli::from_ug(f / 1000.0)
    }

    fn checked_add(self, o: Milli) -> Option<Milli> {
        let g = gcd(self.den, o.den);
        let den = (self.den / g).checked_mul(o.den)?;
        let num = self
            .num
            .checked_mul(o.den / g)?
            .checked_add(o.num.checked_mul(self.den / g)?)?;
        Some(Milli::ratio(num, den))
    }

    fn checked_div_int(self, n: i128) -> Option<Milli> {
        Some(Milli::ratio(self.num, self.den.checked_mul(n)?))
    }

    /// The reduced fraction (numerator, denominator), for storage.
    pub fn parts(self) -> (i128, i128) {
        (self.num, self.den)
    }

    /// In milli-µg/m³, approximately (for display and JSON).
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// In µg/m³, approximately.
    pub fn as_ug(self) -> f64 {
        self.as_f64() / 1000.0
    }

    /// Rounded to an integer µg/m³, half to even (GB/T 8170), exactly.
    pub fn round_ug(self) -> u32 {
        let den = self.den * MILLI;
        let q = self.num.div_euclid(den);
        let r = self.num.rem_euclid(den);
        let up = match (2 * r).cmp(&den) {
            Ordering::Less => false,
            Ordering::Greater => true,
            Ordering::Equal => q % 2 == 1,
        };
        (q + i128::from(up)).clamp(0, i128::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ug(v: f64) -> Milli {
        Milli::from_ug(v)
    }

    #[test]
    fn rounds_half_to_even_exactly() {
        assert_eq!(ug(75.4).round_ug(), 75);
        assert_eq!(ug(75.5).round_ug(), 76);
        assert_eq!(ug(76.5).round_ug(), 76);
        assert_eq!(ug(76.501).round_ug(), 77);
        assert_eq!(ug(0.5).round_ug(), 0);
    }

    #[test]
    fn means_are_exact_and_order_free() {
        // Three hourly means whose float mean is 75.49999999999999.
        let a = [ug(75.1), ug(75.7), ug(75.7)];
        let m = Milli::mean(&a).unwrap();
        assert_eq!(m.round_ug(), 76);
        let b = [ug(75.7), ug(75.1), ug(75.7)];
        assert_eq!(Milli::mean(&b).unwrap().round_ug(), 76);
        // 1/3 stays exact: (0 + 0 + 1.5) / 3 = 0.5 → 0 (half to even).
        assert_eq!(
            Milli::mean(&[ug(0.0), ug(0.0), ug(1.5)])
                .unwrap()
                .round_ug(),
            0
        );
        assert!(Milli::mean(&[]).is_none());
    }

    #[test]
    fn mean_of_fractions() {
        // Hourly means 100/3 and 200/3 average to 50 exactly.
        let x = Milli::ratio(100_000, 3);
        let y = Milli::ratio(200_000, 3);
        assert_eq!(Milli::mean(&[x, y]).unwrap().as_f64(), 50_000.0);
    }
}
