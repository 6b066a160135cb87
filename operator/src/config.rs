//! The operator's own settings, parsed once from flags (with environment fallbacks) and handed
//! down: the pure build step reads [`WorkloadDefaults`], the controller the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use metricstream_service::{AdminArgs, LogArgs};

/// What every workload gets unless its MetricStream says otherwise.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct WorkloadDefaults {
    /// Image of the ingest and consumer workloads (holds both binaries); `spec.image` overrides.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_IMAGE",
        default_value = "ghcr.io/metricstream/metricstream:0.1.0"
    )]
    pub workload_image: String,

    /// CPU request of each workload container.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_CPU_REQUEST",
        default_value = "100m"
    )]
    pub workload_cpu_request: String,

    /// Memory request of each workload container.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_MEMORY_REQUEST",
        default_value = "128Mi"
    )]
    pub workload_memory_request: String,

    /// CPU limit of each workload container.
    #[arg(long, env = "METRICSTREAM_WORKLOAD_CPU_LIMIT", default_value = "1")]
    pub workload_cpu_limit: String,

    /// Memory limit of each workload container.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_MEMORY_LIMIT",
        default_value = "512Mi"
    )]
    pub workload_memory_limit: String,

    #[command(flatten)]
    pub posture: PostureSettings,
}

impl Default for WorkloadDefaults {
    fn default() -> Self {
        Self {
            workload_image: "ghcr.io/metricstream/metricstream:0.1.0".into(),
            workload_cpu_request: "100m".into(),
            workload_memory_request: "128Mi".into(),
            workload_cpu_limit: "1".into(),
            workload_memory_limit: "512Mi".into(),
            posture: PostureSettings::default(),
        }
    }
}

/// The cluster posture of every stream: its NetworkPolicies (who may connect to the pods); its
/// PodDisruptionBudgets are not configurable (see `reconcile::build`).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct PostureSettings {
    /// Create a NetworkPolicy for each stream's ingest and consumer pods: the ingest port open to
    /// every source, the admin port (9090: /metrics and probes) only to the namespaces of
    /// --metrics-namespace-selector. `false` removes the ones created before.
    #[arg(
        long,
        env = "METRICSTREAM_NETWORK_POLICIES",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub network_policies: bool,

    /// Label selector of the namespaces whose pods may reach the workloads' admin port (where
    /// Prometheus runs), e.g. `kubernetes.io/metadata.name=monitoring` or
    /// `kubernetes.io/metadata.name in (monitoring,observability)`, or a LabelSelector as JSON.
    /// Empty: pods in every namespace (never anything outside the cluster's pod network).
    /// Kubelet probes come from the node, which NetworkPolicies always admit.
    #[arg(
        long,
        env = "METRICSTREAM_METRICS_NAMESPACE_SELECTOR",
        default_value = "",
        value_parser = parse_label_selector
    )]
    pub metrics_namespace_selector: LabelSelector,

    /// The operator's own namespace (`--lease-namespace`, i.e. POD_NAMESPACE), admitted to the
    /// consumers' admin port: the operator reads their /readyz for the SinkAvailable condition.
    #[arg(skip)]
    pub operator_namespace: Option<String>,
}

impl Default for PostureSettings {
    fn default() -> Self {
        Self {
            network_policies: true,
            metrics_namespace_selector: LabelSelector::default(),
            operator_namespace: None,
        }
    }
}

/// Parses a label selector in kubectl's syntax: comma-separated `key=value`, `key==value`,
/// `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists) and `!key` (does not exist);
/// or a Kubernetes LabelSelector as JSON (`{"matchLabels":{...},"matchExpressions":[...]}`, what
/// the chart passes). The empty string (or `{}`) selects everything.
pub fn parse_label_selector(text: &str) -> Result<LabelSelector, String> {
    if text.trim_start().starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| format!("not a LabelSelector in JSON: {error}"))?;
        // A misspelt field would otherwise be ignored, and the selector select everything.
        let unknown = |object: &serde_json::Value, known: &[&str]| {
            object.as_object().and_then(|fields| {
                fields
                    .keys()
                    .find(|key| !known.contains(&key.as_str()))
                    .cloned()
            })
        };
        let expressions = json["matchExpressions"].as_array().cloned();
        let misspelt = unknown(&json, &["matchLabels", "matchExpressions"]).or_else(|| {
            expressions
                .iter()
                .flatten()
                .find_map(|e| unknown(e, &["key", "operator", "values"]))
        });
        if let Some(field) = misspelt {
            return Err(format!(
                "unknown field {field:?} in label selector {text:?}"
            ));
        }
        let selector: LabelSelector = serde_json::from_value(json)
            .map_err(|error| format!("not a LabelSelector in JSON: {error}"))?;
        for (key, value) in selector.match_labels.iter().flatten() {
            check_label_key(key)?;
            check_label_value(value)?;
        }
        for requirement in selector.match_expressions.iter().flatten() {
            check_label_key(&requirement.key)?;
            let values = requirement.values.as_deref().unwrap_or_default();
            let needs_values = match requirement.operator.as_str() {
                "In" | "NotIn" => true,
                "Exists" | "DoesNotExist" => false,
                other => return Err(format!("unknown operator {other:?} in {text:?}")),
            };
            if needs_values == values.is_empty() {
                return Err(format!(
                    "operator {} {} values in {text:?}",
                    requirement.operator,
                    if needs_values { "needs" } else { "takes no" }
                ));
            }
            values.iter().try_for_each(|v| check_label_value(v))?;
        }
        return Ok(selector);
    }
    let mut match_labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for requirement in split_top_level(text)? {
        let requirement = requirement.trim();
        if requirement.is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(format!("empty requirement in label selector {text:?}"));
        }
        let expression = |key: &str, operator: &str, values: Option<Vec<String>>| {
            check_label_key(key)?;
            for value in values.iter().flatten() {
                check_label_value(value)?;
            }
            Ok::<_, String>(LabelSelectorRequirement {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values,
            })
        };
        if let Some((key, rest)) = requirement.split_once(" notin ") {
            expressions.push(expression(key.trim(), "NotIn", Some(set_values(rest)?))?);
        } else if let Some((key, rest)) = requirement.split_once(" in ") {
            expressions.push(expression(key.trim(), "In", Some(set_values(rest)?))?);
        } else if let Some((key, value)) = requirement.split_once("!=") {
            let value = value.trim().to_owned();
            expressions.push(expression(key.trim(), "NotIn", Some(vec![value]))?);
        } else if let Some((key, value)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            let (key, value) = (key.trim(), value.trim());
            check_label_key(key)?;
            check_label_value(value)?;
            match_labels.insert(key.to_owned(), value.to_owned());
        } else if let Some(key) = requirement.strip_prefix('!') {
            expressions.push(expression(key.trim(), "DoesNotExist", None)?);
        } else {
            expressions.push(expression(requirement, "Exists", None)?);
        }
    }
    Ok(LabelSelector {
        match_labels: (!match_labels.is_empty()).then_some(match_labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// The requirements of a selector: split at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in label selector {text:?}"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in label selector {text:?}"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// `(a, b)` → `["a", "b"]`.
fn set_values(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {text:?}"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("empty value in {text:?}"));
    }
    Ok(values)
}

/// A label name (the part after any prefix) or value: at most 63 characters, alphanumeric at
/// both ends, `-`, `_` and `.` between.
fn is_label_name(text: &str) -> bool {
    text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(crate::labels::is_dns_subdomain);
    if prefix_ok && is_label_name(name) {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid label key"))
    }
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

/// `metricstream-operator run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub workload: WorkloadDefaults,

    /// Watch only this namespace (single-namespace mode); every namespace when absent.
    #[arg(long, env = "METRICSTREAM_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    // The same `--admin-listen` as the workloads'.
    #[command(flatten)]
    pub admin: AdminArgs,

    // The same `--log-format` as the workloads'.
    #[command(flatten)]
    pub log: LogArgs,

    /// Run the controller only while holding a coordination.k8s.io Lease, so several replicas
    /// can run and one works at a time.
    #[arg(long, env = "METRICSTREAM_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "METRICSTREAM_LEASE_NAME",
        default_value = "metricstream-operator"
    )]
    pub lease_name: String,

    /// The operator's own namespace (in a cluster, from the pod): where the leader-election
    /// Lease lives, and the namespace the consumers' NetworkPolicy admits to their admin port,
    /// whose /readyz the operator reads for SinkAvailable.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease; the host (pod) name by default.
    #[arg(long, env = "HOSTNAME")]
    pub identity: Option<String>,

    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "METRICSTREAM_LEASE_DURATION", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=600))]
    pub lease_duration_seconds: u64,

    /// Seconds between periodic re-reconciles of an unchanged MetricStream (drift repair).
    #[arg(long, env = "METRICSTREAM_RESYNC_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub resync_seconds: u64,
}

impl RunArgs {
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(key: &str, operator: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn the_empty_selector_selects_everything() {
        assert_eq!(parse_label_selector(""), Ok(LabelSelector::default()));
        assert_eq!(parse_label_selector("  "), Ok(LabelSelector::default()));
        let json = serde_json::to_value(LabelSelector::default()).expect("json");
        assert_eq!(json, serde_json::json!({}), "{{}} selects every namespace");
    }

    #[test]
    fn kubectl_selector_syntax_parses() {
        let selector = parse_label_selector(
            "kubernetes.io/metadata.name in (monitoring, observability),team==obs,tier!=dev,scrape,!legacy,env notin (a)",
        )
        .expect("valid");
        assert_eq!(
            selector.match_labels,
            Some(BTreeMap::from([("team".to_owned(), "obs".to_owned())]))
        );
        assert_eq!(
            selector.match_expressions,
            Some(vec![
                requirement(
                    "kubernetes.io/metadata.name",
                    "In",
                    Some(&["monitoring", "observability"])
                ),
                requirement("tier", "NotIn", Some(&["dev"])),
                requirement("scrape", "Exists", None),
                requirement("legacy", "DoesNotExist", None),
                requirement("env", "NotIn", Some(&["a"])),
            ])
        );
        let one = parse_label_selector("kubernetes.io/metadata.name=monitoring").expect("valid");
        assert_eq!(
            one.match_labels,
            Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                "monitoring".to_owned()
            )]))
        );
        assert_eq!(one.match_expressions, None);
    }

    #[test]
    fn json_selectors_as_the_chart_passes_them_parse() {
        assert_eq!(parse_label_selector("{}"), Ok(LabelSelector::default()));
        let selector = parse_label_selector(
            r#"{"matchLabels":{"team":"obs"},"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"In","values":["monitoring"]}]}"#,
        )
        .expect("valid");
        assert_eq!(
            selector,
            parse_label_selector("team=obs,kubernetes.io/metadata.name in (monitoring)")
                .expect("valid")
        );
        for bad in [
            r#"{"matchLabels":{"team":"bad value"}}"#,
            r#"{"matchExpressions":[{"key":"a","operator":"Has"}]}"#,
            r#"{"matchExpressions":[{"key":"a","operator":"In"}]}"#,
            r#"{"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]}"#,
            r#"{"matchLabel":{}}"#,
            "{",
        ] {
            assert!(parse_label_selector(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn malformed_selectors_are_refused_with_a_reason() {
        for bad in [
            "a=b,",
            "name in (a,b",
            "name in a,b)",
            "name in ()",
            "-bad=x",
            "key=bad value",
            "Bad_Prefix!/x=y",
            &format!("k={}", "v".repeat(64)),
        ] {
            assert!(parse_label_selector(bad).is_err(), "accepted {bad:?}");
        }
    }
}
