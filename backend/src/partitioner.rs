//! The partitioner both backends share: Kafka's murmur2 of the client id, made positive, modulo
//! the partition count — the partition Kafka's own Java client would pick for that key, so Kafka
//! tooling and the file queue agree on where a client's records live.

use crate::model::{ClientId, Partition};

/// Kafka's `Utils.murmur2` (seed `0x9747b28c`), as the Java client computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(hash: i32) -> u32 {
    (hash & 0x7fff_ffff) as u32
}

/// The partition of a client: `toPositive(murmur2(client)) % partitions`.
///
/// # Panics
/// If `partitions` is zero; configuration validation rules that out before any request.
pub fn partition_for(client: &ClientId, partitions: u32) -> Partition {
    assert!(partitions > 0, "partition count must be positive");
    Partition(to_positive(murmur2(client.as_str().as_bytes())) % partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(42), 42);
    }

    proptest! {
        #[test]
        fn partition_is_in_range_and_stable(client in ".{0,64}", partitions in 1u32..=crate::queue::MAX_PARTITIONS) {
            let client = ClientId::new(client);
            let first = partition_for(&client, partitions);
            prop_assert!(first.0 < partitions);
            prop_assert_eq!(first, partition_for(&client, partitions));
        }
    }
}
