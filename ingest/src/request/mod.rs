//! Turning an HTTP request body into metrics: the content-type and content-encoding checks,
//! reading the body under a byte cap, gzip decompression under the same cap, and JSON parsing
//! and validation. Everything here except [`read_body`] is pure and synchronous.
//!
//! This module owns the request limits ([`Limits`]); its children do the work: `body` (the
//! headers' checks, reading the body under its cap, gzip), `parse` (JSON parsing and validation
//! into [`ParsedMetrics`]) and `wire` (the body's JSON shape as serde reads it).

mod body;
mod parse;
mod wire;

pub use body::{ContentEncoding, check_content_type, content_encoding, decode_body, read_body};
pub use parse::{ParsedMetrics, parse_metrics};

/// What one request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Applies to the body as received and again after decompression.
    pub max_body_bytes: usize,
    pub max_metrics: usize,
    pub max_name_bytes: usize,
    pub max_tags: usize,
    /// Applies to each tag key and each tag value.
    pub max_tag_bytes: usize,
}
