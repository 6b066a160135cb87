//! The compact, checksummed binary encoding of a [`MetricBatch`] — the payload of one queue
//! record on either backend.
//!
//! Layout (little endian):
//!
//! ```text
//! version u8 (1 or 2) | crc32c u32 of everything after it | body
//! body   = client:str | count:varint | metric*
//! metric = name:str | value f64 | flags u8 | [timestamp i64] | [kind u8]
//!          | tag_count:varint | (key:str | value:str)*
//! flags  = bit 0: timestamp present; bit 1 (version 2 only): kind present
//! str    = length:varint | UTF-8 bytes
//! ```
//!
//! Version 2 adds the metric's kind ([`MetricKind`]); a batch whose every metric is `Untyped`
//! is still written as version 1, byte for byte what the first release wrote, so a consumer of
//! that release keeps reading what MetricStream's own JSON API stores during a rolling upgrade.
//! Both versions are read. An older consumer meets a version-2 record with a clear
//! "unsupported record version 2": upgrade consumers before ingests.
//!
//! The checksum travels with the payload, so a record damaged anywhere between ingest and the
//! sink — on disk, in Kafka, in a buffer — is detected on decode rather than written out.

use crate::model::{ClientId, Metric, MetricBatch, MetricKind};

/// The first release's records: no kinds.
const VERSION_1: u8 = 1;
/// Records with kinds.
const VERSION_2: u8 = 2;
const HEADER_LEN: usize = 5;
const FLAG_TIMESTAMP: u8 = 1;
const FLAG_KIND: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("record is truncated: needed {needed} more bytes at byte {at}")]
    Truncated { at: usize, needed: usize },
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("unsupported record version {0}")]
    Version(u8),
    #[error("string at byte {0} is not valid UTF-8")]
    Utf8(usize),
    #[error("varint at byte {0} is malformed")]
    Varint(usize),
    #[error("{0} trailing bytes after the last metric")]
    Trailing(usize),
    #[error("unknown flags {flags:#04x} at byte {at}")]
    Flags { at: usize, flags: u8 },
    #[error("unknown metric kind {kind} at byte {at}")]
    Kind { at: usize, kind: u8 },
}

/// What the encoder needs of a metric, so a borrowed view (ingest parses requests without
/// copying their strings) encodes as cheaply as an owned [`Metric`].
pub trait EncodeMetric {
    fn name(&self) -> &str;
    fn value(&self) -> f64;
    fn timestamp(&self) -> Option<i64>;
    /// Each key at most once; the encoding keeps the order given.
    fn tags(&self) -> impl ExactSizeIterator<Item = (&str, &str)>;
    fn kind(&self) -> MetricKind {
        MetricKind::Untyped
    }
}

impl EncodeMetric for Metric {
    fn name(&self) -> &str {
        &self.name
    }

    fn value(&self) -> f64 {
        self.value
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
        self.kind
    }
}

/// Encodes a batch. The output is always decodable by [`decode`].
pub fn encode(batch: &MetricBatch) -> Vec<u8> {
    encode_metrics(batch.client.as_str(), &batch.metrics)
}

/// Encodes the metrics of `client` as one record, exactly as [`encode`] would encode the
/// equivalent [`MetricBatch`].
pub fn encode_metrics<M: EncodeMetric>(client: &str, metrics: &[M]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len_hint(client, metrics));
    let typed = metrics
        .iter()
        .any(|metric| metric.kind() != MetricKind::Untyped);
    out.push(if typed { VERSION_2 } else { VERSION_1 });
    out.extend_from_slice(&[0; 4]);
    put_str(&mut out, client);
    put_varint(&mut out, metrics.len() as u64);
    for metric in metrics {
        put_str(&mut out, metric.name());
        out.extend_from_slice(&metric.value().to_le_bytes());
        let kind = metric.kind();
        let mut flags = 0;
        if metric.timestamp().is_some() {
            flags |= FLAG_TIMESTAMP;
        }
        if kind != MetricKind::Untyped {
            flags |= FLAG_KIND;
        }
        out.push(flags);
        if let Some(ts) = metric.timestamp() {
            out.extend_from_slice(&ts.to_le_bytes());
        }
        if kind != MetricKind::Untyped {
            out.push(kind.code());
        }
        let tags = metric.tags();
        put_varint(&mut out, tags.len() as u64);
        for (key, value) in tags {
            put_str(&mut out, key);
            put_str(&mut out, value);
        }
    }
    let crc = crc32c::crc32c(&out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a batch, verifying its version and checksum first.
pub fn decode(bytes: &[u8]) -> Result<MetricBatch, CodecError> {
    let batch = decode_ref(bytes)?;
    let metrics = batch
        .metrics()
        .map(|metric| Metric {
            name: metric.name.to_owned(),
            value: metric.value,
            timestamp: metric.timestamp,
            tags: metric
                .tags
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            kind: metric.kind,
        })
        .collect();
    Ok(MetricBatch {
        client: ClientId::new(batch.client),
        metrics,
    })
}

/// A batch decoded without copying: every string borrows from the record. Fully checked when
/// made, so reading it cannot fail.
#[derive(Debug)]
pub struct BatchRef<'a> {
    pub client: &'a str,
    metrics: Vec<RawMetric<'a>>,
    /// Every metric's tags, one after another; each metric holds its range.
    tags: Vec<(&'a str, &'a str)>,
}

#[derive(Debug)]
struct RawMetric<'a> {
    name: &'a str,
    value: f64,
    timestamp: Option<i64>,
    kind: MetricKind,
    tags: std::ops::Range<usize>,
}

/// One metric of a [`BatchRef`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricRef<'a, 'b> {
    pub name: &'a str,
    pub value: f64,
    pub timestamp: Option<i64>,
    /// In the order stored (ingest stores them sorted by key, each key once).
    pub tags: &'b [(&'a str, &'a str)],
    pub kind: MetricKind,
}

impl<'a> BatchRef<'a> {
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    pub fn metrics(&self) -> impl ExactSizeIterator<Item = MetricRef<'a, '_>> {
        self.metrics.iter().map(|metric| MetricRef {
            name: metric.name,
            value: metric.value,
            timestamp: metric.timestamp,
            tags: &self.tags[metric.tags.clone()],
            kind: metric.kind,
        })
    }
}

/// Decodes a batch without copying its strings, verifying its version and checksum first.
pub fn decode_ref(bytes: &[u8]) -> Result<BatchRef<'_>, CodecError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8()?;
    let known_flags = match version {
        VERSION_1 => FLAG_TIMESTAMP,
        VERSION_2 => FLAG_TIMESTAMP | FLAG_KIND,
        other => return Err(CodecError::Version(other)),
    };
    let stored = u32::from_le_bytes(reader.array()?);
    let computed = crc32c::crc32c(&bytes[HEADER_LEN..]);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let client = reader.string()?;
    let count = reader.varint()?;
    // Each metric takes at least 11 bytes, so a count beyond that is a lie we must not allocate for.
    let mut metrics = Vec::with_capacity(count.min(reader.remaining() as u64 / 11) as usize);
    let mut tags = Vec::new();
    for _ in 0..count {
        let name = reader.string()?;
        let value = f64::from_le_bytes(reader.array()?);
        let flags_at = reader.at;
        let flags = reader.u8()?;
        if flags & !known_flags != 0 {
            return Err(CodecError::Flags {
                at: flags_at,
                flags,
            });
        }
        let timestamp = if flags & FLAG_TIMESTAMP != 0 {
            Some(i64::from_le_bytes(reader.array()?))
        } else {
            None
        };
        let kind = if flags & FLAG_KIND != 0 {
            let kind_at = reader.at;
            let code = reader.u8()?;
            MetricKind::from_code(code).ok_or(CodecError::Kind {
                at: kind_at,
                kind: code,
            })?
        } else {
            MetricKind::Untyped
        };
        let tag_count = reader.varint()?;
        let first_tag = tags.len();
        for _ in 0..tag_count {
            let key = reader.string()?;
            let value = reader.string()?;
            tags.push((key, value));
        }
        metrics.push(RawMetric {
            name,
            value,
            timestamp,
            kind,
            tags: first_tag..tags.len(),
        });
    }
    if reader.remaining() != 0 {
        return Err(CodecError::Trailing(reader.remaining()));
    }
    Ok(BatchRef {
        client,
        metrics,
        tags,
    })
}

fn encoded_len_hint<M: EncodeMetric>(client: &str, metrics: &[M]) -> usize {
    HEADER_LEN
        + client.len()
        + 2
        + metrics
            .iter()
            .map(|m| {
                m.name().len() + 20 + m.tags().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>()
            })
            .sum::<usize>()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < len {
            return Err(CodecError::Truncated {
                at: self.at,
                needed: len - self.remaining(),
            });
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.at;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Varint(start))
    }

    fn string(&mut self) -> Result<&'a str, CodecError> {
        let start = self.at;
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| CodecError::Varint(start))?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError::Utf8(start))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    fn metric_strategy() -> impl Strategy<Value = Metric> {
        (
            ".{0,40}",
            any::<f64>(),
            proptest::option::of(any::<i64>()),
            proptest::collection::btree_map(".{0,12}", ".{0,12}", 0..5),
            proptest::sample::select(MetricKind::ALL.to_vec()),
        )
            .prop_map(|(name, value, timestamp, tags, kind)| Metric {
                name,
                value,
                timestamp,
                tags,
                kind,
            })
    }

    fn batch_strategy() -> impl Strategy<Value = MetricBatch> {
        (
            ".{0,30}",
            proptest::collection::vec(metric_strategy(), 0..20),
        )
            .prop_map(|(client, metrics)| MetricBatch {
                client: ClientId::new(client),
                metrics,
            })
    }

    /// NaN != NaN, so compare values bit for bit.
    fn same(a: &MetricBatch, b: &MetricBatch) -> bool {
        a.client == b.client
            && a.metrics.len() == b.metrics.len()
            && a.metrics.iter().zip(&b.metrics).all(|(x, y)| {
                x.name == y.name
                    && x.value.to_bits() == y.value.to_bits()
                    && x.timestamp == y.timestamp
                    && x.tags == y.tags
                    && x.kind == y.kind
            })
    }

    proptest! {
        #[test]
        fn round_trip_preserves_every_field(batch in batch_strategy()) {
            let decoded = decode(&encode(&batch)).expect("decodes");
            prop_assert!(same(&batch, &decoded));
        }

        #[test]
        fn any_single_bit_flip_is_detected(batch in batch_strategy(), bit in any::<prop::sample::Index>()) {
            let mut bytes = encode(&batch);
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bytes).is_err());
        }

        #[test]
        fn every_truncation_is_detected(batch in batch_strategy(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&batch);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }

    fn one_metric(kind: MetricKind) -> MetricBatch {
        MetricBatch {
            client: ClientId::new("c"),
            metrics: vec![Metric {
                name: "up".into(),
                value: 1.0,
                timestamp: Some(7),
                tags: BTreeMap::from([("job".to_string(), "a".to_string())]),
                kind,
            }],
        }
    }

    /// Rewrites a record's checksum after a deliberate edit, so the edit reaches the parser.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[HEADER_LEN..]);
        bytes[1..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn untyped_batches_are_written_as_version_1_and_typed_ones_as_version_2() {
        let untyped = encode(&one_metric(MetricKind::Untyped));
        assert_eq!(untyped[0], VERSION_1);
        // The first release's layout: name, value, flags = timestamp only, timestamp, tags.
        assert_eq!(
            &untyped[HEADER_LEN..],
            b"\x01c\x01\x02up\x00\x00\x00\x00\x00\x00\xf0\x3f\x01\x07\x00\x00\x00\x00\x00\x00\x00\x01\x03job\x01a"
        );
        let typed = encode(&one_metric(MetricKind::Counter));
        assert_eq!(typed[0], VERSION_2);
        assert_eq!(
            decode(&typed).expect("decodes"),
            one_metric(MetricKind::Counter)
        );
    }

    #[test]
    fn a_kind_in_a_version_1_record_and_an_unknown_kind_are_refused() {
        let mut typed = encode(&one_metric(MetricKind::Gauge));
        typed[0] = VERSION_1;
        reseal(&mut typed);
        assert!(matches!(decode(&typed), Err(CodecError::Flags { .. })));

        let mut typed = encode(&one_metric(MetricKind::Gauge));
        let kind_at = typed.len() - 1 - (1 + 3 + 1 + 1) - 1;
        assert_eq!(typed[kind_at], MetricKind::Gauge.code());
        typed[kind_at] = 9;
        reseal(&mut typed);
        assert_eq!(
            decode(&typed),
            Err(CodecError::Kind {
                at: kind_at,
                kind: 9
            })
        );
    }

    #[test]
    fn a_future_version_is_refused_by_number() {
        let mut bytes = encode(&one_metric(MetricKind::Untyped));
        bytes[0] = 3;
        assert_eq!(decode(&bytes), Err(CodecError::Version(3)));
    }

    #[test]
    fn checksum_error_names_both_values() {
        let batch = MetricBatch {
            client: ClientId::new("a"),
            metrics: vec![],
        };
        let mut bytes = encode(&batch);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(decode(&bytes), Err(CodecError::Checksum { .. })));
    }
}
