//! HJ 633 individual and overall air quality index, with exact integer arithmetic.
//!
//! Two table sets: HJ 633-2012 and HJ 633-2026 (in force from 2026-03-01). The
//! concentration is first rounded to an integer µg/m³ (round-half-even, our choice
//! following HJ 663-2013 / GB/T 8170; HJ 633-2026 §4.2.2 makes it explicit), then indexed
//! on the breakpoint table and the result rounded **up** (HJ 633-2012 §6.2; the same in
//! 2026). Integers all the way: a naive f64 order turns PM10 7 into 7.000000000000001
//! and then 8.

use chrono::NaiveDate;

use crate::model::Pollutant;

/// Which breakpoint tables. A named choice: HJ 633-2026 moved the 良 upper bound to
/// PM2.5 60 / PM10 120, so the table set must never be a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, Default)]
pub enum TableSet {
    /// HJ 633-2012 (the tables in force for the 2016 targets, and for every date before
    /// 2026-03-01).
    #[default]
    #[serde(rename = "HJ 633-2012")]
    Hj633_2012,
    /// HJ 633-2026 with GB 3095-2026, in force from 2026-03-01: the IAQI-100 breakpoint
    /// (top of 良) is PM2.5 60 and PM10 120 µg/m³; every other breakpoint is the 2012 one.
    #[serde(rename = "HJ 633-2026")]
    Hj633_2026,
}

/// The first date on which HJ 633-2026 (and GB 3095-2026) are in force; HJ 633-2012
/// applies to every earlier date.
pub const HJ633_2026_IN_FORCE_FROM: NaiveDate = match NaiveDate::from_ymd_opt(2026, 3, 1) {
    Some(d) => d,
    None => panic!("2026-03-01 is a date"),
};

impl TableSet {
    /// Every table set, oldest first.
    pub const ALL: [TableSet; 2] = [TableSet::Hj633_2012, TableSet::Hj633_2026];

    /// The set with this name ("HJ 633-2012", "HJ 633-2026").
    pub fn from_name(name: &str) -> Option<TableSet> {
        Self::ALL.into_iter().find(|t| t.name() == name.trim())
    }

    /// Two sets named "A,B" (a comparison), or what is wrong with the list.
    pub fn pair(list: &str) -> Result<(TableSet, TableSet), String> {
        let sets: Vec<TableSet> = list
            .split(',')
            .map(|n| {
                Self::from_name(n).ok_or_else(|| format!("{n:?} is not HJ 633-2012 or HJ 633-2026"))
            })
            .collect::<Result<_, _>>()?;
        match sets[..] {
            [a, b] => Ok((a, b)),
            _ => Err("give two table sets: \"HJ 633-2012,HJ 633-2026\"".into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TableSet::Hj633_2012 => "HJ 633-2012",
            TableSet::Hj633_2026 => "HJ 633-2026",
        }
    }

    /// The table set in force on `date` (a local calendar date): HJ 633-2012 before
    /// 2026-03-01, HJ 633-2026 from then on. Dates before HJ 633-2012 itself took effect
    /// get HJ 633-2012 too: the service has no older tables.
    pub fn in_force_on(date: NaiveDate) -> TableSet {
        if date < HJ633_2026_IN_FORCE_FROM {
            TableSet::Hj633_2012
        } else {
            TableSet::Hj633_2026
        }
    }

    /// Whether `self` was in force on at least one date of the inclusive period
    /// `from..=to`. An empty period (`from > to`) has no dates: `false`.
    pub fn in_force_during(self, from: NaiveDate, to: NaiveDate) -> bool {
        if from > to {
            return false;
        }
        // In force on the half-open range [first, end) of dates; `None` is unbounded.
        let (first, end) = match self {
            TableSet::Hj633_2012 => (None, Some(HJ633_2026_IN_FORCE_FROM)),
            TableSet::Hj633_2026 => (Some(HJ633_2026_IN_FORCE_FROM), None),
        };
        first.is_none_or(|f| to >= f) && end.is_none_or(|e| from < e)
    }

    /// The 24-hour concentration (µg/m³) at IAQI 100 for `p`: a daily value above it has
    /// an IAQI above 100, i.e. the pollutant exceeds (超标, HJ 633 §5). For HJ 633-2012
    /// these are the GB 3095-2012 Grade II 24-hour limits, PM2.5 75 and PM10 150; for
    /// HJ 633-2026, PM2.5 60 and PM10 120.
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
            (TableSet::Hj633_2026, Pollutant::Pm10) => &[
                (0, 0),
                (50, 50),
                (100, 120),
                (150, 250),
                (200, 350),
                (300, 420),
                (400, 500),
                (500, 600),
            ],
            (TableSet::Hj633_2026, Pollutant::Pm25) => &[
                (0, 0),
                (50, 35),
                (100, 60),
                (150, 115),
                (200, 150),
                (300, 250),
                (400, 350),
                (500, 500),
            ],
        }
    }
}

/// Which tables each date's values are computed under: the `[aqi] tables` setting, for
/// everything that is not a target (bulletins, daily series, the derived InfluxDB
/// series, reports without a target). A target is always counted under its own tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tables {
    /// `"in-force"`: the set in force on each date — HJ 633-2012 before 2026-03-01,
    /// HJ 633-2026 from then on ([`TableSet::in_force_on`]). The default.
    #[default]
    InForce,
    /// A set's name: that set for every date, whatever was in force.
    Pinned(TableSet),
}

impl Tables {
    /// The config spelling of [`Tables::InForce`].
    pub const IN_FORCE: &'static str = "in-force";

    /// `"in-force"` or a table set's name.
    pub fn parse(s: &str) -> Option<Tables> {
        if s.trim() == Self::IN_FORCE {
            Some(Tables::InForce)
        } else {
            TableSet::from_name(s).map(Tables::Pinned)
        }
    }

    /// The config spelling: `in-force` or the pinned set's name.
    pub fn name(self) -> &'static str {
        match self {
            Tables::InForce => Self::IN_FORCE,
            Tables::Pinned(t) => t.name(),
        }
    }

    /// The set the values of `date` (a local calendar date) are computed under.
    pub fn on(self, date: NaiveDate) -> TableSet {
        match self {
            Tables::InForce => TableSet::in_force_on(date),
            Tables::Pinned(t) => t,
        }
    }

    /// For cache keys: changes whenever [`Tables::on`] may give another set for some
    /// date (so `in-force` names the date it switches on).
    pub fn key(self) -> String {
        match self {
            Tables::InForce => format!("{}@{HJ633_2026_IN_FORCE_FROM}", Self::IN_FORCE),
            Tables::Pinned(t) => t.name().to_owned(),
        }
    }

    /// The sets used for the dates `from..=to`, as people read it: one set's name when
    /// every date has the same set, else both with the date of the switch.
    pub fn label(self, from: NaiveDate, to: NaiveDate) -> String {
        let (first, last) = (self.on(from), self.on(to.max(from)));
        if first == last {
            first.name().to_owned()
        } else {
            format!(
                "{} to {}, {} from {HJ633_2026_IN_FORCE_FROM}",
                first.name(),
                HJ633_2026_IN_FORCE_FROM
                    .pred_opt()
                    .unwrap_or(HJ633_2026_IN_FORCE_FROM),
                last.name()
            )
        }
    }
}

impl<'de> serde::Deserialize<'de> for Tables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tables, D::Error> {
        let s = String::deserialize(d)?;
        Tables::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not \"in-force\", \"HJ 633-2012\" or \"HJ 633-2026\""
            ))
        })
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

    // HJ 633-2026 (2026 tables). Every expected value below is worked by hand from
    // IAQI = ceil((IAQI_hi − IAQI_lo) / (BP_hi − BP_lo) × (C − BP_lo) + IAQI_lo).

    fn i26(p: Pollutant, c: u32) -> u32 {
        iaqi(TableSet::Hj633_2026, p, c).value
    }

    #[test]
    fn hj633_2026_pm25_worked_values() {
        for (c, want) in [
            // 0–35 → 0–50: 50/35 × (35 − 0) + 0 = 50.
            (35, 50),
            // 35–60 → 50–100: 50/25 × (36 − 35) + 50 = 52 exactly (same as 2012's 52,
            // which there is the ceiling of 51.25).
            (36, 52),
            // 50/25 × (59 − 35) + 50 = 98.
            (59, 98),
            // 50/25 × (60 − 35) + 50 = 100: the top of 良.
            (60, 100),
            // 60–115 → 100–150: 50/55 × (61 − 60) + 100 = 100.909… → 101.
            (61, 101),
            // 50/55 × (70 − 60) + 100 = 109.09… → 110 (良 under 2012: 50/40 × 35 + 50 = 93.75 → 94).
            (70, 110),
            // 50/55 × (75 − 60) + 100 = 750/55 + 100 = 113.63… → 114.
            (75, 114),
            // 50/55 × (115 − 60) + 100 = 150.
            (115, 150),
            // 115–150 → 150–200: 50/35 × (116 − 115) + 150 = 151.43… → 152.
            (116, 152),
            // 350–500 → 400–500: 100/150 × (500 − 350) + 400 = 500.
            (500, 500),
        ] {
            assert_eq!(i26(Pm25, c), want, "PM2.5 {c}");
        }
        // Above 500: capped at 500 and flagged.
        assert_eq!(
            iaqi(TableSet::Hj633_2026, Pm25, 501),
            Iaqi {
                value: 500,
                capped: true
            }
        );
        assert!(!iaqi(TableSet::Hj633_2026, Pm25, 500).capped);
    }

    #[test]
    fn hj633_2026_pm10_worked_values() {
        for (c, want) in [
            // 0–50 → 0–50: 50/50 × 7 = 7 exactly (the float trap).
            (7, 7),
            // 50/50 × 50 = 50.
            (50, 50),
            // 50–120 → 50–100: 50/70 × (51 − 50) + 50 = 50.71… → 51.
            (51, 51),
            // 50/70 × (119 − 50) + 50 = 3450/70 + 50 = 99.29… → 100.
            (119, 100),
            // 50/70 × (120 − 50) + 50 = 100: the top of 良.
            (120, 100),
            // 120–250 → 100–150: 50/130 × (121 − 120) + 100 = 100.38… → 101.
            (121, 101),
            // 50/130 × (150 − 120) + 100 = 1500/130 + 100 = 111.54… → 112.
            (150, 112),
            // 50/130 × (250 − 120) + 100 = 150.
            (250, 150),
            // 250–350 → 150–200: 50/100 × (251 − 250) + 150 = 150.5 → 151.
            (251, 151),
            // 500–600 → 400–500: 100/100 × (600 − 500) + 400 = 500.
            (600, 500),
        ] {
            assert_eq!(i26(Pm10, c), want, "PM10 {c}");
        }
        // Above 600: capped at 500 and flagged.
        assert_eq!(
            iaqi(TableSet::Hj633_2026, Pm10, 601),
            Iaqi {
                value: 500,
                capped: true
            }
        );
        assert!(!iaqi(TableSet::Hj633_2026, Pm10, 600).capped);
    }

    #[test]
    fn hj633_2026_every_breakpoint_maps_to_its_index() {
        for p in Pollutant::ALL {
            for (iaqi_bp, c) in TableSet::Hj633_2026.breakpoints(p) {
                assert_eq!(i26(p, *c as u32), *iaqi_bp as u32, "{p:?} at {c}");
            }
        }
    }

    #[test]
    fn hj633_2026_tables_differ_from_2012_only_at_iaqi_100() {
        for p in Pollutant::ALL {
            let (old, new) = (
                TableSet::Hj633_2012.breakpoints(p),
                TableSet::Hj633_2026.breakpoints(p),
            );
            for (row, (o, n)) in old.iter().zip(new.iter()).enumerate() {
                assert_eq!(o.0, n.0, "{p:?} IAQI levels, row {row}");
                if row != IAQI_100_ROW {
                    assert_eq!(o.1, n.1, "{p:?} concentration, row {row}");
                }
            }
        }
    }

    #[test]
    fn hj633_2026_limit_at_iaqi_100() {
        let t = TableSet::Hj633_2026;
        assert_eq!(t.limit_at_iaqi_100(Pm25), 60);
        assert_eq!(t.limit_at_iaqi_100(Pm10), 120);
        for t in TableSet::ALL {
            for p in Pollutant::ALL {
                assert_eq!(t.breakpoints(p)[IAQI_100_ROW].0, 100, "{t:?} {p:?}");
                let l = t.limit_at_iaqi_100(p);
                assert_eq!(iaqi(t, p, l).value, 100, "{t:?} {p:?}");
                assert!(iaqi(t, p, l + 1).value > 100, "{t:?} {p:?}");
            }
        }
    }

    #[test]
    fn table_set_names_are_the_config_spellings() {
        #[derive(serde::Deserialize)]
        struct Cfg {
            tables: TableSet,
        }
        assert_eq!(TableSet::Hj633_2026.name(), "HJ 633-2026");
        for t in TableSet::ALL {
            let c: Cfg = toml::from_str(&format!("tables = \"{}\"", t.name())).unwrap();
            assert_eq!(c.tables, t);
        }
        assert!(toml::from_str::<Cfg>("tables = \"HJ 633-2020\"").is_err());
    }

    #[test]
    fn in_force_on_switches_on_2026_03_01() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(TableSet::in_force_on(d(2016, 7, 1)), TableSet::Hj633_2012);
        assert_eq!(TableSet::in_force_on(d(2026, 2, 28)), TableSet::Hj633_2012);
        assert_eq!(TableSet::in_force_on(d(2026, 3, 1)), TableSet::Hj633_2026);
        assert_eq!(TableSet::in_force_on(d(2026, 3, 2)), TableSet::Hj633_2026);
        assert_eq!(HJ633_2026_IN_FORCE_FROM, d(2026, 3, 1));
    }

    #[test]
    fn in_force_during_needs_one_date_of_the_period() {
        use TableSet::{Hj633_2012 as T12, Hj633_2026 as T26};
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        // The 2016 half year: 2012 only.
        assert!(T12.in_force_during(d(2016, 7, 1), d(2016, 12, 31)));
        assert!(!T26.in_force_during(d(2016, 7, 1), d(2016, 12, 31)));
        // Ending on the last 2012 day / starting on the first 2026 day.
        assert!(T12.in_force_during(d(2026, 1, 1), d(2026, 2, 28)));
        assert!(!T26.in_force_during(d(2026, 1, 1), d(2026, 2, 28)));
        assert!(!T12.in_force_during(d(2026, 3, 1), d(2026, 12, 31)));
        assert!(T26.in_force_during(d(2026, 3, 1), d(2026, 12, 31)));
        // A single day either side.
        assert!(T12.in_force_during(d(2026, 2, 28), d(2026, 2, 28)));
        assert!(!T26.in_force_during(d(2026, 2, 28), d(2026, 2, 28)));
        assert!(T26.in_force_during(d(2026, 3, 1), d(2026, 3, 1)));
        assert!(!T12.in_force_during(d(2026, 3, 1), d(2026, 3, 1)));
        // Spanning the change: both.
        assert!(T12.in_force_during(d(2025, 10, 1), d(2026, 3, 31)));
        assert!(T26.in_force_during(d(2025, 10, 1), d(2026, 3, 31)));
        assert!(T12.in_force_during(d(2026, 2, 28), d(2026, 3, 1)));
        assert!(T26.in_force_during(d(2026, 2, 28), d(2026, 3, 1)));
        // An empty period has no dates.
        assert!(!T12.in_force_during(d(2016, 12, 31), d(2016, 7, 1)));
        assert!(!T26.in_force_during(d(2026, 12, 31), d(2026, 3, 1)));
        // Consistent with in_force_on for every single-day period around the change.
        let mut day = d(2026, 2, 20);
        while day <= d(2026, 3, 10) {
            for t in TableSet::ALL {
                assert_eq!(
                    t.in_force_during(day, day),
                    TableSet::in_force_on(day) == t,
                    "{t:?} {day}"
                );
            }
            day = day.succ_opt().unwrap();
        }
    }

    #[test]
    fn tables_in_force_follow_the_date_and_a_pinned_set_does_not() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        let (before, from) = (d(2026, 2, 28), d(2026, 3, 1));
        assert_eq!(Tables::default(), Tables::InForce);
        assert_eq!(Tables::InForce.on(before), TableSet::Hj633_2012);
        assert_eq!(Tables::InForce.on(from), TableSet::Hj633_2026);
        assert_eq!(Tables::InForce.on(d(2016, 8, 1)), TableSet::Hj633_2012);
        for t in TableSet::ALL {
            for date in [d(2016, 8, 1), before, from, d(2026, 12, 3)] {
                assert_eq!(Tables::Pinned(t).on(date), t);
            }
        }
        // In words, for a period.
        assert_eq!(
            Tables::InForce.label(d(2016, 7, 1), d(2016, 12, 31)),
            "HJ 633-2012"
        );
        assert_eq!(Tables::InForce.label(from, d(2026, 12, 31)), "HJ 633-2026");
        assert_eq!(
            Tables::InForce.label(d(2026, 2, 1), d(2026, 3, 31)),
            "HJ 633-2012 to 2026-02-28, HJ 633-2026 from 2026-03-01"
        );
        let pinned = Tables::Pinned(TableSet::Hj633_2012);
        assert_eq!(pinned.label(d(2026, 2, 1), d(2026, 3, 31)), "HJ 633-2012");
        // Cache keys tell the three choices apart.
        let keys = [
            Tables::InForce.key(),
            pinned.key(),
            Tables::Pinned(TableSet::Hj633_2026).key(),
        ];
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
        assert!(keys[0].contains("2026-03-01"), "{keys:?}");
    }

    #[test]
    fn tables_config_spellings() {
        #[derive(serde::Deserialize)]
        struct Cfg {
            tables: Tables,
        }
        let parse = |v: &str| toml::from_str::<Cfg>(&format!("tables = \"{v}\"")).map(|c| c.tables);
        assert_eq!(parse("in-force").unwrap(), Tables::InForce);
        for t in TableSet::ALL {
            assert_eq!(parse(t.name()).unwrap(), Tables::Pinned(t));
            assert_eq!(
                Tables::parse(Tables::Pinned(t).name()),
                Some(Tables::Pinned(t))
            );
        }
        assert_eq!(Tables::parse(Tables::InForce.name()), Some(Tables::InForce));
        let e = parse("in force").unwrap_err().to_string();
        assert!(e.contains("in-force") && e.contains("HJ 633-2026"), "{e}");
        assert!(parse("HJ 633-2020").is_err());
    }

    proptest::proptest! {
        /// For any concentration of either pollutant the 2026 IAQI is at least the 2012
        /// IAQI (so the 2026 category is never better), and both tables are monotonic.
        #[test]
        fn hj633_2026_never_better_than_2012_and_both_monotonic(
            p in proptest::sample::select(Pollutant::ALL.to_vec()),
            a in 0u32..=1000,
            b in 0u32..=1000,
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            for c in [lo, hi] {
                let (old, new) = (i(p, c), i26(p, c));
                proptest::prop_assert!(new >= old, "{:?} {}: 2026 {} < 2012 {}", p, c, new, old);
                proptest::prop_assert!(Category::of(new) >= Category::of(old));
            }
            for t in TableSet::ALL {
                proptest::prop_assert!(
                    iaqi(t, p, lo).value <= iaqi(t, p, hi).value,
                    "{:?} {:?}: {} -> {}", t, p, lo, hi
                );
            }
        }
    }
}
