//! A consumer group's lag on Kafka: its committed offsets against the partitions' ends, read
//! through the backend crate (librdkafka) without joining the group, so measuring never
//! rebalances the stream's consumers.

use std::time::Duration;

use metricstream_backend::kafka::KafkaSecurity;
use metricstream_backend::kafka::group_offsets::group_offsets;

use super::{LagError, PartitionLag, StreamLag};
use crate::topics::settings;

/// The lag of `group` on every partition of `topic`, within `timeout`. An unreachable cluster,
/// a missing topic or any partition whose offsets cannot be read is an error naming it.
pub async fn kafka_lag(
    bootstrap: &str,
    topic: &str,
    group: &str,
    security: &KafkaSecurity,
    timeout: Duration,
) -> Result<StreamLag, LagError> {
    let offsets = group_offsets(&settings(bootstrap, topic, 1, security), group, timeout).await?;
    Ok(StreamLag::from_partitions(
        offsets
            .iter()
            .map(|offsets| PartitionLag {
                partition: offsets.partition,
                records: offsets.lag(),
            })
            .collect(),
    ))
}
