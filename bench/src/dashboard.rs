//! `metricstream-bench dashboard`: a picture of Grafana dashboards drawn from what a real
//! Prometheus holds for a time range, for the README (docs/benchmarks.md, "Drawing a dashboard
//! from a run").
//!
//! Each dashboard file's time series and stat panels are queried (`/api/v1/query_range`, every
//! target, Grafana's variables replaced as [`variables`] says) and drawn where the dashboard's
//! grid puts them, into one SVG. A panel whose queries fail or find nothing says so in its box
//! and on stderr; only a dashboard that cannot be read, or a Prometheus that cannot be reached
//! at all, fails the command.

mod draw;
mod grafana;
mod legend;
mod prometheus;
mod variables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;

use grafana::{Dashboard, Panel};
use prometheus::{Prometheus, Range};
use variables::{Timing, Variables};

/// More lines than this in one small chart are noise: the ones with the highest peaks are
/// drawn, and the legend counts the rest.
const MAX_SERIES: usize = 8;

#[derive(Parser, Debug)]
pub struct DashboardArgs {
    /// Prometheus' base URL, e.g. http://127.0.0.1:9090 (every target is queried there; the
    /// dashboard's datasources are ignored).
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// A Grafana dashboard JSON file; repeat for several, drawn one under the other.
    #[arg(long = "dashboard", value_name = "FILE", required = true)]
    pub dashboards: Vec<PathBuf>,
    /// Start of the time range, Unix seconds.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub start: i64,
    /// End of the time range, Unix seconds.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub end: i64,
    /// Seconds between points; also Grafana's $__interval.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub step: u64,
    /// Prometheus' scrape interval in seconds, from which $__rate_interval is computed as
    /// Grafana does: max(step + scrape interval, 4 × scrape interval).
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub scrape_interval: u64,
    /// A dashboard variable's value, NAME=VALUE (repeat for several), inserted verbatim. A
    /// variable without one takes the value the dashboard was saved with, or `.*` inside a
    /// regex matcher (=~, !~); elsewhere its panel says which --var it needs.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

fn parse_var(value: &str) -> Result<(String, String), String> {
    let (name, value) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not NAME=VALUE"))?;
    let name = name.trim().trim_start_matches('$');
    if name.is_empty() {
        return Err("the variable's name is empty".to_owned());
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// One dashboard's panels with what they show.
pub(crate) struct Page {
    title: String,
    subtitle: String,
    grid_rows: u32,
    panels: Vec<DrawnPanel>,
}

pub(crate) struct DrawnPanel {
    panel: Panel,
    range: Range,
    content: Content,
    /// Series beyond [`MAX_SERIES`], not drawn.
    dropped: usize,
}

/// A series, named by its target's legend format.
pub(crate) struct Named {
    name: String,
    points: Vec<(f64, f64)>,
}

pub(crate) enum Content {
    Row,
    Series(Vec<Named>),
    /// Each series' name and last value.
    Stat(Vec<(String, f64)>),
    /// Why, when a query failed or a variable had no value; empty when Prometheus has nothing.
    NoData(String),
    /// A panel type the picture does not draw (table, text, heatmap, ...).
    NotDrawn,
}

/// Draws the dashboards into `out`.
pub async fn run(args: DashboardArgs, out: &Path) -> anyhow::Result<()> {
    if args.end <= args.start {
        bail!(
            "--end ({}) must be after --start ({})",
            args.end,
            args.start
        );
    }
    if args.step == 0 || args.scrape_interval == 0 {
        bail!("--step and --scrape-interval must be at least 1 second");
    }
    let mut given = BTreeMap::new();
    for (name, value) in &args.vars {
        if given.insert(name.clone(), value.clone()).is_some() {
            bail!("--var {name}=... is given twice");
        }
    }
    let dashboards = args
        .dashboards
        .iter()
        .map(|path| Ok((path, Dashboard::read(path)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for name in given.keys() {
        if !dashboards.iter().any(|(_, d)| d.mentions(name)) {
            eprintln!(
                "metricstream-bench dashboard: --var {name}=...: no dashboard has a variable \
                 {name} or a query that uses ${name}"
            );
        }
    }
    let prometheus = Prometheus::new(&args.prometheus)?;
    prometheus.check_reachable().await?;
    let range = Range {
        start: args.start,
        end: args.end,
        step: args.step,
    };
    let timing = Timing {
        step: args.step,
        scrape_interval: args.scrape_interval,
        range: (args.end - args.start).unsigned_abs(),
    };
    let mut pages = Vec::new();
    for (path, dashboard) in &dashboards {
        let variables = Variables::new(&dashboard.templating.list, &given, timing);
        let title = if dashboard.title.is_empty() {
            path.display().to_string()
        } else {
            dashboard.title.clone()
        };
        let laid_out = dashboard.laid_out();
        let mut panels = Vec::new();
        for panel in laid_out.iter().cloned() {
            let context = format!("dashboard {title:?}, panel {:?}", panel.title);
            let (content, dropped) =
                panel_content(&prometheus, &variables, &panel, range, &context).await;
            panels.push(DrawnPanel {
                panel,
                range,
                content,
                dropped,
            });
        }
        pages.push(Page {
            subtitle: format!(
                "{} to {}, step {} s, from {}",
                legend::date_time(args.start),
                legend::date_time(args.end),
                args.step,
                args.prometheus.trim_end_matches('/')
            ),
            title,
            grid_rows: Dashboard::grid_height(&laid_out),
            panels,
        });
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    draw::draw(out, &pages)?;
    Ok(())
}

/// The largest magnitude of a series' finite values.
fn peak(series: &Named) -> f64 {
    series
        .points
        .iter()
        .map(|(_, v)| v.abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

/// What one panel shows, and how many series it leaves out; failures are printed, naming the
/// panel, and drawn as "no data" with the reason.
async fn panel_content(
    prometheus: &Prometheus,
    variables: &Variables,
    panel: &Panel,
    range: Range,
    context: &str,
) -> (Content, usize) {
    let stat = match panel.kind.as_str() {
        "row" => return (Content::Row, 0),
        "timeseries" | "graph" => false,
        "stat" | "singlestat" | "gauge" | "bargauge" => true,
        _ => return (Content::NotDrawn, 0),
    };
    let mut named = Vec::new();
    let mut failures = Vec::new();
    for (index, target) in panel.targets.iter().enumerate() {
        if target.hide || target.expr.trim().is_empty() {
            continue;
        }
        let which = if target.ref_id.is_empty() {
            format!("target {}", index + 1)
        } else {
            format!("query {}", target.ref_id)
        };
        let expr = match variables.substitute(&target.expr) {
            Ok(expr) => expr,
            Err(missing) => {
                let needs: Vec<String> = missing.iter().map(|m| format!("--var {m}=...")).collect();
                failures.push(format!("needs {}", needs.join(" ")));
                eprintln!(
                    "metricstream-bench dashboard: {context}, {which}: no value for {}: pass {}",
                    missing.join(", "),
                    needs.join(" ")
                );
                continue;
            }
        };
        match prometheus.query_range(&expr, range).await {
            Ok(series) => named.extend(series.into_iter().map(|s| Named {
                name: legend::legend(&target.legend_format, &s.labels, &expr),
                points: s.points,
            })),
            Err(error) => {
                eprintln!("metricstream-bench dashboard: {context}, {which} `{expr}`: {error:#}");
                failures.push(format!("{error:#}"));
            }
        }
    }
    named.retain(|s| s.points.iter().any(|(_, v)| v.is_finite()));
    if named.is_empty() && failures.is_empty() {
        // Often a label value that does not exist, or a `$variable` no one gave.
        eprintln!("metricstream-bench dashboard: {context}: no data (its queries found no series)");
    }
    if named.is_empty() {
        return (Content::NoData(failures.join("; ")), 0);
    }
    let dropped = named.len().saturating_sub(MAX_SERIES);
    if dropped > 0 {
        // The series that move the most tell the most: many a counter has series that stay 0.
        named.sort_by(|a, b| peak(b).total_cmp(&peak(a)));
        named.truncate(MAX_SERIES);
        named.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if stat {
        let last = named
            .into_iter()
            .filter_map(|s| {
                let (_, value) = s.points.iter().rev().find(|(_, v)| v.is_finite())?;
                Some((s.name, *value))
            })
            .collect();
        (Content::Stat(last), dropped)
    } else {
        (Content::Series(named), dropped)
    }
}
