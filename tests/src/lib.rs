//! The harness of MetricStream's process-level tests (the tests are in `tests/tests/*.rs`).
//!
//! It runs the real `metricstream-ingest` and `metricstream-consumer` binaries as processes on
//! loopback ports and temporary directories ([`process`]), drives them with concurrent HTTP
//! clients whose every metric is uniquely identifiable ([`load`]), and reads the JSON Lines sink
//! back to prove that every acknowledged metric arrived exactly once ([`sink`]). [`kafka`] names
//! the shared test broker and runs private ones for tests that stop a broker. [`victoriametrics`]
//! and [`prometheus`] run the time-series stores the remote-write sink writes to and read them
//! back ([`prometheus`] also runs Prometheus as a remote-write client).
//!
//! The `metricstream-load` binary (`src/bin/metricstream-load.rs`) puts [`load`] and [`sink`]
//! behind a command line, for end-to-end runs against a deployed pipeline.
//!
//! The binaries are looked up next to the test executable (`target/<profile>/`), so build them
//! first with the same profile: `cargo build --bins` before `cargo test`, or
//! `cargo build --release --bins` before `cargo test --release`. `METRICSTREAM_BIN_DIR`
//! overrides the directory.

pub mod kafka;
pub mod load;
pub mod process;
pub mod prometheus;
pub mod sink;
pub mod store;
pub mod test_ca;
pub mod victoriametrics;

pub use load::{
    AcknowledgedRequest, Expected, ExpectedPosition, LoadReport, LoadSpec, MetricId, Outcome,
    RunningLoad, SinkClient, gzip, quantile, request_body, run_load, start_load,
};
pub use process::{Binary, Service, ServiceSpec, TestDir, start_token_pipeline};
pub use sink::{
    ReadMode, SinkContents, SinkLine, Verification, assert_settled_exactly_once, count_lines,
    read_sink, try_wait_for_sink, verify, wait_for_lines, wait_for_sink,
};

use std::time::Duration;

/// How long a service may take to answer `/readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the consumer may take to bring every acknowledged metric to the sink.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP client for loopback: no proxy from the environment, bounded time per request.
/// Asserts an OTLP JSON export response reports `rejected` data points in its partial success,
/// with an error message holding each of `mentions`.
pub fn assert_otlp_partial_success(response: &serde_json::Value, rejected: u64, mentions: &[&str]) {
    let partial = &response["partialSuccess"];
    // OTLP JSON writes 64-bit integers as strings; some encoders write numbers.
    let count = &partial["rejectedDataPoints"];
    assert!(
        *count == rejected || *count == rejected.to_string().as_str(),
        "{response}"
    );
    let message = partial["errorMessage"].as_str().unwrap_or_default();
    assert!(
        mentions.iter().all(|mention| message.contains(mention)),
        "{response}"
    );
}

/// An answer as received: status, headers and the body, as bytes and as (lossy) text.
pub struct RawAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
    pub body: String,
}

/// POSTs `body` to `path` of `ingest` with `headers`, as a protocol client would.
pub async fn post_raw(
    ingest: &Service,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawAnswer {
    let mut request = http_client(Duration::from_secs(30))
        .post(format!("{}{path}", ingest.base_url()))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the ingest answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map(Vec::from).unwrap_or_default();
    RawAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
    }
}

/// A reqwest client builder (no proxy) that can be built: the workspace's reqwest has rustls
/// without a crypto provider, so ring is installed as the process's default first.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // An `Err` says a provider is installed already (an earlier call): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

pub fn http_client(timeout: Duration) -> reqwest::Client {
    http_client_builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("building an HTTP client")
}

/// The Python of the venv with the real clients the protocol tests drive (influxdb-client, the
/// OpenTelemetry SDK), from `CLIENTS_PYTHON` (`hack/tools.sh install` prints it; make test sets
/// it); panics saying so when it is not set.
pub fn clients_python() -> String {
    std::env::var("CLIENTS_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CLIENTS_PYTHON is not set: run `bash hack/tools.sh install` and export the \
             CLIENTS_PYTHON=... line it prints (make test does both)"
        )
    })
}

/// A Python client script of `tests/clients/`, run with [`clients_python`] and `args`; its
/// stdout, which the scripts make a JSON report. Panics with the script's stderr if it fails.
pub async fn run_client_script(script: &str, args: Vec<String>) -> Vec<u8> {
    let python = clients_python();
    let path = format!("{}/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&path)
            .args(&args)
            .output()
    })
    .await
    .expect("the client's task")
    .unwrap_or_else(|error| panic!("running {script}: {error}"));
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
