//! Client mistakes get their documented `4xx` and JSON error body, never reach the queue, and
//! leave the service serving.

use std::collections::BTreeMap;
use std::time::Duration;

use metricstream_tests::sink::{duplicated_positions, names};
use metricstream_tests::{
    DRAIN_TIMEOUT, ReadMode, ServiceSpec, TestDir, gzip, http_client, read_sink,
};
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-token";
const CLIENT: &str = "acme";

/// One request and the answer the contract demands.
struct Case {
    what: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// `error.code` for a rejection; `None` for an accepted request.
    code: Option<&'static str>,
}

fn authorized(content_type: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {TOKEN}")),
        ("content-type", content_type.to_owned()),
    ]
}

fn rejected(what: &'static str, body: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Case {
    Case {
        what,
        headers: authorized("application/json"),
        body: body.into(),
        status,
        code: Some(code),
    }
}

fn tagged_metric_json(name: &str, tags: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "metrics": [{ "name": name, "value": 1, "tags": tags }] }))
        .expect("json")
}

fn metric_json(name: &str, value: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "metrics": [{ "name": name, "value": value }] })).expect("json")
}

/// A body that is valid JSON once fully decompressed, but 50 MB of it (whitespace).
fn gzip_bomb() -> Vec<u8> {
    let mut json = br#"{"metrics":[{"name":"bomb","value":1}"#.to_vec();
    json.resize(json.len() + 50 * 1024 * 1024, b' ');
    json.extend_from_slice(b"]}");
    gzip(&json)
}

fn cases() -> Vec<Case> {
    let too_many_metrics: Vec<Value> = (0..10_001)
        .map(|i| json!({ "name": "rejected-too-many", "value": i }))
        .collect();
    let too_many_tags: BTreeMap<String, String> =
        (0..65).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let just_enough_tags: BTreeMap<String, String> =
        (0..64).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let over_the_body_limit = serde_json::to_vec(&json!({ "metrics": [{
        "name": "rejected-too-large",
        "value": 1,
        "tags": { "padding": "x".repeat(2 * 1024 * 1024) },
    }]}))
    .expect("json");
    let accepted_gzip = gzip(&metric_json("accepted-gzip", json!(1)));
    let mut truncated_gzip = accepted_gzip.clone();
    truncated_gzip.truncate(accepted_gzip.len() / 2);

    let mut cases = vec![
        rejected(
            "malformed JSON",
            r#"{"metrics":[{"name":"cpu","value":1}"#,
            400,
            "malformed_json",
        ),
        rejected("an empty body", "", 400, "malformed_json"),
        rejected(
            "a NaN literal",
            r#"{"metrics":[{"name":"cpu","value":NaN}]}"#,
            400,
            "malformed_json",
        ),
        rejected(
            "an Infinity literal",
            r#"{"metrics":[{"name":"cpu","value":Infinity}]}"#,
            400,
            "malformed_json",
        ),
        rejected(
            "a -Infinity literal",
            r#"{"metrics":[{"name":"cpu","value":-Infinity}]}"#,
            400,
            "malformed_json",
        ),
        rejected(
            "a value as the string \"NaN\"",
            metric_json("rejected", json!("NaN")),
            422,
            "invalid_metric",
        ),
        rejected(
            "a value as the string \"Infinity\"",
            metric_json("rejected", json!("Infinity")),
            422,
            "invalid_metric",
        ),
        rejected(
            "a value as a numeric string",
            metric_json("rejected", json!("75")),
            422,
            "invalid_metric",
        ),
        rejected(
            "a name that is a number",
            r#"{"metrics":[{"name":5,"value":1}]}"#,
            422,
            "invalid_metric",
        ),
        rejected(
            "a tag value that is a number",
            r#"{"metrics":[{"name":"rejected","value":1,"tags":{"host":1}}]}"#,
            422,
            "invalid_metric",
        ),
        rejected(
            "a timestamp that is a string",
            r#"{"metrics":[{"name":"rejected","value":1,"timestamp":"now"}]}"#,
            422,
            "invalid_metric",
        ),
        rejected(
            "metrics that is not an array",
            r#"{"metrics":{"name":"rejected","value":1}}"#,
            422,
            "invalid_metric",
        ),
        rejected(
            "a top-level array",
            r#"[{"name":"rejected","value":1}]"#,
            422,
            "invalid_metric",
        ),
        rejected(
            "a missing value",
            r#"{"metrics":[{"name":"rejected"}]}"#,
            422,
            "invalid_metric",
        ),
        rejected(
            "a missing name",
            r#"{"metrics":[{"value":1}]}"#,
            422,
            "invalid_metric",
        ),
        rejected("a missing metrics field", "{}", 422, "invalid_metric"),
        rejected(
            "an empty metrics array",
            r#"{"metrics":[]}"#,
            422,
            "invalid_metric",
        ),
        rejected(
            "an empty name",
            metric_json("", json!(1)),
            422,
            "invalid_metric",
        ),
        rejected(
            "a 257-byte name",
            metric_json(&"n".repeat(257), json!(1)),
            422,
            "invalid_metric",
        ),
        rejected(
            "65 tags",
            tagged_metric_json("rejected", &too_many_tags),
            422,
            "invalid_metric",
        ),
        rejected(
            "10 001 metrics",
            serde_json::to_vec(&json!({ "metrics": too_many_metrics })).expect("json"),
            413,
            "too_many_metrics",
        ),
        rejected("a 2 MiB body", over_the_body_limit, 413, "body_too_large"),
        // The client is still sending when the limit is hit: it must still read its 413, not
        // a reset connection (the rest is read and thrown away, for a bounded time).
        rejected(
            "a 50 MiB body",
            vec![b' '; 50 * 1024 * 1024],
            413,
            "body_too_large",
        ),
        Case {
            what: "a gzip bomb (50 MB of JSON whitespace)",
            headers: vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("content-type", "application/json".to_owned()),
                ("content-encoding", "gzip".to_owned()),
            ],
            body: gzip_bomb(),
            status: 413,
            code: Some("body_too_large"),
        },
        Case {
            what: "a body that is not gzip",
            headers: vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("content-type", "application/json".to_owned()),
                ("content-encoding", "gzip".to_owned()),
            ],
            body: b"this is not gzip at all".to_vec(),
            status: 400,
            code: Some("malformed_gzip"),
        },
        Case {
            what: "a truncated gzip body",
            headers: vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("content-type", "application/json".to_owned()),
                ("content-encoding", "gzip".to_owned()),
            ],
            body: truncated_gzip,
            status: 400,
            code: Some("malformed_gzip"),
        },
        Case {
            what: "an unsupported content encoding",
            headers: vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("content-type", "application/json".to_owned()),
                ("content-encoding", "br".to_owned()),
            ],
            body: metric_json("rejected", json!(1)),
            status: 415,
            code: Some("unsupported_encoding"),
        },
        Case {
            what: "a text/plain content type",
            headers: authorized("text/plain"),
            body: metric_json("rejected", json!(1)),
            status: 415,
            code: Some("unsupported_media_type"),
        },
        Case {
            what: "no Content-Type",
            headers: vec![("authorization", format!("Bearer {TOKEN}"))],
            body: metric_json("rejected", json!(1)),
            status: 415,
            code: Some("unsupported_media_type"),
        },
        Case {
            what: "no Authorization header",
            headers: vec![("content-type", "application/json".to_owned())],
            body: metric_json("rejected", json!(1)),
            status: 401,
            code: Some("missing_authorization"),
        },
        Case {
            what: "an unknown token",
            headers: vec![
                ("authorization", "Bearer not-a-known-token".to_owned()),
                ("content-type", "application/json".to_owned()),
            ],
            body: metric_json("rejected", json!(1)),
            status: 401,
            code: Some("unknown_token"),
        },
    ];
    // The limits are inclusive: what is exactly at them is accepted.
    cases.extend([
        Case {
            what: "a 256-byte name",
            headers: authorized("application/json"),
            body: metric_json(&"n".repeat(256), json!(1)),
            status: 202,
            code: None,
        },
        Case {
            what: "64 tags",
            headers: authorized("application/json"),
            body: tagged_metric_json("accepted-64-tags", &just_enough_tags),
            status: 202,
            code: None,
        },
        Case {
            what: "a gzip-compressed body",
            headers: vec![
                ("authorization", format!("Bearer {TOKEN}")),
                ("content-type", "application/json".to_owned()),
                ("content-encoding", "gzip".to_owned()),
            ],
            body: accepted_gzip,
            status: 202,
            code: None,
        },
        Case {
            what: "a content type with a charset",
            headers: authorized("application/json; charset=utf-8"),
            body: metric_json("accepted-charset", json!(1)),
            status: 202,
            code: None,
        },
    ]);
    cases
}

async fn post(url: &str, case: &Case) -> Result<(u16, Option<String>, Value), String> {
    let mut request = http_client(Duration::from_secs(30))
        .post(url)
        .body(case.body.clone());
    for (name, value) in &case.headers {
        request = request.header(*name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("no answer: {e:#}"))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading the answer: {e:#}"))?;
    let body = serde_json::from_str(&text)
        .map_err(|e| format!("{status}, body not JSON ({e}): {text:?}"))?;
    Ok((status, retry_after, body))
}

/// Checks one answer against the case; `Err` says how it differs.
fn check(case: &Case, answer: Result<(u16, Option<String>, Value), String>) -> Result<(), String> {
    let (status, _, body) = answer?;
    if status != case.status {
        return Err(format!(
            "answered {status} {body}, expected {}",
            case.status
        ));
    }
    match case.code {
        Some(code) => {
            if body["error"]["code"] != code {
                return Err(format!(
                    "answered {status} {body}, expected error.code {code:?}"
                ));
            }
            if body["error"]["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "answered {status} {body}, without an error.message"
                ));
            }
        }
        None => {
            if body["accepted"] != 1 {
                return Err(format!("answered {status} {body}, expected accepted: 1"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_documented_4xx_and_service_keeps_serving() {
    let dir = TestDir::new("bad-input");
    let tokens = dir.write_file(
        "tokens",
        &format!("# client_id=token\n{CLIENT}=s3cret-token\nother=another-token\n"),
    );
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest").env("METRICSTREAM_TOKENS_FILE", tokens);
    let consumer_spec = ServiceSpec::consumer(&dir, "consumer");
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let mut failures = Vec::new();
    let url = format!("{}/metrics", ingest.base_url());
    for case in cases() {
        if let Err(failure) = check(&case, post(&url, &case).await) {
            failures.push(format!("POST /metrics with {}: {failure}", case.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers broke the contract:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );

    // Still serving, and the accepted requests (only they) reach the sink.
    let (status, _) = ingest.admin_get("/healthz").await;
    assert_eq!(status, 200, "/healthz after the bad input");
    let last = Case {
        what: "a valid request after the bad input",
        headers: authorized("application/json"),
        body: metric_json("after-bad-input", json!(42.5)),
        status: 202,
        code: None,
    };
    check(&last, post(&url, &last).await)
        .unwrap_or_else(|failure| panic!("{}: {failure}", last.what));

    let key = |name: &str| (CLIENT.to_owned(), name.to_owned());
    let wanted: BTreeMap<(String, String), usize> = BTreeMap::from([
        (key(&"n".repeat(256)), 1),
        (key("accepted-64-tags"), 1),
        (key("accepted-gzip"), 1),
        (key("accepted-charset"), 1),
        (key("after-bad-input"), 1),
    ]);
    // Every request came from one client, so one partition in order: once the last is in the
    // sink, everything appended before it has been consumed.
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let contents = read_sink(&dir.sink_dir(), ReadMode::Live)
            .unwrap_or_else(|error| panic!("the sink is malformed: {error}"));
        if names(&contents).contains_key(&key("after-bad-input")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the valid request did not reach the sink within {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.terminate().await;
    ingest.terminate().await;

    let contents = read_sink(&dir.sink_dir(), ReadMode::Settled)
        .unwrap_or_else(|error| panic!("the settled sink is malformed: {error}"));
    assert_eq!(
        names(&contents),
        wanted,
        "exactly the accepted metrics are in the sink"
    );
    assert_eq!(duplicated_positions(&contents), vec![]);
    let last_line = contents
        .lines
        .iter()
        .find(|line| line.name == "after-bad-input")
        .expect("the last metric is in the sink");
    assert_eq!(last_line.value, 42.5);
    assert!(
        last_line.timestamp.is_some(),
        "ingest fills in a missing timestamp"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_client_gets_429_with_retry_after_while_others_are_served() {
    let dir = TestDir::new("rate-limit");
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .arg("--rate-limit-per-second")
        .arg("1")
        .arg("--rate-limit-burst")
        .arg("2")
        .start()
        .await;
    let url = format!("{}/metrics", ingest.base_url());
    let request = |client: &str, name: &'static str| Case {
        what: name,
        headers: vec![
            ("authorization", client.to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        body: metric_json(name, json!(1)),
        status: 202,
        code: None,
    };

    let mut answers = Vec::new();
    for _ in 0..6 {
        let (status, retry_after, body) = post(&url, &request("greedy", "greedy"))
            .await
            .unwrap_or_else(|failure| panic!("greedy request: {failure}"));
        answers.push((status, retry_after, body));
    }
    let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(
        statuses[..2],
        [202, 202],
        "the burst of 2 is served: {statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "past the burst the client is limited: {statuses:?}"
    );
    for (status, retry_after, body) in answers.iter().filter(|(status, _, _)| *status != 202) {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        let retry_after = retry_after
            .as_deref()
            .unwrap_or_else(|| panic!("429 without Retry-After: {body}"));
        assert!(
            retry_after.parse::<u64>().is_ok_and(|seconds| seconds >= 1),
            "Retry-After is a whole number of seconds: {retry_after:?}"
        );
    }

    // Another client has its own budget.
    let polite = request("polite", "polite");
    check(&polite, post(&url, &polite).await)
        .unwrap_or_else(|failure| panic!("another client: {failure}"));
    ingest.terminate().await;
}
