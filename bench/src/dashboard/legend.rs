//! The words the picture prints: a series' legend from the target's `legendFormat`, a value in
//! the panel's unit, a time of day (pure).

use std::collections::BTreeMap;

/// Grafana's legend: `{{label}}` (spaces allowed inside) becomes the label's value, empty when
/// the series has no such label; an empty or `__auto` format is the series itself,
/// `name{label="value", ...}`, or `fallback` (the query) when it has no labels at all.
pub fn legend(format: &str, labels: &BTreeMap<String, String>, fallback: &str) -> String {
    if format.is_empty() || format == "__auto" {
        return series_name(labels).unwrap_or_else(|| fallback.to_owned());
    }
    let mut out = String::new();
    let mut rest = format;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..open]);
        let label = rest[open + 2..open + 2 + close].trim();
        out.push_str(labels.get(label).map(String::as_str).unwrap_or_default());
        rest = &rest[open + 4 + close..];
    }
    out.push_str(rest);
    out
}

fn series_name(labels: &BTreeMap<String, String>) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let name = labels.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(key, _)| *key != "__name__")
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    Some(if rest.is_empty() {
        name
    } else {
        format!("{name}{{{}}}", rest.join(", "))
    })
}

/// A value as a panel shows it: SI prefixes (binary ones for bytes), the unit's sign, three
/// significant digits or so.
pub fn value(value: f64, unit: Option<&str>) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    match unit.unwrap_or("") {
        "percentunit" => format!("{}%", short(value * 100.0)),
        "percent" => format!("{}%", short(value)),
        "bytes" | "decbytes" => with_prefix(value, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"]),
        "s" => format!("{} s", short(value)),
        "ms" => format!("{} ms", short(value)),
        "reqps" => format!("{} req/s", short(value)),
        "ops" => format!("{} ops/s", short(value)),
        _ => short(value),
    }
}

fn short(value: f64) -> String {
    with_prefix(value, 1000.0, &["", "k", "M", "G", "T"])
}

fn with_prefix(value: f64, base: f64, prefixes: &[&str]) -> String {
    let mut scaled = value;
    let mut index = 0;
    while scaled.abs() >= base && index + 1 < prefixes.len() {
        scaled /= base;
        index += 1;
    }
    let digits = match scaled.abs() {
        a if a == 0.0 || a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    let number = format!("{scaled:.digits$}");
    // 1.50 → 1.5, 2.00 → 2: trailing zeros say nothing.
    let number = if number.contains('.') {
        number
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else {
        number
    };
    let prefix = prefixes[index];
    match (prefix, index) {
        (_, 0) if prefix.is_empty() => number,
        _ if base == 1000.0 => format!("{number}{prefix}"),
        _ => format!("{number} {prefix}"),
    }
}

/// `HH:MM:SS` (UTC) of a Unix time, or `HH:MM` when `seconds` is false.
pub fn time_of_day(unix: i64, seconds: bool) -> String {
    let day = unix.rem_euclid(86_400);
    let (h, m, s) = (day / 3600, day % 3600 / 60, day % 60);
    if seconds {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time (Howard Hinnant's days-to-civil).
pub fn date_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {} UTC",
        time_of_day(unix, true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn legend_format_takes_label_values() {
        let l = labels(&[("handler", "/api/v1/query"), ("code", "200")]);
        assert_eq!(
            legend("{{handler}} {{ code }}", &l, "q"),
            "/api/v1/query 200"
        );
        assert_eq!(legend("pod {{pod}}", &l, "q"), "pod ");
        assert_eq!(legend("unclosed {{handler", &l, "q"), "unclosed {{handler");
    }

    #[test]
    fn no_format_is_the_series_or_the_query() {
        let l = labels(&[("__name__", "up"), ("job", "p"), ("instance", "a:1")]);
        assert_eq!(legend("", &l, "q"), r#"up{instance="a:1", job="p"}"#);
        assert_eq!(legend("__auto", &labels(&[]), "sum(up)"), "sum(up)");
    }

    #[test]
    fn values_in_units() {
        assert_eq!(value(1234.0, None), "1.23k");
        assert_eq!(value(0.5, Some("percentunit")), "50%");
        assert_eq!(value(3.0 * 1024.0 * 1024.0, Some("bytes")), "3 MiB");
        assert_eq!(value(12.5, Some("reqps")), "12.5 req/s");
        assert_eq!(value(0.0, None), "0");
        assert_eq!(value(0.00123, Some("s")), "0.001 s");
    }

    #[test]
    fn times_in_utc() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date_time(1_796_400_000), "2026-12-04 16:00:00 UTC");
        assert_eq!(time_of_day(1_796_400_000 + 61, false), "16:01");
    }
}
