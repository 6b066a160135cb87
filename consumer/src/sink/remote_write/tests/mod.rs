//! The sink against a scripted HTTP server on loopback: retries, `Retry-After`, dead letters,
//! request splitting and the headers sent; the TLS and credential tests are in `security`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metricstream_backend::remote_write_proto::v1;
use metricstream_backend::{ClientId, Metric, MetricBatch, MetricKind, Offset, Partition};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;

/// One request as the server saw it: its head (request line and headers) and body.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn samples(&self) -> usize {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&self.body)
            .expect("a snappy body");
        v1::WriteRequest::decode(raw.as_slice())
            .expect("a WriteRequest")
            .timeseries
            .len()
    }
}

/// Answers each request with the next of `script` (`(status, extra header lines, body)`), the
/// last one for ever after, one request per connection.
async fn serve(script: Vec<(u16, &'static str, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    serve_over(script, None).await
}

/// [`serve`], over TLS with `acceptor` if given (an `https://` URL).
async fn serve_over(
    script: Vec<(u16, &'static str, &'static str)>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let url = format!(
        "{scheme}://{}/api/v1/write",
        listener.local_addr().expect("addr")
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut answered = 0;
        while let Ok((socket, _)) = listener.accept().await {
            let answer = script[answered.min(script.len() - 1)];
            let served = match &acceptor {
                None => answer_one(socket, answer, &log).await,
                Some(acceptor) => match acceptor.accept(socket).await {
                    Ok(socket) => answer_one(socket, answer, &log).await,
                    // A refused handshake is no request.
                    Err(_) => false,
                },
            };
            if served {
                answered += 1;
            }
        }
    });
    (url, seen)
}

/// Reads one request from `socket`, logs it and sends `answer`; false if no request came.
async fn answer_one(
    mut socket: impl AsyncRead + AsyncWrite + Unpin,
    (status, headers, body): (u16, &'static str, &'static str),
    log: &Mutex<Vec<Seen>>,
) -> bool {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break 0,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
    };
    if head_end == 0 {
        return false;
    }
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
    }
    log.lock().expect("lock").push(Seen {
        head,
        body: data[head_end..].to_vec(),
    });
    let answer = format!(
        "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(answer.as_bytes()).await;
    let _ = socket.shutdown().await;
    true
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    metrics: RemoteWriteMetrics,
    shutdown: CancellationToken,
}

impl Fixture {
    fn new() -> Self {
        Self {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
            dir: tempfile::tempdir().expect("tempdir"),
            metrics: RemoteWriteMetrics::default(),
            shutdown: CancellationToken::new(),
        }
    }

    fn sink(&self, url: &str, max_samples: usize) -> RemoteWriteSink {
        let token_file = self.dir.path().join("token");
        std::fs::write(&token_file, "secret\n").expect("writing the token file");
        self.sink_with(RemoteWriteSettings {
            url: url.to_owned(),
            auth: Some(AuthSettings::BearerTokenFile(token_file)),
            tls: TlsSettings::default(),
            max_samples_per_request: max_samples,
            concurrency: 1,
            protocol: Protocol::V1,
            request_timeout: Duration::from_secs(5),
        })
        .expect("opens")
    }

    fn sink_with(&self, settings: RemoteWriteSettings) -> Result<RemoteWriteSink, SinkError> {
        let mut sink = RemoteWriteSink::open(
            self.dir.path(),
            &settings,
            self.runtime.handle().clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        )?;
        sink.retry.first_backoff = Duration::from_millis(1);
        sink.retry.max_backoff = Duration::from_millis(4);
        sink.breaker().circuit = Circuit::new(
            CircuitPolicy {
                failures_to_open: 3,
                first_open: Duration::from_millis(50),
                max_open: Duration::from_millis(100),
            },
            Instant::now(),
        );
        Ok(sink)
    }

    /// The circuit-state gauge's value per state, and the transitions into each.
    fn circuit(&self, state: &'static str) -> (i64, u64) {
        let label = metricstream_backend::circuit::StateLabel { state };
        (
            self.metrics.circuit.state.get_or_create(&label).get(),
            self.metrics.circuit.transitions.get_or_create(&label).get(),
        )
    }

    fn dead_letters(&self, partition: u32) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dead_letter::path(self.dir.path(), Partition(partition)))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect()
    }
}

fn records(metrics: usize, timestamp: Option<i64>) -> Vec<SinkRecord> {
    let metric = |i: usize| Metric {
        name: "cpu".to_owned(),
        value: i as f64,
        timestamp,
        tags: [("i".to_owned(), i.to_string())].into(),
        kind: MetricKind::Gauge,
    };
    vec![SinkRecord::encode(
        Partition(1),
        Offset(7),
        &MetricBatch {
            client: ClientId::new("demo"),
            metrics: (0..metrics).map(metric).collect(),
        },
    )]
}

/// One record per partition `0..partitions`, each of `metrics` metrics.
fn partitioned_records(partitions: u32, metrics: usize) -> Vec<SinkRecord> {
    (0..partitions)
        .map(|partition| {
            let mut record = records(metrics, Some(5)).remove(0);
            record.partition = Partition(partition);
            record
        })
        .collect()
}

#[test]
fn server_errors_are_retried_and_the_batch_succeeds_once_stored() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![
        (503, "", "busy"),
        (429, "Retry-After: 0\r\n", "slow down"),
        (204, "", ""),
    ]));
    let mut sink = fixture.sink(&url, 100);
    let stats = sink.write_batch(&records(3, Some(5))).expect("stored");
    assert_eq!(stats.written, 3);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "two failures, then success");
    assert!(
        seen.iter().all(|s| s.body == seen[0].body),
        "the same body each time"
    );
    let head = seen[0].head.to_ascii_lowercase();
    for header in [
        "content-type: application/x-protobuf",
        "content-encoding: snappy",
        "x-prometheus-remote-write-version: 0.1.0",
        "authorization: bearer secret",
    ] {
        assert!(head.contains(header), "{header} missing:\n{head}");
    }
    assert!(head.starts_with("post /api/v1/write "), "{head}");
    assert_eq!(fixture.metrics.samples_sent.get(), 3);
    assert!(fixture.dead_letters(1).is_empty());
}

#[test]
fn a_failing_store_opens_the_circuit_which_probes_and_closes_once_the_store_is_back() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![
        (500, "", "down"),
        (503, "", "down"),
        (500, "", "down"),
        (502, "", "still down"),
        (204, "", ""),
    ]));
    let requests = || seen.lock().expect("lock").len();
    let mut sink = fixture.sink(&url, 100);
    assert_eq!(fixture.circuit("closed"), (1, 0));

    let error = sink.write_batch(&records(2, Some(5))).expect_err("fails");
    assert_eq!(requests(), 3, "three failures in a row open the circuit");
    let text = error.to_string();
    assert!(
        text.contains("circuit open") && text.contains("status 500: down"),
        "{text}"
    );
    let wait = error.retry_in().expect("the wait until the probe");
    assert!(wait <= Duration::from_millis(50), "{wait:?}");
    assert_eq!(fixture.circuit("open"), (1, 1));
    assert_eq!(fixture.circuit("closed"), (0, 0));

    let held = sink
        .write_batch(&records(2, Some(5)))
        .expect_err("held back");
    assert!(held.retry_in().is_some(), "{held}");
    assert_eq!(requests(), 3, "nothing is sent while the circuit is open");

    std::thread::sleep(wait);
    let reopened = sink
        .write_batch(&records(2, Some(5)))
        .expect_err("probe fails");
    assert_eq!(requests(), 4, "one probe");
    assert!(reopened.to_string().contains("still down"), "{reopened}");
    let longer = reopened.retry_in().expect("a wait");
    assert!(longer > wait, "{longer:?} after {wait:?}: the wait doubles");
    assert_eq!(fixture.circuit("half_open"), (0, 1));
    assert_eq!(fixture.circuit("open"), (1, 2));

    std::thread::sleep(longer);
    let stats = sink.write_batch(&records(2, Some(5))).expect("stored");
    assert_eq!(stats.written, 2);
    assert_eq!(requests(), 5);
    assert_eq!(fixture.circuit("closed"), (1, 1));
    assert_eq!(fixture.circuit("half_open"), (0, 2));
    assert_eq!(fixture.metrics.samples_sent.get(), 2);
}

#[test]
fn a_throttling_store_is_retried_but_does_not_open_the_circuit() {
    let fixture = Fixture::new();
    let (url, seen) =
        fixture
            .runtime
            .block_on(serve(vec![(429, "Retry-After: 0\r\n", "slow down")]));
    let mut sink = fixture.sink(&url, 100);
    let error = sink.write_batch(&records(2, Some(5))).expect_err("fails");
    assert_eq!(error.retry_in(), None, "{error}");
    assert!(
        error.to_string().contains("status 429: slow down"),
        "{error}"
    );
    assert_eq!(seen.lock().expect("lock").len(), 4, "every attempt");
    assert_eq!(fixture.circuit("closed"), (1, 0));
    assert_eq!(fixture.metrics.samples_sent.get(), 0);
}

#[test]
fn no_answer_at_all_is_retried_then_fails_the_batch() {
    let fixture = Fixture::new();
    // A port nothing listens on: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut sink = fixture.sink(&format!("http://127.0.0.1:{port}/api/v1/write"), 100);
    assert!(sink.write_batch(&records(1, Some(5))).is_err());
}

#[test]
fn a_final_refusal_dead_letters_the_samples_and_moves_on() {
    let fixture = Fixture::new();
    let (url, seen) = fixture
        .runtime
        .block_on(serve(vec![(400, "", "label name \"i\" is bad")]));
    let mut sink = fixture.sink(&url, 100);
    let stats = sink.write_batch(&records(2, Some(5))).expect("done");
    assert_eq!(stats.written, 0);
    assert_eq!(
        seen.lock().expect("lock").len(),
        3,
        "a 400 is not retried, but its halves are sent apart"
    );
    let lines = fixture.dead_letters(1);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["status"], 400);
    assert_eq!(lines[1]["reason"], "label name \"i\" is bad");
    assert_eq!(lines[1]["offset"], 7);
    assert_eq!(lines[1]["index"], 1);
    assert_eq!(lines[1]["tags"]["i"], "1");
    assert_eq!(fixture.metrics.dead_lettered.get(), 2);
}

#[test]
fn a_request_refused_whole_is_split_until_only_the_refused_samples_are_dead_letters() {
    let fixture = Fixture::new();
    // [0 1 2 3] refused whole; [0 1] stored; [2 3] refused; [2] stored; [3] refused.
    let (url, seen) = fixture.runtime.block_on(serve(vec![
        (400, "", "out of bounds"),
        (204, "", ""),
        (400, "", "out of bounds"),
        (204, "", ""),
        (400, "", "out of bounds"),
    ]));
    let mut sink = fixture.sink(&url, 100);
    let stats = sink.write_batch(&records(4, Some(5))).expect("done");
    assert_eq!(stats.written, 3);
    let sizes: Vec<usize> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(Seen::samples)
        .collect();
    assert_eq!(sizes, vec![4, 2, 2, 1, 1]);
    let lines = fixture.dead_letters(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["index"], 3);
    assert_eq!(lines[0]["reason"], "out of bounds");
    assert_eq!(fixture.metrics.refused_request_splits.get(), 2);
    assert_eq!(fixture.metrics.samples_sent.get(), 3);
}

#[test]
fn splitting_a_refused_request_stops_at_its_budget() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![(400, "", "too old")]));
    let mut sink = fixture.sink(&url, 1000);
    let stats = sink.write_batch(&records(300, Some(5))).expect("done");
    assert_eq!(stats.written, 0);
    let requests = seen.lock().expect("lock").len() as u32;
    assert_eq!(
        requests,
        1 + MAX_SPLITS_PER_REQUEST,
        "the budget bounds the requests"
    );
    let lines = fixture.dead_letters(1);
    assert_eq!(lines.len(), 300, "every sample once");
    let unsplit = lines
        .iter()
        .filter(|line| {
            line["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not split further"))
        })
        .count();
    assert!(unsplit > 0 && unsplit < 300, "{unsplit}");
}

/// Cancels `shutdown` after `delay`, from another thread (the sink blocks the test's).
fn shut_down_after(shutdown: &CancellationToken, delay: Duration) {
    let shutdown = shutdown.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        shutdown.cancel();
    });
}

#[test]
fn shutdown_cuts_a_request_the_store_never_answers_after_the_grace() {
    let fixture = Fixture::new();
    // A store that takes connections and never answers.
    let listener = fixture
        .runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("binds");
    let url = format!(
        "http://{}/api/v1/write",
        listener.local_addr().expect("addr")
    );
    fixture.runtime.spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut sink = fixture.sink(&url, 100);
    sink.shutdown_grace = Duration::from_millis(100);
    shut_down_after(&fixture.shutdown, Duration::from_millis(200));
    let started = Instant::now();
    let error = sink
        .write_batch(&records(2, Some(5)))
        .expect_err("given up");
    let took = started.elapsed();
    assert!(error.to_string().contains("shutting down"), "{error}");
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}, the request deadline is 5 s"
    );
}

#[test]
fn shutdown_stops_the_retries_of_a_failing_store() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![(503, "", "busy")]));
    let mut sink = fixture.sink(&url, 100);
    sink.retry.first_backoff = Duration::from_secs(20);
    sink.retry.max_backoff = Duration::from_secs(20);
    shut_down_after(&fixture.shutdown, Duration::from_millis(200));
    let started = Instant::now();
    let error = sink
        .write_batch(&records(2, Some(5)))
        .expect_err("given up");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?} for a retry",
        started.elapsed()
    );
    assert!(error.to_string().contains("status 503: busy"), "{error}");
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "no retry after the signal"
    );
}

#[test]
fn shards_send_every_partition_once_in_requests_of_the_maximum_size() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![(204, "", "")]));
    let mut sink = fixture.sink(&url, 10);
    sink.concurrency = 4;
    let stats = sink
        .write_batch(&partitioned_records(4, 25))
        .expect("stored");
    assert_eq!(stats.written, 100);
    let sizes: Vec<usize> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(Seen::samples)
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 100, "{sizes:?}");
    assert!(sizes.iter().all(|&size| size <= 10), "{sizes:?}");
    assert_eq!(fixture.metrics.samples_sent.get(), 100);
}

#[test]
fn a_failing_shard_fails_the_batch() {
    let fixture = Fixture::new();
    let (url, _seen) =
        fixture
            .runtime
            .block_on(serve(vec![(204, "", ""), (204, "", ""), (500, "", "down")]));
    let mut sink = fixture.sink(&url, 10);
    sink.concurrency = 4;
    let error = sink
        .write_batch(&partitioned_records(4, 25))
        .expect_err("fails");
    assert!(error.to_string().contains("down"), "{error}");
}

#[test]
fn remote_write_2_0_is_stored_only_when_the_store_counts_what_it_wrote() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![
        // A 1.0 receiver: reads a 2.0 body as an empty request and says 204.
        (204, "", ""),
        (204, "X-Prometheus-Remote-Write-Samples-Written: 2\r\n", ""),
    ]));
    let mut sink = fixture.sink(&url, 100);
    sink.endpoint.protocol = Protocol::V2;
    let stats = sink
        .write_batch(&records(2, Some(5)))
        .expect("stored on the retry");
    assert_eq!(stats.written, 2);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "the uncounted 2xx was retried");
    let head = seen[0].head.to_ascii_lowercase();
    for header in [
        "content-type: application/x-protobuf;proto=io.prometheus.write.v2.request",
        "x-prometheus-remote-write-version: 2.0.0",
        "content-encoding: snappy",
    ] {
        assert!(head.contains(header), "{header} missing:\n{head}");
    }
    assert_eq!(fixture.metrics.samples_sent.get(), 2);
}

#[test]
fn a_batch_is_split_into_requests_of_the_maximum_size() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![(200, "", "")]));
    let mut sink = fixture.sink(&url, 2);
    let stats = sink.write_batch(&records(5, Some(5))).expect("stored");
    assert_eq!(stats.written, 5);
    let sizes: Vec<usize> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(Seen::samples)
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
}

#[test]
fn metrics_without_a_timestamp_are_dead_lettered_not_sent() {
    let fixture = Fixture::new();
    let (url, seen) = fixture.runtime.block_on(serve(vec![(200, "", "")]));
    let mut sink = fixture.sink(&url, 100);
    let stats = sink.write_batch(&records(2, None)).expect("done");
    assert_eq!(stats.written, 0);
    assert!(seen.lock().expect("lock").is_empty());
    let lines = fixture.dead_letters(1);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], serde_json::Value::Null);
    assert_eq!(lines[0]["reason"], "the metric has no timestamp");
}

mod security;
