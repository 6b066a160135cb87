//! The store's own ceiling: the backlog's samples sent by this process straight to the store's
//! remote-write endpoint, encoded before the clock starts, so only the store's work (and the
//! loopback HTTP) is timed.

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use metricstream_backend::remote_write_proto::{one_sample_series, v1};
use metricstream_backend::{Metric, MetricBatch};
use prost::Message;

use crate::backend::record::client_per_partition;
use crate::drain::fill::MakeBatch;

/// The remote-write 1.0 bodies of the whole backlog, in record order.
pub(super) struct Requests {
    pub bodies: Vec<Bytes>,
    pub samples: u64,
}

impl Requests {
    pub fn bytes(&self) -> u64 {
        self.bodies.iter().map(|body| body.len() as u64).sum()
    }
}

/// A metric as the consumer's remote-write sink sends it (docs/sink.md, the backend's
/// [`one_sample_series`]). `None` without a timestamp (the sink dead-letters those; the backlog
/// has none).
fn to_series(metric: &Metric) -> Option<v1::TimeSeries> {
    Some(one_sample_series(
        &metric.name,
        metric
            .tags
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
        metric.value,
        metric.timestamp?,
    ))
}

fn encode(timeseries: Vec<v1::TimeSeries>) -> anyhow::Result<Bytes> {
    let body = v1::WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&body)
        .context("snappy compression")?;
    Ok(Bytes::from(compressed))
}

/// The samples of `records` records made by `make_batch` (round-robin over `partitions`, as the
/// fill made them), in requests of at most `samples_per_request` samples filled across records,
/// as the sink gathers a batch.
pub(super) fn encode_requests(
    records: u64,
    metrics_per_record: u32,
    partitions: u32,
    samples_per_request: u32,
    make_batch: MakeBatch,
) -> anyhow::Result<Requests> {
    let clients = client_per_partition(partitions);
    let max = samples_per_request.max(1) as usize;
    let mut bodies = Vec::new();
    let mut pending = Vec::with_capacity(max);
    let mut samples = 0u64;
    for seq in 0..records {
        let partition = (seq % u64::from(partitions)) as usize;
        let MetricBatch { metrics, .. } = make_batch(&clients[partition], metrics_per_record, seq);
        for metric in &metrics {
            let series = to_series(metric)
                .with_context(|| format!("record {seq} holds a metric without a timestamp"))?;
            pending.push(series);
            samples += 1;
            if pending.len() >= max {
                bodies.push(encode(std::mem::take(&mut pending))?);
            }
        }
    }
    if !pending.is_empty() {
        bodies.push(encode(pending)?);
    }
    Ok(Requests { bodies, samples })
}

/// POSTs every body to `url` with the remote-write 1.0 headers, `concurrency` requests in
/// flight; every answer must be a `2xx`.
pub(super) async fn send_all(
    client: &reqwest::Client,
    url: &str,
    requests: &Requests,
    concurrency: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(requests.bodies.iter().enumerate())
        .map(|(number, body)| async move {
            let response = client
                .post(url)
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body.clone())
                .send()
                .await
                .with_context(|| format!("sending request {number} to {url}"))?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                anyhow::bail!("request {number}: {url} answered {status}: {text:.300}");
            }
            Ok(())
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::record::scrape_batch;

    #[test]
    fn requests_hold_every_sample_once_in_bounded_requests() {
        let requests = encode_requests(7, 3, 2, 5, scrape_batch).expect("encodes");
        assert_eq!(requests.samples, 21);
        assert_eq!(
            requests.bodies.len(),
            5,
            "21 samples in requests of at most 5"
        );
        let mut seen = Vec::new();
        for body in &requests.bodies {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(body)
                .expect("snappy");
            let request = v1::WriteRequest::decode(raw.as_slice()).expect("a WriteRequest");
            assert!(request.timeseries.len() <= 5);
            for series in request.timeseries {
                let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
                assert_eq!(names, ["__name__", "host", "region"]);
                let host = series.labels[1].value.clone();
                seen.push((host, series.samples[0].timestamp));
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            21,
            "every (series, timestamp) distinct: {seen:?}"
        );
    }
}
