//! MQTT topics and NATS subjects, as nats-server's MQTT listener maps them. Pure.
//!
//! A QoS 1 publish on topic `aq/site-001/readings` is stored in the `$MQTT_msgs` stream
//! under subject `$MQTT.msgs.aq.site-001.readings`. Since nats-server 2.10 the mapping
//! is reversible for every topic the server accepts:
//! - `/` between two non-empty levels becomes `.`;
//! - an empty level keeps a `/` beside the `.`: a leading `/` is `/.`, a `/` before
//!   another `/` or at the end is `./` (`a//b` is `a./.b`, `a/` is `a./`);
//! - a `.` inside a level becomes `//` (site `erqi.7` gives `aq.erqi//7.readings`).
//!
//! (2.9 and earlier refuse topics that contain `.` or a space instead: see the README.)
//! [`subject_to_topic`] decodes a delivered subject back to the device's topic, so that
//! the ingest reads the site from the same topic level as with any MQTT broker; and
//! [`filter_subjects`] turns the configured MQTT filters into the consumer's filters.

use thiserror::Error;

/// The subject prefix of MQTT messages in `$MQTT_msgs`.
pub const MQTT_MSGS_PREFIX: &str = "$MQTT.msgs.";

/// A topic or filter nats-server would not accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubjectError {
    #[error("MQTT filter {0:?} cannot be mapped to a NATS subject (empty, or a space or NATS wildcard '*'/'>' in it)")]
    Filter(String),
}

/// The subject the server stores a publish on `topic` under (without the prefix). The
/// server's own rule (2.10+), kept byte for byte; wildcards pass through unchanged.
pub fn topic_to_subject(topic: &str) -> String {
    let b = topic.as_bytes();
    if b == b"/" {
        return "/".into();
    }
    let mut out: Vec<u8> = Vec::with_capacity(topic.len() + 8);
    let end = b.len().saturating_sub(1);
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'/' if i == 0 || out.last() == Some(&b'.') => out.extend_from_slice(b"/."),
            b'/' if i == end || b[i + 1] == b'/' => out.extend_from_slice(b"./"),
            b'/' => out.push(b'.'),
            b'.' => out.extend_from_slice(b"//"),
            _ => out.push(c),
        }
    }
    if out.last() == Some(&b'.') {
        out.push(b'/');
    }
    utf8(out)
}

/// Bytes that were UTF-8 with only ASCII bytes replaced: still UTF-8.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The MQTT topic of a subject the server stored (without the prefix): the inverse of
/// [`topic_to_subject`].
pub fn subject_to_topic(subject: &str) -> String {
    // The one-level topic `/` is stored as it is.
    if subject == "/" {
        return "/".into();
    }
    let b = subject.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' => match b.get(i + 1) {
                Some(b'.') => {
                    out.push(b'/');
                    i += 1;
                }
                Some(b'/') => {
                    out.push(b'.');
                    i += 1;
                }
                // A lone `/` marks the empty last level of `a./`: the `.` made it.
                _ => {}
            },
            b'.' => out.push(b'/'),
            c => out.push(c),
        }
        i += 1;
    }
    utf8(out)
}

/// The delivered subject's MQTT topic, or `None` when the subject is not an MQTT
/// message's.
pub fn topic_of(subject: &str) -> Option<String> {
    subject.strip_prefix(MQTT_MSGS_PREFIX).map(subject_to_topic)
}

/// The consumer's filter subjects for MQTT topic filters: `+` is `*`, a trailing `#` is
/// `>` plus the parent level itself (MQTT's `a/#` matches `a`; NATS's `a.>` does not).
pub fn filter_subjects(filters: &[String]) -> Result<Vec<String>, SubjectError> {
    let mut out = Vec::new();
    for f in filters {
        if f.is_empty() || f.contains([' ', '*', '>']) {
            return Err(SubjectError::Filter(f.clone()));
        }
        let mapped = topic_to_subject(f).replace('+', "*");
        match mapped.strip_suffix(".#") {
            Some(parent) => {
                out.push(format!("{MQTT_MSGS_PREFIX}{parent}"));
                out.push(format!("{MQTT_MSGS_PREFIX}{parent}.>"));
            }
            None if mapped == "#" => out.push(format!("{MQTT_MSGS_PREFIX}>")),
            None => out.push(format!("{MQTT_MSGS_PREFIX}{mapped}")),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_topics_as_the_server_does() {
        for (topic, subject) in [
            ("aq/site-001/readings", "aq.site-001.readings"),
            ("aq/erqi.7/readings", "aq.erqi//7.readings"),
            ("a//b", "a./.b"),
            ("/a", "/.a"),
            ("a/", "a./"),
            ("/", "/"),
            ("//", "/././"),
            ("a.b.c", "a//b//c"),
            ("站点/甲", "站点.甲"),
        ] {
            assert_eq!(topic_to_subject(topic), subject, "{topic}");
            assert_eq!(subject_to_topic(subject), topic, "{subject}");
        }
    }

    #[test]
    fn every_topic_round_trips() {
        let alphabet = ['a', '/', '.', 'b'];
        for n in 1..=6u32 {
            for k in 0..4usize.pow(n) {
                let t: String = (0..n).map(|d| alphabet[k / 4usize.pow(d) % 4]).collect();
                assert_eq!(subject_to_topic(&topic_to_subject(&t)), t, "{t:?}");
            }
        }
    }

    #[test]
    fn delivered_subjects_give_the_device_topic() {
        assert_eq!(
            topic_of("$MQTT.msgs.aq.site-001.readings").as_deref(),
            Some("aq/site-001/readings")
        );
        assert_eq!(
            topic_of("$MQTT.msgs.aq.erqi//7.readings").as_deref(),
            Some("aq/erqi.7/readings")
        );
        assert_eq!(topic_of("aq.x"), None);
    }

    #[test]
    fn filters_become_consumer_subjects() {
        let f = |v: &[&str]| filter_subjects(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            f(&["aq/+/readings", "hj212/+/frames"]).unwrap(),
            vec!["$MQTT.msgs.aq.*.readings", "$MQTT.msgs.hj212.*.frames"]
        );
        assert_eq!(
            f(&["dust/#"]).unwrap(),
            vec!["$MQTT.msgs.dust", "$MQTT.msgs.dust.>"]
        );
        assert_eq!(f(&["#"]).unwrap(), vec!["$MQTT.msgs.>"]);
        assert!(f(&["aq/*/x"]).is_err());
    }
}
