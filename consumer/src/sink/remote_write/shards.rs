//! Sending a batch's requests several at a time: the series are split into `--sink-concurrency`
//! shards by their labels (`series::gather_requests`), and each shard's requests go one after
//! another from a thread of its own, so the shards overlap their waits for the store while a
//! series' samples still reach it in order (a store such as Prometheus refuses a sample older
//! than its series' newest).
//!
//! Memory stays bounded: a shard holds the request it is sending and at most one more waiting;
//! gathering waits when both are taken. The first failure stops the batch: its shard's sender
//! stops, gathering stops at that shard's next request, the other senders finish what they hold,
//! and the failure is the batch's error (the pipeline retries the whole batch).

use std::sync::mpsc::sync_channel;

use metricstream_backend::codec::MetricRef;

use super::series::{Origin, PendingRequest, gather_requests};
use crate::sink::{SinkError, SinkRecord};

/// Gathers `records` into requests of at most `max` samples over `shards` shards and sends them
/// with `deliver` (which returns the samples it stored), at most `shards` at once; returns the
/// samples stored. Metrics without a timestamp go to `unsendable`, on the calling thread.
pub(super) fn send_sharded(
    records: &[SinkRecord],
    max: usize,
    shards: usize,
    deliver: impl Fn(PendingRequest) -> Result<u64, SinkError> + Sync,
    unsendable: impl FnMut(Origin, &MetricRef<'_, '_>) -> Result<(), SinkError>,
) -> Result<u64, SinkError> {
    let shards = shards.max(1);
    if shards == 1 {
        // No thread for a single shard: the requests go one after another from here.
        let mut stored = 0;
        gather_requests(
            records,
            max,
            1,
            |_, request| {
                stored += deliver(request)?;
                Ok(())
            },
            unsendable,
        )?;
        return Ok(stored);
    }
    std::thread::scope(|scope| {
        let deliver = &deliver;
        let (queues, senders): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| {
                let (queue, requests) = sync_channel::<PendingRequest>(1);
                let sender = scope.spawn(move || {
                    let mut stored = 0;
                    for request in requests {
                        stored += deliver(request)?;
                    }
                    Ok::<u64, SinkError>(stored)
                });
                (queue, sender)
            })
            .unzip();
        let gathered = gather_requests(
            records,
            max,
            shards,
            |shard, request| {
                queues[shard].send(request).map_err(|_| {
                    // Its sender stopped on a failure, which is the error that matters.
                    SinkError::Store(format!("shard {shard}'s sender stopped"))
                })
            },
            unsendable,
        );
        // The senders end once their queues are closed and empty.
        drop(queues);
        let mut stored = 0;
        let mut failure = None;
        for sender in senders {
            match sender.join() {
                Ok(Ok(count)) => stored += count,
                Ok(Err(error)) => {
                    // Prefer an error that says when to retry (the circuit opened).
                    if failure
                        .as_ref()
                        .is_none_or(|first: &SinkError| first.retry_in().is_none())
                    {
                        failure = Some(error);
                    }
                }
                Err(_) => {
                    failure = Some(SinkError::Store(
                        "a remote-write sender panicked".to_owned(),
                    ))
                }
            }
        }
        match (failure, gathered) {
            (Some(error), _) | (None, Err(error)) => Err(error),
            (None, Ok(())) => Ok(stored),
        }
    })
}
