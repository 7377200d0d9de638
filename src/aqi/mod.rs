//! The air-quality rules, as pure functions: the HJ 633 index, 2012 and 2026 tables ([`index`]), exact
//! means and the rounding of HJ 663-2013 / GB/T 8170 ([`mean`]), GB 3095-2012 data
//! validity ([`validity`]), local days ([`zone`]), site and district daily values after
//! HJ 663-2013 ([`daily`]) and the good-day target ([`target`]). Where the standards
//! leave a choice, the choice is named in the item's doc. No I/O, no tokio.

pub mod daily;
pub mod index;
pub mod mean;
pub mod target;
pub mod validity;
pub mod zone;

use serde::Deserialize;

/// The `[aqi]` config: every choice the standards leave open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AqiConfig {
    /// Which breakpoint tables the values of each date are computed under (bulletins,
    /// daily series, the derived InfluxDB series, reports without a target): "in-force"
    /// (the default: HJ 633-2012 before 2026-03-01, HJ 633-2026 from then on), or a set's
    /// name, "HJ 633-2012" / "HJ 633-2026", pinned for every date. `table_set` is its
    /// older spelling (which could only pin a set), still read. Targets use their own.
    #[serde(default, alias = "table_set")]
    pub tables: index::Tables,
    /// Days are counted in this zone: "Asia/Shanghai" (UTC+8, the default), "UTC", or a
    /// whole-hour offset like "+08:00".
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The sampling interval assumed for readings that do not state `interval_secs`.
    #[serde(default = "default_interval_secs")]
    pub default_interval_secs: u32,
    /// A district day needs at least this many sites with a valid daily value (per
    /// pollutant).
    #[serde(default = "default_min_sites")]
    pub district_min_sites: usize,
    /// Sites that do not count for the district value, besides those the site registry
    /// marks `counts_for_district = false`.
    #[serde(default)]
    pub district_exclude: Vec<String>,
}

fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}
fn default_interval_secs() -> u32 {
    60
}
fn default_min_sites() -> usize {
    1
}

impl Default for AqiConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl AqiConfig {
    pub fn zone(&self) -> zone::Zone {
        zone::Zone::parse(&self.time_zone).unwrap_or_default()
    }
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = zone::Zone::parse(&self.time_zone) {
            p.push(format!("aqi.time_zone: {e}"));
        }
        if !(1..=3600).contains(&self.default_interval_secs) {
            p.push("aqi.default_interval_secs must be 1..=3600".into());
        }
        if self.district_min_sites == 0 {
            p.push("aqi.district_min_sites must be at least 1".into());
        }
        p
    }

    /// What is valid but worth a warning: a pinned table set classes the dates it was
    /// not in force on under it anyway.
    pub fn warnings(&self) -> Vec<String> {
        use index::{TableSet, Tables, HJ633_2026_IN_FORCE_FROM as SWITCH};
        match self.tables {
            Tables::InForce => Vec::new(),
            Tables::Pinned(t) => {
                let (not_in_force, instead) = match t {
                    TableSet::Hj633_2012 => (format!("from {SWITCH}"), TableSet::Hj633_2026),
                    TableSet::Hj633_2026 => (format!("before {SWITCH}"), TableSet::Hj633_2012),
                };
                vec![format!(
                    "aqi.tables pins {}: bulletins, daily series and the derived daily series of dates {not_in_force} are classed under it although {} is in force on them; tables = \"{}\" follows the date",
                    t.name(),
                    instead.name(),
                    Tables::IN_FORCE
                )]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::index::{TableSet, Tables};
    use super::*;

    fn parse(text: &str) -> Result<AqiConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn tables_default_to_in_force_and_a_pin_is_a_warning() {
        let default = parse("").unwrap();
        assert_eq!(default.tables, Tables::InForce);
        assert!(default.warnings().is_empty());
        assert!(parse("tables = \"in-force\"")
            .unwrap()
            .warnings()
            .is_empty());
        // The older spelling pins a set, as it always did.
        for (text, t) in [
            ("table_set = \"HJ 633-2012\"", TableSet::Hj633_2012),
            ("tables = \"HJ 633-2012\"", TableSet::Hj633_2012),
            ("tables = \"HJ 633-2026\"", TableSet::Hj633_2026),
        ] {
            let c = parse(text).unwrap();
            assert_eq!(c.tables, Tables::Pinned(t), "{text}");
            let w = c.warnings();
            assert_eq!(w.len(), 1, "{text}: {w:?}");
            assert!(
                w[0].contains(t.name()) && w[0].contains("in-force"),
                "{w:?}"
            );
        }
        assert!(
            parse("tables = \"HJ 633-2012\"").unwrap().warnings()[0].contains("from 2026-03-01")
        );
        assert!(
            parse("tables = \"HJ 633-2026\"").unwrap().warnings()[0].contains("before 2026-03-01")
        );
        // Not both spellings at once, and no unknown set.
        assert!(parse("tables = \"in-force\"\ntable_set = \"HJ 633-2012\"").is_err());
        assert!(parse("tables = \"HJ 633-2020\"").is_err());
    }
}
