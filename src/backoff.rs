//! Capped exponential backoff with jitter, shared by the MQTT reconnect loop and the
//! sink's retries.

use std::time::Duration;

/// Capped exponential backoff with jitter (rumqttc reconnects at once, forever).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }
    /// The next delay: uniformly in [d/2, d], d doubling up to the cap. The jitter keeps
    /// a fleet of clients from reconnecting in lockstep after a broker restart.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + Duration::from_millis(fastrand::u64(0..=(d - half).as_millis() as u64))
    }
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ds: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        let caps = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, cap) in ds.iter().zip(caps) {
            assert!(
                d.as_millis() as u64 <= cap && d.as_millis() as u64 >= cap / 2,
                "{d:?} vs {cap}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
