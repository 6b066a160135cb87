//! What the bench reads from a service's admin endpoint: its Prometheus text exposition.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

/// The text of `GET url`, which must answer 2xx.
pub(crate) async fn get_text(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !response.status().is_success() {
        bail!("GET {url}: {}", response.status());
    }
    response
        .text()
        .await
        .with_context(|| format!("reading GET {url}"))
}

/// An `fdatasync` slower than this is a disk stall: alone it spends the 10 ms p99 budget of the
/// requests waiting on it (a bucket bound of the ingest's `metricstream_queue_fsync_seconds`).
pub(crate) const STALL_FSYNC_SECS: f64 = 0.0128;

/// `records_per_sync` and `fsync_mean_ms` from the ingest's Prometheus exposition: the file
/// queue's appended records against its `fdatasync` count; and the disk's stalls apart from the
/// service's latency: `stalled_fsyncs` (slower than [`STALL_FSYNC_SECS`]) and
/// `fsync_slowest_ms` (the bound of the histogram's bucket holding the slowest one; infinite
/// beyond its last bucket).
pub(crate) fn file_queue_figures(exposition: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let sample = |name: &str| {
        prometheus_sample(exposition, name)
            .with_context(|| format!("no {name} in the ingest's /metrics"))
    };
    let appended = sample("metricstream_queue_appended_records_total")?;
    let syncs = sample("metricstream_queue_fsync_seconds_count")?;
    let sync_seconds = sample("metricstream_queue_fsync_seconds_sum")?;
    let mut figures = BTreeMap::new();
    if syncs > 0.0 {
        figures.insert("records_per_sync".to_owned(), appended / syncs);
        figures.insert("fsync_mean_ms".to_owned(), sync_seconds / syncs * 1000.0);
        let buckets = histogram_buckets(exposition, "metricstream_queue_fsync_seconds");
        if let Some((_, within)) = buckets
            .iter()
            .find(|(le, _)| (le - STALL_FSYNC_SECS).abs() < 1e-9)
        {
            figures.insert("stalled_fsyncs".to_owned(), syncs - within);
        }
        if let Some((le, _)) = buckets.iter().find(|(_, count)| *count >= syncs) {
            figures.insert("fsync_slowest_ms".to_owned(), le * 1000.0);
        }
    }
    Ok(figures)
}

/// The cumulative buckets `(le, count)` of histogram `name` in a Prometheus text exposition,
/// in the exposition's order (ascending `le`, `+Inf` last).
fn histogram_buckets(exposition: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    exposition
        .lines()
        .filter_map(|line| {
            let (le, rest) = line.strip_prefix(&prefix)?.split_once('"')?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = rest
                .strip_prefix('}')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((le, count))
        })
        .collect()
}

/// The sum of the samples of metric `name` (over its label sets) in a Prometheus text
/// exposition; `None` if it has none.
pub(crate) fn prometheus_sample(exposition: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.split_whitespace().next(),
            Some('{') => rest
                .rsplit_once('}')
                .and_then(|(_, after)| after.split_whitespace().next()),
            _ => None,
        };
        if let Some(value) = value.and_then(|v| v.parse::<f64>().ok()) {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_are_found_with_and_without_labels() {
        let exposition = "# HELP metricstream_queue_appended_records Records\n\
            # TYPE metricstream_queue_appended_records counter\n\
            metricstream_queue_appended_records_total 1200\n\
            metricstream_queue_fsync_seconds_sum 0.25\n\
            metricstream_queue_fsync_seconds_count 100\n\
            metricstream_queue_fsync_seconds_bucket{le=\"0.001\"} 40\n\
            metricstream_queue_fsync_seconds_bucket{le=\"0.0128\"} 97\n\
            metricstream_queue_fsync_seconds_bucket{le=\"0.0256\"} 99\n\
            metricstream_queue_fsync_seconds_bucket{le=\"0.0512\"} 100\n\
            metricstream_queue_fsync_seconds_bucket{le=\"+Inf\"} 100\n\
            metricstream_queue_consumer_lag_records{partition=\"0\"} 3\n\
            metricstream_queue_consumer_lag_records{partition=\"1\"} 4\n";
        assert_eq!(
            prometheus_sample(exposition, "metricstream_queue_consumer_lag_records"),
            Some(7.0)
        );
        assert_eq!(
            prometheus_sample(exposition, "metricstream_queue_missing"),
            None
        );
        let figures = file_queue_figures(exposition).expect("figures");
        assert_eq!(figures["records_per_sync"], 12.0);
        assert_eq!(figures["fsync_mean_ms"], 2.5);
        assert_eq!(figures["stalled_fsyncs"], 3.0);
        assert_eq!(figures["fsync_slowest_ms"], 51.2);
    }
}
