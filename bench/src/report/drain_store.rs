//! The `drain-store` suite in the report: the consumer's drain into VictoriaMetrics as a share
//! of the store's own ingestion of the same samples, the chart's bars, and the suite's table.

use std::fmt::Write as _;

use super::{Results, figure, param_i64};
use crate::results::Measurement;

const SUITE: &str = "drain-store";
const CONSUMER: &str = "consumer-victoriametrics";
const DIRECT: &str = "remote-write-victoriametrics";

impl<'a> Results<'a> {
    /// The direct loads, by concurrency.
    fn store_ceilings(&self) -> Vec<&'a Measurement> {
        self.by_concurrency(DIRECT)
    }

    /// The consumer's drains, by its `--sink-concurrency` (a run without the parameter was the
    /// one-at-a-time sink).
    fn store_consumers(&self) -> Vec<&'a Measurement> {
        self.by_concurrency(CONSUMER)
    }

    fn by_concurrency(&self, target: &str) -> Vec<&'a Measurement> {
        let mut runs: Vec<&Measurement> = self.of(SUITE, target).collect();
        runs.sort_by_key(|m| concurrency(m));
        runs
    }

    /// The chart's bars: samples/s of each direct load (ceilings), then the consumer's.
    pub(super) fn store_bars(&self) -> Vec<(String, f64, bool)> {
        let ceilings = self.store_ceilings().into_iter().filter_map(|m| {
            let concurrency = param_i64(m, "concurrency")?;
            Some((
                format!("store alone, {concurrency} in flight"),
                figure(m, "metrics_per_sec")?,
                true,
            ))
        });
        let consumer = self.store_consumers().into_iter().filter_map(|m| {
            Some((
                format!("consumer → store, {} in flight", concurrency(m)),
                figure(m, "metrics_per_sec")?,
                false,
            ))
        });
        ceilings.chain(consumer).collect()
    }

    pub(super) fn store_section(&self, md: &mut String) {
        let consumers = self.store_consumers();
        if consumers.is_empty() {
            self.table(md, SUITE, "Consumer drain into VictoriaMetrics");
            return;
        }
        let _ = writeln!(md, "## Consumer drain into VictoriaMetrics\n");
        let _ = writeln!(
            md,
            "The consumer (`--sink remote-write`, `--sink-concurrency` requests in flight) drains a \
             filled file queue into a fresh VictoriaMetrics; the ceiling is the same samples sent straight \
             to a fresh VictoriaMetrics by the benchmark, in requests of the same size, encoded \
             beforehand. Both are timed until the store holds every sample: its own count of \
             added rows reaches them and a forced flush has made them searchable (the \
             export then counts them: `samples_missing`). CPU seconds are over that window; \
             `machine_busy_cores` says how busy the whole machine was meanwhile.\n"
        );
        let _ = writeln!(
            md,
            "| consumer | ceiling | ceiling samples/s | consumer samples/s | share | store CPU s: ceiling / with the consumer |\n|---|---|---|---|---|---|"
        );
        let cell = |m: &Measurement, key: &str| {
            figure(m, key).map_or("–".to_owned(), |value| format!("{value:.1}"))
        };
        for consumer in consumers {
            let consumer_rate = figure(consumer, "metrics_per_sec").unwrap_or(0.0);
            for ceiling in self.store_ceilings() {
                let rate = figure(ceiling, "metrics_per_sec").unwrap_or(0.0);
                let share = if rate > 0.0 {
                    format!("{:.0} %", consumer_rate / rate * 100.0)
                } else {
                    "–".to_owned()
                };
                let _ = writeln!(
                    md,
                    "| {} in flight | direct remote write, {} in flight | {rate:.0} | {consumer_rate:.0} | {share} | {} / {} |",
                    concurrency(consumer),
                    concurrency(ceiling),
                    cell(ceiling, "store_cpu_seconds"),
                    cell(consumer, "store_cpu_seconds"),
                );
            }
        }
        let _ = writeln!(md);
        self.table(
            md,
            SUITE,
            "Consumer drain into VictoriaMetrics: every figure",
        );
    }
}

/// Requests in flight of a run (1 when not recorded: the first consumer runs sent one at a time).
fn concurrency(measurement: &Measurement) -> i64 {
    param_i64(measurement, "concurrency").unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use crate::report::Results;
    use crate::report::sample::sample;

    #[test]
    fn the_consumer_is_a_share_of_each_direct_load() {
        let suites = sample();
        let results = Results::new(&suites);
        let mut md = String::new();
        results.store_section(&mut md);
        assert!(
            md.contains(
                "| 1 in flight | direct remote write, 1 in flight | 400000 | 200000 | 50 % | 2.0 / 3.0 |"
            ),
            "{md}"
        );
        assert!(md.contains(
            "| 1 in flight | direct remote write, 4 in flight | 800000 | 200000 | 25 % |"
        ));
        assert!(md.contains(
            "| 4 in flight | direct remote write, 4 in flight | 800000 | 400000 | 50 % |"
        ));
        assert!(md.contains("## Consumer drain into VictoriaMetrics: every figure"));
        let bars: Vec<String> = results
            .store_bars()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(
            bars,
            [
                "store alone, 1 in flight",
                "store alone, 4 in flight",
                "consumer → store, 1 in flight",
                "consumer → store, 4 in flight"
            ]
        );
    }
}
