//! The report's SVG charts: HTTP throughput and latency beside the no-op ceiling, and the
//! consumer drain, drawn with plotters.

use std::path::Path;

use plotters::prelude::*;

use super::{HTTP_TARGETS, LoadPoint, Results, figure, format_figure, param_i64, short_name};
use crate::intake::{self, protocol::Protocol};
use crate::peers::Scenario;
use crate::results::Measurement;

impl Results<'_> {
    /// Renders the charts into `dir`; returns (file name, caption) of each.
    pub(super) fn charts(&self, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
        let mut charts = Vec::new();
        let points = self.load_points();
        if !points.is_empty() {
            let file = "http-throughput.svg";
            self.throughput_chart(&dir.join(file), &points)?;
            charts.push((
                file.to_owned(),
                "Requests/s per target and load point; the no-op HTTP server is the ceiling".into(),
            ));
            let rate_points: Vec<LoadPoint> =
                points.iter().filter(|p| p.mode != "max").cloned().collect();
            if !rate_points.is_empty() {
                let file = "http-latency.svg";
                self.latency_chart(&dir.join(file), &rate_points)?;
                charts.push((
                    file.to_owned(),
                    "Latency percentiles (corrected for coordinated omission), log scale".into(),
                ));
            }
        }
        let protocols = self.intake_protocols();
        if !protocols.is_empty() {
            let file = "intake.svg";
            self.intake_chart(&dir.join(file), &protocols)?;
            charts.push((
                file.to_owned(),
                "Samples/s per intake protocol: ingest beside the ceiling that only decodes the \
                 same body"
                    .into(),
            ));
        }
        for scenario in self.peer_scenarios() {
            let bars = self.peer_bars(scenario);
            if bars.is_empty() {
                continue;
            }
            let file = format!("peers-{scenario}.svg");
            let (title, caption) = match scenario {
                Scenario::OtlpKafka => (
                    "OTLP/HTTP → Kafka",
                    "Samples/s, OTLP/HTTP into Kafka: MetricStream's ingest beside the \
                     OpenTelemetry Collector (grey)",
                ),
                Scenario::RemoteWriteStore => (
                    "Remote write → VictoriaMetrics",
                    "Samples/s, remote write into VictoriaMetrics: MetricStream's ingest, queue \
                     and consumer beside vmagent (grey)",
                ),
            };
            bar_chart_file(&dir.join(&file), (900, 420), title, "samples/s", &bars)?;
            charts.push((file, caption.to_owned()));
        }
        let drain: Vec<(String, f64, bool)> = [
            ("bare-read-file", "bare read, file", true),
            ("bare-write-file", "bare write of the sink's bytes", true),
            ("consumer-file", "consumer, file", false),
            ("bare-read-kafka", "bare read, Kafka", true),
            ("bare-write-kafka", "bare write of the sink's bytes", true),
            ("consumer-kafka", "consumer, Kafka", false),
        ]
        .iter()
        .filter_map(|(target, name, ceiling)| {
            let m = self.of("drain", target).next()?;
            Some(((*name).to_owned(), figure(m, "metrics_per_sec")?, *ceiling))
        })
        .collect();
        if !drain.is_empty() {
            let file = "drain.svg";
            bar_chart_file(
                &dir.join(file),
                (900, 420),
                "Draining one million metrics",
                "metrics/s",
                &drain,
            )?;
            charts.push((
                file.to_owned(),
                "Consumer drain beside a bare read of the same data".into(),
            ));
        }
        let store = self.store_bars();
        if !store.is_empty() {
            let file = "drain-store.svg";
            bar_chart_file(
                &dir.join(file),
                (700, 400),
                "Draining into VictoriaMetrics",
                "samples/s",
                &store,
            )?;
            charts.push((
                file.to_owned(),
                "Consumer drain into VictoriaMetrics beside the store ingesting the same samples \
                 sent straight to it"
                    .into(),
            ));
        }
        let operator: Vec<(String, f64, bool)> = {
            let mut runs: Vec<&Measurement> = self.of("operator", "operator").collect();
            runs.sort_by_key(|m| param_i64(m, "streams"));
            runs.iter()
                .filter_map(|m| {
                    Some((
                        format!("{} streams", param_i64(m, "streams")?),
                        figure(m, "seconds_to_children")?,
                        false,
                    ))
                })
                .collect()
        };
        if !operator.is_empty() {
            let file = "operator.svg";
            bar_chart_file(
                &dir.join(file),
                (700, 400),
                "Apply to all children created",
                "seconds",
                &operator,
            )?;
            charts.push((
                file.to_owned(),
                "Operator: seconds from apply to every child".into(),
            ));
        }
        Ok(charts)
    }

    fn throughput_chart(&self, path: &Path, points: &[LoadPoint]) -> anyhow::Result<()> {
        let columns = 2;
        let rows = points.len().div_ceil(columns);
        let root = SVGBackend::new(path, (1100, 340 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        for (area, point) in root.split_evenly((rows, columns)).iter().zip(points) {
            let bars: Vec<(String, f64, bool)> = HTTP_TARGETS
                .iter()
                .filter_map(|(target, _)| {
                    let m = self.http(target, point)?;
                    Some((
                        short_name(target).to_owned(),
                        figure(m, "requests_per_sec")?,
                        *target == "noop-http",
                    ))
                })
                .collect();
            let rate = HTTP_TARGETS
                .iter()
                .find_map(|(target, _)| param_i64(self.http(target, point)?, "rate"));
            bar_panel(area, &point.describe(rate), "requests/s", &bars)?;
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }

    /// One panel per protocol: the decode-only ceiling and the ingest, in samples/s.
    fn intake_chart(&self, path: &Path, protocols: &[Protocol]) -> anyhow::Result<()> {
        let columns = 3;
        let rows = protocols.len().div_ceil(columns);
        let root = SVGBackend::new(path, (1100, 300 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        for (area, &protocol) in root.split_evenly((rows, columns)).iter().zip(protocols) {
            let bars: Vec<(String, f64, bool)> = [
                (intake::CEILING, "decode only (ceiling)", true),
                (intake::INGEST, "ingest → file, batch", false),
            ]
            .iter()
            .filter_map(|(target, name, ceiling)| {
                let m = self.intake(target, protocol)?;
                Some(((*name).to_owned(), figure(m, "samples_per_sec")?, *ceiling))
            })
            .collect();
            bar_panel(area, protocol.display(), "samples/s", &bars)?;
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }

    fn latency_chart(&self, path: &Path, points: &[LoadPoint]) -> anyhow::Result<()> {
        let columns = 2;
        let rows = points.len().div_ceil(columns);
        let root = SVGBackend::new(path, (1100, 340 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        for (area, point) in root.split_evenly((rows, columns)).iter().zip(points) {
            let series: Vec<(String, Vec<f64>)> = HTTP_TARGETS
                .iter()
                .filter_map(|(target, name)| {
                    let m = self.http(target, point)?;
                    Some((
                        (*name).to_owned(),
                        vec![
                            figure(m, "p50_ms")?,
                            figure(m, "p99_ms")?,
                            figure(m, "p999_ms")?,
                        ],
                    ))
                })
                .collect();
            let rate = HTTP_TARGETS
                .iter()
                .find_map(|(target, _)| param_i64(self.http(target, point)?, "rate"));
            line_panel(
                area,
                &point.describe(rate),
                &["p50", "p99", "p99.9"],
                &series,
            )?;
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {error:?}")
}

const CEILING_COLOR: RGBColor = RGBColor(150, 150, 150);
/// The lines of a latency panel: one for each HTTP target.
const SERIES_COLORS: [RGBColor; 6] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// `count` segments on the x axis (a segmented `0..n` range draws n + 1).
fn segments(
    count: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..count.saturating_sub(1).max(1)).into_segmented()
}

fn bar_chart_file(
    path: &Path,
    size: (u32, u32),
    title: &str,
    unit: &str,
    bars: &[(String, f64, bool)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    bar_panel(&root, title, unit, bars)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One bar per entry; ceilings grey, the rest blue, each labelled with its value.
fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    bars: &[(String, f64, bool)],
) -> anyhow::Result<()> {
    if bars.is_empty() {
        return Ok(());
    }
    let top = bars
        .iter()
        .map(|(_, v, _)| *v)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let names: Vec<String> = bars.iter().map(|(name, _, _)| name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(segments(bars.len()), 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .y_label_formatter(&|value| format_figure(*value))
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    for (i, (_, value, ceiling)) in bars.iter().enumerate() {
        let color = if *ceiling {
            CEILING_COLOR
        } else {
            SERIES_COLORS[1]
        };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *value),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        chart
            .draw_series(std::iter::once(bar))
            .map_err(plot_error)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format_figure(*value),
                (SegmentValue::CenterOf(i), *value),
                ("sans-serif", 12),
            )))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// One line per series over the x labels, log-scaled y.
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_labels: &[&str],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let values = series.iter().flat_map(|(_, v)| v.iter().copied());
    let (low, high) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() || high <= 0.0 {
        return Ok(());
    }
    let low = (low.max(1e-3) / 2.0).max(1e-3);
    let high = high * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..x_labels.len()).into_segmented(),
            (low..high).log_scale(),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .y_desc("milliseconds")
        .y_label_formatter(&|value| format!("{value}"))
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => x_labels
                .get(*i)
                .map(|l| (*l).to_owned())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    for (index, (name, values)) in series.iter().enumerate() {
        let color = SERIES_COLORS[index % SERIES_COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (SegmentValue::CenterOf(i), *v)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}
