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

/// What kind of series a sample belongs to, as the protocol that sent it says. MetricStream's
/// own JSON and Influx line protocol say nothing (`Untyped`); OTLP and remote write metadata say
/// more. A histogram or summary travels as the Prometheus convention's series, one sample each
/// (`_bucket` with an `le` tag, `_sum`, `_count`, or a `quantile` tag), all of this kind.
/// OTLP's delta temporality has kinds of its own: a delta is not a running total, and a store
/// that took it for one would compute nonsense rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MetricKind {
    #[default]
    Untyped,
    Gauge,
    Counter,
    Histogram,
    Summary,
    /// An OTLP sum (monotonic or not) with delta temporality: each value is the change since
    /// the point before.
    DeltaSum,
    /// An OTLP histogram with delta temporality: counts since the point before.
    DeltaHistogram,
}

impl MetricKind {
    /// Every kind, in the order of their codes.
    pub const ALL: [MetricKind; 7] = [
        MetricKind::Untyped,
        MetricKind::Gauge,
        MetricKind::Counter,
        MetricKind::Histogram,
        MetricKind::Summary,
        MetricKind::DeltaSum,
        MetricKind::DeltaHistogram,
    ];

    /// The kind's code in a queue record.
    pub fn code(self) -> u8 {
        match self {
            MetricKind::Untyped => 0,
            MetricKind::Gauge => 1,
            MetricKind::Counter => 2,
            MetricKind::Histogram => 3,
            MetricKind::Summary => 4,
            MetricKind::DeltaSum => 5,
            MetricKind::DeltaHistogram => 6,
        }
    }

    /// The kind of a record's code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The name the sink and the documentation use, as Prometheus' metadata spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Untyped => "untyped",
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
            MetricKind::DeltaSum => "delta_sum",
            MetricKind::DeltaHistogram => "delta_histogram",
        }
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    pub kind: MetricKind,
}

/// The metrics of one accepted request, attributed to its client. One batch is one queue record.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricBatch {
    pub client: ClientId,
    pub metrics: Vec<Metric>,
}
