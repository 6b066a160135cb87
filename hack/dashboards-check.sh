#!/usr/bin/env bash
# Every PromQL expression of the chart's Grafana dashboards parses, checked by the real promtool:
# each panel target's `expr` (panels inside rows too) becomes one recording rule of a temporary
# rule file, and `promtool check rules` reads it. Grafana's variables are replaced first, since
# Prometheus never sees them: the interval variables ($__rate_interval, $__interval, $__range,
# also as ${...}) by `5m`, any other `$name`, `${name}` or `${name:format}` (the dashboard's own
# variables: $namespace, $stream, ${datasource}, ...) by its bare name, which keeps a label
# matcher such as `stream="$stream"` a string. When the file fails, each expression is checked
# alone, and every one that does not parse is named by dashboard file, dashboard title, panel
# title and target refId, with promtool's message.
#
# Usage: hack/dashboards-check.sh PROMTOOL DASHBOARD.json...
#        hack/dashboards-check.sh --self-test PROMTOOL DASHBOARD.json
#                                  prove on a copy of the dashboard with one expression broken
#                                  that the check fails and names that panel
# Needs jq. Prints one `dashboards-check: FAIL ...` line per expression that does not parse and
# exits 1, or a one-line summary and exits 0. `make rules-check` runs it on
# charts/metricstream-operator/files/dashboards/*.json (docs/dashboards.md).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The targets of one dashboard as JSON lines: {title, panel, ref, expr}, with the variables
# replaced. A target without an expr (another datasource's query) is left out.
targets() {
  jq -c '
    def promql:
      gsub("\\$(__rate_interval|__interval|__range)\\b|\\$\\{(__rate_interval|__interval|__range)\\}"; "5m")
      | gsub("\\$\\{(?<v>[A-Za-z_][A-Za-z0-9_]*)(:[^}]*)?\\}"; .v)
      | gsub("\\$(?<v>[A-Za-z_][A-Za-z0-9_]*)"; .v);
    .title as $title
    | [.panels[]? | ., (.panels[]? // empty)]
    | .[] | select(.targets?) | .title as $panel
    | .targets[] | select((.expr // "") != "")
    | {title: $title, panel: $panel, ref: (.refId // "?"), expr: (.expr | promql)}
  ' "$1"
}

# A rule file with one recording rule per JSON line of stdin (JSON strings are YAML strings).
rule_file() {
  jq -rs '
    "groups:\n  - name: dashboards\n    rules:",
    (to_entries[] | "      - record: dashboard_check:expr_\(.key)\n        expr: \(.value.expr | tojson)")
  '
}

# check PROMTOOL FILE...: 0 when every expression parses; otherwise FAIL lines and 1.
check() {
  local promtool=$1 dashboard work total=0 failed=0 line output
  shift
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'" RETURN
  for dashboard in "$@"; do
    jq -e 'type == "object" and (.panels | type) == "array"' "$dashboard" >/dev/null ||
      { echo "dashboards-check: FAIL $dashboard: not a Grafana dashboard (JSON with panels)"; failed=1; continue; }
    targets "$dashboard" >"$work/targets.jsonl"
    local count
    count=$(wc -l <"$work/targets.jsonl")
    if ((count == 0)); then
      echo "dashboards-check: FAIL $dashboard: no panel target has an expr"
      failed=1
      continue
    fi
    total=$((total + count))
    rule_file <"$work/targets.jsonl" >"$work/rules.yaml"
    if "$promtool" check rules "$work/rules.yaml" >"$work/out" 2>&1; then
      continue
    fi
    # Name each expression that does not parse.
    local named=0
    while IFS= read -r line; do
      printf '%s\n' "$line" | rule_file >"$work/one.yaml"
      if ! output=$("$promtool" check rules "$work/one.yaml" 2>&1); then
        jq -r --arg file "$dashboard" --arg why "$(grep -v '^Checking\|^  SUCCESS\|^$' <<<"$output" | tr '\n' ' ')" \
          '"dashboards-check: FAIL \($file) (\(.title)), panel \"\(.panel)\", target \(.ref): \(.expr)\n  promtool: \($why)"' <<<"$line"
        named=$((named + 1))
      fi
    done <"$work/targets.jsonl"
    if ((named == 0)); then
      echo "dashboards-check: FAIL $dashboard: promtool refused the rule file, no single expression:"
      cat "$work/out"
    fi
    failed=1
  done
  if ((failed)); then
    return 1
  fi
  echo "dashboards-check: $total expressions of $# dashboard(s) parse (promtool check rules)"
}

# The check fails on a copy of DASHBOARD whose first expression has one closing parenthesis too many,
# and names that panel; the unchanged dashboard passes.
self_test() {
  local promtool=$1 dashboard=$2 work panel output
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'" RETURN
  check "$promtool" "$dashboard" >/dev/null || die "self-test: $dashboard itself fails the check"
  panel=$(jq -r '[.panels[]? | ., (.panels[]? // empty) | select(.targets?[0].expr?)][0].title' "$dashboard")
  jq '(first(.panels[]? | ., (.panels[]? // empty) | select(.targets?[0].expr?)) .targets[0].expr) |= (. + ")")' \
    "$dashboard" >"$work/broken.json"
  if output=$(check "$promtool" "$work/broken.json"); then
    die "self-test: a dashboard with an unbalanced parenthesis in panel \"$panel\" passed"
  fi
  grep -qF "panel \"$panel\", target A" <<<"$output" ||
    die "self-test: the failure does not name panel \"$panel\":"$'\n'"$output"
  echo "dashboards-check: self-test ok (a broken expression in panel \"$panel\" fails and is named)"
}

command -v jq >/dev/null || die "jq is needed"
case ${1:-} in
  --self-test)
    (($# == 3)) || usage
    self_test "$2" "$3"
    ;;
  -h | --help) usage 0 ;;
  "") usage ;;
  *)
    (($# >= 2)) || usage
    check "$@"
    ;;
esac
