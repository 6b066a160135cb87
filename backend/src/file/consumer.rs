//! STUB — being implemented.
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::{FileQueueError, FileQueueMetrics};
use crate::model::{Offset, Partition};
use crate::queue::{ConsumeError, Poll, QueueConsumer};

pub struct FileConsumer {}

impl FileConsumer {
    /// Joins consumer group `group` on the queue at `root`. Partitions are taken (file locks)
    /// inside `poll`, a fair share of them per live member, and taken over when a holder dies.
    /// `partitions` is a floor: the consumer reads every partition the queue has.
    pub async fn open(
        root: impl Into<PathBuf>,
        partitions: u32,
        group: &str,
        metrics: FileQueueMetrics,
    ) -> Result<Self, FileQueueError> {
        let _ = (root.into(), partitions, group, metrics);
        todo!()
    }
}

#[async_trait]
impl QueueConsumer for FileConsumer {
    async fn poll(&mut self, max_records: usize, max_wait: Duration) -> Result<Poll, ConsumeError> {
        let _ = (max_records, max_wait);
        todo!()
    }
    async fn commit(&mut self, positions: &[(Partition, Offset)]) -> Result<(), ConsumeError> {
        let _ = positions;
        todo!()
    }
    fn assignment(&self) -> Vec<Partition> {
        todo!()
    }
    fn lag(&self) -> Vec<(Partition, u64)> {
        todo!()
    }
    async fn close(&mut self) {
        todo!()
    }
}
