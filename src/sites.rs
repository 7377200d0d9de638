//! The site registry (`config/sites.toml`): the bureau's list of monitored sites, with
//! what each one's devices cannot say themselves — the unit they report in, their
//! cadence — and whether the site counts for the district value. Readings from sites
//! not in the list are accepted (and show up as unregistered) or rejected, per
//! `[sites] unregistered`.
//!
//! ```toml
//! [[site]]
//! id = "erqi-001"
//! name = "Dengfeng Road tunnel works"
//! location = "二七区登封路"
//! latitude = 34.72
//! longitude = 113.62
//! counts_for_district = true
//! interval_secs = 60
//! unit = "ug/m3"
//! # An HJ 212 device: its MN, the password it sends (checked when set) and the CRC
//! # its firmware computes ("hj212" per the standard, "modbus" as many devices do, or
//! # "none"; default [hj212] default_crc). `unit` above applies to its frames too.
//! mn = "010000A8900016F000169DC0"
//! hj212_password = "123456"
//! hj212_crc = "hj212"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::decode::hj212::{CrcVariant, Version};
use crate::model::{ConcentrationUnit, SiteId};
use crate::validate::SiteDefaults;

/// What to do with readings from a site that is not in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unregistered {
    /// Store them; the site appears in the API as unregistered.
    #[default]
    Accept,
    /// Refuse them with reason `unknown_site`.
    Reject,
}

/// What to do with a frame from a device (`MN`) the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownMn {
    /// Refuse it with `hj212_unknown_mn` (and no reply).
    #[default]
    Reject,
    /// Store it under a site named after the MN, with the default CRC and µg/m³.
    Register,
}

/// The `[sites]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitesConfig {
    /// The registry file; a missing file is an empty registry.
    #[serde(default = "default_file")]
    pub file: PathBuf,
    #[serde(default)]
    pub unregistered: Unregistered,
}

fn default_file() -> PathBuf {
    PathBuf::from("config/sites.toml")
}

impl Default for SitesConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// One registered site.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    pub name: Option<String>,
    pub location: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    #[serde(default = "default_true")]
    pub counts_for_district: bool,
    /// The devices' sampling interval, used when a payload does not state it.
    pub interval_secs: Option<u32>,
    /// The unit the devices report in, used when a payload does not state it.
    pub unit: Option<String>,
    /// The site's HJ 212 device id (`MN`).
    pub mn: Option<String>,
    /// The password its frames carry (`PW`); checked when set.
    #[serde(skip_serializing)]
    pub hj212_password: Option<String>,
    /// Its CRC variant: `hj212`, `modbus` or `none`.
    pub hj212_crc: Option<String>,
    /// The protocol version its frames must say: `2005`, `2017` or `2025`; any when
    /// absent.
    pub hj212_version: Option<String>,
}

/// An HJ 212 protocol version as the registry names it.
fn version_of(s: &str) -> Option<Version> {
    match s {
        "2005" => Some(Version::Hjt2005),
        "2017" => Some(Version::Hj2017),
        "2025" => Some(Version::Hj2025),
        _ => None,
    }
}

/// What the registry says about an HJ 212 device.
#[derive(Debug, Clone)]
pub struct Hj212Device {
    /// The site its readings belong to.
    pub site: String,
    pub password: Option<String>,
    /// `None`: the service's default variant.
    pub crc: Option<CrcVariant>,
    /// The version its frames must say; `None`: any.
    pub version: Option<Version>,
    pub defaults: SiteDefaults,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    site: Vec<Site>,
    #[serde(default)]
    device: Vec<Device>,
}

/// What a client identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A monitor: publishes readings for its own site(s) only.
    #[default]
    Device,
    /// A dashboard or analyst's client: subscribes to alerts, publishes nothing.
    Reader,
}

/// A client identity (`[[device]]`): its id (the MQTT user name, and the CN of its TLS
/// client certificate), the sites it may write, and its secret's hash (never the
/// secret: `aq-ingest device add` prints that once).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    #[serde(default)]
    pub sites: Vec<String>,
    #[serde(default)]
    pub role: Role,
    /// `$7$…` PBKDF2-SHA512 hash (mosquitto's format); absent: certificate only.
    #[serde(skip_serializing)]
    pub secret: Option<String>,
}

impl Device {
    /// Whether this identity may write `site`'s readings.
    pub fn may_write(&self, site: &str) -> bool {
        self.role == Role::Device && self.sites.iter().any(|s| s == site)
    }
}

/// The loaded registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    sites: BTreeMap<String, (Site, SiteDefaults)>,
    /// Client identities by id; when any is listed, the embedded broker takes only
    /// them.
    devices: BTreeMap<String, Device>,
    /// HJ 212 device id (`MN`) → site id.
    by_mn: HashMap<String, String>,
    unregistered: Unregistered,
}

impl Registry {
    /// Loads the registry; every problem in the file is reported at once.
    pub fn load(cfg: &SitesConfig) -> Result<Registry, Vec<String>> {
        let text = match std::fs::read_to_string(&cfg.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(vec![format!("{}: {e}", cfg.file.display())]),
        };
        Self::parse(&text, cfg.unregistered).map_err(|p| {
            p.into_iter()
                .map(|x| format!("{}: {x}", cfg.file.display()))
                .collect()
        })
    }

    /// Parses registry TOML.
    pub fn parse(text: &str, unregistered: Unregistered) -> Result<Registry, Vec<String>> {
        let file: File = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let mut sites = BTreeMap::new();
        let mut by_mn = HashMap::new();
        for s in file.site {
            if let Err(e) = SiteId::parse(&s.id) {
                problems.push(format!("site id {:?}: {}", s.id, e.as_str()));
                continue;
            }
            let unit = match s.unit.as_deref().map(ConcentrationUnit::parse) {
                None => None,
                Some(Some(u)) => Some(u),
                Some(None) => {
                    problems.push(format!(
                        "site {}: unit {:?}: use ug/m3, mg/m3 or ng/m3",
                        s.id,
                        s.unit.as_deref().unwrap_or("")
                    ));
                    None
                }
            };
            if let Some(c) = s
                .hj212_crc
                .as_deref()
                .filter(|c| CrcVariant::parse(c).is_none())
            {
                problems.push(format!(
                    "site {}: hj212_crc {c:?}: use hj212, modbus or none",
                    s.id
                ));
            }
            if let Some(v) = s
                .hj212_version
                .as_deref()
                .filter(|v| version_of(v).is_none())
            {
                problems.push(format!(
                    "site {}: hj212_version {v:?}: use 2005, 2017 or 2025",
                    s.id
                ));
            }
            if let Some(mn) = &s.mn {
                if mn.is_empty() || mn.len() > 24 || !mn.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    problems.push(format!(
                        "site {}: mn {mn:?}: 1 to 24 letters and digits",
                        s.id
                    ));
                }
                if let Some(other) = by_mn.insert(mn.clone(), s.id.clone()) {
                    problems.push(format!("mn {mn} is given to sites {other} and {}", s.id));
                }
            }
            if s.interval_secs.is_some_and(|i| !(1..=86_400).contains(&i)) {
                problems.push(format!("site {}: interval_secs must be 1..=86400", s.id));
            }
            let defaults = SiteDefaults {
                unit,
                interval_secs: s.interval_secs,
            };
            if sites.insert(s.id.clone(), (s.clone(), defaults)).is_some() {
                problems.push(format!("site {} is listed twice", s.id));
            }
        }
        let devices = parse_devices(file.device, &mut problems);
        if problems.is_empty() {
            Ok(Registry {
                sites,
                devices,
                by_mn,
                unregistered,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether readings from `site` are taken.
    pub fn allows(&self, site: &str) -> bool {
        self.unregistered == Unregistered::Accept || self.sites.contains_key(site)
    }

    /// The registered defaults for `site` (none for an unregistered one).
    pub fn defaults(&self, site: &str) -> SiteDefaults {
        self.sites.get(site).map(|s| s.1).unwrap_or_default()
    }

    /// The registered site, if any.
    pub fn get(&self, site: &str) -> Option<&Site> {
        self.sites.get(site).map(|s| &s.0)
    }

    /// The registered HJ 212 device with this `MN`, if any.
    pub fn hj212_device(&self, mn: &str) -> Option<Hj212Device> {
        let (site, defaults) = self.sites.get(self.by_mn.get(mn)?)?;
        Some(Hj212Device {
            site: site.id.clone(),
            password: site.hj212_password.clone(),
            crc: site.hj212_crc.as_deref().and_then(CrcVariant::parse),
            version: site.hj212_version.as_deref().and_then(version_of),
            defaults: *defaults,
        })
    }

    /// The client identity `id`, if listed.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// Every client identity.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    /// Whether identities are listed (then every client must be one of them).
    pub fn has_devices(&self) -> bool {
        !self.devices.is_empty()
    }

    /// Every registered site.
    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.values().map(|s| &s.0)
    }

    /// Registered sites that do not count for the district.
    pub fn not_in_district(&self) -> Vec<String> {
        self.sites()
            .filter(|s| !s.counts_for_district)
            .map(|s| s.id.clone())
            .collect()
    }
}

/// The client identities by id, every problem with them added to `problems`.
fn parse_devices(list: Vec<Device>, problems: &mut Vec<String>) -> BTreeMap<String, Device> {
    let mut devices = BTreeMap::new();
    for d in list {
        if let Err(e) = SiteId::parse(&d.id) {
            problems.push(format!("device id {:?}: {}", d.id, e.as_str()));
        }
        if d.secret
            .as_deref()
            .is_some_and(|s| !crate::credentials::is_hash(s))
        {
            problems.push(format!(
                "device {}: secret must be a $7$ hash (aq-ingest device add prints the secret and writes its hash); never the secret itself",
                d.id
            ));
        }
        if d.role == Role::Device && d.sites.is_empty() {
            problems.push(format!("device {}: no sites to write", d.id));
        }
        let id = d.id.clone();
        if devices.insert(id.clone(), d).is_some() {
            problems.push(format!("device {id} is listed twice"));
        }
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../config/sites.example.toml");
        let r = Registry::parse(text, Unregistered::Accept).unwrap();
        assert_eq!(r.sites().count(), 2);
        assert_eq!(r.not_in_district(), vec!["erqi-ref".to_string()]);
    }

    /// `aq-ingest --config config/demo.toml demo`: the demo's config names the demo
    /// registry, which registers every simulated site, all but one with coordinates
    /// (the dashboard's map draws nine and lists the tenth beside it).
    #[test]
    fn the_demo_registry_places_the_simulated_sites() {
        let cfg =
            crate::config::Config::parse(include_str!("../config/demo.toml"), "demo").unwrap();
        assert!(cfg.broker.embedded, "the demo needs the embedded broker");
        assert_eq!(cfg.sites.file, PathBuf::from("config/sites.demo.toml"));
        assert_eq!(cfg.target[0].name, "2016H2");
        let text = include_str!("../config/sites.demo.toml");
        let r = Registry::parse(text, Unregistered::Accept).unwrap();
        let placed: Vec<&str> = (0..10)
            .map(crate::sim::Simulator::site_id)
            .map(|id| {
                r.get(&id)
                    .unwrap_or_else(|| panic!("{id} is not registered"))
            })
            .filter(|s| s.latitude.is_some() && s.longitude.is_some())
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(placed.len(), 9, "{placed:?}");
        assert!(!placed.contains(&"erqi-010"));
    }

    #[test]
    fn parses_sites_and_reports_every_problem() {
        let r = Registry::parse(
            r#"
[[site]]
id = "a"
unit = "mg/m3"
interval_secs = 30
[[site]]
id = "b"
counts_for_district = false
"#,
            Unregistered::Reject,
        )
        .unwrap();
        assert_eq!(
            r.defaults("a").unit,
            Some(ConcentrationUnit::MilligramsPerCubicMetre)
        );
        assert_eq!(r.defaults("a").interval_secs, Some(30));
        assert!(r.allows("b") && !r.allows("c"));
        assert_eq!(r.not_in_district(), vec!["b".to_string()]);
        let e = Registry::parse(
            "[[site]]\nid = \"a b\"\n[[site]]\nid = \"x\"\nunit = \"ppm\"\ninterval_secs = 0\n[[site]]\nid = \"y\"\n[[site]]\nid = \"y\"\n",
            Unregistered::Accept,
        )
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            Registry::parse("[[site]]\nid = \"a\"\ncolour = 1\n", Unregistered::Accept).is_err()
        );
        assert!(Registry::parse("", Unregistered::Accept)
            .unwrap()
            .allows("anything"));
    }
}
