//! What the spill stores per record: the record's replay identity in front of the record as the
//! ingest encoded it, so the forwarder can append the record to Kafka with the identity it was
//! given when it was first accepted, whichever process forwards it.
//!
//! ```text
//! version u8 (1) | origin u64 BE | sequence u64 BE | record
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::replay::ReplayIdentity;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + ReplayIdentity::ENCODED_LEN;

/// A spilled record: `identity` then `record`.
pub(super) fn envelope(identity: ReplayIdentity, record: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + record.len());
    out.put_u8(VERSION);
    out.put_slice(&identity.to_bytes());
    out.put_slice(record);
    out.freeze()
}

/// The size of `record` once spilled.
pub(super) fn envelope_len(record: &[u8]) -> u64 {
    (HEADER_LEN + record.len()) as u64
}

/// The identity and the record of a spilled record; `Err` says why it is not one.
pub(super) fn open_envelope(spilled: &Bytes) -> Result<(ReplayIdentity, Bytes), String> {
    match spilled.first() {
        Some(&VERSION) => {}
        Some(version) => return Err(format!("unknown spill record version {version}")),
        None => return Err("empty spill record".into()),
    }
    if spilled.len() <= HEADER_LEN {
        return Err(format!(
            "spill record of {} bytes is shorter than its header",
            spilled.len()
        ));
    }
    let identity = ReplayIdentity::from_bytes(&spilled[1..HEADER_LEN])
        .ok_or_else(|| "malformed replay identity".to_owned())?;
    Ok((identity, spilled.slice(HEADER_LEN..)))
}

/// A random identity for this process's records: the standard library's randomly keyed hasher
/// over the process id and the time, so two processes (or two starts of one) never share one
/// in practice.
pub(super) fn new_origin() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_record_keeps_its_identity_and_bytes() {
        let identity = ReplayIdentity {
            origin: 7,
            sequence: 9,
        };
        let spilled = envelope(identity, b"record");
        assert_eq!(
            open_envelope(&spilled),
            Ok((identity, Bytes::from_static(b"record")))
        );
    }

    #[test]
    fn what_is_not_a_spilled_record_says_why() {
        assert!(open_envelope(&Bytes::new()).is_err());
        assert!(open_envelope(&Bytes::from_static(&[2, 0, 0])).is_err());
        assert!(
            open_envelope(
                &envelope(
                    ReplayIdentity {
                        origin: 1,
                        sequence: 1
                    },
                    b""
                )
                .slice(..5)
            )
            .is_err()
        );
    }

    #[test]
    fn origins_differ_between_calls() {
        assert_ne!(new_origin(), new_origin());
    }
}
