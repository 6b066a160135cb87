//! The Prometheus HTTP API the picture reads: `/api/v1/query_range`, and a first query that
//! tells an unreachable server (which fails the whole picture) from a refused query (which
//! fails one panel).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// One series of a range query: its labels and its points, Unix seconds and value.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

pub struct Prometheus {
    base: String,
    http: reqwest::Client,
}

/// The time range and resolution of every query, Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub start: i64,
    pub end: i64,
    pub step: u64,
}

impl Prometheus {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = metricstream_tests::http_client_builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Fails when nothing answers at the address, or what answers does not take PromQL.
    pub async fn check_reachable(&self) -> anyhow::Result<()> {
        let url = self.url("query", &[("query", "vector(1)".to_owned())])?;
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("Prometheus cannot be reached at {}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!(
                "{url} answered {status} to the query vector(1): is {} a Prometheus? {}",
                self.base,
                body.trim()
            );
        }
        Ok(())
    }

    fn url(&self, endpoint: &str, params: &[(&str, String)]) -> anyhow::Result<reqwest::Url> {
        let url = format!("{}/api/v1/{endpoint}", self.base);
        reqwest::Url::parse_with_params(&url, params)
            .with_context(|| format!("{url} is not a URL: check --prometheus"))
    }

    /// The matrix of `expr` over `range`; `Err` says why Prometheus did not answer it
    /// (its own `errorType: error` when it refused the query).
    pub async fn query_range(&self, expr: &str, range: Range) -> anyhow::Result<Vec<Series>> {
        let url = self.url(
            "query_range",
            &[
                ("query", expr.to_owned()),
                ("start", range.start.to_string()),
                ("end", range.end.to_string()),
                ("step", range.step.to_string()),
            ],
        )?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .context("the query_range request failed")?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("reading Prometheus' answer")?;
        let answer: Answer = serde_json::from_str(&text).with_context(|| {
            format!(
                "Prometheus answered {status} with no API response: {}",
                text.trim()
            )
        })?;
        if answer.status != "success" {
            bail!(
                "Prometheus refused the query ({status}, {}): {}",
                answer.error_type.unwrap_or_default(),
                answer.error.unwrap_or_default()
            );
        }
        let Some(data) = answer.data else {
            bail!("Prometheus' answer has no data");
        };
        if data.result_type != "matrix" {
            bail!(
                "Prometheus answered a {} instead of a matrix",
                data.result_type
            );
        }
        let result: Vec<RawSeries> =
            serde_json::from_value(data.result).context("reading the matrix")?;
        Ok(result.into_iter().map(RawSeries::parsed).collect())
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[seconds, "value"]`; values are strings so that NaN and ±Inf fit.
    #[serde(default)]
    values: Vec<(f64, String)>,
}

impl RawSeries {
    fn parsed(self) -> Series {
        Series {
            labels: self.metric,
            points: self
                .values
                .into_iter()
                .filter_map(|(t, v)| Some((t, v.parse::<f64>().ok()?)))
                .collect(),
        }
    }
}
