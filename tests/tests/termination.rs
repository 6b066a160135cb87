//! The ingest's termination path as a rolling update sees it: on SIGTERM it answers `/readyz`
//! with 503 at once but keeps serving for `--shutdown-delay`, so that clients still routed to it
//! while the load balancer catches up are answered, not refused; then it drains and exits 0 with
//! every acknowledged metric in the queue. A second SIGTERM cuts the delay short.

use std::time::{Duration, Instant};

use metricstream_tests::{
    AcknowledgedRequest, DRAIN_TIMEOUT, LoadSpec, STOP_TIMEOUT, Service, ServiceSpec, TestDir,
    assert_settled_exactly_once, request_body, run_load, start_load, wait_for_sink,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The delay the first test runs with.
const SHUTDOWN_DELAY: Duration = Duration::from_secs(3);
/// How long clients keep coming after `/readyz` turned 503, as if kube-proxy had not caught up
/// yet; well inside [`SHUTDOWN_DELAY`].
const LOAD_BALANCER_LAG: Duration = Duration::from_millis(1500);
/// How soon after SIGTERM `/readyz` must answer 503 (a loaded machine included).
const NOT_READY_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn ingest_keeps_serving_while_not_ready_then_drains_and_exits_cleanly() {
    let dir = TestDir::new("termination-delay");
    let consumer_spec = ServiceSpec::consumer(&dir, "consumer");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest").env(
        "METRICSTREAM_SHUTDOWN_DELAY",
        SHUTDOWN_DELAY.as_secs().to_string(),
    );
    let mut ingest = ingest_spec.start().await;

    let load = start_load(
        LoadSpec::new(vec![ingest_spec.base_url()], 4, u64::MAX, 5)
            .client_prefix("steady")
            .pause(Duration::from_millis(5))
            .request_timeout(Duration::from_secs(10)),
    );
    load.wait_for_acknowledged(50, Duration::from_secs(60))
        .await;
    // A client that reuses one connection, opened and used before the signal.
    let mut kept_alive = KeptAliveClient::connect(&ingest).await;
    let (status, closes) = kept_alive.post(0).await;
    assert_eq!((status, closes), (202, false), "before SIGTERM");

    let signalled = Instant::now();
    ingest.send_sigterm();
    let not_ready_at = wait_until_not_ready(&ingest, NOT_READY_WITHIN).await;

    // The same connection still works, and is told to go away after this answer.
    let (status, closes) = kept_alive.post(1).await;
    assert_eq!(
        (status, closes),
        (202, true),
        "a request on a kept-alive connection during the delay is answered with \
         Connection: close"
    );
    kept_alive.assert_closed_by_the_server().await;

    tokio::time::sleep_until((not_ready_at + LOAD_BALANCER_LAG).into()).await;
    assert!(
        ingest.try_exit().is_none(),
        "the ingest exited within {:?} of SIGTERM, before --shutdown-delay {SHUTDOWN_DELAY:?}",
        signalled.elapsed()
    );
    let report = load.stop_and_finish().await;
    let after_not_ready = report
        .outcomes
        .iter()
        .filter(|outcome| outcome.sent_at >= not_ready_at)
        .count();
    println!(
        "{after_not_ready} requests were sent after /readyz turned 503; the load saw {:?}",
        report.result_counts()
    );
    assert!(
        after_not_ready >= 10,
        "only {after_not_ready} requests were sent during the delay: the test proves nothing"
    );
    // Nothing refused, nothing timed out, nothing answered 503.
    report.assert_all_accepted();

    let status = ingest
        .wait_exit(SHUTDOWN_DELAY + STOP_TIMEOUT)
        .await
        .expect("the ingest exits after the delay and the drain");
    let took = signalled.elapsed();
    println!("the ingest exited {took:?} after SIGTERM with {status}");
    assert!(status.success(), "the ingest exited with {status}");
    assert!(
        took >= SHUTDOWN_DELAY,
        "the ingest exited {took:?} after SIGTERM, before the {SHUTDOWN_DELAY:?} delay"
    );

    // Every acknowledged metric reached the queue: the consumer brings it all to the sink.
    let mut expected = report.expected();
    for seq in 0..2 {
        expected.add_request(&AcknowledgedRequest {
            client: KeptAliveClient::NAME.to_owned(),
            seq,
            metrics: 1,
            partition: None,
            offset: None,
        });
    }
    let consumer = consumer_spec.start().await;
    wait_for_sink(&dir.sink_dir(), &expected, DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    assert_settled_exactly_once(&dir.sink_dir(), &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_cuts_the_shutdown_delay_short() {
    let dir = TestDir::new("termination-second-signal");
    let spec = ServiceSpec::ingest(&dir, "ingest").env("METRICSTREAM_SHUTDOWN_DELAY", "60");
    let mut ingest = spec.start().await;

    ingest.send_sigterm();
    wait_until_not_ready(&ingest, NOT_READY_WITHIN).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        ingest.try_exit().is_none(),
        "the ingest exited on the first SIGTERM instead of waiting out --shutdown-delay"
    );
    let during =
        run_load(LoadSpec::new(vec![spec.base_url()], 2, 5, 3).client_prefix("during")).await;
    during.assert_all_accepted();

    let second = Instant::now();
    ingest.send_sigterm();
    let status = ingest
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the ingest exits soon after a second SIGTERM, not after the 60 s delay");
    println!(
        "the ingest exited {:?} after the second SIGTERM with {status}",
        second.elapsed()
    );
    assert!(status.success(), "the ingest exited with {status}");
}

/// Polls `/readyz` until it answers 503 "shutting down"; returns when it first did.
async fn wait_until_not_ready(ingest: &Service, within: Duration) -> Instant {
    let started = Instant::now();
    loop {
        let (status, body) = ingest.admin_get("/readyz").await;
        if status == 503 {
            assert!(body.contains("shutting down"), "/readyz said {body:?}");
            return Instant::now();
        }
        assert!(
            started.elapsed() < within,
            "/readyz still answered {status} {body:?} {within:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One HTTP/1.1 connection used for several requests, spoken by hand so that the test sees
/// exactly what the server says about keeping it open.
struct KeptAliveClient {
    stream: TcpStream,
}

impl KeptAliveClient {
    /// The client id (open mode) and `client` tag of its metrics.
    const NAME: &str = "kept-alive";

    async fn connect(ingest: &Service) -> Self {
        let addr = ingest.listen.expect("an ingest has an API listener");
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|error| panic!("connecting to {addr}: {error}"));
        Self { stream }
    }

    /// Sends request `seq` (one metric); returns the status and whether the answer said
    /// `Connection: close`.
    async fn post(&mut self, seq: u64) -> (u16, bool) {
        let body = request_body(Self::NAME, seq, 1).to_string();
        let request = format!(
            "POST /metrics HTTP/1.1\r\nhost: ingest\r\nauthorization: {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            Self::NAME,
            body.len()
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("sending a request on the kept-alive connection");
        let head = self.read_head().await;
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let mut content_length = 0;
        let mut closes = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = value.parse().expect("a numeric content-length");
                }
                "connection" => closes = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut answer = vec![0; content_length];
        self.stream
            .read_exact(&mut answer)
            .await
            .expect("reading the answer's body");
        (status, closes)
    }

    /// The status line and headers, up to the blank line.
    async fn read_head(&mut self) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tokio::time::timeout(Duration::from_secs(10), self.stream.read_u8())
                .await
                .expect("the answer arrives within 10 s")
                .expect("reading the answer's head");
            head.push(byte);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    async fn assert_closed_by_the_server(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection after a Connection: close answer");
        // A reset is a close too; what matters is that no further answer could come.
        if let Ok(bytes) = read {
            assert_eq!(bytes, 0, "unexpected bytes after the last answer: {rest:?}");
        }
    }
}
