//! MQTT topic filters and the site id's position in them. Pure.

/// A subscription filter and the level that names the site (its first `+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFilter {
    pub filter: String,
    levels: Vec<String>,
    site_level: usize,
}

/// Why a filter cannot name a site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("topic filter {0:?} has no '+' level for the site id")]
    NoSiteLevel(String),
    #[error("topic filter {0:?} is not a valid MQTT filter")]
    Invalid(String),
}

impl SiteFilter {
    pub fn parse(filter: &str) -> Result<Self, FilterError> {
        let levels: Vec<String> = filter.split('/').map(str::to_owned).collect();
        let invalid = || FilterError::Invalid(filter.to_owned());
        if filter.is_empty() {
            return Err(invalid());
        }
        for (i, l) in levels.iter().enumerate() {
            let wild = l.contains(['+', '#']);
            if wild && l.len() != 1 {
                return Err(invalid());
            }
            if l == "#" && i != levels.len() - 1 {
                return Err(invalid());
            }
        }
        let site_level = levels
            .iter()
            .position(|l| l == "+")
            .ok_or_else(|| FilterError::NoSiteLevel(filter.to_owned()))?;
        Ok(SiteFilter {
            filter: filter.to_owned(),
            levels,
            site_level,
        })
    }

    /// The site level of `topic` when the topic matches this filter.
    pub fn site_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut site = None;
        let mut parts = topic.split('/');
        for (i, f) in self.levels.iter().enumerate() {
            if f == "#" {
                return site;
            }
            let part = parts.next()?;
            if i == self.site_level {
                site = Some(part);
            }
            if f != "+" && f != part {
                return None;
            }
        }
        if parts.next().is_some() {
            return None;
        }
        site
    }
}

/// The site of `topic` under the first matching filter.
pub fn site_of<'t>(filters: &[SiteFilter], topic: &'t str) -> Option<&'t str> {
    filters.iter().find_map(|f| f.site_of(topic))
}

/// Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the rest;
/// topics starting with `$` match no wildcard at their first level).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

#[cfg(test)]
#[test]
fn filters_match_as_mqtt_says() {
    assert!(matches("hj212/s1/frames", "hj212/+/frames"));
    assert!(matches("hj212/s1/frames", "hj212/#"));
    assert!(matches("hj212", "hj212/#"));
    assert!(!matches("hj212/s1/x/frames", "hj212/+/frames"));
    assert!(!matches("aq/s1/readings", "hj212/+/frames"));
    assert!(!matches("$SYS/x", "#"));
    assert!(!matches("a/b", "a"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_site_level() {
        let f = SiteFilter::parse("aq/+/readings").unwrap();
        assert_eq!(f.site_of("aq/s1/readings"), Some("s1"));
        assert_eq!(f.site_of("aq//readings"), Some(""));
        assert_eq!(f.site_of("aq/s1/other"), None);
        assert_eq!(f.site_of("aq/s1/readings/x"), None);
        assert_eq!(f.site_of("aq/s1"), None);
        let g = SiteFilter::parse("dust/+/#").unwrap();
        assert_eq!(g.site_of("dust/s2/a/b"), Some("s2"));
        assert_eq!(site_of(&[f, g], "dust/s3/x"), Some("s3"));
    }

    #[test]
    fn refuses_filters_without_a_site() {
        assert!(matches!(
            SiteFilter::parse("aq/readings"),
            Err(FilterError::NoSiteLevel(_))
        ));
        assert!(matches!(
            SiteFilter::parse("aq/#/x"),
            Err(FilterError::Invalid(_))
        ));
        assert!(matches!(
            SiteFilter::parse("aq/s+/x"),
            Err(FilterError::Invalid(_))
        ));
    }
}
