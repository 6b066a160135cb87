//! The forwarder: appends the spill's records to Kafka, each partition in spill order (the order
//! the replay identities rely on) through a producer of its own, partitions side by side, and
//! commits its position in the spill after what Kafka acknowledged. It is also the circuit's
//! probe: once the circuit lets one record through, the first acknowledgement closes it.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Shared, record};
use crate::circuit::CircuitState;
use crate::file::FileConsumer;
use crate::kafka::PendingAck;
use crate::model::{Offset, Partition};
use crate::queue::{AppendError, ConsumedRecord, PollLimits, QueueConsumer, QueueProducer};

/// How often an idle forwarder looks at the circuit and the backlog.
const TICK: Duration = Duration::from_millis(50);
/// The most spilled records read at once.
const POLL_RECORDS: usize = 4096;
/// The most records of one partition handed to Kafka before waiting for their answers.
const WINDOW: usize = 512;

/// What forwarding one partition's records achieved.
struct Forwarded {
    partition: Partition,
    /// One past the last record dealt with, if any.
    next: Option<Offset>,
    forwarded: u64,
    /// The records not dealt with yet, in order.
    rest: VecDeque<ConsumedRecord>,
    /// Why Kafka did not take a record, when it did not.
    failure: Option<String>,
}

pub(super) async fn run(shared: Arc<Shared>, mut consumer: FileConsumer, stop: CancellationToken) {
    // Records read from the spill and not yet forwarded, per partition: the file consumer reads
    // on from where it is, so what one round could not forward is kept here for the next.
    let mut held: BTreeMap<Partition, VecDeque<ConsumedRecord>> = BTreeMap::new();
    while !stop.is_cancelled() {
        let permit = shared.change_circuit(|breaker| breaker.circuit.permit(Instant::now()));
        let probing = match permit {
            Err(wait) => {
                pause(&stop, wait.min(TICK)).await;
                continue;
            }
            Ok(transition) => {
                shared.note(transition, "");
                shared.breaker().circuit.state() == CircuitState::HalfOpen
            }
        };
        let backlog = shared
            .backlog_records
            .load(std::sync::atomic::Ordering::Acquire);
        if held.is_empty() && backlog == 0 {
            if probing {
                // Nothing to forward: Kafka's own view of the cluster is the probe.
                match shared.forward_kafka.readiness() {
                    Ok(()) => shared.kafka_succeeded(),
                    Err(reason) => shared.kafka_failed(&reason),
                }
            }
            pause(&stop, TICK).await;
            continue;
        }
        if held.is_empty() {
            match consumer
                .poll(
                    PollLimits::records(POLL_RECORDS),
                    Duration::from_millis(100),
                )
                .await
            {
                Ok(poll) => {
                    for record in poll.records {
                        held.entry(record.partition).or_default().push_back(record);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the spill failed; retrying");
                    pause(&stop, TICK).await;
                    continue;
                }
            }
            if held.is_empty() {
                // Spilled records still on their way to disk.
                continue;
            }
        }
        let rounds = forward_round(&shared, &mut held, probing).await;
        let mut positions = Vec::new();
        let mut failure = None;
        let mut forwarded = 0;
        for round in rounds {
            if let Some(next) = round.next {
                positions.push((round.partition, next));
            }
            forwarded += round.forwarded;
            if !round.rest.is_empty() {
                held.insert(round.partition, round.rest);
            }
            failure = failure.or(round.failure);
        }
        if !positions.is_empty()
            && let Err(error) = consumer.commit(&positions).await
        {
            // Forwarded but not committed: the next process sends them again, and the consumer
            // drops the second copies by their identity.
            tracing::warn!(%error, "committing the spill's forwarded position failed");
        }
        match failure {
            Some(reason) => shared.kafka_failed(&reason),
            None if probing && forwarded > 0 => shared.kafka_succeeded(),
            None => {}
        }
    }
    consumer.close().await;
}

/// Forwards the held records, partitions side by side; a probe forwards a single record.
async fn forward_round(
    shared: &Arc<Shared>,
    held: &mut BTreeMap<Partition, VecDeque<ConsumedRecord>>,
    probing: bool,
) -> Vec<Forwarded> {
    let mut tasks = JoinSet::new();
    let partitions: Vec<Partition> = if probing {
        held.keys().next().copied().into_iter().collect()
    } else {
        held.keys().copied().collect()
    };
    let limit = if probing { 1 } else { u64::MAX };
    for partition in partitions {
        let Some(records) = held.remove(&partition) else {
            continue;
        };
        tasks.spawn(forward_partition(shared.clone(), partition, records, limit));
    }
    let mut rounds = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(round) => rounds.push(round),
            // A panicked task's records are read again from the committed position after a
            // restart; nothing is lost, and the circuit is told.
            Err(error) => tracing::error!(%error, "a spill forwarding task failed"),
        }
    }
    rounds
}

async fn forward_partition(
    shared: Arc<Shared>,
    partition: Partition,
    mut records: VecDeque<ConsumedRecord>,
    limit: u64,
) -> Forwarded {
    let mut round = Forwarded {
        partition,
        next: None,
        forwarded: 0,
        rest: VecDeque::new(),
        failure: None,
    };
    // Hand a window of records to the forwarder's producer in spill order, then wait for their
    // acknowledgements in the same order. Its records never time out in librdkafka, so one it
    // has not delivered yet stays queued ahead of everything sent after it: whatever is sent
    // again later can only arrive behind it, as a second copy the consumer drops.
    let window = (limit.min(WINDOW as u64)) as usize;
    let mut pending = VecDeque::with_capacity(window);
    for spilled in records.iter().take(window) {
        match record::open_envelope(&spilled.payload) {
            Err(reason) => pending.push_back(Pending::Unreadable(reason)),
            Ok((identity, payload)) => {
                match shared
                    .forward_kafka
                    .enqueue(partition, &payload, Some(identity))
                {
                    Ok(ack) => pending.push_back(Pending::Sent(ack, payload.len() as u64)),
                    Err(error) => {
                        pending.push_back(Pending::Refused(error));
                        break;
                    }
                }
            }
        }
    }
    for outcome in pending {
        let Some(spilled) = records.front() else {
            break;
        };
        match outcome {
            Pending::Unreadable(reason) => {
                if let Err(error) = quarantine(&shared, spilled, &reason) {
                    // Kept in the spill, uncommitted, until it can be kept aside.
                    tracing::error!(
                        partition = partition.0,
                        offset = spilled.offset.0,
                        %reason,
                        %error,
                        "a spilled record cannot be read back, and keeping it in quarantine failed"
                    );
                    break;
                }
            }
            Pending::Sent(ack, bytes) => match ack.acknowledged().await {
                Ok(_) => {
                    shared.metrics.replayed_records.inc();
                    shared.metrics.replayed_bytes.inc_by(bytes);
                    round.forwarded += 1;
                }
                Err(error) => {
                    round.failure = Some(error.to_string());
                    break;
                }
            },
            // Kafka's buffer is full of direct records: not a failure of Kafka's; try again
            // next round.
            Pending::Refused(AppendError::Saturated) => {
                tokio::time::sleep(TICK).await;
                break;
            }
            Pending::Refused(error) => {
                round.failure = Some(error.to_string());
                break;
            }
        }
        let len = spilled.payload.len() as u64;
        round.next = Some(spilled.offset.next());
        shared.forget_backlog(partition, 1, len);
        records.pop_front();
    }
    round.rest = records;
    round
}

/// A record of a window, handed over or not.
enum Pending {
    Sent(PendingAck, u64),
    Refused(AppendError),
    Unreadable(String),
}

/// Keeps a spilled record that cannot be read back in `<spill>/quarantine/`, durably, and
/// goes on: it is counted and logged, never silently dropped. Until that works, the record
/// stays in the spill.
fn quarantine(shared: &Shared, spilled: &ConsumedRecord, reason: &str) -> std::io::Result<()> {
    let name = format!(
        "partition-{:04}-offset-{:020}.bin",
        spilled.partition.0, spilled.offset.0
    );
    let path = shared.quarantine_dir.join(name);
    write_durably(&shared.quarantine_dir, &path, &spilled.payload)?;
    tracing::error!(
        partition = spilled.partition.0,
        offset = spilled.offset.0,
        %reason,
        path = %path.display(),
        "a spilled record cannot be read back; kept in quarantine"
    );
    shared.metrics.quarantined_records.inc();
    Ok(())
}

fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(path, bytes)?;
    std::fs::File::open(path)?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
}
