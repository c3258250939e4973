//! [`Clock`]: where a chunkserver reads the time its leases are measured
//! by. In production it is the runtime's monotonic clock; simulation tests
//! (scenario X2) give a chunkserver a clock that is offset from the others
//! or runs at another rate.
//!
//! A lease is a duration measured on one clock (the primary's from when it
//! sent the heartbeat the master confirmed, the master's from when that
//! heartbeat arrived), so a constant offset between clocks changes nothing.
//! Only a difference in *rate* does: a primary whose clock runs at `r` times
//! the master's holds a lease of `lease - margin` by its clock for
//! `(lease - margin) / r` of the master's time, and the master grants the
//! next one after `lease + margin`. Leases are safe while
//! `r >= (lease - margin) / (lease + margin)` (with the margin of a tenth of
//! the lease: a primary clock at least 82% as fast as the master's); a fast
//! primary clock only ends its leases early. Monotonic clocks disciplined by
//! NTP differ in rate by parts per million.

use std::time::Duration;

use tokio::time::Instant;

/// A chunkserver's clock. [`Clock::default`] is the runtime's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    skew: Option<Skew>,
}

#[derive(Debug, Clone, Copy)]
struct Skew {
    /// The real instant the skewed clock starts from.
    anchor: Instant,
    /// Added to (or, if `behind`, taken from) every reading.
    offset: Duration,
    behind: bool,
    /// How many of its nanoseconds pass per million real ones.
    rate_ppm: u64,
}

impl Clock {
    /// A clock `offset` ahead of (or, if `behind`, behind) the runtime's,
    /// running at `rate_ppm` parts per million of its speed (1_000_000:
    /// the same speed), from now on. For simulation tests.
    #[cfg(any(test, madsim))]
    pub fn skewed(offset: Duration, behind: bool, rate_ppm: u64) -> Self {
        Self {
            skew: Some(Skew {
                anchor: Instant::now(),
                offset,
                behind,
                rate_ppm,
            }),
        }
    }

    /// The time now by this clock.
    pub fn now(&self) -> Instant {
        self.reading_at(Instant::now())
    }

    /// What this clock reads when the runtime's reads `real`.
    fn reading_at(&self, real: Instant) -> Instant {
        let Some(skew) = self.skew else {
            return real;
        };
        let elapsed = real.saturating_duration_since(skew.anchor);
        let scaled = Duration::from_nanos(
            u64::try_from(elapsed.as_nanos() * u128::from(skew.rate_ppm) / 1_000_000)
                .unwrap_or(u64::MAX),
        );
        let at = skew.anchor + scaled;
        if skew.behind {
            at.checked_sub(skew.offset).unwrap_or(skew.anchor)
        } else {
            at + skew.offset
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_is_offset_and_runs_at_its_rate() {
        let slow = Clock::skewed(Duration::from_secs(1), false, 500_000);
        let behind = Clock::skewed(Duration::from_secs(1), true, 1_000_000);
        let (slow_start, behind_start) = (slow.skew.unwrap().anchor, behind.skew.unwrap().anchor);
        let later = |start: Instant| start + Duration::from_secs(4);
        // Half speed: 2 s in 4, plus the second ahead.
        assert_eq!(
            slow.reading_at(later(slow_start)) - slow_start,
            Duration::from_secs(3)
        );
        assert_eq!(
            behind.reading_at(later(behind_start)),
            behind_start + Duration::from_secs(3)
        );
        let real = later(slow_start);
        assert_eq!(Clock::default().reading_at(real), real);
    }
}
