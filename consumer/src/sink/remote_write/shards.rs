//! Sending a batch's requests several at a time: the batch's records are split into
//! `--sink-concurrency` shards by their queue partition, and each shard is converted, encoded and
//! sent by a thread of its own, its requests one after another. So the shards overlap their
//! waits for the store (and their encoding), while each partition's samples still reach the store
//! in the order the queue holds them: a client's metrics are all in one partition, so its series
//! stay in order (a store such as Prometheus refuses a sample older than its series' newest).
//!
//! Each shard holds one request at a time, as a single sender does, and frees what it made on its
//! own thread. The first failure stops the batch: the other shards stop before their next request,
//! and the failure is the batch's error (the pipeline retries the whole batch).

use std::sync::atomic::{AtomicBool, Ordering};

use metricstream_backend::codec::MetricRef;

use super::series::{Origin, PendingRequest, gather_requests};
use crate::sink::{SinkError, SinkRecord};

/// Sends `records` in requests of at most `max` samples with `deliver` (which returns the samples
/// it stored), `shards` partitions' worth at once; returns the samples stored and what
/// `unsendable` made of each metric without a timestamp.
pub(super) fn send_sharded<T: Send>(
    records: &[SinkRecord],
    max: usize,
    shards: usize,
    deliver: impl Fn(PendingRequest) -> Result<u64, SinkError> + Sync,
    unsendable: impl Fn(Origin, &MetricRef<'_, '_>) -> T + Sync,
) -> Result<(u64, Vec<T>), SinkError> {
    let shards = shards.max(1);
    let mut by_shard: Vec<Vec<SinkRecord>> = vec![Vec::new(); shards];
    for record in records {
        by_shard[record.partition.0 as usize % shards].push(record.clone());
    }
    by_shard.retain(|records| !records.is_empty());
    let failed = AtomicBool::new(false);
    let send_shard = |records: &[SinkRecord]| -> Result<(u64, Vec<T>), SinkError> {
        let mut stored = 0;
        let mut set_aside = Vec::new();
        let sent = gather_requests(
            records,
            max,
            |request| {
                if failed.load(Ordering::Acquire) {
                    return Err(SinkError::Store("another shard failed".to_owned()));
                }
                stored += deliver(request)?;
                Ok(())
            },
            |origin, metric| {
                set_aside.push(unsendable(origin, metric));
                Ok(())
            },
        );
        if sent.is_err() {
            failed.store(true, Ordering::Release);
        }
        sent.map(|()| (stored, set_aside))
    };
    let results: Vec<Result<(u64, Vec<T>), SinkError>> = match by_shard.as_slice() {
        // One shard needs no thread.
        [only] => vec![send_shard(only)],
        _ => std::thread::scope(|scope| {
            let senders: Vec<_> = by_shard
                .iter()
                .map(|records| scope.spawn(|| send_shard(records)))
                .collect();
            senders
                .into_iter()
                .map(|sender| {
                    sender.join().unwrap_or_else(|_| {
                        Err(SinkError::Store(
                            "a remote-write sender panicked".to_owned(),
                        ))
                    })
                })
                .collect()
        }),
    };
    let mut stored = 0;
    let mut set_aside = Vec::new();
    let mut failure: Option<SinkError> = None;
    for result in results {
        match result {
            Ok((count, lines)) => {
                stored += count;
                set_aside.extend(lines);
            }
            // The shard that failed first says why; "another shard failed" says nothing, and an
            // error with the time until the circuit's probe says the most.
            Err(error) => {
                let better = match &failure {
                    None => true,
                    Some(SinkError::Store(reason)) if reason == "another shard failed" => true,
                    Some(first) => first.retry_in().is_none() && error.retry_in().is_some(),
                };
                if better {
                    failure = Some(error);
                }
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok((stored, set_aside)),
    }
}
