//! Metrics as remote-write 1.0 series, gathered into requests of a bounded number of samples
//! and encoded as a snappy-compressed `prometheus.WriteRequest`. Pure: no I/O.

use metricstream_backend::codec::MetricRef;
use std::collections::HashMap;

use metricstream_backend::MetricKind;
use metricstream_backend::remote_write_proto::{MetricType, one_sample_series, v1, v2};
use metricstream_backend::{Offset, Partition};
use prost::Message;

use crate::sink::{SinkError, SinkRecord};

pub(super) use metricstream_backend::remote_write_proto::NAME_LABEL;

/// Where a sample came from: enough to dead-letter it recognisably.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Origin {
    pub(super) partition: Partition,
    pub(super) offset: Offset,
    /// The metric's position within its record.
    pub(super) index: u64,
    pub(super) client: String,
    /// Sent as the series' metadata type with remote write 2.0.
    pub(super) kind: MetricKind,
}

/// The remote-write message the sink sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `prometheus.WriteRequest`: samples only, understood by every receiver.
    #[default]
    V1,
    /// `io.prometheus.write.v2.Request`: labels interned in a symbol table, and each series'
    /// metadata type (counter, gauge, histogram, summary) from the metric's kind.
    V2,
}

impl Protocol {
    /// The `Content-Type` of a request body.
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Self::V1 => "application/x-protobuf",
            Self::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }

    /// The `X-Prometheus-Remote-Write-Version` header.
    pub(super) fn version_header(self) -> &'static str {
        match self {
            Self::V1 => "0.1.0",
            Self::V2 => "2.0.0",
        }
    }
}

/// A remote-write 2.0 request's symbols: each distinct string once, the empty string first.
struct SymbolTable<'a> {
    symbols: Vec<String>,
    references: HashMap<&'a str, u32>,
}

impl Default for SymbolTable<'_> {
    fn default() -> Self {
        Self {
            symbols: vec![String::new()],
            references: HashMap::from([("", 0)]),
        }
    }
}

impl<'a> SymbolTable<'a> {
    fn reference(&mut self, text: &'a str) -> u32 {
        if let Some(&found) = self.references.get(text) {
            return found;
        }
        let next = self.symbols.len() as u32;
        self.symbols.push(text.to_owned());
        self.references.insert(text, next);
        next
    }
}

/// The remote-write 2.0 metadata type of a metric kind. Delta sums and histograms have none:
/// Prometheus' counter and histogram types are cumulative.
fn metric_type(kind: MetricKind) -> MetricType {
    match kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
        MetricKind::Summary => MetricType::Summary,
        MetricKind::Untyped | MetricKind::DeltaSum | MetricKind::DeltaHistogram => {
            MetricType::Unspecified
        }
    }
}

/// One metric as a series with one sample ([`one_sample_series`]), the timestamp in
/// milliseconds. `None` when the metric has no timestamp: sending "now" instead would make a
/// replay a second sample.
pub(super) fn to_series(metric: &MetricRef<'_, '_>) -> Option<v1::TimeSeries> {
    Some(one_sample_series(
        metric.name,
        metric.tags.iter().copied(),
        metric.value,
        metric.timestamp?,
    ))
}

/// The samples of one request being gathered, each with its origin.
#[derive(Debug, Default)]
pub(super) struct PendingRequest {
    pub(super) series: Vec<v1::TimeSeries>,
    pub(super) origins: Vec<Origin>,
}

impl PendingRequest {
    pub(super) fn push(&mut self, series: v1::TimeSeries, origin: Origin) {
        self.series.push(series);
        self.origins.push(origin);
    }

    /// Samples held (every series holds one).
    pub(super) fn len(&self) -> usize {
        self.series.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The request body in `protocol`, snappy block-compressed. 1.0: the series as a
    /// `prometheus.WriteRequest`, moved into the message and back, not copied. 2.0: an
    /// `io.prometheus.write.v2.Request` whose labels are references into its symbol table (the
    /// empty string first, as the spec requires), each series with its kind's metadata type.
    pub(super) fn encode(&mut self, protocol: Protocol) -> Result<Vec<u8>, snap::Error> {
        let body = match protocol {
            Protocol::V1 => {
                let request = v1::WriteRequest {
                    timeseries: std::mem::take(&mut self.series),
                    metadata: Vec::new(),
                };
                let body = request.encode_to_vec();
                self.series = request.timeseries;
                body
            }
            Protocol::V2 => self.to_v2().encode_to_vec(),
        };
        snap::raw::Encoder::new().compress_vec(&body)
    }

    fn to_v2(&self) -> v2::Request {
        let mut symbols = SymbolTable::default();
        let mut timeseries = Vec::with_capacity(self.series.len());
        for (series, origin) in self.series.iter().zip(&self.origins) {
            let mut labels_refs = Vec::with_capacity(series.labels.len() * 2);
            for label in &series.labels {
                labels_refs.push(symbols.reference(&label.name));
                labels_refs.push(symbols.reference(&label.value));
            }
            timeseries.push(v2::TimeSeries {
                labels_refs,
                samples: series.samples.clone(),
                metadata: Some(v2::Metadata {
                    r#type: metric_type(origin.kind) as i32,
                    help_ref: 0,
                    unit_ref: 0,
                }),
                ..v2::TimeSeries::default()
            });
        }
        v2::Request {
            symbols: symbols.symbols,
            timeseries,
        }
    }

    /// The request cut in two halves in order (the first holds the odd sample), to find which
    /// samples a store refused when it refuses a request whole.
    pub(super) fn split(mut self) -> (Self, Self) {
        let at = self.len().div_ceil(2);
        let series = self.series.split_off(at);
        let origins = self.origins.split_off(at);
        (self, Self { series, origins })
    }

    /// Hands over what was gathered and starts afresh.
    fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

/// Walks `records` in order, converting every metric and handing requests of at most `max`
/// samples to `send` as they fill (the last one may be smaller); a metric without a timestamp
/// goes to `unsendable` instead. Stops at the first error of either.
pub(super) fn gather_requests(
    records: &[SinkRecord],
    max: usize,
    mut send: impl FnMut(PendingRequest) -> Result<(), SinkError>,
    mut unsendable: impl FnMut(Origin, &MetricRef<'_, '_>) -> Result<(), SinkError>,
) -> Result<(), SinkError> {
    let max = max.max(1);
    let mut request = PendingRequest::default();
    for record in records {
        let batch = record.decode()?;
        for (index, metric) in batch.metrics().enumerate() {
            let origin = Origin {
                partition: record.partition,
                offset: record.offset,
                index: index as u64,
                client: batch.client.to_owned(),
                kind: metric.kind,
            };
            match to_series(&metric) {
                Some(series) => request.push(series, origin),
                None => unsendable(origin, &metric)?,
            }
            if request.len() >= max {
                send(request.take())?;
            }
        }
    }
    if !request.is_empty() {
        send(request)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use metricstream_backend::codec;
    use metricstream_backend::remote_write_proto::Sample;
    use metricstream_backend::{ClientId, Metric, MetricBatch, MetricKind};

    use super::*;

    fn metric(name: &str, timestamp: Option<i64>, tags: &[(&str, &str)]) -> Metric {
        Metric {
            name: name.to_owned(),
            value: 1.25,
            timestamp,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            kind: MetricKind::Gauge,
        }
    }

    fn converted(metric: Metric) -> Option<v1::TimeSeries> {
        let payload = codec::encode(&MetricBatch {
            client: ClientId::new("c"),
            metrics: vec![metric],
        });
        let batch = codec::decode_ref(&payload).expect("decodes");
        let first = batch.metrics().next().expect("one metric");
        to_series(&first)
    }

    fn label(name: &str, value: &str) -> v1::Label {
        v1::Label {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn a_metric_becomes_one_series_with_sorted_labels_and_one_sample() {
        let series = converted(metric(
            "cpu",
            Some(1_700_000_000_123),
            &[("host", "a"), ("Zone", "eu"), ("_x", "1")],
        ))
        .expect("has a timestamp");
        // Byte order: upper case sorts before `_`, which sorts before lower case.
        assert_eq!(
            series.labels,
            vec![
                label("Zone", "eu"),
                label("__name__", "cpu"),
                label("_x", "1"),
                label("host", "a"),
            ]
        );
        assert_eq!(
            series.samples,
            vec![Sample {
                value: 1.25,
                timestamp: 1_700_000_000_123
            }]
        );
    }

    #[test]
    fn a_tag_named_like_the_name_label_does_not_override_the_name() {
        let series =
            converted(metric("cpu", Some(1), &[("__name__", "other")])).expect("has a timestamp");
        assert_eq!(series.labels, vec![label("__name__", "cpu")]);
    }

    #[test]
    fn a_metric_without_a_timestamp_is_not_converted() {
        assert_eq!(converted(metric("cpu", None, &[])), None);
    }

    fn record(offset: u64, metrics: Vec<Metric>) -> SinkRecord {
        SinkRecord::encode(
            Partition(3),
            Offset(offset),
            &MetricBatch {
                client: ClientId::new("c"),
                metrics,
            },
        )
    }

    /// Metrics by `(offset, index)`.
    type Positions = Vec<(u64, u64)>;

    /// The requests `gather_requests` makes, as position lists, and the unsendable metrics.
    fn gathered(records: &[SinkRecord], max: usize) -> (Vec<Positions>, Positions) {
        let mut requests = Vec::new();
        let mut unsendable = Vec::new();
        gather_requests(
            records,
            max,
            |request| {
                assert_eq!(request.series.len(), request.origins.len());
                requests.push(
                    request
                        .origins
                        .iter()
                        .map(|o| (o.offset.0, o.index))
                        .collect(),
                );
                Ok(())
            },
            |origin, _| {
                unsendable.push((origin.offset.0, origin.index));
                Ok(())
            },
        )
        .expect("gathers");
        (requests, unsendable)
    }

    #[test]
    fn a_request_splits_into_halves_in_order() {
        let mut request = PendingRequest::default();
        for index in 0..5 {
            let origin = Origin {
                partition: Partition(0),
                offset: Offset(1),
                index,
                client: "c".to_owned(),
                kind: MetricKind::Counter,
            };
            request.push(v1::TimeSeries::default(), origin);
        }
        let (first, second) = request.split();
        let indexes = |r: &PendingRequest| r.origins.iter().map(|o| o.index).collect::<Vec<_>>();
        assert_eq!(
            (indexes(&first), indexes(&second)),
            (vec![0, 1, 2], vec![3, 4])
        );
        assert_eq!((first.series.len(), second.series.len()), (3, 2));
    }

    #[test]
    fn requests_hold_at_most_the_maximum_across_records_in_order() {
        let three = |ts| vec![metric("m", ts, &[]); 3];
        let records = [record(10, three(Some(1))), record(11, three(Some(2)))];
        let (requests, unsendable) = gathered(&records, 4);
        assert_eq!(
            requests,
            vec![
                vec![(10, 0), (10, 1), (10, 2), (11, 0)],
                vec![(11, 1), (11, 2)],
            ]
        );
        assert!(unsendable.is_empty());
        let (requests, _) = gathered(&records, 6);
        assert_eq!(requests.len(), 1);
        let (requests, _) = gathered(&records, 0);
        assert_eq!(requests.len(), 6, "a maximum of 0 is taken as 1");
        assert!(gathered(&[], 4).0.is_empty(), "no samples, no request");
    }

    #[test]
    fn metrics_without_a_timestamp_are_set_aside() {
        let records = [record(
            5,
            vec![metric("m", Some(1), &[]), metric("m", None, &[])],
        )];
        let (requests, unsendable) = gathered(&records, 10);
        assert_eq!(requests, vec![vec![(5, 0)]]);
        assert_eq!(unsendable, vec![(5, 1)]);
    }

    #[test]
    fn an_undecodable_record_is_an_error() {
        let mut bad = record(1, vec![metric("m", Some(1), &[])]);
        bad.payload = bytes::Bytes::from_static(b"\x01garbage");
        let result = gather_requests(&[bad], 10, |_| Ok(()), |_, _| Ok(()));
        assert!(
            matches!(result, Err(SinkError::Corrupt { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn the_body_is_a_snappy_write_request_and_keeps_the_series() {
        let mut request = PendingRequest::default();
        let series = converted(metric("cpu", Some(7), &[("host", "a")])).expect("converts");
        let origin = Origin {
            partition: Partition(1),
            offset: Offset(2),
            index: 3,
            client: "c".to_owned(),
            kind: MetricKind::Counter,
        };
        request.push(series.clone(), origin);
        let body = request.encode(Protocol::V1).expect("compresses");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy block");
        let decoded = v1::WriteRequest::decode(raw.as_slice()).expect("protobuf");
        assert_eq!(decoded.timeseries, vec![series.clone()]);
        assert_eq!(request.series, vec![series]);
        assert_eq!(request.len(), 1);
    }

    #[test]
    fn a_2_0_body_interns_the_labels_and_carries_each_kind_as_metadata() {
        let mut request = PendingRequest::default();
        let kinds = [
            (MetricKind::Counter, MetricType::Counter),
            (MetricKind::Gauge, MetricType::Gauge),
            (MetricKind::Histogram, MetricType::Histogram),
            (MetricKind::Summary, MetricType::Summary),
            (MetricKind::Untyped, MetricType::Unspecified),
            (MetricKind::DeltaSum, MetricType::Unspecified),
        ];
        for (index, (kind, _)) in kinds.iter().enumerate() {
            let series = converted(metric("cpu", Some(7 + index as i64), &[("host", "a")]))
                .expect("converts");
            let origin = Origin {
                partition: Partition(1),
                offset: Offset(2),
                index: index as u64,
                client: "c".to_owned(),
                kind: *kind,
            };
            request.push(series, origin);
        }
        let body = request.encode(Protocol::V2).expect("compresses");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy block");
        let decoded = v2::Request::decode(raw.as_slice()).expect("protobuf");
        assert_eq!(decoded.symbols, ["", "__name__", "cpu", "host", "a"]);
        assert_eq!(decoded.timeseries.len(), kinds.len());
        for (index, (series, (_, wanted))) in decoded.timeseries.iter().zip(kinds).enumerate() {
            assert_eq!(series.labels_refs, [1, 2, 3, 4]);
            assert_eq!(
                series.samples,
                [Sample {
                    value: 1.25,
                    timestamp: 7 + index as i64
                }]
            );
            let metadata = series.metadata.as_ref().expect("metadata");
            assert_eq!(metadata.r#type, wanted as i32, "{wanted:?}");
        }
        assert_eq!(Protocol::V2.version_header(), "2.0.0");
        assert!(
            Protocol::V2
                .content_type()
                .ends_with("proto=io.prometheus.write.v2.Request")
        );
    }
}
