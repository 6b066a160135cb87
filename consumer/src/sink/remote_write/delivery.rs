//! Which answers of the store are retried, and how long to wait before the next attempt
//! (exponential backoff with jitter, or the store's `Retry-After`). The HTTP call itself is in
//! `endpoint`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a status means for the request's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StatusClass {
    /// 2xx: stored.
    Success,
    /// 5xx, 429 (too many requests), 408 (request timeout), anything outside 2xx–5xx, and the
    /// 4xx that say the sink is set up wrong rather than the data being bad (401, 403, 404,
    /// 405, 407, 415, 421: credentials, URL, protocol): the store may take the same request
    /// later, once it is back or fixed. Unlike a sender without a queue, the sink can wait —
    /// the queue holds the data, lag and `/readyz` show the trouble — where dead-lettering
    /// every sample over a wrong token or URL would not help anyone.
    Retryable,
    /// Any other 4xx: the store will never take these samples (malformed, out of order, too
    /// large...). Retrying would block the partition for ever.
    Rejected,
}

pub(super) fn classify(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        408 | 429 | 401 | 403 | 404 | 405 | 407 | 415 | 421 => StatusClass::Retryable,
        400..=499 => StatusClass::Rejected,
        _ => StatusClass::Retryable,
    }
}

/// The answer to one attempt.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    Success,
    Retryable {
        status: u16,
        retry_after: Option<Duration>,
        reason: String,
    },
    Rejected {
        status: u16,
        reason: String,
    },
    /// No answer: connecting, sending or reading failed, or the request timed out.
    Network(String),
}

/// `Retry-After` as a wait from `now`: delay-seconds (`120`) or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`; a date in the past is no wait). Other forms (the obsolete
/// RFC 850 and asctime dates) and nonsense are `None`: the sink's own backoff applies.
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_imf_fixdate(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate (RFC 9110 §5.6.7).
fn parse_imf_fixdate(value: &str) -> Option<u64> {
    let (_weekday, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: u64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|part| part.parse().ok())
        .collect::<Option<_>>()?;
    let [hour, minute, second] = hms.as_slice() else {
        return None;
    };
    if *hour > 23 || *minute > 59 || *second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// How the sink retries one request before giving the batch back to the pipeline.
#[derive(Clone, Copy, Debug)]
pub(super) struct RetryPolicy {
    /// Attempts per request, the first included.
    pub(super) attempts: u32,
    /// The backoff before the second attempt; it doubles before each further one.
    pub(super) first_backoff: Duration,
    pub(super) max_backoff: Duration,
    /// The longest wait a `Retry-After` may impose; a longer one is cut to this.
    pub(super) max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `retry` (0 for the first failure): the store's
    /// `Retry-After` if it sent one (capped), else the exponential backoff with "equal jitter"
    /// (a uniformly random point in its upper half), `unit` being a random number in `[0, 1)`.
    pub(super) fn delay(&self, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let backoff = self
            .first_backoff
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        backoff / 2 + backoff.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// A random number in `[0, 1)` for jitter, from the standard library's randomly keyed hasher
/// (no dependency for something this small).
pub(super) fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_retried_unless_the_data_is_refused() {
        for status in [200, 202, 204] {
            assert_eq!(classify(status), StatusClass::Success, "{status}");
        }
        for status in [500, 502, 503, 504, 429, 408, 302, 100, 401, 403, 404, 415] {
            assert_eq!(classify(status), StatusClass::Retryable, "{status}");
        }
        for status in [400, 409, 413, 422] {
            assert_eq!(classify(status), StatusClass::Rejected, "{status}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_dates_count_days_like_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        // 1_700_000_000 s is 2023-11-14T22:13:20Z.
        assert_eq!(
            parse_imf_fixdate("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn delays_back_off_with_jitter_and_honour_retry_after_up_to_a_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(0, None, 0.0), Duration::from_millis(250));
        assert_eq!(policy.delay(0, None, 0.999_999).as_millis(), 499);
        assert_eq!(policy.delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(policy.delay(3, None, 0.0), Duration::from_millis(2000));
        assert_eq!(policy.delay(40, None, 0.0), Duration::from_millis(2500));
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(3600)), 0.5),
            Duration::from_secs(30)
        );
        let unit = random_unit();
        assert!((0.0..1.0).contains(&unit), "{unit}");
    }
}
