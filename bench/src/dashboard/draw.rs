//! The picture: every dashboard under a header, its panels where Grafana's 24-column grid puts
//! them; a line chart per time series panel with its legend under it, a stat panel's last
//! values big, a row as a heading, and "no data" (with why) in the box of a panel that has none.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::grafana::GRID_COLUMNS;
use super::legend;
use super::{Content, DrawnPanel, Page};

/// Wide enough for two half-width panels side by side, narrow enough for a README.
const WIDTH: u32 = 1600;
const MARGIN: i32 = 16;
/// One grid row, as Grafana's 30 px cell, plus a little room for the smaller text of a picture.
const ROW_HEIGHT: i32 = 32;
/// Between two panels, each side.
const GAP: i32 = 4;
const HEADER: i32 = 58;

const BORDER: RGBColor = RGBColor(204, 204, 220);
const TEXT: RGBColor = RGBColor(36, 41, 46);
const MUTED: RGBColor = RGBColor(110, 116, 125);
const GRID: RGBColor = RGBColor(232, 232, 236);
/// Grafana's classic palette, in its order.
const SERIES_COLORS: [RGBColor; 8] = [
    RGBColor(115, 191, 105),
    RGBColor(242, 204, 12),
    RGBColor(87, 148, 242),
    RGBColor(255, 120, 10),
    RGBColor(242, 73, 92),
    RGBColor(184, 119, 217),
    RGBColor(112, 219, 237),
    RGBColor(150, 115, 85),
];
const STAT_COLOR: RGBColor = RGBColor(55, 135, 45);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the dashboard: {error:?}")
}

/// Writes the pages, one under the other, as one SVG at `path`.
pub fn draw(path: &Path, pages: &[Page]) -> anyhow::Result<()> {
    let heights: Vec<i32> = pages
        .iter()
        .map(|page| HEADER + page.grid_rows as i32 * ROW_HEIGHT + MARGIN)
        .collect();
    let total = heights.iter().sum::<i32>().max(HEADER) as u32;
    let root = SVGBackend::new(path, (WIDTH, total)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut top = 0;
    for (page, height) in pages.iter().zip(heights) {
        let area = root.clone().shrink((0, top), (WIDTH, height as u32));
        draw_page(&area, page)?;
        top += height;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_page(area: &Area, page: &Page) -> anyhow::Result<()> {
    text(area, &page.title, (MARGIN, 12), 22, TEXT, true)?;
    text(area, &page.subtitle, (MARGIN, 38), 13, MUTED, false)?;
    let column = f64::from(WIDTH - 2 * MARGIN as u32) / f64::from(GRID_COLUMNS);
    for panel in &page.panels {
        let grid = panel.panel.grid;
        let x = MARGIN + (f64::from(grid.x) * column).round() as i32 + GAP;
        // A panel saved wider than what is right of it is cut at the grid's edge, as Grafana does.
        let columns = grid.w.min(GRID_COLUMNS.saturating_sub(grid.x));
        let w = (f64::from(columns) * column).round() as i32 - 2 * GAP;
        let y = HEADER + grid.y as i32 * ROW_HEIGHT + GAP;
        let h = grid.h as i32 * ROW_HEIGHT - 2 * GAP;
        if w < 20 || h < 10 {
            continue;
        }
        let boxed = area.clone().shrink((x, y), (w as u32, h as u32));
        draw_panel(&boxed, panel, (w, h))?;
    }
    Ok(())
}

fn draw_panel(area: &Area, drawn: &DrawnPanel, (w, h): (i32, i32)) -> anyhow::Result<()> {
    let title = &drawn.panel.title;
    if let Content::Row = drawn.content {
        text(area, title, (2, h / 2 - 9), 17, TEXT, true)?;
        let line = PathElement::new(vec![(0, h - 2), (w, h - 2)], BORDER.stroke_width(1));
        return area.draw(&line).map_err(plot_error);
    }
    let border = Rectangle::new([(0, 0), (w - 1, h - 1)], BORDER.stroke_width(1));
    area.draw(&border).map_err(plot_error)?;
    text(area, &fit(title, w - 16, 14), (8, 6), 14, TEXT, true)?;
    let inside = area
        .clone()
        .shrink((4, 26), ((w - 8).max(1) as u32, (h - 30).max(1) as u32));
    let size = (w - 8, h - 30);
    match &drawn.content {
        Content::Row => Ok(()),
        Content::Series(series) => draw_lines(&inside, size, drawn, series),
        Content::Stat(values) => draw_stat(&inside, size, drawn, values),
        Content::NoData(why) => centred_note(&inside, size, "no data", why),
        Content::NotDrawn => centred_note(
            &inside,
            size,
            &format!("{} panel", drawn.panel.kind),
            "not drawn: only time series and stat panels are",
        ),
    }
}

fn draw_lines(
    area: &Area,
    (w, h): (i32, i32),
    drawn: &DrawnPanel,
    series: &[super::Named],
) -> anyhow::Result<()> {
    let range = drawn.range;
    let legend_lines = if h > 180 { 2 } else { 1 };
    let legend_height = legend_lines * 16 + 4;
    let (chart_area, legend_area) = area.split_vertically(h - legend_height);
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite());
    let (low, high) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let high = if high > low {
        high + (high - low) * 0.08
    } else {
        low + 1.0
    };
    let with_seconds = range.end - range.start < 600;
    let unit = drawn.panel.unit();
    let mut chart = ChartBuilder::on(&chart_area)
        .margin_right(14)
        .margin_top(4)
        .x_label_area_size(20)
        .y_label_area_size(64)
        .build_cartesian_2d(range.start as f64..range.end as f64, low..high)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_labels(if w > 500 { 8 } else { 4 })
        .y_labels(if h > 180 { 5 } else { 3 })
        .max_light_lines(0)
        .bold_line_style(GRID.stroke_width(1))
        .axis_style(BORDER.stroke_width(1))
        .label_style(font(11).color(&MUTED))
        .x_label_formatter(&|t| legend::time_of_day(*t as i64, with_seconds))
        .y_label_formatter(&|v| legend::value(*v, unit))
        .draw()
        .map_err(plot_error)?;
    // A gap of more than a step and a half is a gap in the data, not a line across it.
    let gap = range.step as f64 * 1.5;
    for (index, one) in series.iter().enumerate() {
        let color = SERIES_COLORS[index % SERIES_COLORS.len()];
        let finite: Vec<(f64, f64)> = one
            .points
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite())
            .collect();
        for run in finite.chunk_by(|a, b| b.0 - a.0 <= gap) {
            chart
                .draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))
                .map_err(plot_error)?;
        }
    }
    draw_legend(&legend_area, w, legend_lines, series, drawn.dropped)
}

/// The series' names in lines under the chart; what does not fit is counted as "+N more".
fn draw_legend(
    area: &Area,
    w: i32,
    lines: i32,
    series: &[super::Named],
    dropped: usize,
) -> anyhow::Result<()> {
    let (mut x, mut line) = (66, 0);
    let mut left = series.len() + dropped;
    for (index, one) in series.iter().enumerate() {
        let name = fit(&one.name, w / 2, 11);
        let width = 22 + text_width(&name, 11);
        if x + width > w && x > 66 {
            line += 1;
            x = 66;
        }
        if line >= lines {
            break;
        }
        let y = 4 + line * 16;
        let color = SERIES_COLORS[index % SERIES_COLORS.len()];
        let swatch = Rectangle::new([(x, y + 3), (x + 12, y + 7)], color.filled());
        area.draw(&swatch).map_err(plot_error)?;
        text(area, &name, (x + 16, y), 11, TEXT, false)?;
        x += width;
        left -= 1;
    }
    if left > 0 {
        let y = 4 + (line.min(lines - 1)) * 16;
        text(
            area,
            &format!("+{left} more"),
            (w - 70, y),
            11,
            MUTED,
            false,
        )?;
    }
    Ok(())
}

/// Up to four last values side by side, each with its series' name under it when there are
/// several.
fn draw_stat(
    area: &Area,
    (w, h): (i32, i32),
    drawn: &DrawnPanel,
    values: &[(String, f64)],
) -> anyhow::Result<()> {
    let shown = &values[..values.len().min(4)];
    let cell = w / shown.len().max(1) as i32;
    let unit = drawn.panel.unit();
    for (index, (name, value)) in shown.iter().enumerate() {
        let figure = legend::value(*value, unit);
        // Bold figures and unit letters are about 0.7 em wide; 16 px keeps neighbours apart.
        let by_width = f64::from(cell - 16) / (figure.chars().count().max(1) as f64 * 0.7);
        let size = by_width.min(f64::from(h) * 0.55).clamp(12.0, 72.0) as i32;
        let centre = index as i32 * cell + cell / 2;
        // One value is the panel's, as its title says; several need their names.
        let named = shown.len() > 1;
        let y = if named { h / 2 - 8 } else { h / 2 };
        let style = font(size)
            .style(FontStyle::Bold)
            .color(&STAT_COLOR)
            .pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new(figure, (centre, y), style))
            .map_err(plot_error)?;
        if named {
            let style = font(12)
                .color(&MUTED)
                .pos(Pos::new(HPos::Center, VPos::Top));
            let label = fit(name, cell - 8, 12);
            area.draw(&Text::new(label, (centre, y + size / 2 + 4), style))
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

fn centred_note(area: &Area, (w, h): (i32, i32), big: &str, small: &str) -> anyhow::Result<()> {
    let style = font(16)
        .color(&MUTED)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(big.to_owned(), (w / 2, h / 2 - 8), style))
        .map_err(plot_error)?;
    if !small.is_empty() {
        let style = font(11)
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Top));
        let small = fit(small, w - 16, 11);
        area.draw(&Text::new(small, (w / 2, h / 2 + 6), style))
            .map_err(plot_error)?;
    }
    Ok(())
}

fn text(
    area: &Area,
    value: &str,
    at: (i32, i32),
    size: i32,
    color: RGBColor,
    bold: bool,
) -> anyhow::Result<()> {
    let font = font(size);
    let font = if bold {
        font.style(FontStyle::Bold)
    } else {
        font
    };
    let style = font.color(&color).pos(Pos::new(HPos::Left, VPos::Top));
    area.draw(&Text::new(value.to_owned(), at, style))
        .map_err(plot_error)
}

/// A sans-serif font `size` px high: plotters draws a font at its size / 1.24.
fn font(size: i32) -> FontDesc<'static> {
    ("sans-serif", f64::from(size) * 1.24).into_font()
}

/// About how wide `value` is in a sans-serif font of `size` px (no font metrics in an SVG).
fn text_width(value: &str, size: i32) -> i32 {
    (value.chars().count() as f64 * f64::from(size) * 0.58).ceil() as i32
}

/// `value` cut with an ellipsis to about `width` px.
fn fit(value: &str, width: i32, size: i32) -> String {
    let most = (f64::from(width.max(0)) / (f64::from(size) * 0.58)) as usize;
    if value.chars().count() <= most {
        return value.to_owned();
    }
    let cut: String = value.chars().take(most.saturating_sub(1)).collect();
    format!("{cut}…")
}
