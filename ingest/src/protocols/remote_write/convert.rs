//! Remote-write series → samples.
//!
//! - Labels: `__name__` is the name, every other label a tag; a label with an empty value is
//!   absent (as Prometheus treats it). A series without a name, with a repeated label name, with
//!   a 2.0 label reference outside the symbols, or over the name and tag limits is refused whole.
//! - Kinds come from metadata: 2.0's per series, 1.0's per metric family (a series `x_bucket`,
//!   `x_sum`, `x_count`, `x_total` or `x_created` belongs to family `x`): counter, gauge,
//!   histogram and summary as such; gauge histograms, info and state sets as gauges; no
//!   metadata, untyped.
//! - Float samples: one sample each. Prometheus' staleness marker (a NaN with a reserved bit
//!   pattern, sent when a series disappears) is not a value and is skipped; any other NaN or
//!   infinity is refused.
//! - Native histograms become classic series, like OTLP's exponential histograms:
//!   `<name>_bucket` per bucket with its cumulative count and `le` upper bound (`+Inf` last),
//!   `<name>_sum`, `<name>_count`, kind `histogram` (`gauge` for a gauge histogram). Exponential
//!   schemas (-4..=8): bucket `i` holds `(2^((i-1)·2^-schema), 2^(i·2^-schema)]`, negative buckets
//!   mirror that below zero, the zero bucket sits at `le = zero_threshold`. Custom buckets (schema
//!   -53) take their bounds from `custom_values`.
//! - Exemplars, help and unit are not stored.
//!
//! What is refused is counted, with the first reason, and the rest is stored: remote write's
//! partial write. A series admission (the per-client series cap) sees every sample's rows
//! before they are kept, a native histogram's as one group; what it refuses is its to count.

use std::collections::{BTreeMap, HashMap};

use metricstream_backend::{Metric, MetricKind};

use super::proto::histogram::{Count, RESET_HINT_GAUGE, ZeroCount};
use super::proto::{BucketSpan, Histogram, MetricType, Sample, v1, v2};
use crate::protocols::{SeriesAdmission, check_series};
use crate::request::Limits;

/// Prometheus' staleness marker: `value.StaleNaN` in Prometheus' `model/value`.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// What a request converted to.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    pub metrics: Vec<Metric>,
    /// Float samples stored (`X-Prometheus-Remote-Write-Samples-Written`).
    pub samples_written: u64,
    /// Native histogram samples stored (`X-Prometheus-Remote-Write-Histograms-Written`).
    pub histograms_written: u64,
    /// Staleness markers skipped.
    pub stale_markers: u64,
    /// Float and histogram samples refused.
    pub rejected: u64,
    /// Why the first of them was refused.
    pub first_rejection: Option<String>,
}

impl Converted {
    fn reject(&mut self, count: usize, why: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        self.rejected += count as u64;
        if self.first_rejection.is_none() {
            self.first_rejection = Some(why());
        }
    }
}

/// Converts a 1.0 request.
pub fn convert_v1(
    request: &v1::WriteRequest,
    limits: &Limits,
    admit: SeriesAdmission<'_>,
) -> Converted {
    let families: HashMap<&str, i32> = request
        .metadata
        .iter()
        .map(|metadata| (metadata.metric_family_name.as_str(), metadata.r#type))
        .collect();
    let mut out = Converted::default();
    for series in &request.timeseries {
        let labels = series
            .labels
            .iter()
            .map(|label| Ok((label.name.as_str(), label.value.as_str())));
        convert_series(
            &mut out,
            limits,
            &mut *admit,
            labels,
            |name| family_type(&families, name),
            &series.samples,
            &series.histograms,
        );
    }
    out
}

/// Converts a 2.0 request.
pub fn convert_v2(request: &v2::Request, limits: &Limits, admit: SeriesAdmission<'_>) -> Converted {
    let symbol = |reference: u32| {
        request
            .symbols
            .get(reference as usize)
            .map(String::as_str)
            .ok_or_else(|| {
                format!(
                    "label reference {reference} is outside the {} symbols",
                    request.symbols.len()
                )
            })
    };
    let mut out = Converted::default();
    for series in &request.timeseries {
        let labels = series.labels_refs.chunks(2).map(|pair| match pair {
            [name, value] => Ok((symbol(*name)?, symbol(*value)?)),
            _ => Err("labels_refs holds an odd number of references".to_owned()),
        });
        let metric_type = series
            .metadata
            .as_ref()
            .map_or(0, |metadata| metadata.r#type);
        convert_series(
            &mut out,
            limits,
            &mut *admit,
            labels,
            |_| metric_type,
            &series.samples,
            &series.histograms,
        );
    }
    out
}

/// The type 1.0 metadata gives the family of a series named `name`.
fn family_type(families: &HashMap<&str, i32>, name: &str) -> i32 {
    if let Some(metric_type) = families.get(name) {
        return *metric_type;
    }
    ["_bucket", "_sum", "_count", "_total", "_created"]
        .iter()
        .find_map(|suffix| families.get(name.strip_suffix(suffix)?))
        .copied()
        .unwrap_or(0)
}

fn kind_of(metric_type: i32) -> MetricKind {
    match MetricType::try_from(metric_type) {
        Ok(MetricType::Counter) => MetricKind::Counter,
        Ok(
            MetricType::Gauge
            | MetricType::GaugeHistogram
            | MetricType::Info
            | MetricType::StateSet,
        ) => MetricKind::Gauge,
        Ok(MetricType::Histogram) => MetricKind::Histogram,
        Ok(MetricType::Summary) => MetricKind::Summary,
        Ok(MetricType::Unspecified) | Err(_) => MetricKind::Untyped,
    }
}

type Tags = BTreeMap<String, String>;

fn convert_series<'a>(
    out: &mut Converted,
    limits: &Limits,
    admit: SeriesAdmission<'_>,
    labels: impl Iterator<Item = Result<(&'a str, &'a str), String>>,
    metric_type: impl FnOnce(&str) -> i32,
    samples: &[Sample],
    histograms: &[Histogram],
) {
    let refused = samples.len() + histograms.len();
    let (mut name, mut tags) = match series_identity(labels, limits) {
        Ok(identity) => identity,
        Err(why) => return out.reject(refused, || why),
    };
    let metric_type = metric_type(&name);
    let kind = kind_of(metric_type);
    // The series' last float sample takes its name and tags instead of a copy when no histogram
    // needs them after it: most series of a remote-write request carry one sample, and the
    // copies were a third of the conversion's allocations.
    let last_owner = histograms
        .is_empty()
        .then(|| samples.len().saturating_sub(1));
    for (position, sample) in samples.iter().enumerate() {
        if sample.value.to_bits() == STALE_NAN_BITS {
            out.stale_markers += 1;
            continue;
        }
        if !sample.value.is_finite() {
            out.reject(1, || {
                format!("series {name:?}: the value {} is not finite", sample.value)
            });
            continue;
        }
        if out.metrics.len() >= limits.max_metrics {
            let limit = limits.max_metrics;
            out.reject(1, || {
                format!("the request holds more than {limit} samples (--max-metrics)")
            });
            continue;
        }
        let (metric_name, metric_tags) = if Some(position) == last_owner {
            (std::mem::take(&mut name), std::mem::take(&mut tags))
        } else {
            (name.clone(), tags.clone())
        };
        let metric = Metric {
            name: metric_name,
            value: sample.value,
            timestamp: Some(sample.timestamp),
            tags: metric_tags,
            kind,
        };
        if !admit(std::slice::from_ref(&metric)) {
            continue;
        }
        out.metrics.push(metric);
        out.samples_written += 1;
    }
    for histogram in histograms {
        let gauge = histogram.reset_hint == RESET_HINT_GAUGE
            || metric_type == MetricType::GaugeHistogram as i32;
        let kind = if gauge {
            MetricKind::Gauge
        } else {
            MetricKind::Histogram
        };
        let series = match classic_series(&name, &tags, histogram, kind, limits) {
            Ok(series) => series,
            Err(why) => {
                out.reject(1, || format!("series {name:?}: {why}"));
                continue;
            }
        };
        if out.metrics.len() + series.len() > limits.max_metrics {
            let limit = limits.max_metrics;
            out.reject(1, || {
                format!("the request holds more than {limit} samples (--max-metrics)")
            });
            continue;
        }
        if !admit(&series) {
            continue;
        }
        out.metrics.extend(series);
        out.histograms_written += 1;
    }
}

/// A series' name and tags from its labels, checked.
fn series_identity<'a>(
    labels: impl Iterator<Item = Result<(&'a str, &'a str), String>>,
    limits: &Limits,
) -> Result<(String, Tags), String> {
    let mut name = None;
    let mut tags = Tags::new();
    for label in labels {
        let (key, value) = label?;
        if key == "__name__" {
            if name.replace(value).is_some() {
                return Err("the label __name__ is repeated".to_owned());
            }
            continue;
        }
        if value.is_empty() {
            continue;
        }
        if tags.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("the label {key:?} is repeated"));
        }
    }
    let name = match name {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err("a series has no __name__ label".to_owned()),
    };
    check_series(
        &name,
        tags.iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
        limits,
    )
    .map_err(|problem| format!("series {name:?}: {problem}"))?;
    Ok((name, tags))
}

/// A native histogram as classic `_bucket`, `_sum` and `_count` samples.
fn classic_series(
    name: &str,
    tags: &Tags,
    histogram: &Histogram,
    kind: MetricKind,
    limits: &Limits,
) -> Result<Vec<Metric>, String> {
    let count = match histogram.count {
        Some(Count::Int(count)) => count as f64,
        Some(Count::Float(count)) => count,
        None => 0.0,
    };
    if !count.is_finite() || histogram.sum.is_infinite() {
        return Err("the count or sum is not finite".to_owned());
    }
    let buckets = native_buckets(histogram)?;
    let timestamp = Some(histogram.timestamp);
    let sample = |name: String, value: f64, tags: Tags| Metric {
        name,
        value,
        timestamp,
        tags,
        kind,
    };
    let bucket_name = format!("{name}_bucket");
    let mut samples = Vec::with_capacity(buckets.len() + 3);
    let mut cumulative = 0.0;
    for (upper, bucket_count) in buckets {
        cumulative += bucket_count;
        if upper == f64::INFINITY {
            continue; // the +Inf bucket is `count`, below
        }
        let mut bucket_tags = tags.clone();
        bucket_tags.insert("le".to_owned(), upper.to_string());
        samples.push(sample(bucket_name.clone(), cumulative, bucket_tags));
    }
    let mut inf_tags = tags.clone();
    inf_tags.insert("le".to_owned(), "+Inf".to_owned());
    samples.push(sample(bucket_name, count, inf_tags));
    // A histogram of no observations has a NaN sum in some senders: nothing to store then.
    if histogram.sum.is_finite() {
        samples.push(sample(format!("{name}_sum"), histogram.sum, tags.clone()));
    }
    samples.push(sample(format!("{name}_count"), count, tags.clone()));
    for sample in &samples {
        if !sample.value.is_finite() {
            return Err(format!("{} is not finite", sample.name));
        }
        let tags = sample
            .tags
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()));
        check_series(&sample.name, tags, limits)?;
    }
    Ok(samples)
}

/// The schema of custom buckets.
const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// A native histogram's buckets as `(upper bound, count)` in ascending order of bound.
pub fn native_buckets(histogram: &Histogram) -> Result<Vec<(f64, f64)>, String> {
    let schema = histogram.schema;
    let positive = bucket_counts(
        &histogram.positive_spans,
        &histogram.positive_deltas,
        &histogram.positive_counts,
    )?;
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let bounds = &histogram.custom_values;
        return positive
            .into_iter()
            .map(|(index, count)| {
                let upper = match usize::try_from(index) {
                    Ok(index) if index < bounds.len() => bounds[index],
                    Ok(index) if index == bounds.len() => f64::INFINITY,
                    _ => return Err(format!("custom bucket {index} has no bound")),
                };
                Ok((upper, count))
            })
            .collect();
    }
    if !(-4..=8).contains(&schema) {
        return Err(format!(
            "schema {schema} is neither -4..=8 nor custom buckets (-53)"
        ));
    }
    let negative = bucket_counts(
        &histogram.negative_spans,
        &histogram.negative_deltas,
        &histogram.negative_counts,
    )?;
    // 2^(index·2^-schema), computed as one power of two for accuracy.
    let bound = |index: i64| 2f64.powf(index as f64 * 2f64.powi(-schema));
    let zero_count = match histogram.zero_count {
        Some(ZeroCount::Int(count)) => count as f64,
        Some(ZeroCount::Float(count)) => count,
        None => 0.0,
    };
    let mut buckets = Vec::with_capacity(negative.len() + positive.len() + 1);
    // Bucket i of the negative range holds [-bound(i), -bound(i-1)): its upper bound is
    // -bound(i-1); the most negative bucket first.
    for (index, count) in negative.into_iter().rev() {
        buckets.push((-bound(index - 1), count));
    }
    buckets.push((histogram.zero_threshold, zero_count));
    for (index, count) in positive {
        buckets.push((bound(index), count));
    }
    Ok(buckets)
}

/// Absolute bucket indexes and counts from spans and either deltas (integer histograms) or
/// counts (float histograms).
fn bucket_counts(
    spans: &[BucketSpan],
    deltas: &[i64],
    counts: &[f64],
) -> Result<Vec<(i64, f64)>, String> {
    let length: u64 = spans.iter().map(|span| u64::from(span.length)).sum();
    let values: Vec<f64> = if !deltas.is_empty() {
        let mut running = 0i64;
        deltas
            .iter()
            .map(|delta| {
                running = running.saturating_add(*delta);
                running as f64
            })
            .collect()
    } else {
        counts.to_vec()
    };
    if values.len() as u64 != length {
        return Err(format!(
            "the spans cover {length} buckets but {} counts were sent",
            values.len()
        ));
    }
    if values
        .iter()
        .any(|count| !count.is_finite() || *count < 0.0)
    {
        return Err("a bucket count is negative or not finite".to_owned());
    }
    let mut indexed = Vec::with_capacity(values.len());
    let mut values = values.into_iter();
    let mut index = 0i64;
    for (number, span) in spans.iter().enumerate() {
        // The first span's offset is its start, every other one the gap after the previous.
        index = if number == 0 {
            i64::from(span.offset)
        } else {
            index + i64::from(span.offset)
        };
        for _ in 0..span.length {
            indexed.push((index, values.next().unwrap_or_default()));
            index += 1;
        }
    }
    Ok(indexed)
}
