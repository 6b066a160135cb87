//! Per-client caps on what a client stores, beside the request rate of `crate::rate_limit`:
//!
//! - [`SampleBudget`]: samples per second, a token bucket per client. A request is admitted
//!   whole when the bucket holds its samples (or a full burst, for a request larger than the
//!   burst), and may leave the bucket in debt; otherwise it is refused whole with a wait, which
//!   every protocol's clients understand as "retry later" (429 + `Retry-After`). Nothing of a
//!   refused request is stored, so a retry duplicates nothing. (governor, which the request rate
//!   uses, refuses outright a request of more cells than its burst; samples per request vary too
//!   widely for that.)
//! - [`ActiveSeries`]: distinct series (name and tags) a client may have had within a window
//!   (an hour by default). Samples of series the client already has are always admitted; those
//!   of new series beyond the cap are refused and the rest of the request stored, as each
//!   protocol reports a partial write. Retrying those samples cannot help before older series
//!   go quiet, so they are not answered as retryable.
//!
//! Both are enforced per replica. The sample rate is divided among replicas like the request
//! rate (the Service spreads a client's requests over them); the series cap is not, because
//! every replica sees nearly all of a client's series.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use metricstream_backend::ClientId;
use metricstream_backend::codec::EncodeMetric;

use crate::config::RateLimit;

/// Per-client token buckets of samples.
pub struct SampleBudget {
    per_second: f64,
    burst: f64,
    started: Instant,
    buckets: Mutex<HashMap<ClientId, Bucket>>,
}

struct Bucket {
    tokens: f64,
    /// Seconds since `started` when `tokens` was last brought up to date.
    updated: f64,
}

impl SampleBudget {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            per_second: f64::from(limit.per_second.get()),
            burst: f64::from(limit.burst.get()),
            started: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `samples` from `client`'s budget, or says how long until the request fits.
    pub fn take(&self, client: &ClientId, samples: usize) -> Result<(), Duration> {
        self.take_at(client, samples, self.started.elapsed().as_secs_f64())
    }

    fn take_at(&self, client: &ClientId, samples: usize, now: f64) -> Result<(), Duration> {
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(client.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        self.refill(bucket, now);
        // A request larger than the burst needs a full bucket, never more, or it could not pass.
        let needed = (samples as f64).min(self.burst);
        if bucket.tokens >= needed {
            bucket.tokens -= samples as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (needed - bucket.tokens) / self.per_second,
            ))
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: f64) {
        let elapsed = (now - bucket.updated).max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
    }

    /// Forgets clients whose buckets are full again: they would start full anyway.
    pub fn forget_idle_clients(&self) {
        let now = self.started.elapsed().as_secs_f64();
        let mut buckets = lock(&self.buckets);
        buckets.retain(|_, bucket| {
            self.refill(bucket, now);
            bucket.tokens < self.burst
        });
        buckets.shrink_to_fit();
    }
}

/// What [`ActiveSeries::retain`] refused of a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refused {
    pub samples: usize,
    /// The name of the first refused sample's series, for the message.
    pub first_series: Option<String>,
}

/// One request's view of its client's series (see [`ActiveSeries::gate`]).
pub struct SeriesGate<'a> {
    owner: &'a ActiveSeries,
    series: Arc<Mutex<ClientSeries>>,
    now: u64,
    refused: Refused,
    /// Scratch space for a group's new series, kept between groups.
    new_keys: Vec<u64>,
}

impl SeriesGate<'_> {
    /// Admits a group of rows that stand or fall together (a histogram's bucket, sum and count
    /// series; a single sample is a group of one): all of them when their new series fit under
    /// the cap, none otherwise, so no histogram is stored in part. A refused group counts as one
    /// refused sample.
    pub fn admit<M: EncodeMetric>(&mut self, rows: &[M]) -> bool {
        let owner = self.owner;
        let mut series = lock(&self.series);
        self.new_keys.clear();
        for row in rows {
            let key = owner.series_hash(row);
            match series.last_seen.get_mut(&key) {
                Some(last_seen) => *last_seen = self.now,
                None if !self.new_keys.contains(&key) => self.new_keys.push(key),
                None => {}
            }
        }
        if self.new_keys.is_empty() {
            return true;
        }
        let fits = |series: &ClientSeries| {
            series.last_seen.len() + self.new_keys.len() <= owner.max_series
        };
        if !fits(&series) && self.now.saturating_sub(series.swept_at) >= owner.sweep_every_secs {
            owner.sweep(&mut series, self.now);
        }
        if fits(&series) {
            for key in &self.new_keys {
                series.last_seen.insert(*key, self.now);
            }
            return true;
        }
        self.refused.samples += 1;
        if self.refused.first_series.is_none() {
            self.refused.first_series = rows.first().map(|row| row.name().to_owned());
        }
        false
    }

    /// What the gate refused.
    pub fn finish(self) -> Refused {
        self.refused
    }
}

/// Per-client sets of the series seen within the window.
pub struct ActiveSeries {
    max_series: usize,
    window_secs: u64,
    /// How long a client at its cap waits between two sweeps of its quiet series.
    sweep_every_secs: u64,
    /// Random keys: a client cannot craft names that collide to slip past the cap.
    hasher: RandomState,
    started: Instant,
    clients: Mutex<HashMap<ClientId, Arc<Mutex<ClientSeries>>>>,
}

#[derive(Default)]
struct ClientSeries {
    /// Series hash → when it was last seen, in seconds since `started`.
    last_seen: HashMap<u64, u64>,
    swept_at: u64,
}

impl ActiveSeries {
    pub fn new(max_series: NonZeroUsize, window: Duration) -> Self {
        let window_secs = window.as_secs().max(1);
        Self {
            max_series: max_series.get(),
            window_secs,
            sweep_every_secs: (window_secs / 60).clamp(1, 60),
            hasher: RandomState::new(),
            started: Instant::now(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Opens `client`'s series for one request: each group of rows is then admitted or
    /// refused through the gate.
    pub fn gate(&self, client: &ClientId) -> SeriesGate<'_> {
        self.gate_at(client, self.started.elapsed().as_secs())
    }

    fn gate_at(&self, client: &ClientId, now: u64) -> SeriesGate<'_> {
        let series = lock(&self.clients)
            .entry(client.clone())
            .or_default()
            .clone();
        SeriesGate {
            owner: self,
            series,
            now,
            refused: Refused::default(),
            new_keys: Vec::new(),
        }
    }

    /// Keeps the metrics whose series `client` may write, one by one, dropping the others (in
    /// order).
    pub fn retain<M: EncodeMetric>(&self, client: &ClientId, metrics: &mut Vec<M>) -> Refused {
        self.retain_at(client, metrics, self.started.elapsed().as_secs())
    }

    fn retain_at<M: EncodeMetric>(
        &self,
        client: &ClientId,
        metrics: &mut Vec<M>,
        now: u64,
    ) -> Refused {
        let mut gate = self.gate_at(client, now);
        metrics.retain(|metric| gate.admit(std::slice::from_ref(metric)));
        gate.finish()
    }

    /// The cap, for messages.
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    fn sweep(&self, series: &mut ClientSeries, now: u64) {
        let window = self.window_secs;
        series
            .last_seen
            .retain(|_, last_seen| now.saturating_sub(*last_seen) < window);
        series.swept_at = now;
    }

    /// Drops every client's quiet series, and clients left with none.
    pub fn forget_quiet_series(&self) {
        self.forget_quiet_series_at(self.started.elapsed().as_secs());
    }

    fn forget_quiet_series_at(&self, now: u64) {
        lock(&self.clients).retain(|_, series| {
            let mut series = lock(series);
            self.sweep(&mut series, now);
            series.last_seen.shrink_to_fit();
            !series.last_seen.is_empty()
        });
    }

    /// Series tracked over all clients (quiet ones until the next sweep included).
    pub fn tracked_series(&self) -> usize {
        lock(&self.clients)
            .values()
            .map(|series| lock(series).last_seen.len())
            .sum()
    }

    /// Name and tags (in their canonical, sorted order), each length-prefixed so that no two
    /// different series feed the hasher the same bytes.
    fn series_hash<M: EncodeMetric>(&self, metric: &M) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        let mut put = |text: &str| {
            hasher.write_usize(text.len());
            hasher.write(text.as_bytes());
        };
        put(metric.name());
        for (key, value) in metric.tags() {
            put(key);
            put(value);
        }
        hasher.finish()
    }
}

/// A poisoned lock only means another request panicked while counting; the counts stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::num::NonZeroU32;

    use metricstream_backend::{Metric, MetricKind};

    use super::*;

    fn budget(per_second: u32, burst: u32) -> SampleBudget {
        SampleBudget::new(RateLimit {
            per_second: NonZeroU32::new(per_second).expect("positive"),
            burst: NonZeroU32::new(burst).expect("positive"),
        })
    }

    fn sample(name: &str, tags: &[(&str, &str)]) -> Metric {
        Metric {
            name: name.to_owned(),
            value: 1.0,
            timestamp: Some(1),
            tags: tags
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            kind: MetricKind::Untyped,
        }
    }

    fn names(metrics: &[Metric]) -> Vec<&str> {
        metrics.iter().map(|metric| metric.name.as_str()).collect()
    }

    #[test]
    fn the_budget_admits_whole_requests_until_empty_then_says_how_long_to_wait() {
        let budget = budget(100, 200);
        let client = ClientId::new("a");
        assert_eq!(budget.take_at(&client, 150, 0.0), Ok(()));
        let wait = budget
            .take_at(&client, 100, 0.0)
            .expect_err("50 left, 100 asked");
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second refills the 50 missing; nothing was taken by the refusal.
        assert_eq!(budget.take_at(&client, 100, 0.5), Ok(()));
        assert!(budget.take_at(&client, 1, 0.5).is_err());
    }

    #[test]
    fn a_request_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_it_in_debt() {
        let budget = budget(100, 200);
        let client = ClientId::new("a");
        assert_eq!(budget.take_at(&client, 500, 0.0), Ok(()));
        // 300 in debt: a 200 request waits until the bucket is full again, 5 s.
        let wait = budget.take_at(&client, 200, 0.0).expect_err("in debt");
        assert_eq!(wait, Duration::from_secs(5));
        assert_eq!(budget.take_at(&client, 200, 5.0), Ok(()));
    }

    #[test]
    fn clients_have_separate_budgets_and_full_buckets_are_forgotten() {
        let budget = budget(1_000_000, 10);
        assert_eq!(budget.take_at(&ClientId::new("a"), 10, 0.0), Ok(()));
        assert!(budget.take_at(&ClientId::new("a"), 10, 0.0).is_err());
        assert_eq!(budget.take_at(&ClientId::new("b"), 10, 0.0), Ok(()));
        std::thread::sleep(Duration::from_millis(5));
        budget.forget_idle_clients();
        assert!(lock(&budget.buckets).is_empty());
    }

    #[test]
    fn known_series_always_pass_and_new_ones_beyond_the_cap_are_refused_in_order() {
        let series = ActiveSeries::new(NonZeroUsize::new(2).expect("2"), Duration::from_secs(3600));
        let client = ClientId::new("a");
        let mut first = vec![sample("up", &[("job", "a")]), sample("up", &[("job", "b")])];
        assert_eq!(series.retain_at(&client, &mut first, 0), Refused::default());
        assert_eq!(first.len(), 2);

        let mut second = vec![
            sample("up", &[("job", "c")]),
            sample("up", &[("job", "a")]),
            sample("down", &[]),
            sample("up", &[("job", "b")]),
        ];
        let refused = series.retain_at(&client, &mut second, 10);
        assert_eq!(
            refused,
            Refused {
                samples: 2,
                first_series: Some("up".to_owned())
            }
        );
        assert_eq!(names(&second), ["up", "up"]);
        assert_eq!(second[0].tags["job"], "a");
        assert_eq!(second[1].tags["job"], "b");
        // Another client has its own cap.
        let mut other = vec![sample("down", &[])];
        assert_eq!(
            series.retain_at(&ClientId::new("b"), &mut other, 10),
            Refused::default()
        );
    }

    #[test]
    fn the_same_new_series_twice_in_one_request_counts_once() {
        let series = ActiveSeries::new(NonZeroUsize::MIN, Duration::from_secs(3600));
        let mut metrics = vec![sample("up", &[]), sample("up", &[]), sample("other", &[])];
        let refused = series.retain_at(&ClientId::new("a"), &mut metrics, 0);
        assert_eq!(refused.samples, 1);
        assert_eq!(names(&metrics), ["up", "up"]);
    }

    #[test]
    fn a_group_is_admitted_whole_or_not_at_all() {
        let series = ActiveSeries::new(NonZeroUsize::new(3).expect("3"), Duration::from_secs(60));
        let client = ClientId::new("a");
        let mut gate = series.gate_at(&client, 0);
        assert!(gate.admit(&[sample("up", &[])]));
        let histogram = [
            sample("h_bucket", &[("le", "1")]),
            sample("h_bucket", &[("le", "+Inf")]),
            sample("h_count", &[]),
        ];
        // 1 known + 3 new > 3: the whole histogram is refused, none of its series taken.
        assert!(!gate.admit(&histogram));
        assert!(gate.admit(&histogram[..2]));
        assert!(!gate.admit(&histogram[2..]));
        assert_eq!(
            gate.finish(),
            Refused {
                samples: 2,
                first_series: Some("h_bucket".to_owned())
            }
        );
        assert_eq!(series.tracked_series(), 3);
    }

    #[test]
    fn series_quiet_for_a_window_make_room_for_new_ones() {
        let series = ActiveSeries::new(NonZeroUsize::MIN, Duration::from_secs(3600));
        let client = ClientId::new("a");
        assert_eq!(
            series.retain_at(&client, &mut vec![sample("old", &[])], 0),
            Refused::default()
        );
        // Seen again at 1800 s: still active at 3600 + 1799.
        assert_eq!(
            series.retain_at(&client, &mut vec![sample("old", &[])], 1800),
            Refused::default()
        );
        assert_eq!(
            series
                .retain_at(&client, &mut vec![sample("new", &[])], 5399)
                .samples,
            1
        );
        // Quiet for the whole window, but a client at its cap is swept at most once a minute
        // (window / 60): the refusal at 5399 s swept, the next sweep is due at 5459 s.
        assert_eq!(
            series
                .retain_at(&client, &mut vec![sample("new", &[])], 5458)
                .samples,
            1
        );
        assert_eq!(
            series.retain_at(&client, &mut vec![sample("new", &[])], 5459),
            Refused::default()
        );
        assert_eq!(series.tracked_series(), 1);
    }

    #[test]
    fn tags_are_part_of_the_series_and_name_tag_boundaries_do_not_collide() {
        let series = ActiveSeries::new(NonZeroUsize::new(10).expect("10"), Duration::from_secs(60));
        assert_ne!(
            series.series_hash(&sample("ab", &[("c", "d")])),
            series.series_hash(&sample("a", &[("bc", "d")]))
        );
        assert_ne!(
            series.series_hash(&sample("a", &[])),
            series.series_hash(&sample("a", &[("k", "v")]))
        );
        assert_eq!(
            series.series_hash(&sample("a", &[("k", "v"), ("j", "w")])),
            series.series_hash(&sample("a", &[("j", "w"), ("k", "v")]))
        );
    }

    #[test]
    fn forgetting_quiet_series_drops_clients_left_with_none() {
        let series = ActiveSeries::new(NonZeroUsize::MIN, Duration::from_secs(1));
        let _ = series.retain_at(&ClientId::new("a"), &mut vec![sample("x", &[])], 0);
        assert_eq!(series.tracked_series(), 1);
        series.forget_quiet_series_at(0);
        assert_eq!(series.tracked_series(), 1, "seen this second: still active");
        series.forget_quiet_series_at(1);
        assert_eq!(series.tracked_series(), 0);
        assert!(lock(&series.clients).is_empty());
    }
}
