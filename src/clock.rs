//! Injected time. Code that needs "now" takes a [`Clock`], so tests can pin it.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::UnixMillis;

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(chrono::Utc::now().timestamp_millis())
    }
}

/// A clock that says what the test sets.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(t: UnixMillis) -> Self {
        ManualClock(AtomicI64::new(t.0))
    }
    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}
