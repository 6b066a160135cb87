//! Just enough of the Prometheus / OpenMetrics text exposition to read one gauge's samples by
//! their `group` and `partition` labels (pure). No parser crate is in the workspace, and the
//! consumer's own encoder (prometheus-client) writes the one shape read here:
//! `name{label="value",...} value [timestamp]`.

use std::collections::BTreeMap;

/// The samples of `metric` whose `group` label is `group`, by their `partition` label, each the
/// largest when a partition appears twice. A sample of `metric` that cannot be read (labels,
/// value not a non-negative whole number) makes the whole answer an error: half-read figures
/// would pass for a smaller lag.
pub fn partition_values(
    text: &str,
    metric: &str,
    group: &str,
) -> Result<BTreeMap<u32, u64>, String> {
    let mut values = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        // Another metric whose name starts with this one (`..._total`, say).
        if !rest.starts_with(['{', ' ', '\t']) {
            continue;
        }
        let sample =
            parse_sample(rest).map_err(|reason| format!("line {}: {reason}", number + 1))?;
        if sample.labels.get("group").map(String::as_str) != Some(group) {
            continue;
        }
        let partition = sample
            .labels
            .get("partition")
            .ok_or_else(|| format!("line {}: no partition label", number + 1))?;
        let partition: u32 = partition
            .parse()
            .map_err(|_| format!("line {}: partition {partition:?}", number + 1))?;
        let entry = values.entry(partition).or_insert(0);
        *entry = (*entry).max(sample.value);
    }
    Ok(values)
}

struct Sample {
    labels: BTreeMap<String, String>,
    value: u64,
}

/// What follows the metric name: optional `{labels}`, the value, an optional timestamp.
fn parse_sample(rest: &str) -> Result<Sample, String> {
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => parse_labels(inside)?,
        None => (BTreeMap::new(), rest),
    };
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    if fields.nth(1).is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok(Sample {
        labels,
        value: whole_number(value)?,
    })
}

/// A gauge's value as a count: prometheus-client writes integers, other encoders may write
/// `6.0` or `6e3`.
fn whole_number(value: &str) -> Result<u64, String> {
    if let Ok(whole) = value.parse::<u64>() {
        return Ok(whole);
    }
    let float: f64 = value
        .parse()
        .map_err(|_| format!("value {value:?} is not a number"))?;
    if !float.is_finite() || float < 0.0 || float.fract() != 0.0 || float > u64::MAX as f64 {
        return Err(format!("value {value:?} is not a count of records"));
    }
    Ok(float as u64)
}

/// `name="value",...}` and what follows the closing brace. Values may escape `\\`, `\"` and
/// `\n`.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, after_name) = text.split_once('=').ok_or("a label without '='")?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("label name {name:?}"));
        }
        let quoted = after_name
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name} has no quoted value"))?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}'s value is not closed")),
                Some((index, '"')) => break index,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                    _ => return Err(format!("label {name}: a bad escape")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        text = &quoted[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRIC: &str = "metricstream_queue_group_lag_records";

    #[test]
    fn reads_the_consumers_own_encoding() {
        let text = "\
# HELP metricstream_queue_group_lag_records Records of the partition the group has not committed.
# TYPE metricstream_queue_group_lag_records gauge
metricstream_queue_group_lag_records{group=\"g\",partition=\"0\"} 6
metricstream_queue_group_lag_records{group=\"g\",partition=\"1\"} 0
metricstream_queue_group_lag_records{group=\"other\",partition=\"1\"} 99
metricstream_queue_group_lag_records_total{group=\"g\",partition=\"2\"} 5
metricstream_queue_consumer_lag_records{partition=\"3\"} 5
# EOF
";
        let values = partition_values(text, METRIC, "g").expect("parse");
        assert_eq!(values, BTreeMap::from([(0, 6), (1, 0)]));
    }

    #[test]
    fn other_spellings_of_a_sample_are_read_too() {
        let text = "\
metricstream_queue_group_lag_records{ partition = \"4\" , group=\"g\", } 7.0 1700000000000
metricstream_queue_group_lag_records{group=\"g\",partition=\"4\"} 3
metricstream_queue_group_lag_records{group=\"g\",odd=\"a \\\"quoted\\\" }, \\\\ value\",partition=\"5\"} 2e3
";
        let values = partition_values(text, METRIC, "g").expect("parse");
        assert_eq!(
            values,
            BTreeMap::from([(4, 7), (5, 2000)]),
            "the largest per partition"
        );
    }

    #[test]
    fn an_unreadable_sample_of_the_metric_is_an_error() {
        for bad in [
            "metricstream_queue_group_lag_records{group=\"g\",partition=\"0\"} NaN",
            "metricstream_queue_group_lag_records{group=\"g\",partition=\"0\"} -1",
            "metricstream_queue_group_lag_records{group=\"g\",partition=\"0\"} 1.5",
            "metricstream_queue_group_lag_records{group=\"g\",partition=\"x\"} 1",
            "metricstream_queue_group_lag_records{group=\"g\"} 1",
            "metricstream_queue_group_lag_records{group=\"g\",partition=\"0} 1",
            "metricstream_queue_group_lag_records{group=\"g\",partition=\"0\"}",
        ] {
            assert!(partition_values(bad, METRIC, "g").is_err(), "{bad}");
        }
    }
}
