//! What the ingest and consumer services share: the settings common to both, the admin listener
//! (`/healthz`, `/readyz`, `/metrics`), logging, and the shutdown signal. The operator shares
//! the admin listener, logging and shutdown.
//!
//! - [`backend_flags`]: which queue, how many partitions, where the file queue lives;
//! - [`kafka_flags`]: the Kafka backend's flags; [`kafka_settings`] (feature `kafka`): the
//!   connection settings made from them;
//! - [`admin`]: the admin listener and its flag; [`logging`]: the log format flag and the
//!   subscriber; [`shutdown`]: SIGTERM and SIGINT.
//!
//! The items are re-exported here, where they lived before the split.

pub mod admin;
pub mod backend_flags;
pub mod kafka_flags;
#[cfg(feature = "kafka")]
pub mod kafka_settings;
pub mod logging;
pub mod shutdown;

pub use admin::{AdminArgs, Readiness, serve_admin};
pub use backend_flags::{BackendKind, CommonArgs};
pub use kafka_flags::{KafkaArgs, KafkaSaslMechanism, KafkaSecurityProtocol};
#[cfg(feature = "kafka")]
pub use kafka_settings::{kafka_settings, prepare_kafka};
pub use logging::{LogArgs, LogFormat, init_logging};
pub use shutdown::{ShutdownSignals, shutdown_signal};
