//! The record model: what a client sends, and the newtypes that keep partitions, offsets and
//! client ids from being mixed up.

use std::collections::BTreeMap;
use std::fmt;

/// The identity a request is attributed to: from the token file, or the `Authorization` value
/// itself in open mode. It decides the partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

impl ClientId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A partition number, `0..partition_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub u32);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The position of a record within its partition. Offsets start at 0 and grow by one per record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Offset(pub u64);

impl Offset {
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    /// Unix milliseconds. Ingest fills in the receive time when the client sent none.
    pub timestamp: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

/// The metrics of one accepted request, attributed to its client. One batch is one queue record.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricBatch {
    pub client: ClientId,
    pub metrics: Vec<Metric>,
}
