//! Asks the running consumer pods of a stream how their sink does: `GET /readyz` on each pod's
//! admin port, concurrently, each bounded by [`ASK_TIMEOUT`], at most [`MAX_ASKED`] pods
//! (the not-ready ones first: they are the ones with something to say). The answers become a
//! [`SinkObservation`], which the status step turns into `SinkAvailable`.
//!
//! Why ask the pods rather than read their readiness: a pod's Ready condition says only that
//! its probe failed, never why; the consumer's `/readyz` body says whether the sink or the queue
//! fails, and with what error. The NetworkPolicy of the consumers admits the operator's
//! namespace to the admin port for this (`build::network`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::build::ADMIN_PORT;
use super::status::{ConsumerReport, SinkObservation};

/// The longest wait for one pod's answer: a reconcile waits this long at most for all of them.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most pods asked per reconcile: the sink is shared, so a few tell what all see.
pub const MAX_ASKED: usize = 16;
/// Most bytes of an answer read (the consumer's are one line).
const MAX_ANSWER_BYTES: usize = 4096;

/// The HTTP client that asks the consumers.
#[derive(Clone, Debug)]
pub struct SinkProbe {
    http: reqwest::Client,
    port: u16,
}

impl SinkProbe {
    /// Asks the consumers on their admin port.
    pub fn new() -> anyhow::Result<Self> {
        Self::on_port(ADMIN_PORT as u16)
    }

    /// Asks on `port` (tests run a consumer's admin listener on a free port).
    pub fn on_port(port: u16) -> anyhow::Result<Self> {
        // Plain HTTP to pod IPs, no proxy: the same client the file lag is read with.
        let http = crate::lag::file::http_client(ASK_TIMEOUT)?;
        Ok(Self { http, port })
    }

    /// What the running pods among `pods` (the stream's consumer pods) say; `wanted` is the
    /// number of consumers the spec asks for.
    pub async fn observe(&self, wanted: i32, pods: &[&Pod]) -> SinkObservation {
        let (running, targets) = targets(pods);
        let reports = join_all(targets.into_iter().map(|(pod, ip)| async move {
            let report = self.ask(ip).await;
            (pod, report)
        }))
        .await;
        SinkObservation {
            wanted,
            running,
            reports,
        }
    }

    /// One pod's answer.
    pub async fn ask(&self, ip: IpAddr) -> ConsumerReport {
        let url = format!("http://{}/readyz", SocketAddr::new(ip, self.port));
        let mut response = match self.http.get(&url).send().await {
            Ok(response) => response,
            Err(error) => return ConsumerReport::Unreachable(describe(&error)),
        };
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) => return ConsumerReport::Unreachable(describe(&error)),
            }
        }
        body.truncate(MAX_ANSWER_BYTES);
        ConsumerReport::of_answer(status, &String::from_utf8_lossy(&body))
    }
}

/// reqwest's own text says only "error sending request"; the cause says what happened.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s", ASK_TIMEOUT.as_secs());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// The running pods (phase Running, not being deleted, with an IP) and the ones to ask: not
/// ready first, then by name, at most [`MAX_ASKED`].
pub(crate) fn targets(pods: &[&Pod]) -> (usize, Vec<(String, IpAddr)>) {
    let mut running: Vec<(bool, String, IpAddr)> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            if status.phase.as_deref() != Some("Running") {
                return None;
            }
            let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Some((ready, pod.name_any(), ip))
        })
        .collect();
    running.sort();
    let count = running.len();
    let asked = running
        .into_iter()
        .take(MAX_ASKED)
        .map(|(_, name, ip)| (name, ip))
        .collect();
    (count, asked)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use metricstream_service::{Readiness, serve_admin};
    use prometheus_client::registry::Registry;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn pod(name: &str, phase: &str, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "status": {
                "phase": phase,
                "podIP": ip,
                "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            }
        }))
        .expect("a pod")
    }

    #[test]
    fn only_running_pods_with_an_address_are_asked_the_unready_first() {
        let pods = [
            pod("c-a", "Running", Some("10.0.0.1"), true),
            pod("c-b", "Running", Some("10.0.0.2"), false),
            pod("c-c", "Pending", None, false),
            pod("c-d", "Running", None, false),
            pod("c-e", "Running", Some("fd00::5"), true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let (running, asked) = targets(&refs);
        assert_eq!(running, 3);
        let names: Vec<&str> = asked.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["c-b", "c-a", "c-e"]);

        let many: Vec<Pod> = (0..40)
            .map(|i| pod(&format!("c-{i:02}"), "Running", Some("10.0.0.9"), true))
            .collect();
        let refs: Vec<&Pod> = many.iter().collect();
        let (running, asked) = targets(&refs);
        assert_eq!((running, asked.len()), (40, MAX_ASKED));
    }

    /// A free loopback port (the listener is dropped; the admin listener binds it next).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port")
    }

    /// The real admin listener the consumer serves, with its readiness in our hands, asked
    /// through the probe as the operator asks a pod.
    #[tokio::test]
    async fn the_probe_reads_what_a_consumers_admin_listener_says() {
        let port = free_port();
        let state: Arc<Mutex<Result<(), String>>> = Arc::new(Mutex::new(Ok(())));
        let readiness: Readiness = {
            let state = state.clone();
            Arc::new(move || state.lock().expect("lock").clone())
        };
        let shutdown = CancellationToken::new();
        let admin = serve_admin(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Arc::new(Registry::default()),
            readiness,
            shutdown.clone(),
        )
        .await
        .expect("the admin listener starts");
        let probe = SinkProbe::on_port(port).expect("a client");
        let loopback: IpAddr = [127, 0, 0, 1].into();

        assert_eq!(probe.ask(loopback).await, ConsumerReport::Ready);
        *state.lock().expect("lock") =
            Err("the sink is failing: the store answered 401 Unauthorized".into());
        assert_eq!(
            probe.ask(loopback).await,
            ConsumerReport::SinkFailing("the store answered 401 Unauthorized".into())
        );
        *state.lock().expect("lock") = Err("the queue is failing: I/O error".into());
        assert_eq!(
            probe.ask(loopback).await,
            ConsumerReport::NotReady("the queue is failing: I/O error".into())
        );
        let pods = [pod("c-0", "Running", Some("127.0.0.1"), false)];
        let observed = probe.observe(1, &pods.iter().collect::<Vec<_>>()).await;
        assert_eq!(observed.running, 1);
        assert_eq!(
            observed.reports,
            [(
                "c-0".to_owned(),
                ConsumerReport::NotReady("the queue is failing: I/O error".into())
            )]
        );

        shutdown.cancel();
        admin.await.expect("the listener stops");
        match probe.ask(loopback).await {
            ConsumerReport::Unreachable(why) => {
                assert!(why.to_lowercase().contains("refused"), "{why}")
            }
            other => panic!("nothing listens any more, yet {other:?}"),
        }
    }
}
