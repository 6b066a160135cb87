//! Grafana's variables in a target's PromQL, replaced the way Grafana would before it queries
//! Prometheus (pure).
//!
//! - `$__interval` is the step; `$__rate_interval` is Grafana's own
//!   `max($__interval + scrape interval, 4 × scrape interval)`, so a `rate()` always spans at
//!   least four scrapes (with the default 15 s scrape interval and a 5 s step: `60s`);
//!   `$__range` (and `_s`, `_ms`) is the picture's time range.
//! - Every other variable in `$name`, `${name}`, `${name:format}` or `[[name]]` form takes, in
//!   order: the `--var name=value` given, inserted verbatim; the value the dashboard was saved
//!   with (`current`; several joined with `|`; "All" as the variable's `allValue`).
//! - A variable with neither becomes `.*` inside a regex matcher (`=~`, `!~`), which is what
//!   "All" means there; anywhere else the target cannot be queried and says which variable is
//!   missing.
//! - A `$` word that names no variable (`"$1"` in `label_replace`) is left alone, as Grafana does.

use std::collections::BTreeMap;
use std::ops::Range;

use super::grafana::Variable;

/// The times the built-in interval variables come from, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub step: u64,
    pub scrape_interval: u64,
    pub range: u64,
}

impl Timing {
    /// Grafana's `$__rate_interval`.
    pub fn rate_interval(&self) -> u64 {
        (self.step + self.scrape_interval).max(4 * self.scrape_interval)
    }
}

/// What every variable of one dashboard stands for.
#[derive(Debug)]
pub struct Variables {
    /// `None`: known, but without a value.
    values: BTreeMap<String, Option<String>>,
}

impl Variables {
    pub fn new(saved: &[Variable], given: &BTreeMap<String, String>, timing: Timing) -> Self {
        let mut values: BTreeMap<String, Option<String>> = saved
            .iter()
            .map(|variable| (variable.name.clone(), saved_value(variable)))
            .collect();
        for (name, value) in given {
            values.insert(name.clone(), Some(value.clone()));
        }
        let builtins = [
            ("__interval", format!("{}s", timing.step)),
            ("__interval_ms", (timing.step * 1000).to_string()),
            ("__rate_interval", format!("{}s", timing.rate_interval())),
            ("__range", format!("{}s", timing.range)),
            ("__range_s", timing.range.to_string()),
            ("__range_ms", (timing.range * 1000).to_string()),
        ];
        for (name, value) in builtins {
            values.insert(name.to_owned(), Some(value));
        }
        Self { values }
    }

    /// `expr` with every known variable replaced; `Err` names the variables that have no value
    /// outside a regex matcher.
    pub fn substitute(&self, expr: &str) -> Result<String, Vec<String>> {
        let regexes = regex_strings(expr);
        let mut out = String::with_capacity(expr.len());
        let mut missing = Vec::new();
        let mut rest = 0;
        for (span, name) in references(expr) {
            let Some(value) = self.values.get(&name) else {
                continue;
            };
            out.push_str(&expr[rest..span.start]);
            rest = span.end;
            match value {
                Some(value) => out.push_str(value),
                None if regexes.iter().any(|r| r.contains(&span.start)) => out.push_str(".*"),
                None => {
                    out.push_str(&expr[span.clone()]);
                    if !missing.contains(&name) {
                        missing.push(name);
                    }
                }
            }
        }
        out.push_str(&expr[rest..]);
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(missing)
        }
    }
}

/// The value a variable was saved with, if it is one: not empty, and "All" only when the
/// variable says what All stands for.
fn saved_value(variable: &Variable) -> Option<String> {
    if variable.kind == "datasource" {
        // Every query goes to --prometheus; a `${datasource}` in an expr reads as nothing.
        return Some(String::new());
    }
    let value = &variable.current.as_ref()?.value;
    let values: Vec<&str> = match value {
        serde_json::Value::String(one) => vec![one.as_str()],
        serde_json::Value::Array(many) => many.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    if values.contains(&"$__all") {
        return variable.all_value.clone().filter(|all| !all.is_empty());
    }
    let values: Vec<&str> = values.into_iter().filter(|v| !v.is_empty()).collect();
    (!values.is_empty()).then(|| values.join("|"))
}

/// Every variable reference in `expr`: its span and the variable's name.
fn references(expr: &str) -> Vec<(Range<usize>, String)> {
    let bytes = expr.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let reference = match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => expr[i + 2..].find('}').map(|close| {
                let inner = &expr[i + 2..i + 2 + close];
                // `${name:format}` and `${name.field}`: the format is Grafana's business.
                let name = inner.split([':', '.']).next().unwrap_or_default();
                (i..i + 3 + close, name.trim().to_owned())
            }),
            b'$' => {
                let len = word_len(&bytes[i + 1..]);
                (len > 0).then(|| (i..i + 1 + len, expr[i + 1..i + 1 + len].to_owned()))
            }
            b'[' if bytes.get(i + 1) == Some(&b'[') => expr[i + 2..].find("]]").map(|close| {
                let inner = &expr[i + 2..i + 2 + close];
                let name = inner.split(':').next().unwrap_or_default();
                (i..i + 4 + close, name.trim().to_owned())
            }),
            _ => None,
        };
        match reference {
            // Only a word is a name: `x[[[__interval]]]` holds `[[__interval]]` one further on.
            Some((span, name)) if !name.is_empty() && word_len(name.as_bytes()) == name.len() => {
                i = span.end;
                found.push((span, name));
            }
            _ => i += 1,
        }
    }
    found
}

fn word_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

/// The insides of the string literals that are the right side of a regex matcher (`=~`, `!~`).
fn regex_strings(expr: &str) -> Vec<Range<usize>> {
    let bytes = expr.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let quote = bytes[i];
        if !matches!(quote, b'"' | b'\'' | b'`') {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < bytes.len() && bytes[end] != quote {
            // Backquoted strings have no escapes.
            end += if bytes[end] == b'\\' && quote != b'`' {
                2
            } else {
                1
            };
        }
        let before = expr[..i].trim_end();
        if before.ends_with("=~") || before.ends_with("!~") {
            spans.push(i + 1..end.min(bytes.len()));
        }
        i = end + 1;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::grafana::Current;

    const TIMING: Timing = Timing {
        step: 5,
        scrape_interval: 15,
        range: 600,
    };

    fn variables(saved: &[Variable], given: &[(&str, &str)]) -> Variables {
        let given = given
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Variables::new(saved, &given, TIMING)
    }

    fn saved(name: &str, value: serde_json::Value, all_value: Option<&str>) -> Variable {
        Variable {
            name: name.to_owned(),
            kind: "query".to_owned(),
            current: Some(Current { value }),
            all_value: all_value.map(str::to_owned),
        }
    }

    #[test]
    fn intervals_in_every_form() {
        let v = variables(&[], &[]);
        assert_eq!(
            v.substitute("rate(x[$__rate_interval]) + rate(y[${__rate_interval}])"),
            Ok("rate(x[60s]) + rate(y[60s])".to_owned())
        );
        assert_eq!(
            v.substitute("avg_over_time(x[[[__interval]]]) / $__range_s"),
            Ok("avg_over_time(x[5s]) / 600".to_owned())
        );
        // A step longer than three scrapes: the interval plus one scrape.
        let long = Timing {
            step: 60,
            scrape_interval: 15,
            range: 3600,
        };
        assert_eq!(long.rate_interval(), 75);
    }

    #[test]
    fn given_values_win_and_missing_ones_match_everything_in_regexes() {
        let v = variables(
            &[saved("namespace", "default".into(), None)],
            &[("namespace", "metrics")],
        );
        assert_eq!(
            v.substitute(r#"up{namespace="$namespace", stream=~"${stream}"}"#),
            // `stream` is neither given nor saved nor a dashboard variable: left alone.
            Ok(r#"up{namespace="metrics", stream=~"${stream}"}"#.to_owned())
        );
        let v = variables(
            &[saved("stream", serde_json::Value::Null, None)],
            &[("namespace", "metrics")],
        );
        assert_eq!(
            v.substitute(
                r#"up{namespace="$namespace", stream=~"${stream:regex}", x!~'[[stream]]'}"#
            ),
            Ok(r#"up{namespace="metrics", stream=~".*", x!~'.*'}"#.to_owned())
        );
    }

    #[test]
    fn a_missing_value_outside_a_regex_is_named() {
        let v = variables(&[saved("stream", "".into(), None)], &[]);
        assert_eq!(
            v.substitute(r#"up{stream="$stream"} or up{stream="$stream"}"#),
            Err(vec!["stream".to_owned()])
        );
    }

    #[test]
    fn saved_values_all_and_multi() {
        let v = variables(
            &[
                saved("ns", serde_json::json!(["a", "b"]), None),
                saved("pod", "$__all".into(), Some(".+")),
                saved("job", serde_json::json!(["$__all"]), None),
            ],
            &[],
        );
        assert_eq!(
            v.substitute(r#"up{ns=~"$ns", pod=~"$pod", job=~"$job"}"#),
            Ok(r#"up{ns=~"a|b", pod=~".+", job=~".*"}"#.to_owned())
        );
    }

    #[test]
    fn dollar_words_that_are_no_variable_stay() {
        let v = variables(&[], &[]);
        let expr = r#"label_replace(up, "host", "$1", "instance", "(.*):\\d+")"#;
        assert_eq!(v.substitute(expr), Ok(expr.to_owned()));
    }
}
