//! Request pacing for blocking-query loops, as Consul's blocking-query guidance asks
//! (`website/content/api-docs/features/blocking.mdx`, "Rate limit"): in the happy case a loop
//! proceeds without waiting, but when answers churn (a flapping check, an incident) it degrades
//! into polling at a bounded rate — a token bucket with a small burst, not a sleep per
//! iteration (which would delay every delivery).
//!
//! Burst [`BURST`], one new token every [`REFILL`]: a failover (the old primary's check turns
//! critical, the new one's passes a moment later: two or three index changes) is delivered at
//! once; a check flapping for minutes costs at most one request per second per proxy.

use std::time::Duration;

use tokio::time::Instant;

/// Requests allowed back to back.
pub const BURST: f64 = 4.0;
/// One more request allowed per this much time.
pub const REFILL: Duration = Duration::from_secs(1);

/// A token bucket; `reserve` says when the next request may go.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    refill: Duration,
    /// Tokens at `at` (may be negative: reserved ahead).
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(burst: f64, refill: Duration, now: Instant) -> TokenBucket {
        TokenBucket {
            burst,
            refill,
            tokens: burst,
            at: now,
        }
    }

    /// Whether `n` requests could go now without waiting (nothing is taken).
    pub fn has_tokens(&self, now: Instant, n: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed / self.refill.as_secs_f64()).min(self.burst) >= n
    }

    /// Takes a token and returns when the request may be sent (`now` if one was left).
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed / self.refill.as_secs_f64()).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            now
        } else {
            now + self.refill.mul_f64(-self.tokens)
        }
    }
}

impl Default for TokenBucket {
    fn default() -> Self {
        TokenBucket::new(BURST, REFILL, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_one_per_refill() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3.0, Duration::from_secs(1), start);
        for _ in 0..3 {
            assert!(bucket.has_tokens(start, 1.0));
            assert_eq!(bucket.reserve(start), start);
        }
        assert!(!bucket.has_tokens(start, 1.0));
        assert!(bucket.has_tokens(start + Duration::from_secs(1), 1.0));
        assert!(!bucket.has_tokens(start + Duration::from_secs(1), 2.0));
        // Empty: the next one waits a refill, the one after two.
        assert_eq!(bucket.reserve(start), start + Duration::from_secs(1));
        assert_eq!(bucket.reserve(start), start + Duration::from_secs(2));
        // After a long quiet spell the burst is back, but never more than the burst.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later), later);
        }
        assert!(bucket.reserve(later) > later);
    }
}
