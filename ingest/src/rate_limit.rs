//! Per-client request rate limiting: one GCRA bucket (governor) per client id.

use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metricstream_backend::ClientId;

use crate::config::RateLimit;

pub struct ClientRateLimiter {
    limiter: DefaultKeyedRateLimiter<ClientId>,
    clock: DefaultClock,
}

impl ClientRateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `client`'s allowance, or says how long until one is available.
    pub fn check(&self, client: &ClientId) -> Result<(), Duration> {
        self.limiter
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets clients whose buckets are full again. In open mode any header value is a client,
    /// so without this the table would grow with every id ever seen.
    pub fn forget_idle_clients(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

/// A `Retry-After` value: whole seconds, rounded up, never 0 (which would invite an immediate
/// retry that is bound to fail again).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn limiter(per_second: u32, burst: u32) -> ClientRateLimiter {
        ClientRateLimiter::new(RateLimit {
            per_second: NonZeroU32::new(per_second).expect("positive"),
            burst: NonZeroU32::new(burst).expect("positive"),
        })
    }

    #[test]
    fn allows_the_burst_then_refuses() {
        let limiter = limiter(1, 3);
        let client = ClientId::new("a");
        for _ in 0..3 {
            assert!(limiter.check(&client).is_ok());
        }
        let wait = limiter.check(&client).expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn clients_have_separate_allowances() {
        let limiter = limiter(1, 1);
        assert!(limiter.check(&ClientId::new("a")).is_ok());
        assert!(limiter.check(&ClientId::new("a")).is_err());
        assert!(limiter.check(&ClientId::new("b")).is_ok());
    }

    #[test]
    fn idle_clients_are_forgotten() {
        // A fast rate refills buckets within the test's sleep.
        let limiter = limiter(1000, 1);
        for client in ["a", "b", "c"] {
            assert!(limiter.check(&ClientId::new(client)).is_ok());
        }
        assert_eq!(limiter.tracked_clients(), 3);
        std::thread::sleep(Duration::from_millis(20));
        limiter.forget_idle_clients();
        assert_eq!(limiter.tracked_clients(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_of_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(7)), 7);
    }
}
