//! placeholder
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;
