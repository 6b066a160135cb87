//! The backend shared by MetricStream's ingest and consumer services.
//!
//! It owns the record model ([`model`]) and its checksummed binary encoding ([`codec`]), the
//! partitioner both backends use ([`partitioner`]), the traits a queue backend implements
//! ([`queue`]), the durable partitioned file queue ([`file`]), and the Prometheus remote-write
//! messages ([`remote_write_proto`]) the ingest decodes and the consumer's remote-write sink sends.

pub mod circuit;
pub mod codec;
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod model;
pub mod partitioner;
pub mod queue;
pub mod remote_write_proto;
pub mod replay;
#[cfg(feature = "kafka")]
pub mod spill;

pub use model::{ClientId, Metric, MetricBatch, MetricKind, Offset, Partition};
pub use queue::{
    AppendError, Appended, ConsumeError, ConsumedRecord, MAX_GROUP_LEN, MAX_PARTITIONS, Poll,
    PollLimits, QueueConsumer, QueueProducer, check_group_name,
};
