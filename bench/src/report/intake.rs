//! The intake suite in the report: samples/s of each protocol on the ingest beside the ceiling
//! that only decodes the same body, and the issue's target that they are reported at all.

use std::fmt::Write as _;

use super::{Goal, Results, figure, param_i64};
use crate::intake::protocol::Protocol;
use crate::intake::{CEILING, INGEST, SUITE};
use crate::results::Measurement;

impl<'a> Results<'a> {
    /// The protocols the intake suite measured, in report order.
    pub(super) fn intake_protocols(&self) -> Vec<Protocol> {
        let mut protocols: Vec<Protocol> = self
            .all
            .iter()
            .filter(|m| m.suite == SUITE)
            .filter_map(|m| protocol_of(m))
            .collect();
        protocols.sort();
        protocols.dedup();
        protocols
    }

    /// The intake measurement of `target` for `protocol`.
    pub(super) fn intake(&self, target: &str, protocol: Protocol) -> Option<&'a Measurement> {
        self.of(SUITE, target)
            .find(|m| protocol_of(m) == Some(protocol))
    }

    fn intake_share(&self, protocol: Protocol) -> Option<(f64, f64)> {
        let ingest = figure(self.intake(INGEST, protocol)?, "samples_per_sec")?;
        let ceiling = figure(self.intake(CEILING, protocol)?, "samples_per_sec")?;
        (ceiling > 0.0).then_some((ingest, ceiling))
    }

    /// The issue's "Done when": samples/s for remote write and OTLP beside native JSON, each
    /// against its decode-only ceiling, in the same run. Met when all three families were
    /// measured on both targets without a failed request or a miscounted sample.
    pub(super) fn intake_goal(&self) -> Goal {
        let what = "remote write and OTLP samples/s beside native JSON, each against a \
                    decode-only ceiling of the same bodies"
            .to_owned();
        let protocols = self.intake_protocols();
        if protocols.is_empty() {
            return Goal {
                what,
                measured: "not measured (no intake suite in this run)".into(),
                met: None,
            };
        }
        let measured = protocols
            .iter()
            .map(|&p| match self.intake_share(p) {
                Some((ingest, ceiling)) => format!(
                    "{}: {ingest:.0} of {ceiling:.0} samples/s = {:.0} %",
                    p.display(),
                    ingest / ceiling * 100.0
                ),
                None => format!("{}: not measured", p.display()),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let clean = |p: Protocol| {
            [CEILING, INGEST].iter().all(|target| {
                self.intake(target, p).is_some_and(|m| {
                    figure(m, "samples_per_sec").is_some()
                        && figure(m, "errors") == Some(0.0)
                        && figure(m, "failed_rounds").unwrap_or(0.0) == 0.0
                        && figure(m, "samples_mismatch").unwrap_or(0.0) == 0.0
                })
            })
        };
        let families = [
            &[Protocol::NativeJson][..],
            &[Protocol::RemoteWrite1, Protocol::RemoteWrite2],
            &[Protocol::OtlpProtobuf, Protocol::OtlpJson],
        ];
        let met = families
            .iter()
            .all(|family| family.iter().any(|&p| protocols.contains(&p)))
            && protocols.iter().all(|&p| clean(p));
        Goal {
            what,
            measured,
            met: Some(met),
        }
    }

    pub(super) fn intake_table(&self, md: &mut String) {
        let protocols = self.intake_protocols();
        if protocols.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Intake protocols: ingest beside a decode-only ceiling\n"
        );
        // The suites may run at different times (`BENCH_SUITES`): say when and where this one
        // did; its ceilings were measured in that run, each right before its ingest run.
        if let Some(suite) = self.suites.iter().find(|s| s.suite == SUITE) {
            let machine = &suite.machine;
            let _ = writeln!(
                md,
                "Run started {} on {} cores ({}); each protocol's ceiling ran right before its \
                 ingest run.\n",
                suite.started, machine.cores, machine.cpu_model
            );
        }
        let first = self.all.iter().copied().find(|m| m.suite == SUITE);
        if let Some(m) = first {
            let param = |key| param_i64(m, key).map_or("?".to_owned(), |v| v.to_string());
            let _ = writeln!(
                md,
                "The same {} samples per request (`http_requests_total` with `job`, `instance`, \
                 `method`, `code`) in each protocol's encoding, {} clients in a closed loop, {} s \
                 per run, {} rounds: each figure is the round with the median samples/s, the \
                 range over all rounds in brackets. The ceiling decodes each body with the ingest's own decoders (remote \
                 write unsnapped too) on the same HTTP stack and drops the samples; the ingest \
                 also encodes and stores them (file backend, batch durability). \"samples \
                 counted\" checks the ingest's `metricstream_ingest_metrics_accepted_total` \
                 against successful answers × samples per request.\n",
                param("samples_per_request"),
                param("clients"),
                param("duration_secs"),
                param("rounds"),
            );
        }
        let native = self
            .intake(INGEST, Protocol::NativeJson)
            .and_then(|m| figure(m, "samples_per_sec"));
        let _ = writeln!(
            md,
            "| protocol | body bytes | ceiling samples/s | ingest samples/s | of ceiling | vs native JSON (ingest) | ingest req/s | ingest p50 ms | ingest p99 ms | ceiling p99 ms | errors (ceiling / ingest) | samples counted |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for protocol in protocols {
            let ceiling = self.intake(CEILING, protocol);
            let ingest = self.intake(INGEST, protocol);
            let cell = |m: Option<&Measurement>, key: &str, digits: usize| {
                m.and_then(|m| figure(m, key))
                    .map_or("–".to_owned(), |v| format!("{v:.digits$}"))
            };
            let share = self
                .intake_share(protocol)
                .map_or("–".to_owned(), |(i, c)| format!("{:.0} %", i / c * 100.0));
            let versus = match (ingest.and_then(|m| figure(m, "samples_per_sec")), native) {
                (Some(i), Some(n)) if n > 0.0 => format!("{:.2}×", i / n),
                _ => "–".to_owned(),
            };
            let counted = match ingest.and_then(|m| figure(m, "samples_mismatch")) {
                Some(0.0) => "exact".to_owned(),
                Some(off) => format!("**off by {off:.0}**"),
                None => "–".to_owned(),
            };
            let failed = [ceiling, ingest].iter().flatten().any(|m| {
                m.params.contains_key("failed") || figure(m, "failed_rounds").unwrap_or(0.0) > 0.0
            });
            let _ = writeln!(
                md,
                "| {}{} | {} | {} | {} | {share} | {versus} | {} | {} | {} | {} | {} / {} | {counted} |",
                protocol.display(),
                if failed { " (**a round failed**)" } else { "" },
                ceiling
                    .or(ingest)
                    .and_then(|m| param_i64(m, "body_bytes"))
                    .map_or("–".to_owned(), |b| b.to_string()),
                with_range(ceiling),
                with_range(ingest),
                cell(ingest, "requests_per_sec", 0),
                cell(ingest, "p50_ms", 2),
                cell(ingest, "p99_ms", 2),
                cell(ceiling, "p99_ms", 2),
                cell(ceiling, "errors", 0),
                cell(ingest, "errors", 0),
            );
        }
        let _ = writeln!(md);
        let commands: Vec<&str> = [CEILING, INGEST]
            .iter()
            .filter_map(|target| self.of(SUITE, target).next())
            .map(|m| m.command.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        if !commands.is_empty() {
            let _ = writeln!(
                md,
                "`metricstream-bench intake`; the load generator's command lines for the first \
                 protocol (the others differ in body, content type and path):\n\n```\n{}\n```\n",
                commands.join("\n")
            );
        }
    }
}

/// Samples/s of the median round, with the range over the rounds when there were several.
fn with_range(measurement: Option<&Measurement>) -> String {
    let Some(m) = measurement else {
        return "–".to_owned();
    };
    let Some(median) = figure(m, "samples_per_sec") else {
        return "–".to_owned();
    };
    match (
        figure(m, "samples_per_sec_min"),
        figure(m, "samples_per_sec_max"),
    ) {
        (Some(min), Some(max)) if min < max => format!("{median:.0} ({min:.0}–{max:.0})"),
        _ => format!("{median:.0}"),
    }
}

fn protocol_of(measurement: &Measurement) -> Option<Protocol> {
    measurement
        .params
        .get("protocol")
        .and_then(serde_json::Value::as_str)
        .and_then(Protocol::from_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample::sample;

    #[test]
    fn each_protocol_is_reported_against_its_own_ceiling() {
        let suites = sample();
        let results = Results::new(&suites);
        assert_eq!(
            results.intake_protocols(),
            [Protocol::NativeJson, Protocol::RemoteWrite1]
        );
        let mut md = String::new();
        results.intake_table(&mut md);
        assert!(
            md.contains("| native JSON | 1234 | 400000 | 200000 | 50 % | 1.00× | 2000 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| remote write 1.0 | 1234 | 500000 (450000–510000) | 100000 | 20 % | 0.50× |"
            ),
            "{md}"
        );
        assert!(md.contains("**off by -100**"), "{md}");
        assert!(
            md.contains("Run started 2026-11-26T21:00:00Z on 2 cores"),
            "{md}"
        );
        // A miscounted sample and no OTLP run: reported, not met.
        let goal = results.intake_goal();
        assert_eq!(goal.met, Some(false), "{goal:?}");
        assert!(
            goal.measured
                .contains("remote write 1.0: 100000 of 500000 samples/s = 20 %"),
            "{goal:?}"
        );
    }
}
