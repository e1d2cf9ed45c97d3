//! Hybrid logical clock (Kulkarni et al. 2014).
//!
//! Freshness of rows must not depend on every host having the same wall
//! clock: a host whose clock runs 30 s ahead would otherwise win every
//! comparison for 30 s after it stops. An HLC timestamp is the greatest
//! wall time seen (local or received) plus a counter that orders events
//! within one millisecond, so it follows wall time when clocks agree and
//! never goes backwards when they do not.

use std::fmt;

use serde::{Deserialize, Serialize};

const COUNTER_BITS: u32 = 16;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

/// A timestamp: milliseconds since the Unix epoch in the high 48 bits, a
/// counter in the low 16. Ordered as a plain integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Zero, earlier than every real timestamp: what an empty clock holds.
    pub const ZERO: Hlc = Hlc(0);

    /// The timestamp of wall time `millis` (ms since the Unix epoch) and
    /// `counter`.
    pub fn new(millis: u64, counter: u16) -> Hlc {
        Hlc((millis << COUNTER_BITS) | counter as u64)
    }

    /// The wall-time part: ms since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// The counter that orders events within one millisecond.
    pub fn counter(self) -> u16 {
        (self.0 & COUNTER_MASK) as u16
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.counter())
    }
}

/// The clock of one agent. It is handed the wall time on every call, so
/// the engine stays free of system time and the simulator can skew it.
#[derive(Debug, Clone, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest timestamp this clock has issued or received.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A timestamp for a local event at wall time `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let next = if wall_ms > self.last.millis() {
            Hlc::new(wall_ms, 0)
        } else {
            Self::successor(self.last)
        };
        self.last = next;
        next
    }

    /// Take a received timestamp into account, so every later local
    /// timestamp is greater than it.
    pub fn observe(&mut self, wall_ms: u64, remote: Hlc) {
        if remote > self.last {
            self.last = remote;
        }
        if wall_ms > self.last.millis() {
            self.last = Hlc::new(wall_ms, 0);
        }
    }

    fn successor(t: Hlc) -> Hlc {
        if t.counter() == u16::MAX {
            Hlc::new(t.millis() + 1, 0)
        } else {
            Hlc(t.0 + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_wall_time_and_never_goes_back() {
        let mut c = HlcClock::new();
        let a = c.tick(1000);
        assert_eq!(a, Hlc::new(1000, 0));
        let b = c.tick(1000);
        assert_eq!(b, Hlc::new(1000, 1));
        let back = c.tick(900);
        assert!(back > b);
        let later = c.tick(2000);
        assert_eq!(later, Hlc::new(2000, 0));
    }

    #[test]
    fn observed_remote_time_moves_the_clock_past_it() {
        let mut c = HlcClock::new();
        c.tick(1000);
        let remote = Hlc::new(31_000, 7);
        c.observe(1001, remote);
        assert!(c.tick(1002) > remote);
    }

    #[test]
    fn counter_overflow_carries_into_millis() {
        let mut c = HlcClock::new();
        c.observe(0, Hlc::new(5, u16::MAX));
        assert_eq!(c.tick(0), Hlc::new(6, 0));
    }
}
