//! File-queue recovery: records written with the real producer, one segment file damaged the
//! way the fuzzer chooses (bytes flipped, the file cut short, garbage appended), then the queue
//! opened again as restarting processes open it — a new `FileProducer` (which recovers the
//! partition's tail and appends more records) and a new `FileConsumer` of a group that may have
//! committed part of the log before the damage — in either order.
//!
//! Checks: nothing panics or hangs; the consumer hands out records in offset order with no gap;
//! every record that lies wholly before the first damaged byte (in log order) and at or after
//! the group's committed offset comes back, byte for byte; and when the damage is in the
//! partition's newest segment (a torn tail the producer cuts off), the records appended after
//! the restart come back too, under the offsets their appends returned.
//!
//! The producer runs with durability `none`: fsync changes nothing a single machine's page cache
//! shows, and costs most of a run's time.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use metricstream_backend::file::{
    Durability, FileConsumer, FileProducer, FileQueueConfig, FileQueueMetrics,
};
use metricstream_backend::{
    AppendError, ConsumeError, ConsumedRecord, Offset, Partition, PollLimits, QueueConsumer,
    QueueProducer,
};

const GROUP: &str = "fuzz";
const MAX_RECORDS: usize = 64;
const MAX_RECORD_BYTES: usize = 2048;
/// Polls before the consumer is declared stuck in a loop: far more than the records can take.
const MAX_POLLS: usize = 1000;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Payloads written before the damage (at most `MAX_RECORDS`, each cut to `MAX_RECORD_BYTES`).
    records: Vec<Vec<u8>>,
    /// Segment size: 4 KiB plus this many KiB (mod 8), so a run rolls several segments.
    segment_extra_kib: u8,
    /// The group's committed offset before the damage, modulo the record count plus one.
    committed: u16,
    /// Which segment is damaged, modulo their count (oldest first).
    segment: u8,
    damage: Vec<Damage>,
    /// The consumer restarts and reads what it can before the producer restarts.
    consumer_first: bool,
    /// Payloads the restarted producer appends.
    appended: Vec<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    /// XOR the byte at this position (modulo the file's length) with `mask`.
    Flip { at: u32, mask: u8 },
    /// Cut the file to this length (modulo its length plus one).
    Truncate { at: u32 },
    /// Append these bytes.
    Append(Vec<u8>),
    /// Overwrite from this position (modulo the length) with zeros, as a lost block reads.
    Zero { at: u32, len: u16 },
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a Tokio runtime")
});

/// Queues live in memory-backed /dev/shm where there is one: runs are thousands of small files.
static SCRATCH: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
});

fuzz_target!(|input: Input| {
    RUNTIME.block_on(run(input));
});

fn payloads(raw: &[Vec<u8>]) -> Vec<Bytes> {
    raw.iter()
        .take(MAX_RECORDS)
        .map(|payload| Bytes::copy_from_slice(&payload[..payload.len().min(MAX_RECORD_BYTES)]))
        .collect()
}

async fn run(input: Input) {
    let scratch = tempfile::Builder::new()
        .prefix("metricstream-fuzz-")
        .tempdir_in(&*SCRATCH)
        .expect("a scratch directory");
    let root = scratch.path().join("queue");
    let config = FileQueueConfig {
        durability: Durability::None,
        segment_bytes: 4096 + u64::from(input.segment_extra_kib % 8) * 1024,
        ..FileQueueConfig::new(&root, 1)
    };

    // Before: the records, and the group's commit.
    let producer = FileProducer::open(config.clone(), FileQueueMetrics::default())
        .await
        .expect("a new queue opens");
    let mut written = Vec::new();
    for payload in payloads(&input.records) {
        let appended = producer.append(Partition(0), payload.clone()).await;
        if payload.is_empty() {
            // An empty frame is a seal: the queue must refuse the record, not write it.
            assert!(
                matches!(appended, Err(AppendError::EmptyRecord)),
                "an empty record was not refused: {appended:?}"
            );
            continue;
        }
        let offset = appended.expect("an append to a healthy queue succeeds");
        assert_eq!(offset.0, written.len() as u64, "offsets count up from 0");
        written.push(payload);
    }
    producer.close().await;
    drop(producer);
    let committed = u64::from(input.committed) % (written.len() as u64 + 1);
    if committed > 0 {
        commit_through(&root, committed).await;
    }

    // The damage.
    let partition_dir = root.join("partitions").join("0000");
    let segments = list_segments(&partition_dir);
    assert!(!segments.is_empty(), "the producer made a segment");
    let damaged_index = usize::from(input.segment) % segments.len();
    let damaged_path = &segments[damaged_index].1;
    let original = std::fs::read(damaged_path).expect("read the segment");
    let damaged = damage(&original, &input.damage);
    std::fs::write(damaged_path, &damaged).expect("write the damaged segment");
    let first_damaged_byte = first_difference(&original, &damaged);
    let damaged_newest = damaged_index == segments.len() - 1;
    // Records wholly before the first damaged byte, in log order.
    let intact = intact_records(&segments, damaged_index, first_damaged_byte, &original);
    let log_damaged = frames_damaged(&original, first_damaged_byte);

    // After: the restarted processes.
    let appended = payloads(&input.appended);
    let mut consumer = FileConsumer::open(&root, 1, GROUP, FileQueueMetrics::default())
        .await
        .expect("the consumer opens");
    let mut read = Vec::new();
    let mut errors = Vec::new();
    if input.consumer_first {
        drain(&mut consumer, &mut read, &mut errors).await;
    }
    let producer = FileProducer::open(config, FileQueueMetrics::default())
        .await
        .expect("the producer reopens a damaged queue");
    let mut appended_at = Vec::new();
    for payload in &appended {
        match producer.append(Partition(0), payload.clone()).await {
            Ok(offset) => appended_at.push((offset, payload.clone())),
            Err(AppendError::EmptyRecord) if payload.is_empty() => {}
            Err(error) => panic!("append after recovery failed: {error}"),
        }
    }
    producer.close().await;
    drop(producer);
    drain(&mut consumer, &mut read, &mut errors).await;
    consumer.close().await;

    // In order, without gaps, from where the group committed (or from where the data ended,
    // when the damage took the committed records away).
    for pair in read.windows(2) {
        assert_eq!(
            pair[1].offset.0,
            pair[0].offset.0 + 1,
            "records out of order or with a gap"
        );
    }
    if committed < intact {
        let first = read.first().map(|record| record.offset.0);
        assert_eq!(
            first,
            Some(committed),
            "reading resumes at the committed offset (errors: {errors:?})"
        );
        assert!(
            read.len() as u64 >= intact - committed,
            "only {} of the {} intact records from offset {committed} came back (errors: {errors:?})",
            read.len(),
            intact - committed
        );
        for record in &read[..(intact - committed) as usize] {
            assert_eq!(
                record.payload, written[record.offset.0 as usize],
                "intact record {} came back changed",
                record.offset
            );
        }
    }
    if damaged_newest || !log_damaged {
        // The producer cut the damaged tail off and appended behind what was left: those
        // appends are part of the log and must be read.
        for (offset, payload) in &appended_at {
            if offset.0 < committed {
                continue;
            }
            let record = read
                .iter()
                .find(|record| record.offset == *offset)
                .unwrap_or_else(|| {
                    panic!("record appended at {offset} after recovery was not read (errors: {errors:?})")
                });
            assert_eq!(&record.payload, payload, "appended record {offset} changed");
        }
    }
}

/// Reads until a poll brings nothing new (or fails): what a consumer does between restarts.
async fn drain(
    consumer: &mut FileConsumer,
    read: &mut Vec<ConsumedRecord>,
    errors: &mut Vec<String>,
) {
    for _ in 0..MAX_POLLS {
        match consumer
            .poll(PollLimits::records(100), Duration::ZERO)
            .await
        {
            Ok(poll) => {
                let idle = poll.records.is_empty() && poll.assigned.is_empty();
                read.extend(poll.records);
                if idle {
                    return;
                }
            }
            Err(error) => {
                check_error(&error);
                errors.push(error.to_string());
                return;
            }
        }
    }
    panic!("the consumer returned records for {MAX_POLLS} polls: it is looping");
}

/// The errors a damaged queue may give: corruption named as such.
fn check_error(error: &ConsumeError) {
    assert!(
        matches!(error, ConsumeError::Corrupt { .. }),
        "a damaged segment gave an error other than corruption: {error:?}"
    );
}

/// The group reads through `next - 1` and commits `next`.
async fn commit_through(root: &Path, next: u64) {
    let mut consumer = FileConsumer::open(root, 1, GROUP, FileQueueMetrics::default())
        .await
        .expect("the consumer opens");
    let mut read = 0u64;
    for _ in 0..MAX_POLLS {
        if read >= next {
            break;
        }
        let poll = consumer
            .poll(PollLimits::records(100), Duration::ZERO)
            .await
            .expect("a healthy queue polls");
        read += poll.records.len() as u64;
    }
    assert!(read >= next, "a healthy queue returns every record");
    consumer
        .commit(&[(Partition(0), Offset(next))])
        .await
        .expect("a commit succeeds");
    consumer.close().await;
}

fn list_segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("the partition directory")
        .filter_map(|entry| {
            let path = entry.expect("a directory entry").path();
            let base = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()?;
            Some((base, path))
        })
        .collect();
    segments.sort();
    segments
}

fn damage(original: &[u8], damage: &[Damage]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for step in damage.iter().take(8) {
        match step {
            Damage::Flip { at, mask } => {
                if !bytes.is_empty() {
                    let at = *at as usize % bytes.len();
                    bytes[at] ^= mask;
                }
            }
            Damage::Truncate { at } => {
                let at = *at as usize % (bytes.len() + 1);
                bytes.truncate(at);
            }
            Damage::Append(garbage) => bytes.extend_from_slice(&garbage[..garbage.len().min(4096)]),
            Damage::Zero { at, len } => {
                if !bytes.is_empty() {
                    let at = *at as usize % bytes.len();
                    let end = (at + usize::from(*len)).min(bytes.len());
                    bytes[at..end].fill(0);
                }
            }
        }
    }
    bytes
}

/// The first byte position where `damaged` differs from `original` (a length change counts).
fn first_difference(original: &[u8], damaged: &[u8]) -> Option<usize> {
    let common = original.len().min(damaged.len());
    (0..common)
        .find(|&at| original[at] != damaged[at])
        .or((original.len() != damaged.len()).then_some(common))
}

/// Frames of a segment as `(end byte, is a record)`, parsed here independently of the queue.
fn frames(bytes: &[u8]) -> Vec<(usize, bool)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let end = at + 16 + len;
        assert!(end <= bytes.len(), "the producer wrote a whole frame");
        frames.push((end, len > 0));
        at = end;
    }
    assert_eq!(at, bytes.len(), "the producer wrote whole frames only");
    frames
}

/// True when a frame of the damaged segment overlaps the damage (not just bytes after the
/// last frame, which belong to no record).
fn frames_damaged(original: &[u8], first_damaged_byte: Option<usize>) -> bool {
    first_damaged_byte.is_some_and(|first| frames(original).iter().any(|(end, _)| *end > first))
}

/// Records whose frames lie wholly before the first damaged byte in log order: every record of
/// the segments before the damaged one, and those of the damaged segment before the damage;
/// the segments after it only if the damaged one kept all its frames (its seal included).
fn intact_records(
    segments: &[(u64, PathBuf)],
    damaged_index: usize,
    first_damaged_byte: Option<usize>,
    damaged_original: &[u8],
) -> u64 {
    let mut intact = 0;
    for (index, (_, path)) in segments.iter().enumerate() {
        let bytes = if index == damaged_index {
            damaged_original.to_vec()
        } else {
            std::fs::read(path).expect("read a segment")
        };
        for (end, is_record) in frames(&bytes) {
            if index == damaged_index && first_damaged_byte.is_some_and(|first| end > first) {
                return intact;
            }
            if is_record {
                intact += 1;
            }
        }
    }
    intact
}
