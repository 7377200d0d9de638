//! HJ 633 individual and overall air quality index, with exact integer arithmetic.
//!
//! The concentration is first rounded to an integer µg/m³ (round-half-even, our choice
//! following HJ 663-2013 / GB/T 8170), then indexed on the breakpoint table and the
//! result rounded **up** (HJ 633-2012 §6.2). Integers all the way: a naive f64 order
//! turns PM10 7 into 7.000000000000001 and then 8.

use crate::model::Pollutant;

/// Which breakpoint tables. A named choice: HJ 633-2026 moved the 良 upper bound to
/// PM2.5 60 / PM10 120, so the table set must never be a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
pub enum TableSet {
    /// HJ 633-2012 (the tables in force for the 2016 targets).
    #[default]
    #[serde(rename = "HJ 633-2012")]
    Hj633_2012,
}

impl TableSet {
    pub fn name(self) -> &'static str {
        match self {
            TableSet::Hj633_2012 => "HJ 633-2012",
        }
    }

    /// The 24-hour concentration (µg/m³) at IAQI 100 for `p`: a daily value above it has
    /// an IAQI above 100, i.e. the pollutant exceeds (超标, HJ 633 §5). For HJ 633-2012
    /// these are the GB 3095-2012 Grade II 24-hour limits, PM2.5 75 and PM10 150.
    pub fn limit_at_iaqi_100(self, p: Pollutant) -> u32 {
        // Every HJ 633 table has the same IAQI levels (0, 50, 100, …); the tables differ
        // in concentrations only. A test checks the row of every table.
        let (_, c) = self.breakpoints(p)[IAQI_100_ROW];
        // Breakpoints are small positive constants.
        c as u32
    }

    /// (IAQI, concentration) breakpoints of the 24-hour table for `p`, µg/m³.
    fn breakpoints(self, p: Pollutant) -> &'static [(i64, i64); 8] {
        match (self, p) {
            (TableSet::Hj633_2012, Pollutant::Pm10) => &[
                (0, 0),
                (50, 50),
                (100, 150),
                (150, 250),
                (200, 350),
                (300, 420),
                (400, 500),
                (500, 600),
            ],
            (TableSet::Hj633_2012, Pollutant::Pm25) => &[
                (0, 0),
                (50, 35),
                (100, 75),
                (150, 115),
                (200, 150),
                (300, 250),
                (400, 350),
                (500, 500),
            ],
        }
    }
}

/// The row of IAQI 100 in every breakpoint table.
const IAQI_100_ROW: usize = 2;

/// The top of every table: IAQI above the last breakpoint is capped here.
pub const IAQI_CAP: u32 = 500;

/// An individual index, with whether it was capped (concentration above the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iaqi {
    pub value: u32,
    pub capped: bool,
}

/// IAQI of a daily concentration already rounded to an integer µg/m³.
pub fn iaqi(table: TableSet, p: Pollutant, conc_ug: u32) -> Iaqi {
    let c = i64::from(conc_ug);
    let bps = table.breakpoints(p);
    for w in bps.windows(2) {
        let ((il, bl), (ih, bh)) = (w[0], w[1]);
        if c <= bh {
            // ceil((ih - il) * (c - bl) / (bh - bl)) + il, in integers.
            let num = (ih - il) * (c - bl);
            let den = bh - bl;
            let v = il + (num + den - 1) / den;
            return Iaqi {
                value: v as u32,
                capped: false,
            };
        }
    }
    Iaqi {
        value: IAQI_CAP,
        capped: true,
    }
}

/// HJ 633 categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Excellent,
    Good,
    Light,
    Moderate,
    Heavy,
    Severe,
}

impl Category {
    pub fn of(aqi: u32) -> Category {
        match aqi {
            0..=50 => Category::Excellent,
            51..=100 => Category::Good,
            101..=150 => Category::Light,
            151..=200 => Category::Moderate,
            201..=300 => Category::Heavy,
            _ => Category::Severe,
        }
    }
    /// The Chinese name used in bulletins.
    pub fn zh(self) -> &'static str {
        match self {
            Category::Excellent => "优",
            Category::Good => "良",
            Category::Light => "轻度污染",
            Category::Moderate => "中度污染",
            Category::Heavy => "重度污染",
            Category::Severe => "严重污染",
        }
    }
    pub fn en(self) -> &'static str {
        match self {
            Category::Excellent => "excellent",
            Category::Good => "good",
            Category::Light => "lightly polluted",
            Category::Moderate => "moderately polluted",
            Category::Heavy => "heavily polluted",
            Category::Severe => "severely polluted",
        }
    }
    /// The HJ 633 colour (R, G, B).
    pub fn rgb(self) -> (u8, u8, u8) {
        match self {
            Category::Excellent => (0, 228, 0),
            Category::Good => (255, 255, 0),
            Category::Light => (255, 126, 0),
            Category::Moderate => (255, 0, 0),
            Category::Heavy => (153, 0, 76),
            Category::Severe => (126, 0, 35),
        }
    }
}

/// The overall index of a day (or hour) from the pollutants present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aqi {
    pub value: u32,
    pub category: Category,
    /// 首要污染物: the pollutants with the largest IAQI, named only when AQI > 50.
    pub primary: Vec<Pollutant>,
    /// 超标污染物: pollutants with IAQI > 100.
    pub exceeding: Vec<Pollutant>,
    /// Some IAQI was capped at 500 (concentration above the table).
    pub capped: bool,
}

/// AQI = max IAQI over the pollutants given (empty input: `None`, no data).
pub fn aqi(parts: &[(Pollutant, Iaqi)]) -> Option<Aqi> {
    let max = parts.iter().map(|(_, i)| i.value).max()?;
    let primary = if max > 50 {
        parts
            .iter()
            .filter(|(_, i)| i.value == max)
            .map(|(p, _)| *p)
            .collect()
    } else {
        Vec::new()
    };
    Some(Aqi {
        value: max,
        category: Category::of(max),
        primary,
        exceeding: parts
            .iter()
            .filter(|(_, i)| i.value > 100)
            .map(|(p, _)| *p)
            .collect(),
        capped: parts.iter().any(|(_, i)| i.capped),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Pollutant::{Pm10, Pm25};

    fn i(p: Pollutant, c: u32) -> u32 {
        iaqi(TableSet::Hj633_2012, p, c).value
    }

    #[test]
    fn worked_examples_of_the_spec() {
        for (c, want) in [
            (35, 50),
            (36, 52),
            (75, 100),
            (76, 102),
            (115, 150),
            (500, 500),
            (600, 500),
        ] {
            assert_eq!(i(Pm25, c), want, "PM2.5 {c}");
        }
        for (c, want) in [(7, 7), (50, 50), (149, 100), (150, 100), (151, 101)] {
            assert_eq!(i(Pm10, c), want, "PM10 {c}");
        }
    }

    #[test]
    fn the_limit_is_the_last_concentration_at_iaqi_100() {
        let t = TableSet::Hj633_2012;
        for p in Pollutant::ALL {
            assert_eq!(t.breakpoints(p)[IAQI_100_ROW].0, 100, "{p:?}");
        }
        assert_eq!(t.limit_at_iaqi_100(Pm25), 75);
        assert_eq!(t.limit_at_iaqi_100(Pm10), 150);
        for p in Pollutant::ALL {
            let l = t.limit_at_iaqi_100(p);
            assert_eq!(i(p, l), 100, "{p:?}");
            assert!(i(p, l + 1) > 100, "{p:?}");
        }
    }

    #[test]
    fn every_breakpoint_maps_to_its_index() {
        for p in Pollutant::ALL {
            for (iaqi_bp, c) in TableSet::Hj633_2012.breakpoints(p) {
                assert_eq!(i(p, *c as u32), *iaqi_bp as u32, "{p:?} at {c}");
            }
        }
    }

    #[test]
    fn between_breakpoints_is_the_ceiling_of_the_line() {
        // PM2.5 36..75 maps 50..100 with slope 50/40: 36 → 51.25 → 52.
        assert_eq!(i(Pm25, 36), 52);
        assert_eq!(i(Pm25, 74), 99); // 98.75 → 99
                                     // PM10 151..250: slope 1/2: 151 → 100.5 → 101; 152 → 101.
        assert_eq!(i(Pm10, 152), 101);
        // PM10 421..500: slope 100/80: 421 → 301.25 → 302.
        assert_eq!(i(Pm10, 421), 302);
        // PM2.5 251: slope 100/100 → 301.
        assert_eq!(i(Pm25, 251), 301);
    }

    #[test]
    fn float_traps_are_avoided() {
        // 50/50 * 7 in floating point is 7.000000000000001 in some evaluation orders.
        for c in [7, 14, 28, 1, 3, 49] {
            assert_eq!(i(Pm10, c), c);
        }
    }

    #[test]
    fn above_the_table_is_capped_and_flagged() {
        let x = iaqi(TableSet::Hj633_2012, Pm25, 501);
        assert_eq!(
            x,
            Iaqi {
                value: 500,
                capped: true
            }
        );
        assert!(!iaqi(TableSet::Hj633_2012, Pm10, 600).capped);
        assert!(iaqi(TableSet::Hj633_2012, Pm10, 601).capped);
    }

    #[test]
    fn primary_and_exceeding_pollutants() {
        let part = |p, c| (p, iaqi(TableSet::Hj633_2012, p, c));
        // AQI ≤ 50: no primary pollutant.
        let a = aqi(&[part(Pm25, 30), part(Pm10, 40)]).unwrap();
        assert_eq!(
            (a.value, a.primary.clone(), a.category),
            (43, vec![], Category::Excellent)
        );
        // Ties name both.
        let t = aqi(&[part(Pm25, 75), part(Pm10, 150)]).unwrap();
        assert_eq!(t.value, 100);
        assert_eq!(t.primary, vec![Pm25, Pm10]);
        assert!(t.exceeding.is_empty());
        let e = aqi(&[part(Pm25, 76), part(Pm10, 100)]).unwrap();
        assert_eq!(
            (e.value, e.primary.clone(), e.exceeding.clone()),
            (102, vec![Pm25], vec![Pm25])
        );
        assert_eq!(e.category, Category::Light);
        assert_eq!(aqi(&[]), None);
    }

    #[test]
    fn categories_and_colours() {
        assert_eq!(Category::of(50).zh(), "优");
        assert_eq!(Category::of(51).zh(), "良");
        assert_eq!(Category::of(101).rgb(), (255, 126, 0));
        assert_eq!(Category::of(300), Category::Heavy);
        assert_eq!(Category::of(301), Category::Severe);
    }
}
