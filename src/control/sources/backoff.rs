//! Exponential backoff with full jitter, shared by discovery sources: after an error wait a random
//! time in `[0, min(cap, base·2^n)]`, reset on success — so a fleet of proxies does not hammer a
//! recovering Consul in lockstep, and a source can never hot-loop on errors.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        // Full jitter, but never below a tenth of the ceiling: no back-to-back retries.
        let floor = ceiling / 10;
        floor + ceiling.saturating_sub(floor).mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2), "{d:?}");
            ceilings.push(d);
        }
        assert!(ceilings[0] <= Duration::from_millis(100));
        assert!(ceilings[0] >= Duration::from_millis(10));
        assert!(
            ceilings[7] >= Duration::from_millis(200),
            "late delays stay near the cap"
        );
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
