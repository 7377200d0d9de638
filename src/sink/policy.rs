//! What to do with an InfluxDB write response. Pure, so every status is unit-tested.
//!
//! The policy follows the InfluxDB v2 write API's documented statuses (204 / 400 / 401 /
//! 404 / 413 / 422 / 429 / 503 with `Retry-After`); InfluxDB 1.x uses the same codes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metrics::WriteErrorClass;

/// Longest `Retry-After` honoured; a server asking for more is re-asked after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The decision for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the lines are stored; advance past them.
    Written,
    /// 400/422: the server refuses some line; bisect, and dead-letter a single refused
    /// line.
    Refused,
    /// 413: the body is too large; split it.
    TooLarge,
    /// Keep the lines and try again later: after `after` when the server said so,
    /// otherwise after the sink's own backoff.
    Retry {
        class: WriteErrorClass,
        after: Option<Duration>,
    },
}

/// Classifies an HTTP status and its `Retry-After` header.
pub fn classify(status: u16, retry_after: Option<&str>, now: DateTime<Utc>) -> Verdict {
    match status {
        200..=299 => Verdict::Written,
        400 | 422 => Verdict::Refused,
        413 => Verdict::TooLarge,
        401 | 403 => Verdict::Retry {
            class: WriteErrorClass::Auth,
            after: None,
        },
        404 => Verdict::Retry {
            class: WriteErrorClass::NotFound,
            after: None,
        },
        429 | 503 => Verdict::Retry {
            class: WriteErrorClass::Throttled,
            after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        // Any other status (5xx, or a 4xx the API does not document) keeps the data:
        // refusing to lose readings beats guessing that the server meant "drop them".
        _ => Verdict::Retry {
            class: WriteErrorClass::Server,
            after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), capped at
/// [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = DateTime::parse_from_rfc2822(v).ok()?;
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2016-08-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_documented_status() {
        assert_eq!(classify(204, None, now()), Verdict::Written);
        assert_eq!(classify(400, None, now()), Verdict::Refused);
        assert_eq!(classify(422, None, now()), Verdict::Refused);
        assert_eq!(classify(413, None, now()), Verdict::TooLarge);
        for (s, class) in [
            (401, WriteErrorClass::Auth),
            (403, WriteErrorClass::Auth),
            (404, WriteErrorClass::NotFound),
            (500, WriteErrorClass::Server),
            (502, WriteErrorClass::Server),
        ] {
            assert_eq!(
                classify(s, None, now()),
                Verdict::Retry { class, after: None }
            );
        }
        assert_eq!(
            classify(429, Some("7"), now()),
            Verdict::Retry {
                class: WriteErrorClass::Throttled,
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_dates_and_caps() {
        assert_eq!(
            parse_retry_after("Mon, 01 Aug 2016 00:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 31 Jul 2016 00:00:30 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now()), None);
    }
}
