//! OTLP metrics → samples, after OpenTelemetry's "Prometheus and OpenMetrics compatibility"
//! specification where it has a rule:
//!
//! - gauge → one `gauge` sample per point; sum → `counter` when monotonic, `gauge` when not, or
//!   `delta_sum` with delta temporality;
//! - histogram → `<name>_bucket` with a cumulative count per `le` bound (`+Inf` last),
//!   `<name>_sum` (when the point has one) and `<name>_count`, kind `histogram` (or
//!   `delta_histogram`); an exponential histogram becomes the same series, its bucket
//!   boundaries computed from its scale (`base = 2^(2^-scale)`), negative buckets first, the zero
//!   bucket at `le = zero_threshold`;
//! - summary → `<name>{quantile="q"}` per quantile, `<name>_sum`, `<name>_count`, kind `summary`.
//!
//! Tags: a point's attributes; the scope's name and version as `otel_scope_name` and
//! `otel_scope_version`; from the resource, `service.namespace/service.name` (or
//! `service.name`) as `job` and `service.instance.id` as `instance`, each overridden by a point
//! attribute of the same name. The resource's other attributes go once per resource and request
//! onto a `target_info` gauge of value 1, with `job` and `instance`. Non-string attribute values
//! are written as text (arrays and maps as OTLP JSON). Names and keys are kept as sent: a store
//! that needs Prometheus' character set translates when it writes.
//!
//! Timestamps are `time_unix_nano` in milliseconds, rounded down; a point without one gets the
//! receive time. A point flagged "no recorded value" is skipped. A point that cannot be stored
//! (no value, a non-finite value, an unspecified temporality, inconsistent buckets, a name or tag
//! over the limits, or samples beyond `--max-metrics`) is rejected alone and counted, with the
//! first reason, for OTLP's partial success; the rest of the request is stored.

use std::collections::BTreeMap;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use metricstream_backend::{Metric, MetricKind};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, ExponentialHistogramDataPoint, HistogramDataPoint,
    NumberDataPoint, SummaryDataPoint,
};

use crate::protocols::{SeriesAdmission, admit_all, check_series};
use crate::request::Limits;

type Tags = BTreeMap<String, String>;

/// What a request converted to.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    pub metrics: Vec<Metric>,
    /// Data points that could not be stored (OTLP's `rejected_data_points`).
    pub rejected: u64,
    /// Why the first of them was rejected (OTLP's `error_message`).
    pub first_rejection: Option<String>,
}

impl Converted {
    fn reject(&mut self, metric: &str, why: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.first_rejection.is_none() {
            self.first_rejection = Some(format!("metric {metric:?}: {}", why()));
        }
    }
}

/// The conversion's output beside the series admission every point's rows pass.
struct Output<'a> {
    converted: Converted,
    admit: SeriesAdmission<'a>,
}

impl std::ops::Deref for Output<'_> {
    type Target = Converted;
    fn deref(&self) -> &Converted {
        &self.converted
    }
}

impl std::ops::DerefMut for Output<'_> {
    fn deref_mut(&mut self) -> &mut Converted {
        &mut self.converted
    }
}

/// Converts an export request into samples under `limits`, without a series cap.
pub fn convert(
    request: &ExportMetricsServiceRequest,
    limits: &Limits,
    received_at_ms: i64,
) -> Converted {
    convert_admitted(request, limits, received_at_ms, &mut admit_all)
}

/// Converts an export request into samples under `limits`, keeping the points whose rows
/// `admit` admits (each point's rows as one group; what it refuses is its to count).
pub fn convert_admitted(
    request: &ExportMetricsServiceRequest,
    limits: &Limits,
    received_at_ms: i64,
    admit: SeriesAdmission<'_>,
) -> Converted {
    let mut out = Output {
        converted: Converted::default(),
        admit,
    };
    for resource_metrics in &request.resource_metrics {
        let attributes = resource_metrics
            .resource
            .as_ref()
            .map(|resource| resource.attributes.as_slice())
            .unwrap_or_default();
        let (resource_tags, info_tags) = resource_tags(attributes);
        if !info_tags.is_empty() {
            let mut tags = resource_tags.clone();
            tags.extend(info_tags);
            push(
                &mut out,
                limits,
                "target_info",
                Sample::new("target_info", 1.0, received_at_ms, tags, MetricKind::Gauge),
            );
        }
        for scope_metrics in &resource_metrics.scope_metrics {
            let mut scope_tags = resource_tags.clone();
            if let Some(scope) = &scope_metrics.scope {
                if !scope.name.is_empty() {
                    scope_tags.insert("otel_scope_name".to_owned(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    scope_tags.insert("otel_scope_version".to_owned(), scope.version.clone());
                }
            }
            for metric in &scope_metrics.metrics {
                let context = PointContext {
                    name: &metric.name,
                    scope_tags: &scope_tags,
                    received_at_ms,
                    limits,
                };
                match &metric.data {
                    Some(Data::Gauge(gauge)) => {
                        for point in &gauge.data_points {
                            number_point(&mut out, &context, point, Ok(MetricKind::Gauge));
                        }
                    }
                    Some(Data::Sum(sum)) => {
                        let kind = match temporality(sum.aggregation_temporality) {
                            Ok(Temporality::Delta) => Ok(MetricKind::DeltaSum),
                            Ok(Temporality::Cumulative) if sum.is_monotonic => {
                                Ok(MetricKind::Counter)
                            }
                            Ok(Temporality::Cumulative) => Ok(MetricKind::Gauge),
                            Err(why) => Err(why),
                        };
                        for point in &sum.data_points {
                            number_point(&mut out, &context, point, kind.clone());
                        }
                    }
                    Some(Data::Histogram(histogram)) => {
                        let kind = histogram_kind(histogram.aggregation_temporality);
                        for point in &histogram.data_points {
                            histogram_point(&mut out, &context, point, kind.clone());
                        }
                    }
                    Some(Data::ExponentialHistogram(histogram)) => {
                        let kind = histogram_kind(histogram.aggregation_temporality);
                        for point in &histogram.data_points {
                            exponential_point(&mut out, &context, point, kind.clone());
                        }
                    }
                    Some(Data::Summary(summary)) => {
                        for point in &summary.data_points {
                            summary_point(&mut out, &context, point);
                        }
                    }
                    // A metric without data has no points to store or reject.
                    None => {}
                }
            }
        }
    }
    out.converted
}

/// What every point of one metric shares.
struct PointContext<'a> {
    name: &'a str,
    scope_tags: &'a Tags,
    received_at_ms: i64,
    limits: &'a Limits,
}

impl PointContext<'_> {
    fn tags(&self, attributes: &[KeyValue]) -> Tags {
        let mut tags = self.scope_tags.clone();
        for attribute in attributes {
            tags.insert(
                attribute.key.clone(),
                attribute_text(attribute.value.as_ref()),
            );
        }
        tags
    }

    fn timestamp(&self, time_unix_nano: u64) -> i64 {
        if time_unix_nano == 0 {
            return self.received_at_ms;
        }
        i64::try_from(time_unix_nano / 1_000_000).unwrap_or(i64::MAX)
    }
}

enum Temporality {
    Delta,
    Cumulative,
}

fn temporality(value: i32) -> Result<Temporality, String> {
    match AggregationTemporality::try_from(value) {
        Ok(AggregationTemporality::Delta) => Ok(Temporality::Delta),
        Ok(AggregationTemporality::Cumulative) => Ok(Temporality::Cumulative),
        _ => Err(format!(
            "aggregation temporality {value} is neither delta nor cumulative"
        )),
    }
}

fn histogram_kind(value: i32) -> Result<MetricKind, String> {
    temporality(value).map(|temporality| match temporality {
        Temporality::Delta => MetricKind::DeltaHistogram,
        Temporality::Cumulative => MetricKind::Histogram,
    })
}

/// One sample before its limits are checked.
struct Sample {
    name: String,
    value: f64,
    timestamp: i64,
    tags: Tags,
    kind: MetricKind,
}

impl Sample {
    fn new(name: &str, value: f64, timestamp: i64, tags: Tags, kind: MetricKind) -> Self {
        Self {
            name: name.to_owned(),
            value,
            timestamp,
            tags,
            kind,
        }
    }
}

/// Stores every sample of one data point, or rejects the point whole.
fn push_point(out: &mut Output<'_>, limits: &Limits, metric: &str, samples: Vec<Sample>) {
    if out.metrics.len() + samples.len() > limits.max_metrics {
        let limit = limits.max_metrics;
        out.reject(metric, || {
            format!("the request holds more than {limit} samples (--max-metrics)")
        });
        return;
    }
    for sample in &samples {
        if !sample.value.is_finite() {
            let name = &sample.name;
            out.reject(metric, || format!("{name} is not a finite number"));
            return;
        }
        let tags = sample
            .tags
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()));
        if let Err(problem) = check_series(&sample.name, tags, limits) {
            out.reject(metric, || problem);
            return;
        }
    }
    let rows: Vec<Metric> = samples
        .into_iter()
        .map(|sample| Metric {
            name: sample.name,
            value: sample.value,
            timestamp: Some(sample.timestamp),
            tags: sample.tags,
            kind: sample.kind,
        })
        .collect();
    if (out.admit)(&rows) {
        out.metrics.extend(rows);
    }
}

fn push(out: &mut Output<'_>, limits: &Limits, metric: &str, sample: Sample) {
    push_point(out, limits, metric, vec![sample]);
}

fn no_recorded_value(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 != 0
}

/// The kind a point is stored as, or `None` when it is not stored: skipped ("no recorded
/// value") or rejected (its metric's kind could not be told).
fn point_kind(
    out: &mut Output<'_>,
    context: &PointContext<'_>,
    flags: u32,
    kind: Result<MetricKind, String>,
) -> Option<MetricKind> {
    if no_recorded_value(flags) {
        return None;
    }
    kind.map_err(|why| out.reject(context.name, || why)).ok()
}

fn number_point(
    out: &mut Output<'_>,
    context: &PointContext<'_>,
    point: &NumberDataPoint,
    kind: Result<MetricKind, String>,
) {
    let Some(kind) = point_kind(out, context, point.flags, kind) else {
        return;
    };
    let value = match point.value {
        Some(NumberValue::AsDouble(value)) => value,
        Some(NumberValue::AsInt(value)) => value as f64,
        None => return out.reject(context.name, || "a data point has no value".to_owned()),
    };
    let sample = Sample::new(
        context.name,
        value,
        context.timestamp(point.time_unix_nano),
        context.tags(&point.attributes),
        kind,
    );
    push(out, context.limits, context.name, sample);
}

/// `<name>_bucket` per upper bound (cumulative), `+Inf`, `<name>_sum`, `<name>_count`.
fn histogram_series(
    context: &PointContext<'_>,
    tags: &Tags,
    timestamp: i64,
    kind: MetricKind,
    buckets: &[(f64, u64)],
    count: u64,
    sum: Option<f64>,
) -> Vec<Sample> {
    let bucket_name = format!("{}_bucket", context.name);
    let mut samples = Vec::with_capacity(buckets.len() + 3);
    let mut cumulative = 0u64;
    for (upper, bucket_count) in buckets {
        cumulative = cumulative.saturating_add(*bucket_count);
        let mut bucket_tags = tags.clone();
        bucket_tags.insert("le".to_owned(), upper.to_string());
        samples.push(Sample::new(
            &bucket_name,
            cumulative as f64,
            timestamp,
            bucket_tags,
            kind,
        ));
    }
    let mut inf_tags = tags.clone();
    inf_tags.insert("le".to_owned(), "+Inf".to_owned());
    samples.push(Sample::new(
        &bucket_name,
        count as f64,
        timestamp,
        inf_tags,
        kind,
    ));
    if let Some(sum) = sum {
        let name = format!("{}_sum", context.name);
        samples.push(Sample::new(&name, sum, timestamp, tags.clone(), kind));
    }
    let name = format!("{}_count", context.name);
    samples.push(Sample::new(
        &name,
        count as f64,
        timestamp,
        tags.clone(),
        kind,
    ));
    samples
}

fn histogram_point(
    out: &mut Output<'_>,
    context: &PointContext<'_>,
    point: &HistogramDataPoint,
    kind: Result<MetricKind, String>,
) {
    let Some(kind) = point_kind(out, context, point.flags, kind) else {
        return;
    };
    let bounds = &point.explicit_bounds;
    let counts = &point.bucket_counts;
    // No buckets at all is allowed (count and sum only); otherwise one more count than bounds.
    if !counts.is_empty() && counts.len() != bounds.len() + 1 {
        let (counts, bounds) = (counts.len(), bounds.len());
        return out.reject(context.name, || {
            format!(
                "{counts} bucket counts for {bounds} bounds; expected one more count than bounds"
            )
        });
    }
    // The last count is the +Inf bucket, which `count` covers.
    let buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(counts.iter().copied()).collect();
    let samples = histogram_series(
        context,
        &context.tags(&point.attributes),
        context.timestamp(point.time_unix_nano),
        kind,
        &buckets,
        point.count,
        point.sum,
    );
    push_point(out, context.limits, context.name, samples);
}

fn exponential_point(
    out: &mut Output<'_>,
    context: &PointContext<'_>,
    point: &ExponentialHistogramDataPoint,
    kind: Result<MetricKind, String>,
) {
    let Some(kind) = point_kind(out, context, point.flags, kind) else {
        return;
    };
    // OTLP allows scales -10..=20; beyond them the boundaries are not representable.
    if !(-10..=20).contains(&point.scale) {
        let scale = point.scale;
        return out.reject(context.name, || {
            format!("scale {scale} is outside -10..=20")
        });
    }
    let buckets = exponential_buckets(point);
    let samples = histogram_series(
        context,
        &context.tags(&point.attributes),
        context.timestamp(point.time_unix_nano),
        kind,
        &buckets,
        point.count,
        point.sum,
    );
    push_point(out, context.limits, context.name, samples);
}

/// An exponential histogram's buckets as `(upper bound, count)` in ascending order: bucket
/// `index` of the positive range holds `(base^index, base^(index+1)]`, of the negative range
/// the same magnitudes below zero; the zero bucket sits at `zero_threshold`.
pub fn exponential_buckets(point: &ExponentialHistogramDataPoint) -> Vec<(f64, u64)> {
    let indexed = |buckets: &Option<Buckets>| -> Vec<(i64, u64)> {
        buckets
            .as_ref()
            .map(|buckets| {
                buckets
                    .bucket_counts
                    .iter()
                    .enumerate()
                    .map(|(i, count)| (i64::from(buckets.offset) + i as i64, *count))
                    .collect()
            })
            .unwrap_or_default()
    };
    // base^exponent with base = 2^(2^-scale), computed as one power of two for accuracy.
    let power = |exponent: i64| 2f64.powf(exponent as f64 * 2f64.powi(-point.scale));
    let mut buckets = Vec::new();
    // Negative buckets, most negative first: magnitude (base^i, base^(i+1)], upper bound -base^i.
    for (index, count) in indexed(&point.negative).into_iter().rev() {
        buckets.push((-power(index), count));
    }
    buckets.push((point.zero_threshold, point.zero_count));
    for (index, count) in indexed(&point.positive) {
        buckets.push((power(index + 1), count));
    }
    buckets
}

fn summary_point(out: &mut Output<'_>, context: &PointContext<'_>, point: &SummaryDataPoint) {
    if no_recorded_value(point.flags) {
        return;
    }
    let tags = context.tags(&point.attributes);
    let timestamp = context.timestamp(point.time_unix_nano);
    let kind = MetricKind::Summary;
    let mut samples = Vec::with_capacity(point.quantile_values.len() + 2);
    for quantile in &point.quantile_values {
        let mut quantile_tags = tags.clone();
        quantile_tags.insert("quantile".to_owned(), quantile.quantile.to_string());
        samples.push(Sample::new(
            context.name,
            quantile.value,
            timestamp,
            quantile_tags,
            kind,
        ));
    }
    let name = format!("{}_sum", context.name);
    samples.push(Sample::new(&name, point.sum, timestamp, tags.clone(), kind));
    let name = format!("{}_count", context.name);
    samples.push(Sample::new(
        &name,
        point.count as f64,
        timestamp,
        tags,
        kind,
    ));
    push_point(out, context.limits, context.name, samples);
}

/// The resource's `job` and `instance` tags, and the attributes `target_info` carries.
fn resource_tags(attributes: &[KeyValue]) -> (Tags, Tags) {
    let text = |key: &str| {
        attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .map(|attribute| attribute_text(attribute.value.as_ref()))
    };
    let mut tags = Tags::new();
    match (text("service.namespace"), text("service.name")) {
        (Some(namespace), Some(name)) => {
            tags.insert("job".to_owned(), format!("{namespace}/{name}"));
        }
        (None, Some(name)) => {
            tags.insert("job".to_owned(), name);
        }
        _ => {}
    }
    if let Some(instance) = text("service.instance.id") {
        tags.insert("instance".to_owned(), instance);
    }
    let info = attributes
        .iter()
        .filter(|attribute| {
            !matches!(
                attribute.key.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .map(|attribute| {
            (
                attribute.key.clone(),
                attribute_text(attribute.value.as_ref()),
            )
        })
        .collect();
    (tags, info)
}

/// An attribute's value as a tag's text.
fn attribute_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(AnyValueKind::StringValue(text)) => text.clone(),
        Some(AnyValueKind::BoolValue(value)) => value.to_string(),
        Some(AnyValueKind::IntValue(value)) => value.to_string(),
        Some(AnyValueKind::DoubleValue(value)) => value.to_string(),
        Some(AnyValueKind::BytesValue(bytes)) => BASE64_STANDARD.encode(bytes),
        // Arrays and maps: as OTLP JSON spells them.
        Some(_) => value
            .and_then(|value| serde_json::to_string(value).ok())
            .unwrap_or_default(),
        None => String::new(),
    }
}
