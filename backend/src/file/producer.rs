//! STUB — being implemented.
use async_trait::async_trait;
use bytes::Bytes;

use super::{FileQueueConfig, FileQueueError, FileQueueMetrics};
use crate::model::{Offset, Partition};
use crate::queue::{AppendError, QueueProducer};

pub struct FileProducer {}

impl FileProducer {
    /// Opens the queue at `config.root` (creating it, or recovering every partition's torn tail)
    /// and starts one writer task per partition on the current Tokio runtime.
    pub async fn open(
        config: FileQueueConfig,
        metrics: FileQueueMetrics,
    ) -> Result<Self, FileQueueError> {
        let _ = (config, metrics);
        todo!()
    }
}

#[async_trait]
impl QueueProducer for FileProducer {
    fn partitions(&self) -> u32 {
        todo!()
    }
    async fn append(&self, partition: Partition, record: Bytes) -> Result<Offset, AppendError> {
        let _ = (partition, record);
        todo!()
    }
    fn readiness(&self) -> Result<(), String> {
        todo!()
    }
    async fn close(&self) {
        todo!()
    }
}
