//! The front-end's notion of time: a point on a clock the caller owns.
//!
//! The state machine never reads a clock (the crate is sans-IO): the daemon passes a
//! monotonic reading, the simulation a virtual one. Only differences between instants
//! matter, except for two slowly varying inputs that need an absolute count: the 4 µs
//! ISN clock of RFC 6528 §3 and the minute counter of SYN cookies.

use std::{ops, time::Duration};

/// A point in time, as nanoseconds since an epoch the caller chooses (boot, the start of
/// a simulation). Monotonic by contract: the caller never passes a smaller value than
/// before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Self = Self(0);

    /// The instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch, wrapped to 32 bits: a TCP timestamp clock of 1 ms
    /// granularity (RFC 7323 §5.4 asks for 1 ms to 1 s).
    pub const fn as_millis_u32(self) -> u32 {
        (self.0 / 1_000_000) as u32
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl ops::Add<Duration> for Instant {
    type Output = Self;

    /// Saturates at the end of time rather than wrapping (585 years of nanoseconds).
    fn add(self, rhs: Duration) -> Self {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(nanos))
    }
}

impl ops::AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_nanos(5);
        assert_eq!((t + Duration::from_nanos(7)).as_nanos(), 12);
        assert_eq!(
            (t + Duration::MAX).as_nanos(),
            u64::MAX,
            "no wrap at the end of time"
        );
        assert_eq!(
            t.saturating_duration_since(Instant::from_nanos(9)),
            Duration::ZERO
        );
        assert_eq!(Instant::from_nanos(3_000_000).as_millis_u32(), 3);
    }
}
