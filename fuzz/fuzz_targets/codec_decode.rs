//! The record codec on arbitrary bytes: `decode` and `decode_ref` never panic, never allocate
//! beyond what the bytes can hold, and agree with each other; whatever decodes re-encodes to a
//! record that decodes to the same batch.
//!
//! Arbitrary bytes almost never carry a matching CRC32C, which would stop every input at the
//! checksum; so each input is also decoded with its version byte made 1 or 2 (by its first bit)
//! and its checksum made valid, which sends the fuzzer's bytes through both versions' parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricstream_backend::codec;

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 5 {
        let mut fixed = data.to_vec();
        fixed[0] = 1 + (data[0] & 1);
        let crc = crc32c::crc32c(&fixed[5..]);
        fixed[1..5].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});

fn check(bytes: &[u8]) {
    let owned = codec::decode(bytes);
    let borrowed = codec::decode_ref(bytes);
    match (owned, borrowed) {
        (Err(owned), Err(borrowed)) => assert_eq!(owned, borrowed),
        (Ok(batch), Ok(view)) => {
            assert_eq!(batch.client.as_str(), view.client);
            assert_eq!(batch.metrics.len(), view.len());
            for (metric, metric_ref) in batch.metrics.iter().zip(view.metrics()) {
                assert_eq!(metric.name, metric_ref.name);
                assert_eq!(metric.value.to_bits(), metric_ref.value.to_bits());
                assert_eq!(metric.timestamp, metric_ref.timestamp);
                assert_eq!(metric.kind, metric_ref.kind);
                // The owned batch keeps tags in a map: a repeated key keeps its last value.
                let mut tags = std::collections::BTreeMap::new();
                for (key, value) in metric_ref.tags {
                    tags.insert((*key).to_owned(), (*value).to_owned());
                }
                assert_eq!(metric.tags, tags);
            }
            let again = codec::decode(&codec::encode(&batch)).expect("encode output decodes");
            assert_eq!(again.client, batch.client);
            assert_eq!(again.metrics.len(), batch.metrics.len());
            for (left, right) in again.metrics.iter().zip(&batch.metrics) {
                assert_eq!(left.name, right.name);
                assert_eq!(left.value.to_bits(), right.value.to_bits());
                assert_eq!(left.timestamp, right.timestamp);
                assert_eq!(left.tags, right.tags);
                assert_eq!(left.kind, right.kind);
            }
        }
        (owned, borrowed) => panic!("decode {owned:?} and decode_ref {borrowed:?} disagree"),
    }
}
