//! The queue records the backend and drain suites write and read: what the ingest stores for a
//! representative request, so every ceiling moves records of the ingest's real size.

use std::collections::BTreeMap;

use metricstream_backend::partitioner::partition_for;
use metricstream_backend::{ClientId, Metric, MetricBatch, codec};

/// Bytes of a file-queue frame header (`payload_len u32 | crc32c u32 | offset u64`, see
/// `backend/src/file/segment.rs`, whose constant is private to the backend crate).
pub const FILE_FRAME_HEADER_BYTES: usize = 16;

/// A fixed timestamp: the ingest fills in the receive time for metrics sent without one, so
/// every stored metric carries one (a constant keeps the encoded size constant).
const TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// The batch the ingest stores for a request of `metrics` metrics like the HTTP suite sends:
/// name `cpu`, a value, the filled-in timestamp and two tags (`host`, `region`).
pub fn representative_batch(client: &str, metrics: u32, seq: u64) -> MetricBatch {
    MetricBatch {
        client: ClientId::new(client),
        metrics: (0..metrics)
            .map(|index| Metric {
                name: "cpu".to_owned(),
                // Not an integer, so the sink's float formatting costs what real values cost.
                value: seq as f64 + f64::from(index) + 0.25,
                timestamp: Some(TIMESTAMP_MS),
                tags: BTreeMap::from([
                    ("host".to_owned(), format!("host-{:02}", index % 100)),
                    ("region".to_owned(), "eu-west-1".to_owned()),
                ]),
                kind: Default::default(),
            })
            .collect(),
    }
}

/// [`representative_batch`] as a store sees it: every metric a distinct sample. Each record is
/// one scrape at its own millisecond (the fixed timestamp plus `seq`) of `metrics` series, told
/// apart by `host` (`host-00`, `host-01`, ...), so a store that keeps one sample per series and
/// millisecond (VictoriaMetrics with `-dedup.minScrapeInterval=1ms`) keeps them all.
pub fn scrape_batch(client: &str, metrics: u32, seq: u64) -> MetricBatch {
    let mut batch = representative_batch(client, metrics, seq);
    let timestamp = TIMESTAMP_MS.saturating_add(i64::try_from(seq).unwrap_or(i64::MAX));
    for (index, metric) in batch.metrics.iter_mut().enumerate() {
        metric.timestamp = Some(timestamp);
        metric
            .tags
            .insert("host".to_owned(), format!("host-{index:02}"));
    }
    batch
}

/// A client id of the benchmarks' fixed length (`bench-client-NNN`).
pub fn client_name(number: u32) -> String {
    format!("bench-client-{number:03}")
}

/// The codec's encoded size of a representative record of `metrics` metrics: the payload the
/// ingest produces to Kafka.
pub fn payload_bytes(metrics: u32) -> usize {
    codec::encode(&representative_batch(&client_name(0), metrics, 0)).len()
}

/// The bytes the file queue writes for one such record: its frame header and the payload.
pub fn file_record_bytes(metrics: u32) -> usize {
    FILE_FRAME_HEADER_BYTES + payload_bytes(metrics)
}

/// One client id per partition, each hashing (with the shared partitioner) to its partition,
/// so a backlog spread over them lands where the ingest would have put it.
pub fn client_per_partition(partitions: u32) -> Vec<String> {
    let mut clients: Vec<Option<String>> = vec![None; partitions as usize];
    let mut number = 0;
    while clients.iter().any(Option::is_none) {
        let name = client_name(number);
        let partition = partition_for(&ClientId::new(name.as_str()), partitions);
        clients[partition.0 as usize].get_or_insert(name);
        number += 1;
    }
    clients.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_what_the_codec_writes_and_grow_with_the_metrics() {
        let one = payload_bytes(1);
        let hundred = payload_bytes(100);
        assert!(one > 20 && hundred > 50 * one, "{one} and {hundred}");
        assert_eq!(file_record_bytes(1), one + FILE_FRAME_HEADER_BYTES);
        // The size does not depend on which record of a run it is.
        let other = codec::encode(&representative_batch(&client_name(7), 100, 9_999)).len();
        assert_eq!(other, hundred);
    }

    #[test]
    fn a_scrape_batch_has_one_sample_per_series_and_its_own_millisecond() {
        let first = scrape_batch(&client_name(0), 150, 0);
        let second = scrape_batch(&client_name(0), 150, 1);
        let hosts: std::collections::BTreeSet<&str> = first
            .metrics
            .iter()
            .map(|metric| metric.tags["host"].as_str())
            .collect();
        assert_eq!(
            hosts.len(),
            150,
            "every metric of a record is its own series"
        );
        assert!(
            first
                .metrics
                .iter()
                .all(|m| m.timestamp == Some(TIMESTAMP_MS))
        );
        assert!(
            second
                .metrics
                .iter()
                .all(|m| m.timestamp == Some(TIMESTAMP_MS + 1))
        );
    }

    #[test]
    fn each_partition_gets_a_client_that_hashes_to_it() {
        let clients = client_per_partition(4);
        assert_eq!(clients.len(), 4);
        for (partition, client) in clients.iter().enumerate() {
            assert_eq!(
                partition_for(&ClientId::new(client.as_str()), 4).0 as usize,
                partition
            );
        }
    }
}
