//! A consumer group's lag on a file queue, from the consumer pods' `/metrics`.
//!
//! The operator cannot read the queue's volume; every consumer pod can, and measures every
//! partition of it, owned or not (`backend/src/file/lag.rs`), as
//! `metricstream_queue_group_lag_records{group,partition}`. So any one answering pod tells the
//! whole queue's lag, including partitions whose owner is gone. The pods are asked at once;
//! per partition the largest figure wins (a pod that refreshed later saw more records).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::exposition::partition_values;
use super::{LagError, PartitionLag, StreamLag};
use crate::text::head;

/// The gauge every file-backend consumer exports for every partition.
pub const GROUP_LAG_METRIC: &str = "metricstream_queue_group_lag_records";
/// Most bytes of one pod's `/metrics` read (1024 partitions take well under 1 MiB).
const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;
/// Longest text of all the pods' failures in an error.
const MAX_FAILURES_CHARS: usize = 600;

/// A plain-HTTP client whose every request ends within `timeout`.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a TLS provider of its own (ring, not aws-lc-rs: see the
    // workspace's Cargo.toml) and panics building a client without one, even for plain HTTP:
    // this one trusts nothing. The sink probe uses it too.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        // Pod IPs are never reached through an HTTP proxy from the environment.
        .no_proxy()
        .build()?)
}

/// The lag of `group` on partitions `0..partitions`, from whichever of `metrics_urls` answer.
pub async fn file_lag(
    http: &reqwest::Client,
    metrics_urls: &[String],
    group: &str,
    partitions: u32,
) -> Result<StreamLag, LagError> {
    if metrics_urls.is_empty() {
        return Err(LagError::NoConsumerAnswered(
            "no consumer pod to ask".into(),
        ));
    }
    let answers = join_all(metrics_urls.iter().map(|url| async move {
        let answer = ask(http, url, group).await;
        (url, answer)
    }))
    .await;
    let mut merged: BTreeMap<u32, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut answered = false;
    for (url, answer) in answers {
        match answer {
            Ok(values) => {
                answered = true;
                for (partition, records) in values {
                    let entry = merged.entry(partition).or_insert(0);
                    *entry = (*entry).max(records);
                }
            }
            Err(reason) => failures.push(format!("{url}: {reason}")),
        }
    }
    if !answered {
        return Err(LagError::NoConsumerAnswered(head(
            &failures.join("; "),
            MAX_FAILURES_CHARS,
        )));
    }
    if !failures.is_empty() {
        tracing::debug!(failures = %failures.join("; "), "some consumer pods did not report the lag");
    }
    let missing: Vec<u32> = (0..partitions)
        .filter(|partition| !merged.contains_key(partition))
        .collect();
    if !missing.is_empty() {
        return Err(LagError::MissingPartitions(missing));
    }
    Ok(StreamLag::from_partitions(
        merged
            .into_iter()
            // A queue grown past the stream's count keeps its partitions (it never shrinks),
            // but the stream's consumers are sized for the count it asks for.
            .filter(|(partition, _)| *partition < partitions)
            .map(|(partition, records)| PartitionLag { partition, records })
            .collect(),
    ))
}

/// One pod's figures, or why it gave none.
async fn ask(http: &reqwest::Client, url: &str, group: &str) -> Result<BTreeMap<u32, u64>, String> {
    let mut response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_METRICS_BYTES {
            return Err(format!("more than {MAX_METRICS_BYTES} bytes of metrics"));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| "metrics that are not UTF-8".to_owned())?;
    partition_values(&text, GROUP_LAG_METRIC, group)
}
