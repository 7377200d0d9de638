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
    /// Breakpoint tables: "HJ 633-2012" (in force before 2026-03-01) or "HJ 633-2026".
    #[serde(default)]
    pub table_set: index::TableSet,
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
}
