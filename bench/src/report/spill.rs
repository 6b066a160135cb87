//! The spill in the report: the bound that ingest → Kafka with the spill on but idle
//! stays within 5 % of the same path without it (requests/s and p99 at the maximum-throughput
//! points of the same run; the open-loop points are listed, not judged), and the spill's own accept rate while Kafka is down, beside Kafka's healthy rate
//! and the file queue's (the spill is a file queue).

use std::fmt::Write as _;

use super::{Goal, LoadPoint, Results, figure, param_i64};
use crate::results::Measurement;

const NO_SPILL: &str = "ingest-kafka";
const IDLE: &str = "ingest-kafka-spill";
const OUTAGE: &str = "ingest-kafka-spill-outage";
const FILE: &str = "ingest-file-batch";
/// The bound: an idle spill costs at most 5 % of requests/s or of p99.
const BOUND: f64 = 0.05;

/// One load point of ingest → Kafka without and with an idle spill.
struct IdlePair {
    point: String,
    /// (without, with).
    requests_per_sec: (f64, f64),
    p99_ms: (f64, f64),
    /// Records the spill took during the run with it: 0 if it was idle (`None`: not reported).
    spilled: Option<f64>,
    /// A maximum-throughput point: judged against the bound. At an open-loop point both serve
    /// the offered rate, and one 10 s run's p99 moves by more than the bound between runs of
    /// the same target (docs/benchmarks.md), so it is shown, not judged.
    judged: bool,
}

impl IdlePair {
    fn idle(&self) -> bool {
        self.spilled == Some(0.0)
    }

    fn within_bound(&self) -> bool {
        let (rps_without, rps_with) = self.requests_per_sec;
        let (p99_without, p99_with) = self.p99_ms;
        !self.judged
            || (rps_with >= rps_without * (1.0 - BOUND) && p99_with <= p99_without * (1.0 + BOUND))
    }
}

/// `with` against `without` as a signed percentage.
fn change(without: f64, with: f64) -> String {
    if without > 0.0 {
        format!("{:+.1} %", (with / without - 1.0) * 100.0)
    } else {
        "–".into()
    }
}

impl<'a> Results<'a> {
    fn describe_point(&self, point: &LoadPoint) -> String {
        let rate = [NO_SPILL, IDLE, OUTAGE]
            .iter()
            .find_map(|target| param_i64(self.http(target, point)?, "rate"));
        point.describe(rate)
    }

    /// The load points where both Kafka targets have figures, and those where both were asked
    /// for but one has none (failed or skipped).
    fn idle_pairs(&self) -> (Vec<IdlePair>, Vec<String>) {
        let mut pairs = Vec::new();
        let mut missing = Vec::new();
        for point in self.load_points() {
            // A load point only one of them was asked for is no comparison; one where either
            // failed or was skipped is a comparison that could not be made.
            let (Some(without), Some(with)) =
                (self.http(NO_SPILL, &point), self.http(IDLE, &point))
            else {
                continue;
            };
            let figures =
                |m: &Measurement| Some((figure(m, "requests_per_sec")?, figure(m, "p99_ms")?));
            match (figures(without), figures(with)) {
                (Some((rps_without, p99_without)), Some((rps_with, p99_with))) => {
                    pairs.push(IdlePair {
                        point: self.describe_point(&point),
                        requests_per_sec: (rps_without, rps_with),
                        p99_ms: (p99_without, p99_with),
                        spilled: figure(with, "spill_records"),
                        judged: point.mode == "max",
                    })
                }
                _ => missing.push(self.describe_point(&point)),
            }
        }
        (pairs, missing)
    }

    /// The bound on the idle spill. Met when at every maximum-throughput point measured
    /// with and without it the spill took no record and cost at most 5 % of requests/s and of
    /// p99; not judged when a run with it spilled (then Kafka, not the spill, set the figures).
    pub(super) fn spill_idle_goal(&self) -> Goal {
        let what = format!(
            "ingest → Kafka, spill idle / no spill: req/s ≥ {:.0} % and p99 ≤ {:.0} % at every \
             maximum-throughput point of the same run (open-loop points listed, not judged)",
            (1.0 - BOUND) * 100.0,
            (1.0 + BOUND) * 100.0
        );
        let (pairs, missing) = self.idle_pairs();
        if !pairs.iter().any(|pair| pair.judged) {
            return Goal {
                what,
                measured: "not measured (needs ingest-kafka and ingest-kafka-spill at the same \
                           maximum-throughput points)"
                    .into(),
                met: None,
            };
        }
        let mut parts: Vec<String> = pairs
            .iter()
            .map(|pair| {
                let (rps_without, rps_with) = pair.requests_per_sec;
                let (p99_without, p99_with) = pair.p99_ms;
                let idle = match pair.spilled {
                    Some(0.0) => String::new(),
                    Some(spilled) => format!(" — NOT IDLE: {spilled:.0} records spilled"),
                    None => " — not known to be idle (no spill_records)".into(),
                };
                let judged = if pair.judged { "" } else { " (not judged)" };
                format!(
                    "{}: {rps_with:.0} vs {rps_without:.0} req/s ({}), p99 {p99_with:.2} vs \
                     {p99_without:.2} ms ({}){judged}{idle}",
                    pair.point,
                    change(rps_without, rps_with),
                    change(p99_without, p99_with)
                )
            })
            .collect();
        parts.extend(
            missing
                .iter()
                .map(|point| format!("{point}: not compared (a run failed or was skipped)")),
        );
        Goal {
            what,
            measured: parts.join("; "),
            met: pairs
                .iter()
                .all(IdlePair::idle)
                .then(|| pairs.iter().all(IdlePair::within_bound)),
        }
    }

    /// The spill's accept rate while Kafka is down. Met when every request of every outage run
    /// was answered 2xx (the spill was sized not to fill).
    pub(super) fn spill_outage_goal(&self) -> Goal {
        let what = "spill while Kafka is down: every request accepted, the accept rate beside \
                    Kafka's healthy one"
            .to_owned();
        let runs: Vec<(LoadPoint, &Measurement)> = self
            .load_points()
            .into_iter()
            .filter_map(|point| {
                let run = self.http(OUTAGE, &point)?;
                Some((point, run))
            })
            .collect();
        let measured: Vec<(String, f64, f64, Option<f64>)> = runs
            .iter()
            .filter_map(|(point, m)| {
                let healthy = self
                    .http(NO_SPILL, point)
                    .and_then(|h| figure(h, "requests_per_sec"));
                Some((
                    self.describe_point(point),
                    figure(m, "requests_per_sec")?,
                    figure(m, "errors")?,
                    healthy,
                ))
            })
            .collect();
        if measured.is_empty() {
            return Goal {
                what,
                measured: "not measured (no ingest-kafka-spill-outage run with figures)".into(),
                met: None,
            };
        }
        let text = measured
            .iter()
            .map(|(point, rps, errors, healthy)| {
                let beside = healthy
                    .filter(|h| *h > 0.0)
                    .map(|h| format!(" ({:.0} % of Kafka up)", rps / h * 100.0))
                    .unwrap_or_default();
                format!("{point}: {rps:.0} req/s{beside}, {errors:.0} errors")
            })
            .collect::<Vec<_>>()
            .join("; ");
        let not_run = runs.len() - measured.len();
        let text = if not_run > 0 {
            format!("{text}; {not_run} load points failed or skipped")
        } else {
            text
        };
        Goal {
            what,
            measured: text,
            met: Some(not_run == 0 && measured.iter().all(|(_, _, errors, _)| *errors == 0.0)),
        }
    }

    /// The spill's section: the idle comparison and the outage's accept rate, per load point.
    pub(super) fn spill_section(&self, md: &mut String) {
        let (pairs, _) = self.idle_pairs();
        let outage_points: Vec<LoadPoint> = self
            .load_points()
            .into_iter()
            .filter(|point| {
                self.http(OUTAGE, point)
                    .is_some_and(|m| figure(m, "requests_per_sec").is_some())
            })
            .collect();
        if pairs.is_empty() && outage_points.is_empty() {
            return;
        }
        let _ = writeln!(md, "## The spill (ingest → Kafka with `--spill-dir`)\n");
        if !pairs.is_empty() {
            let _ = writeln!(
                md,
                "With Kafka healthy the spill should take nothing (`records spilled`, the \
                 ingest's `metricstream_spill_records_total`, must be 0) and cost at most \
                 {:.0} %: the same load points as ingest → Kafka, in the same run.\n",
                BOUND * 100.0
            );
            let _ = writeln!(
                md,
                "| load point | req/s, no spill | req/s, spill idle | change | p99 ms, no spill | p99 ms, spill idle | change | records spilled |\n|---|---|---|---|---|---|---|---|"
            );
            for pair in &pairs {
                let (rps_without, rps_with) = pair.requests_per_sec;
                let (p99_without, p99_with) = pair.p99_ms;
                let _ = writeln!(
                    md,
                    "| {} | {rps_without:.0} | {rps_with:.0} | {} | {p99_without:.2} | {p99_with:.2} | {} | {} |",
                    pair.point,
                    change(rps_without, rps_with),
                    change(p99_without, p99_with),
                    pair.spilled
                        .map_or("–".to_owned(), |spilled| format!("{spilled:.0}"))
                );
            }
            let _ = writeln!(md);
        }
        if !outage_points.is_empty() {
            let _ = writeln!(
                md,
                "While Kafka is down (a private broker stopped with SIGTERM, the ingest's circuit \
                 open), every request goes to the spill, a file queue: its accept rate beside \
                 ingest → Kafka with the broker up and ingest → file (batch). After the load \
                 the broker starts again, the forwarder empties the spill into Kafka \
                 (`forward s`) and the consumer drains the topic; lost and duplicated metrics are \
                 counted from the sink as for every ingest run.\n"
            );
            let _ = writeln!(
                md,
                "| load point | spill, Kafka down: req/s | p99 ms | errors | records spilled | forward s | lost | duplicates | Kafka up: req/s | p99 ms | file, batch: req/s | p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for point in &outage_points {
                let cell = |target: &str, key: &str, digits: usize| {
                    self.http(target, point)
                        .and_then(|m| figure(m, key))
                        .map_or("–".to_owned(), |v| format!("{v:.digits$}"))
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    self.describe_point(point),
                    cell(OUTAGE, "requests_per_sec", 0),
                    cell(OUTAGE, "p99_ms", 2),
                    cell(OUTAGE, "errors", 0),
                    cell(OUTAGE, "spill_records", 0),
                    cell(OUTAGE, "forward_secs", 1),
                    cell(OUTAGE, "lost", 0),
                    cell(OUTAGE, "duplicates", 0),
                    cell(NO_SPILL, "requests_per_sec", 0),
                    cell(NO_SPILL, "p99_ms", 2),
                    cell(FILE, "requests_per_sec", 0),
                    cell(FILE, "p99_ms", 2),
                );
            }
            let _ = writeln!(md);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::param_str;
    use crate::report::sample::sample;

    fn goal(goals: &[Goal], prefix: &str) -> Goal {
        goals
            .iter()
            .find(|g| g.what.starts_with(prefix))
            .unwrap_or_else(|| panic!("no goal {prefix}: {goals:?}"))
            .clone()
    }

    #[test]
    fn an_idle_spill_is_judged_at_the_maximum_throughput_points_only() {
        let suites = sample();
        let results = Results::new(&suites);
        let idle = goal(&results.goals(), "ingest → Kafka, spill idle");
        // 200 clients at max: 3900 of 4000 req/s (-2.5 %), p99 +2.5 %: within the bound. 20
        // clients at 1000 req/s: p99 2.2 against 2.0 ms (+10 %), listed but not judged.
        assert_eq!(idle.met, Some(true), "{idle:?}");
        assert!(idle.measured.contains("-2.5 %"), "{idle:?}");
        assert!(idle.measured.contains("+10.0 %) (not judged)"), "{idle:?}");
        let outage = goal(&results.goals(), "spill while Kafka is down");
        assert_eq!(outage.met, Some(true), "{outage:?}");
        assert!(outage.measured.contains("(75 % of Kafka up)"), "{outage:?}");
    }

    #[test]
    fn an_idle_spill_over_the_bound_at_maximum_throughput_misses_the_goal() {
        let mut suites = sample();
        for m in &mut suites[0].measurements {
            if m.target == IDLE && param_str(m, "mode") == Some("max") {
                m.figures.insert("requests_per_sec".into(), 3700.0);
            }
        }
        let results = Results::new(&suites);
        let idle = goal(&results.goals(), "ingest → Kafka, spill idle");
        assert_eq!(idle.met, Some(false), "{idle:?}");
        assert!(
            idle.measured.contains("3700 vs 4000 req/s (-7.5 %)"),
            "{idle:?}"
        );
    }

    #[test]
    fn a_spill_that_took_records_is_not_judged_idle() {
        let mut suites = sample();
        for m in &mut suites[0].measurements {
            if m.target == IDLE {
                m.figures.insert("spill_records".into(), 3.0);
            }
        }
        let results = Results::new(&suites);
        let idle = goal(&results.goals(), "ingest → Kafka, spill idle");
        assert_eq!(idle.met, None, "{idle:?}");
        assert!(idle.measured.contains("NOT IDLE: 3 records"), "{idle:?}");
    }

    #[test]
    fn the_section_sets_the_outage_rate_beside_kafka_and_the_file_queue() {
        let suites = sample();
        let results = Results::new(&suites);
        let mut md = String::new();
        results.spill_section(&mut md);
        assert!(
            md.contains(
                "| 200 clients, 100 metrics/request, maximum throughput | 4000 | 3900 | -2.5 % | 8.00 | 8.20 | +2.5 % | 0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| 200 clients, 100 metrics/request, maximum throughput | 3000 | 9.00 | 0 | 30000 | 4.5 | 0 | 0 | 4000 | 8.00 | 6000 | – |"
            ),
            "{md}"
        );
    }
}
