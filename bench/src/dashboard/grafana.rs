//! The part of Grafana's dashboard JSON the picture needs: panels with their grid positions and
//! PromQL targets, rows (nested panels of collapsed rows included), and the templating
//! variables. Everything else in the file is ignored, so dashboards exported by any recent
//! Grafana read.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The columns of Grafana's grid.
pub const GRID_COLUMNS: u32 = 24;

#[derive(Debug, Deserialize)]
pub struct Dashboard {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub panels: Vec<Panel>,
    #[serde(default)]
    pub templating: Templating,
}

#[derive(Debug, Default, Deserialize)]
pub struct Templating {
    #[serde(default)]
    pub list: Vec<Variable>,
}

/// A dashboard variable, as saved: its name, and the value selected when it was saved.
#[derive(Debug, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub current: Option<Current>,
    /// What "All" stands for when set (often `.*`); Grafana's own default joins every value.
    #[serde(default, rename = "allValue")]
    pub all_value: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Current {
    /// A string, or a list of them for a multi-value variable.
    #[serde(default)]
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Panel {
    #[serde(default)]
    pub title: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, rename = "gridPos")]
    pub grid: GridPos,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// A collapsed row keeps its panels here; an expanded one has them at the top level.
    #[serde(default)]
    pub panels: Vec<Panel>,
    #[serde(default, rename = "fieldConfig")]
    pub field_config: Option<FieldConfig>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct GridPos {
    #[serde(default)]
    pub x: u32,
    #[serde(default)]
    pub y: u32,
    #[serde(default = "default_width")]
    pub w: u32,
    #[serde(default = "default_height")]
    pub h: u32,
}

/// Grafana's own defaults for a panel saved without them.
fn default_width() -> u32 {
    12
}
fn default_height() -> u32 {
    8
}

#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    #[serde(default)]
    pub expr: String,
    #[serde(default, rename = "legendFormat")]
    pub legend_format: String,
    #[serde(default, rename = "refId")]
    pub ref_id: String,
    #[serde(default)]
    pub hide: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FieldConfig {
    #[serde(default)]
    pub defaults: FieldDefaults,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FieldDefaults {
    /// Grafana's unit id: `bytes`, `s`, `percentunit`, `reqps`, ...
    #[serde(default)]
    pub unit: Option<String>,
}

impl Panel {
    pub fn unit(&self) -> Option<&str> {
        self.field_config.as_ref()?.defaults.unit.as_deref()
    }
}

impl Dashboard {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the dashboard {}", path.display()))?;
        let dashboard: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a Grafana dashboard's JSON", path.display()))?;
        Ok(dashboard)
    }

    /// Every panel to draw, rows included, in grid positions where none overlap: a collapsed
    /// row is drawn expanded, so its panels are placed under it and everything below moves down
    /// by their height (Grafana saves them where they were when the row was open, and the
    /// panels below where they are while it is closed).
    pub fn laid_out(&self) -> Vec<Panel> {
        let mut top: Vec<&Panel> = self.panels.iter().collect();
        top.sort_by_key(|p| (p.grid.y, p.grid.x));
        let mut placed = Vec::new();
        let mut shift = 0;
        for panel in top {
            let mut row = panel.clone();
            row.grid.y += shift;
            let nested = std::mem::take(&mut row.panels);
            let row_y = row.grid.y;
            let row_bottom = row_y + row.grid.h;
            placed.push(row);
            let mut extent = 0;
            let mut inner: Vec<Panel> = nested;
            inner.sort_by_key(|p| (p.grid.y, p.grid.x));
            for mut child in inner {
                // Relative to the row as saved; a child saved above its row goes just under it.
                let offset = child.grid.y.saturating_sub(panel.grid.y + panel.grid.h);
                child.grid.y = row_bottom + offset;
                extent = extent.max(offset + child.grid.h);
                placed.push(child);
            }
            shift += extent;
        }
        placed
    }

    /// Whether the dashboard has a variable `name`, or a query that names it (only a hint for
    /// a mistyped --var: `$stream` also mentions `stream_id`).
    pub fn mentions(&self, name: &str) -> bool {
        fn in_panel(panel: &Panel, name: &str) -> bool {
            panel.targets.iter().any(|t| t.expr.contains(name))
                || panel.panels.iter().any(|p| in_panel(p, name))
        }
        self.templating.list.iter().any(|v| v.name == name)
            || self.panels.iter().any(|p| in_panel(p, name))
    }

    /// The grid rows the laid-out panels take.
    pub fn grid_height(panels: &[Panel]) -> u32 {
        panels
            .iter()
            .map(|p| p.grid.y + p.grid.h)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapsed_rows_are_expanded_in_place() {
        let json = r#"{"title": "t", "panels": [
            {"type": "timeseries", "title": "a", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 8}},
            {"type": "row", "title": "closed", "gridPos": {"x": 0, "y": 8, "w": 24, "h": 1},
             "panels": [{"type": "stat", "title": "b", "gridPos": {"x": 0, "y": 9, "w": 12, "h": 4}}]},
            {"type": "row", "title": "next", "gridPos": {"x": 0, "y": 9, "w": 24, "h": 1}}
        ]}"#;
        let dashboard: Dashboard = serde_json::from_str(json).expect("a dashboard");
        let placed: Vec<(String, u32)> = dashboard
            .laid_out()
            .into_iter()
            .map(|p| (p.title, p.grid.y))
            .collect();
        assert_eq!(
            placed,
            [
                ("a".to_owned(), 0),
                ("closed".to_owned(), 8),
                ("b".to_owned(), 9),
                ("next".to_owned(), 13)
            ]
        );
    }
}
