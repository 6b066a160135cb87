//! The record codec on structured input: any batch of arbitrary metrics (any strings, any f64
//! bit pattern including NaNs, any timestamp, any tags, any kind) encodes to a record that decodes to
//! exactly that batch, through both `decode` and `decode_ref`; a borrowed view of the same
//! metrics (`encode_metrics`, as ingest encodes) gives the same bytes; and any single bit
//! flipped in the record, or any truncation of it, is refused.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use metricstream_backend::codec::{self, EncodeMetric};
use metricstream_backend::{ClientId, Metric, MetricBatch, MetricKind};

#[derive(Arbitrary, Debug)]
struct Input {
    client: String,
    metrics: Vec<ArbitraryMetric>,
    /// Which bit to flip, and where to cut, modulo the record's size.
    flip_bit: usize,
    cut_at: usize,
}

#[derive(Arbitrary, Debug)]
struct ArbitraryMetric {
    name: String,
    value_bits: u64,
    timestamp: Option<i64>,
    tags: BTreeMap<String, String>,
    /// Picks a kind, modulo their count (untyped batches are version-1 records, typed ones
    /// version 2).
    kind: u8,
}

impl ArbitraryMetric {
    fn to_metric(&self) -> Metric {
        Metric {
            name: self.name.clone(),
            value: f64::from_bits(self.value_bits),
            timestamp: self.timestamp,
            tags: self.tags.clone(),
            kind: EncodeMetric::kind(self),
        }
    }
}

/// A borrowed view, like ingest's parsed request.
impl EncodeMetric for ArbitraryMetric {
    fn name(&self) -> &str {
        &self.name
    }

    fn value(&self) -> f64 {
        f64::from_bits(self.value_bits)
    }

    fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    fn tags(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.tags
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    fn kind(&self) -> MetricKind {
        MetricKind::ALL[usize::from(self.kind) % MetricKind::ALL.len()]
    }
}

fuzz_target!(|input: Input| {
    let batch = MetricBatch {
        client: ClientId::new(input.client.clone()),
        metrics: input
            .metrics
            .iter()
            .map(ArbitraryMetric::to_metric)
            .collect(),
    };
    let record = codec::encode(&batch);
    assert_eq!(
        codec::encode_metrics(&input.client, &input.metrics),
        record,
        "encode and encode_metrics differ"
    );

    let decoded = codec::decode(&record).expect("an encoded batch decodes");
    assert_eq!(decoded.client, batch.client);
    assert_eq!(decoded.metrics.len(), batch.metrics.len());
    for (left, right) in decoded.metrics.iter().zip(&batch.metrics) {
        assert_eq!(left.name, right.name);
        assert_eq!(left.value.to_bits(), right.value.to_bits());
        assert_eq!(left.timestamp, right.timestamp);
        assert_eq!(left.tags, right.tags);
        assert_eq!(left.kind, right.kind);
    }

    let view = codec::decode_ref(&record).expect("an encoded batch decodes by reference");
    assert_eq!(view.client, batch.client.as_str());
    assert_eq!(view.len(), batch.metrics.len());
    for (metric_ref, metric) in view.metrics().zip(&batch.metrics) {
        assert_eq!(metric_ref.name, metric.name);
        assert_eq!(metric_ref.value.to_bits(), metric.value.to_bits());
        assert_eq!(metric_ref.timestamp, metric.timestamp);
        assert_eq!(metric_ref.kind, metric.kind);
        let tags: Vec<(&str, &str)> = metric
            .tags
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        assert_eq!(metric_ref.tags, tags.as_slice());
    }

    let mut flipped = record.clone();
    let bit = input.flip_bit % (flipped.len() * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(
        codec::decode(&flipped).is_err(),
        "bit {bit} flipped went unnoticed"
    );

    let cut = input.cut_at % record.len();
    assert!(
        codec::decode(&record[..cut]).is_err(),
        "cut at {cut} went unnoticed"
    );
});
