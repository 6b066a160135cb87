//! A stream's consumer-group lag, for the autoscaler: records written to the queue that the
//! group has not committed yet, per partition and in total.
//!
//! - Kafka ([`kafka`]): the group's committed offsets against the partitions' ends, read from
//!   the cluster without joining the group.
//! - File ([`file`]): every consumer pod measures the whole queue from its mounted volume and
//!   exports it on `/metrics` (`metricstream_queue_group_lag_records`); any pod that answers
//!   tells every partition's lag.
//!
//! Either way a lag that cannot be measured is an error saying why — never a 0 or a guessed
//! figure, which would make the autoscaler scale down or up for nothing. On error it holds.

mod exposition;
pub mod file;
pub mod kafka;

use std::time::Duration;

use async_trait::async_trait;
use metricstream_backend::kafka::KafkaSecurity;
use metricstream_backend::kafka::group_offsets::GroupOffsetsError;

/// The longest a Kafka measurement takes: metadata, committed offsets and every partition's
/// ends share it.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for one consumer pod's `/metrics`; the pods are asked at once.
pub const FILE_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One partition's lag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: u32,
    /// Records the group has still to read.
    pub records: u64,
}

/// A stream's lag: every partition of its queue, in partition order, and their sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLag {
    pub partitions: Vec<PartitionLag>,
    pub total: u64,
}

impl StreamLag {
    /// The lag of these partitions, sorted by partition.
    pub fn from_partitions(mut partitions: Vec<PartitionLag>) -> Self {
        partitions.sort_unstable_by_key(|lag| lag.partition);
        let total = partitions
            .iter()
            .fold(0u64, |sum, lag| sum.saturating_add(lag.records));
        Self { partitions, total }
    }
}

/// Why a lag could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    /// The cluster could not be asked, or some partition's offsets could not be read.
    #[error("Kafka lag unknown: {0}")]
    Kafka(#[from] GroupOffsetsError),
    /// No consumer pod answered with the queue's lag; each pod's failure, shortened.
    #[error("no consumer pod reported the queue's lag: {0}")]
    NoConsumerAnswered(String),
    /// The pods that answered did not report these partitions.
    #[error("no consumer pod reported the lag of partition(s) {}", list(.0))]
    MissingPartitions(Vec<u32>),
    #[error("{0}")]
    Client(String),
}

fn list(partitions: &[u32]) -> String {
    const SHOWN: usize = 10;
    let mut text: Vec<String> = partitions.iter().take(SHOWN).map(u32::to_string).collect();
    if partitions.len() > SHOWN {
        text.push(format!("and {} more", partitions.len() - SHOWN));
    }
    text.join(", ")
}

/// Where the autoscaler gets a stream's lag. Behind a trait so that reconcile tests need neither
/// a broker nor pods.
#[async_trait]
pub trait LagSource: Send + Sync {
    /// The lag of `group` on `topic`: every partition's end (high watermark) less the group's
    /// committed offset, or less the log start when it never committed (an empty partition
    /// lags 0). An error when the cluster or any partition's offsets cannot be read in time.
    async fn kafka_lag(
        &self,
        bootstrap: &str,
        topic: &str,
        group: &str,
        security: &KafkaSecurity,
    ) -> Result<StreamLag, LagError>;

    /// The lag of `group` on a file queue of `partitions` partitions, from the consumer pods'
    /// metrics: `consumer_metrics_urls` are their `http://<pod ip>:<admin port>/metrics`. Per
    /// partition the largest figure any answering pod reports (they read one disk; a pod that
    /// refreshed later saw more). An error when no pod answers or some partition of
    /// `0..partitions` is missing from every answer.
    async fn file_lag(
        &self,
        consumer_metrics_urls: &[String],
        group: &str,
        partitions: u32,
    ) -> Result<StreamLag, LagError>;
}

/// [`LagSource`] on the real cluster and pods: librdkafka through the backend crate, and HTTP.
pub struct LiveLagSource {
    http: reqwest::Client,
    kafka_timeout: Duration,
}

impl LiveLagSource {
    /// With [`KAFKA_TIMEOUT`] and [`FILE_ASK_TIMEOUT`].
    pub fn new() -> anyhow::Result<Self> {
        Self::with_timeouts(KAFKA_TIMEOUT, FILE_ASK_TIMEOUT)
    }

    pub fn with_timeouts(kafka: Duration, file_ask: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            http: file::http_client(file_ask)?,
            kafka_timeout: kafka,
        })
    }
}

#[async_trait]
impl LagSource for LiveLagSource {
    async fn kafka_lag(
        &self,
        bootstrap: &str,
        topic: &str,
        group: &str,
        security: &KafkaSecurity,
    ) -> Result<StreamLag, LagError> {
        kafka::kafka_lag(bootstrap, topic, group, security, self.kafka_timeout).await
    }

    async fn file_lag(
        &self,
        consumer_metrics_urls: &[String],
        group: &str,
        partitions: u32,
    ) -> Result<StreamLag, LagError> {
        file::file_lag(&self.http, consumer_metrics_urls, group, partitions).await
    }
}

/// A [`LagSource`] that answers every question with one fixed answer, for tests of what uses
/// the lag. An `Err` text becomes [`LagError::Client`].
#[derive(Clone, Debug)]
pub struct FixedLagSource(pub Result<StreamLag, String>);

#[async_trait]
impl LagSource for FixedLagSource {
    async fn kafka_lag(
        &self,
        _bootstrap: &str,
        _topic: &str,
        _group: &str,
        _security: &KafkaSecurity,
    ) -> Result<StreamLag, LagError> {
        self.0.clone().map_err(LagError::Client)
    }

    async fn file_lag(
        &self,
        _consumer_metrics_urls: &[String],
        _group: &str,
        _partitions: u32,
    ) -> Result<StreamLag, LagError> {
        self.0.clone().map_err(LagError::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_the_sum_and_partitions_come_sorted() {
        let lag = StreamLag::from_partitions(vec![
            PartitionLag {
                partition: 2,
                records: 5,
            },
            PartitionLag {
                partition: 0,
                records: 7,
            },
            PartitionLag {
                partition: 1,
                records: u64::MAX,
            },
        ]);
        assert_eq!(
            lag.partitions
                .iter()
                .map(|p| p.partition)
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(lag.total, u64::MAX, "saturates");
    }

    #[test]
    fn missing_partitions_are_listed_shortly() {
        let error = LagError::MissingPartitions((0..15).collect());
        assert_eq!(
            error.to_string(),
            "no consumer pod reported the lag of partition(s) 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, and 5 more"
        );
    }
}
