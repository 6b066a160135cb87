//! The consumer's settings as a library, so that tests outside this crate (the operator–workload
//! contract test) parse the same flags the binary does. The rest of the consumer is the binary.

pub mod config;
