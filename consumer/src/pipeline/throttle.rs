//! `--sink-rate-limit`: a token bucket of metrics per second that delays a batch's write to the
//! sink, so that a backlog built up during an outage reaches the store no faster than it can
//! take (and so that a test can make one consumer too slow for its load).
//!
//! The bucket is pure (every call is handed the time), so its arithmetic is tested without
//! sleeping; the pipeline does the waiting, cancellably by shutdown.
//!
//! Not `governor`, although the ingest uses it: its GCRA refuses a cost above the burst outright
//! (`InsufficientCapacity`), and a batch must never be split or dropped, only delayed.

use std::num::NonZeroU32;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

/// Metrics per second with a burst of one second's worth. A batch costs its metrics: one that
/// the bucket holds passes at once; a larger one waits until the missing tokens have accrued,
/// even when its cost exceeds the burst (it waits for the part of its cost beyond what the
/// bucket holds, so the long-run rate stays the limit and at least one batch always passes).
#[derive(Debug)]
struct TokenBucket {
    per_second: f64,
    burst: f64,
    /// Tokens held at `updated`; never above `burst`.
    tokens: f64,
    /// When `tokens` was last brought up to date. After a wait was handed out this lies in the
    /// future: the tokens accruing until then are already spent on the waiting batch.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket (a consumer that starts on a backlog sends one second's worth at once).
    fn new(per_second: NonZeroU32, now: Instant) -> Self {
        let per_second = f64::from(per_second.get());
        Self {
            per_second,
            burst: per_second,
            tokens: per_second,
            updated: now,
        }
    }

    /// `--sink-rate-limit`'s value: 0 turns the limit off.
    fn from_limit(per_second: u32, now: Instant) -> Option<Self> {
        NonZeroU32::new(per_second).map(|rate| Self::new(rate, now))
    }

    /// Takes `cost` tokens and says how long to wait before writing what they pay for. The
    /// tokens are taken now, wait or not, so calls serialise: the next batch waits behind this
    /// one. A cost of 0 (a batch of corrupt records only) passes at once.
    fn reserve(&mut self, cost: u64, now: Instant) -> Duration {
        self.refill(now);
        // u64 → f64 loses precision only beyond 2^53 metrics, far past any batch.
        let cost = cost as f64;
        if cost <= self.tokens {
            self.tokens -= cost;
            return Duration::ZERO;
        }
        let missing = cost - self.tokens;
        // Everything held and everything accruing until the batch may go is spent on it; a wait
        // handed out before and not yet over comes first.
        let ready = now.max(self.updated) + Duration::from_secs_f64(missing / self.per_second);
        self.tokens = 0.0;
        self.updated = ready;
        ready - now
    }

    fn refill(&mut self, now: Instant) {
        // `updated` may lie in the future (a wait handed out); nothing accrues before it.
        let elapsed = now.saturating_duration_since(self.updated);
        if elapsed > Duration::ZERO {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
            self.updated = now;
        }
    }
}

/// The pipeline's side of the limit: waits for a batch's tokens, counting the time spent waiting,
/// and keeps a poll to about one second's worth of the limit ([`SinkThrottle::poll_records`]).
pub(super) struct SinkThrottle {
    bucket: Option<TokenBucket>,
    throttled_seconds: Counter<f64, AtomicU64>,
    /// Metrics per record seen so far (a moving average), to size polls in records.
    metrics_per_record: f64,
}

impl SinkThrottle {
    /// `per_second` 0: no limit, and [`SinkThrottle::admit`] never waits.
    pub(super) fn new(per_second: u32, throttled_seconds: Counter<f64, AtomicU64>) -> Self {
        Self {
            bucket: TokenBucket::from_limit(per_second, Instant::now()),
            throttled_seconds,
            metrics_per_record: 1.0,
        }
    }

    /// The most records the next poll should take: `configured`, or under a limit about one
    /// second's worth of it (at least one record). A batch is held in hand while it waits for its
    /// tokens, and its partitions with it: a poll of a whole backlog at a low limit would hold
    /// them for minutes, so that consumers added to share the load (a rebalance, an autoscaler)
    /// stand idle until that batch is written.
    pub(super) fn poll_records(&self, configured: usize) -> usize {
        let Some(bucket) = &self.bucket else {
            return configured;
        };
        let records = (bucket.per_second / self.metrics_per_record.max(1.0)).floor();
        // Truncation is the intent: a whole number of records, at least one.
        (records as usize).clamp(1, configured.max(1))
    }

    /// Learns the size of the records from a batch of `records` holding `metrics`.
    pub(super) fn observe(&mut self, records: usize, metrics: u64) {
        if records > 0 {
            let ratio = metrics as f64 / records as f64;
            self.metrics_per_record = 0.7 * self.metrics_per_record + 0.3 * ratio;
        }
    }

    /// Waits until a batch of `metrics` may be written: `true` when it may, `false` when
    /// shutdown came first. A throttle can be long (a large backlog at a low limit), and a
    /// shutdown must not wait it out: the batch is then left unwritten and uncommitted, and is
    /// re-delivered to whoever owns its partitions next.
    pub(super) async fn admit(&mut self, metrics: u64, shutdown: &CancellationToken) -> bool {
        let Some(bucket) = &mut self.bucket else {
            return true;
        };
        let wait = bucket.reserve(metrics, Instant::now());
        if wait.is_zero() {
            return true;
        }
        tracing::debug!(
            metrics,
            wait_ms = wait.as_millis() as u64,
            "sink rate limit: waiting"
        );
        let started = Instant::now();
        let admitted = tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = shutdown.cancelled() => false,
        };
        self.throttled_seconds
            .inc_by(started.elapsed().as_secs_f64());
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: u32, now: Instant) -> TokenBucket {
        TokenBucket::new(NonZeroU32::new(per_second).expect("positive"), now)
    }

    fn millis(duration: Duration) -> u128 {
        duration.as_millis()
    }

    #[test]
    fn polls_are_sized_to_about_one_second_of_the_limit() {
        let counter = Counter::<f64, AtomicU64>::default();
        let off = SinkThrottle::new(0, counter.clone());
        assert_eq!(off.poll_records(2048), 2048, "no limit: as configured");
        let mut limited = SinkThrottle::new(400, counter);
        assert_eq!(
            limited.poll_records(2048),
            400,
            "one metric per record until seen"
        );
        for _ in 0..20 {
            limited.observe(100, 1000);
        }
        assert_eq!(
            limited.poll_records(2048),
            40,
            "10 metrics per record: 40 records"
        );
        assert_eq!(
            limited.poll_records(16),
            16,
            "never above the configured maximum"
        );
        for _ in 0..20 {
            limited.observe(1, 5000);
        }
        assert_eq!(limited.poll_records(2048), 1, "at least one record");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        assert!(TokenBucket::from_limit(0, Instant::now()).is_none());
        assert!(TokenBucket::from_limit(1, Instant::now()).is_some());
    }

    #[test]
    fn one_seconds_worth_passes_at_once_then_the_rate_holds() {
        let start = Instant::now();
        let mut bucket = bucket(500, start);
        assert_eq!(bucket.reserve(300, start), Duration::ZERO);
        assert_eq!(bucket.reserve(200, start), Duration::ZERO);
        // Empty now: 100 more cost 100 / 500 s.
        assert_eq!(millis(bucket.reserve(100, start)), 200);
    }

    #[test]
    fn tokens_accrue_with_time_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = bucket(100, start);
        assert_eq!(bucket.reserve(100, start), Duration::ZERO);
        let later = start + Duration::from_millis(500);
        assert_eq!(bucket.reserve(50, later), Duration::ZERO);
        assert_eq!(millis(bucket.reserve(10, later)), 100);
        // A long idle time refills to one second's worth, not more.
        let idle = later + Duration::from_secs(60);
        assert_eq!(bucket.reserve(100, idle), Duration::ZERO);
        assert_eq!(millis(bucket.reserve(1, idle)), 10);
    }

    #[test]
    fn a_batch_bigger_than_the_burst_waits_for_what_the_bucket_lacks() {
        let start = Instant::now();
        let mut bucket = bucket(500, start);
        // 3000 metrics at 500/s with 500 in the bucket: 2500 / 500 = 5 s.
        assert_eq!(bucket.reserve(3000, start), Duration::from_secs(5));
        // Another big one queues behind it: its 3000 are paid after the first's wait.
        assert_eq!(bucket.reserve(3000, start), Duration::from_secs(11));
    }

    #[test]
    fn waits_queue_behind_each_other_and_keep_the_long_run_rate() {
        let start = Instant::now();
        let mut bucket = bucket(1000, start);
        let mut now = start;
        let mut sent = 0u64;
        // Batches of 250 written as soon as allowed, for 10 s of waiting.
        while now < start + Duration::from_secs(10) {
            now += bucket.reserve(250, now);
            sent += 250;
        }
        // One second's burst, then 1000 per second.
        let expected = 1000 + 1000 * (now - start).as_secs_f64() as u64;
        assert!(sent.abs_diff(expected) <= 250, "{sent} vs {expected}");
    }

    #[tokio::test]
    async fn shutdown_ends_a_long_wait_and_refuses_the_batch() {
        let seconds = Counter::<f64, AtomicU64>::default();
        let mut throttle = SinkThrottle::new(10, seconds.clone());
        let shutdown = CancellationToken::new();
        assert!(throttle.admit(10, &shutdown).await, "the burst passes");
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        // 1000 metrics at 10/s would take 100 s.
        assert!(!throttle.admit(1000, &shutdown).await);
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(seconds.get() > 0.0);
    }

    #[tokio::test]
    async fn no_limit_never_waits() {
        let seconds = Counter::<f64, AtomicU64>::default();
        let mut throttle = SinkThrottle::new(0, seconds.clone());
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert!(throttle.admit(u64::MAX, &shutdown).await);
        assert_eq!(seconds.get(), 0.0);
    }

    #[test]
    fn an_empty_batch_never_waits() {
        let start = Instant::now();
        let mut bucket = bucket(10, start);
        assert_eq!(millis(bucket.reserve(20, start)), 1000);
        assert_eq!(bucket.reserve(0, start), Duration::ZERO);
    }
}
