//! The ingest's spill in the HTTP suite: what the idle target (`ingest-kafka-spill`) reads of the
//! ingest's metrics, and the spill's own accept rate while Kafka is down
//! (`ingest-kafka-spill-outage`).
//!
//! An outage run starts a private broker (`hack/kafka.sh` on free ports, its state in the run's
//! directory), so the shared one is never stopped, and an ingest with a spill on a fresh topic.
//! It stops the broker (SIGTERM), sends single requests until the ingest's circuit in front of
//! Kafka is open (it opens on the first append Kafka fails, so an idle ingest needs one), runs
//! the load point's oha load against the spill, starts the broker again, waits until the
//! forwarder has brought the spill into Kafka, and drains the topic with the real consumer like
//! every ingest run. Every step has a deadline.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use metricstream_tests::kafka::PrivateBroker;

use super::{
    CLIENT_ID, LoadPoint, RunIngest, STOP_TIMEOUT, Suite, Target, get_text, kafka_queue_args,
    load_figures, prometheus_sample, spill_args,
};
use crate::results::{Measurement, peak_rss_mib};

/// Records made durable in the spill.
const SPILL_RECORDS: &str = "metricstream_spill_records_total";
/// 1 while the circuit in front of Kafka is open (the only label of the family is `state`).
const CIRCUIT_OPEN: &str = "metricstream_spill_circuit_state{state=\"open\"}";
/// Records in the spill not yet in Kafka.
const BACKLOG: &str = "metricstream_spill_backlog_records";
/// The longest the circuit may take to open once the broker is gone.
const CIRCUIT_OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one request that opens the circuit may take (its append waits until Kafka is
/// known to be unreachable, then goes to the spill).
const OPENING_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the ingest's metrics are read while waiting for the circuit or the forwarder.
const METRICS_POLL: Duration = Duration::from_millis(100);
/// The outage's spill limit: well above what the heaviest load point writes in a run (200
/// clients at the most, 100 metrics per request: about 6 KiB a record, some 730 MB in 10 s on
/// two cores), so the rate measured is the spill's and not that of refusals when it is full.
const OUTAGE_SPILL_MAX_BYTES: u64 = 4 << 30;

/// `metricstream_spill_records_total` of an ingest's exposition; an error if the ingest has no
/// spill.
pub(super) fn spilled_records(exposition: &str) -> anyhow::Result<f64> {
    prometheus_sample(exposition, SPILL_RECORDS)
        .with_context(|| format!("no {SPILL_RECORDS} in the ingest's /metrics: is the spill on?"))
}

/// The requests sent to open the circuit.
struct Opening {
    accepted: u64,
    refused: u64,
    secs: f64,
}

impl Suite {
    pub(super) async fn run_spill_outage(
        &self,
        dir: &Path,
        point: &LoadPoint,
    ) -> anyhow::Result<Measurement> {
        let broker = PrivateBroker::try_up(dir.join("kafka"), dir.join("logs"))
            .await
            .map_err(anyhow::Error::msg)
            .context("starting a private broker")?;
        let queue_args = kafka_queue_args(broker.bootstrap());
        let mut ingest_args = vec!["--kafka-create-topic".to_owned()];
        ingest_args.extend(spill_args(dir));
        ingest_args.extend([
            "--spill-max-bytes".to_owned(),
            OUTAGE_SPILL_MAX_BYTES.to_string(),
        ]);
        let RunIngest {
            process: ingest,
            listen,
            admin,
        } = self
            .start_run_ingest(dir, &queue_args, &ingest_args)
            .await?;
        let metrics_url = format!("http://{admin}/metrics");

        broker
            .try_stop_broker(false)
            .await
            .map_err(anyhow::Error::msg)
            .context("stopping the private broker")?;
        let opening = self.open_circuit(listen, &metrics_url, point).await?;
        let load = self.load(point, &format!("http://{listen}/metrics"))?;
        let summary = load.run(&self.oha).await?;
        let mut figures = load_figures(&summary, point.metrics_per_request, "metrics_per_sec");
        figures.insert("rss_peak_mib".to_owned(), peak_rss_mib(ingest.pid()?)?);
        let exposition = get_text(&self.http, &metrics_url).await?;
        figures.insert("spill_records".to_owned(), spilled_records(&exposition)?);
        for (figure, series) in [
            ("spill_bytes", "metricstream_spill_bytes_total"),
            (
                "spill_full_refusals",
                "metricstream_spill_full_refusals_total",
            ),
        ] {
            if let Some(value) = prometheus_sample(&exposition, series) {
                figures.insert(figure.to_owned(), value);
            }
        }
        figures.insert("circuit_open_secs".to_owned(), opening.secs);
        figures.insert("opening_requests".to_owned(), opening.accepted as f64);

        broker
            .try_start_broker()
            .await
            .map_err(anyhow::Error::msg)
            .context("starting the private broker again")?;
        let forward_secs = self.wait_for_forwarding(&metrics_url).await?;
        figures.insert("forward_secs".to_owned(), forward_secs);
        // Kafka's acknowledgements (of both of the ingest's producers) beside the forwarder's:
        // more acknowledged than forwarded is a record the direct producer still held when the
        // circuit opened and delivered once the broker was back, besides its spilled copy.
        let exposition = get_text(&self.http, &metrics_url).await?;
        for (figure, series) in [
            (
                "replayed_records",
                "metricstream_spill_replayed_records_total",
            ),
            (
                "kafka_acked_records",
                "metricstream_kafka_acked_records_total",
            ),
        ] {
            if let Some(value) = prometheus_sample(&exposition, series) {
                figures.insert(figure.to_owned(), value);
            }
        }
        ingest.terminate(STOP_TIMEOUT).await?;

        let acknowledged =
            (summary.accepted() + opening.accepted) * u64::from(point.metrics_per_request);
        let refused = summary.errors() + opening.refused;
        figures.extend(
            self.drain_and_count(dir, queue_args, acknowledged, refused)
                .await?,
        );
        // Dropping the broker runs `hack/kafka.sh down`.
        drop(broker);
        Ok(point.measurement(Target::IngestKafkaSpillOutage, figures, &load))
    }

    /// Sends the load point's request, one at a time, until the ingest's circuit in front of
    /// Kafka is open; fails after [`CIRCUIT_OPEN_TIMEOUT`].
    async fn open_circuit(
        &self,
        listen: SocketAddr,
        metrics_url: &str,
        point: &LoadPoint,
    ) -> anyhow::Result<Opening> {
        let body_path = self
            .bodies
            .get(&point.metrics_per_request)
            .with_context(|| format!("no body of {} metrics", point.metrics_per_request))?;
        let body =
            std::fs::read(body_path).with_context(|| format!("reading {}", body_path.display()))?;
        let url = format!("http://{listen}/metrics");
        let started = Instant::now();
        let mut opening = Opening {
            accepted: 0,
            refused: 0,
            secs: 0.0,
        };
        loop {
            let exposition = get_text(&self.http, metrics_url).await?;
            if prometheus_sample(&exposition, CIRCUIT_OPEN) == Some(1.0) {
                opening.secs = started.elapsed().as_secs_f64();
                return Ok(opening);
            }
            if started.elapsed() > CIRCUIT_OPEN_TIMEOUT {
                bail!(
                    "the spill's circuit did not open within {CIRCUIT_OPEN_TIMEOUT:?} of the \
                     broker's stop ({} requests accepted, {} refused meanwhile)",
                    opening.accepted,
                    opening.refused
                );
            }
            let answer = self
                .http
                .post(&url)
                .header("Authorization", CLIENT_ID)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .timeout(OPENING_REQUEST_TIMEOUT)
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => opening.accepted += 1,
                _ => opening.refused += 1,
            }
            tokio::time::sleep(METRICS_POLL).await;
        }
    }

    /// Waits until the spill is empty (the forwarder has had every record acknowledged by
    /// Kafka); returns the seconds it took, fails after `--drain-timeout-secs`.
    async fn wait_for_forwarding(&self, metrics_url: &str) -> anyhow::Result<f64> {
        let started = Instant::now();
        let timeout = Duration::from_secs(self.args.drain_timeout_secs);
        loop {
            let exposition = get_text(&self.http, metrics_url).await?;
            let backlog = prometheus_sample(&exposition, BACKLOG)
                .with_context(|| format!("no {BACKLOG} in the ingest's /metrics"))?;
            if backlog == 0.0 {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > timeout {
                bail!(
                    "the spill still held {backlog} records {timeout:?} after the broker returned"
                );
            }
            tokio::time::sleep(METRICS_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_state_and_the_spilled_records_are_read_from_the_exposition() {
        let exposition = "# TYPE metricstream_spill_circuit_state gauge\n\
            metricstream_spill_circuit_state{state=\"closed\"} 0\n\
            metricstream_spill_circuit_state{state=\"open\"} 1\n\
            metricstream_spill_circuit_state{state=\"half_open\"} 0\n\
            metricstream_spill_records_total 42\n";
        assert_eq!(prometheus_sample(exposition, CIRCUIT_OPEN), Some(1.0));
        assert_eq!(spilled_records(exposition).expect("spilled records"), 42.0);
        assert!(spilled_records("metricstream_kafka_acked_records_total 1\n").is_err());
    }
}
