//! Identities that let a record replayed from an ingest's spill be recognised when it reaches
//! the queue twice.
//!
//! An ingest with a spill (`--spill-dir`) keeps accepting while Kafka is unreachable: records go
//! to a local file queue and a forwarder appends them to Kafka once it is back, committing its
//! spill position after Kafka's acknowledgements. A crash between an acknowledgement and that
//! commit makes the next process on the volume append the same records again, and a record that
//! was in flight when the ingest turned to the spill may reach Kafka twice. Every record such an
//! ingest sends therefore carries a [`ReplayIdentity`] (a Kafka header): the process's random
//! `origin` and a sequence number per partition, kept with a spilled record on disk. Within a
//! partition an origin's first copies reach Kafka in increasing sequence order (`spill` has the
//! argument), so a number not above the highest seen is a second copy. The Kafka consumer keeps
//! those highest numbers ([`ReplayMarks`]) and drops such copies before the sink sees them; see
//! `kafka::consumer::replay_state` for why the marks stay exact across crashes and rebalances.

/// The Kafka header that carries a replayed record's identity.
pub const REPLAY_HEADER: &str = "metricstream-replay-id";

/// Where a replayed record came from, and its place in its origin's order within a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplayIdentity {
    /// The sending ingest process's random identity.
    pub origin: u64,
    /// The record's number in that process's order of records for its partition.
    pub sequence: u64,
}

impl ReplayIdentity {
    pub const ENCODED_LEN: usize = 16;

    /// The header value: origin then sequence, big endian.
    pub fn to_bytes(self) -> [u8; Self::ENCODED_LEN] {
        let mut bytes = [0; Self::ENCODED_LEN];
        bytes[..8].copy_from_slice(&self.origin.to_be_bytes());
        bytes[8..].copy_from_slice(&self.sequence.to_be_bytes());
        bytes
    }

    /// Reads a header value; `None` for one that is not exactly [`Self::ENCODED_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        let (origin, sequence) = bytes.split_at(8);
        Some(Self {
            origin: u64::from_be_bytes(origin.try_into().ok()?),
            sequence: u64::from_be_bytes(sequence.try_into().ok()?),
        })
    }
}

/// The highest sequence number seen per origin in ONE partition: what tells a replayed record's
/// second copy from its first.
///
/// It holds at most [`Self::MAX_ORIGINS`] origins and forgets the one least recently advanced
/// when a new one comes. Forgetting is safe: an unknown origin's record is always admitted, so
/// the worst it can do is let a second copy through, never drop a first one. And it does not
/// happen in practice: a second copy arrives soon after its first, because a replay restarts
/// from the spill's last commit, which trails Kafka's acknowledgements by moments (at most the
/// forwarder's window of records). To be forgotten in between, an origin would have to be
/// passed by [`Self::MAX_ORIGINS`] other origins advancing in this partition during that moment.
///
/// The marks are a function of the sequence of identities admitted, in order (a refused copy
/// changes nothing, not even the order): the same records in the same order give the same marks,
/// the same decisions and the same evictions, which is what lets a consumer commit them and a
/// successor resume from them ([`Self::to_metadata`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayMarks {
    /// `(origin, highest sequence admitted)`, least recently advanced first.
    marks: Vec<(u64, u64)>,
}

/// The version tag that starts a non-empty [`ReplayMarks::to_metadata`] string.
const MARKS_VERSION: &str = "v1";

impl ReplayMarks {
    /// The most origins kept per partition. Encoded, they take at most
    /// [`Self::MAX_METADATA_LEN`] bytes, well under Kafka's default limit on a commit's metadata
    /// (`offset.metadata.max.bytes`, 4096).
    pub const MAX_ORIGINS: usize = 64;
    /// The longest [`Self::to_metadata`] string: the version tag, then per origin a separator, up
    /// to 16 hexadecimal digits, a colon and up to 20 decimal digits.
    pub const MAX_METADATA_LEN: usize = MARKS_VERSION.len() + Self::MAX_ORIGINS * (1 + 16 + 1 + 20);

    /// `true` for a first copy (its origin is unknown, or its sequence is above the origin's
    /// mark), which becomes the origin's new mark; `false` for a second copy, which changes
    /// nothing.
    pub fn admit(&mut self, identity: ReplayIdentity) -> bool {
        let found = self
            .marks
            .iter()
            .position(|(origin, _)| *origin == identity.origin);
        match found {
            Some(index) if self.marks[index].1 >= identity.sequence => false,
            Some(index) => {
                self.marks.remove(index);
                self.marks.push((identity.origin, identity.sequence));
                true
            }
            None => {
                if self.marks.len() >= Self::MAX_ORIGINS {
                    self.marks.remove(0);
                }
                self.marks.push((identity.origin, identity.sequence));
                true
            }
        }
    }

    /// No origin seen.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// The marks as the text of a Kafka offset commit's metadata: empty when there are none,
    /// else `v1` followed by `;<origin in hex>:<mark in decimal>` per origin, least recently
    /// advanced first (so that decoding restores the eviction order too). At most
    /// [`Self::MAX_METADATA_LEN`] bytes.
    pub fn to_metadata(&self) -> String {
        use std::fmt::Write;
        if self.marks.is_empty() {
            return String::new();
        }
        let mut text = String::with_capacity(MARKS_VERSION.len() + self.marks.len() * 24);
        text.push_str(MARKS_VERSION);
        for (origin, mark) in &self.marks {
            let _ = write!(text, ";{origin:x}:{mark}");
        }
        text
    }

    /// Reads what [`Self::to_metadata`] wrote. An empty string is no marks (a commit made without
    /// any, or by another client); an unknown version or anything malformed is an error, never
    /// taken for "no marks".
    pub fn from_metadata(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self::default());
        }
        let mut parts = text.split(';');
        match parts.next() {
            Some(MARKS_VERSION) => {}
            Some(version) if version.starts_with('v') => {
                return Err(format!("unknown replay marks version {version:?}"));
            }
            _ => return Err("not replay marks: no version tag".into()),
        }
        let mut marks = Self::default();
        for part in parts {
            let Some((origin, mark)) = part.split_once(':') else {
                return Err(format!("malformed replay mark {part:?}: no ':'"));
            };
            let origin = parse_digits(origin, 16, 16)
                .ok_or_else(|| format!("malformed origin {origin:?}"))?;
            let mark =
                parse_digits(mark, 10, 20).ok_or_else(|| format!("malformed sequence {mark:?}"))?;
            if marks.marks.iter().any(|(known, _)| *known == origin) {
                return Err(format!("origin {origin:x} appears twice"));
            }
            if marks.marks.len() == Self::MAX_ORIGINS {
                return Err(format!("more than {} origins", Self::MAX_ORIGINS));
            }
            marks.marks.push((origin, mark));
        }
        Ok(marks)
    }
}

/// A `u64` written in `radix` with 1 to `max_digits` digits and nothing else (`from_str_radix`
/// alone would take a sign).
fn parse_digits(text: &str, radix: u32, max_digits: usize) -> Option<u64> {
    let digits_only = text
        .chars()
        .all(|c| c.is_digit(radix) && !c.is_ascii_uppercase());
    if text.is_empty() || text.len() > max_digits || !digits_only {
        return None;
    }
    u64::from_str_radix(text, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips_through_its_header_bytes() {
        let identity = ReplayIdentity {
            origin: 0x0123_4567_89ab_cdef,
            sequence: 42,
        };
        assert_eq!(
            ReplayIdentity::from_bytes(&identity.to_bytes()),
            Some(identity)
        );
        assert_eq!(ReplayIdentity::from_bytes(&[1, 2, 3]), None);
    }

    fn id(origin: u64, sequence: u64) -> ReplayIdentity {
        ReplayIdentity { origin, sequence }
    }

    #[test]
    fn a_sequence_at_or_below_its_origins_mark_is_a_second_copy() {
        let mut marks = ReplayMarks::default();
        assert!(
            marks.admit(id(1, 5)),
            "an unknown origin's record is a first copy"
        );
        assert!(!marks.admit(id(1, 5)), "the same identity again");
        assert!(!marks.admit(id(1, 3)), "below the mark");
        assert!(marks.admit(id(1, 6)), "above the mark");
        assert!(marks.admit(id(2, 0)), "another origin has marks of its own");
        assert!(!marks.admit(id(2, 0)));
        assert!(!marks.admit(id(1, 6)));
    }

    #[test]
    fn the_least_recently_advanced_origin_is_forgotten_first() {
        let mut marks = ReplayMarks::default();
        for origin in 0..ReplayMarks::MAX_ORIGINS as u64 {
            assert!(marks.admit(id(origin, 10)));
        }
        // Origin 0 advances: origin 1 is now the least recently advanced. A refused copy does
        // not count as advancing.
        assert!(marks.admit(id(0, 11)));
        assert!(!marks.admit(id(1, 10)));
        assert!(marks.admit(id(1000, 0)), "a new origin evicts origin 1");
        assert!(!marks.admit(id(0, 11)), "origin 0 is still known");
        assert!(!marks.admit(id(2, 10)), "origin 2 is still known");
        // Forgetting errs towards letting a second copy through, never towards dropping.
        assert!(marks.admit(id(1, 10)), "origin 1 was forgotten");
    }

    #[test]
    fn marks_encode_compactly_with_their_version() {
        assert_eq!(ReplayMarks::default().to_metadata(), "");
        let mut marks = ReplayMarks::default();
        marks.admit(id(0xab, 7));
        marks.admit(id(0x1_0000_0000, 42));
        marks.admit(id(0xab, 9));
        assert_eq!(marks.to_metadata(), "v1;100000000:42;ab:9");
        assert_eq!(
            ReplayMarks::from_metadata("v1;100000000:42;ab:9"),
            Ok(marks)
        );
        assert_eq!(ReplayMarks::from_metadata(""), Ok(ReplayMarks::default()));
    }

    #[test]
    fn the_fullest_marks_fit_kafkas_default_metadata_limit() {
        let mut marks = ReplayMarks::default();
        for origin in 0..ReplayMarks::MAX_ORIGINS as u64 {
            marks.admit(id(u64::MAX - origin, u64::MAX));
        }
        let text = marks.to_metadata();
        assert_eq!(text.len(), ReplayMarks::MAX_METADATA_LEN);
        // 2,434 bytes: room to spare under the broker's default 4,096.
        const { assert!(ReplayMarks::MAX_METADATA_LEN <= 2500) };
        assert_eq!(ReplayMarks::from_metadata(&text), Ok(marks));
    }

    #[test]
    fn an_unknown_version_or_malformed_metadata_is_an_error_not_empty_marks() {
        let too_many = (0..=ReplayMarks::MAX_ORIGINS)
            .map(|origin| format!(";{origin:x}:1"))
            .collect::<String>();
        for bad in [
            "v2;ab:1",
            "v",
            "consumer-metadata",
            ";ab:1",
            "v1;ab",
            "v1;ab:",
            "v1;:1",
            "v1;AB:1",
            "v1;ab:+1",
            "v1;+ab:1",
            "v1;ab:-1",
            "v1;ab:1;",
            "v1;ab:1;ab:2",
            "v1;10000000000000000:1",
            "v1;ab:18446744073709551616",
            "v1 ;ab:1",
            &format!("v1{too_many}"),
        ] {
            assert!(
                ReplayMarks::from_metadata(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    mod properties {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;

        /// One step of one origin's stream: send the next `n` sequence numbers, or go back `n`
        /// (a replay from an older commit) before the next send.
        #[derive(Clone, Debug)]
        enum Step {
            Send(u64),
            Replay(u64),
        }

        fn steps() -> impl Strategy<Value = Vec<(usize, Step)>> {
            let step = prop_oneof![
                3 => (1..20u64).prop_map(Step::Send),
                1 => (1..30u64).prop_map(Step::Replay),
            ];
            proptest::collection::vec((0..6usize, step), 0..60)
        }

        proptest! {
            #[test]
            fn marks_round_trip_through_their_metadata(
                admits in proptest::collection::vec((0..100u64, any::<u64>()), 0..400),
                origin_salt in any::<u64>(),
            ) {
                let mut marks = ReplayMarks::default();
                for (origin, sequence) in admits {
                    marks.admit(id(origin ^ origin_salt, sequence));
                }
                let text = marks.to_metadata();
                prop_assert!(text.len() <= ReplayMarks::MAX_METADATA_LEN);
                prop_assert_eq!(ReplayMarks::from_metadata(&text), Ok(marks));
            }

            /// Interleaved in-order streams from a few origins, each with replays: exactly the
            /// repeats are refused, also when the marks are saved and restored half way (what a
            /// consumer restarting from its commit does).
            #[test]
            fn admits_drop_exactly_the_repeats_of_in_order_streams_with_replays(
                origins in proptest::collection::hash_set(any::<u64>(), 6),
                steps in steps(),
                restore_at in any::<proptest::sample::Index>(),
            ) {
                let origins: Vec<u64> = origins.into_iter().collect();
                let mut cursor: HashMap<u64, u64> = HashMap::new();
                let mut stream = Vec::new();
                for (which, step) in steps {
                    let origin = origins[which];
                    let next = cursor.entry(origin).or_default();
                    match step {
                        Step::Send(count) => {
                            stream.extend((*next..*next + count).map(|s| id(origin, s)));
                            *next += count;
                        }
                        Step::Replay(back) => *next = next.saturating_sub(back),
                    }
                }
                let restore_at = restore_at.index(stream.len() + 1);
                let mut seen = std::collections::HashSet::new();
                let mut marks = ReplayMarks::default();
                for (position, identity) in stream.into_iter().enumerate() {
                    if position == restore_at {
                        marks = ReplayMarks::from_metadata(&marks.to_metadata())
                            .map_err(TestCaseError::fail)?;
                    }
                    let first = seen.insert(identity);
                    prop_assert_eq!(marks.admit(identity), first, "{:?}", identity);
                }
            }
        }
    }
}
