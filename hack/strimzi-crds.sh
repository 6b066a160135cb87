#!/usr/bin/env bash
# Strimzi's CustomResourceDefinitions for MetricStream's tests, regenerated from Strimzi's own
# published artifacts on Maven Central rather than copied into the repository:
#
#   io.strimzi:api:<version>            the model (the Java classes the CRDs describe)
#   io.strimzi:crd-generator:<version>  the generator Strimzi's build runs over them (a shaded
#                                       jar: fabric8's Kubernetes model, Jackson, SnakeYAML)
#
# run as Strimzi's own build runs them (api/pom.xml, execution generate-crds: the same --label,
# --target-kube, --crd-api-version, --api-versions and --storage-version arguments), which gives
# the files Strimzi publishes in its release (packaging/install/cluster-operator/), byte for byte
# for 1.2.0. Only the CRDs this project uses are generated:
#
#   040-Crd-kafka.yaml          Kafka          examples/kafka-cluster.yaml (kubeconform schemas)
#   043-Crd-kafkatopic.yaml     KafkaTopic     the operator's strimzi topic mode (envtest, chart)
#   044-Crd-kafkauser.yaml      KafkaUser      the operator's Strimzi users (envtest, chart)
#   045-Crd-kafkanodepool.yaml  KafkaNodePool  examples/kafka-cluster.yaml (kubeconform schemas)
#
#   hack/strimzi-crds.sh [generate] [--env-file PATH]
#                                     fetch the two jars and generate the CRDs (first run only),
#                                     check their metadata; the last stdout line is
#                                     STRIMZI_CRDS_DIR=<absolute directory of the *.yaml> (with
#                                     --env-file, also written to PATH, atomically)
#   hack/strimzi-crds.sh versions     print the pinned versions (NAME=value lines)
#
# The directory is complete or absent: generated in a temp dir next to it, checked, then renamed
# into place, under a lock (concurrent callers generate once). It holds only the CRDs (*.yaml),
# a stamp (what it was generated from: a change of pins, arguments or pom regenerates it) and
# generate.log. It is what `make strimzi-crds` (a step of `make test`) hands to hack/tools.sh,
# hack/envtest.sh (ENVTEST_CRDS) and the tests (operator/tests/strimzi_crds.rs compares it with
# Strimzi's published files where a copy of them is at hand).
#
# Environment:
#   XDG_CACHE_HOME  the CRDs go to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/strimzi-crds-<version>,
#                   the jars to Maven's repository .../metricstream/maven-repo (shared with
#                   hack/kafka.sh)
#   JAVA21_HOME     a JDK (or JRE) 21+ to run the generator (its classes are Java 21 bytecode);
#                   otherwise JAVA_HOME, then java on PATH, then the newest under /usr/lib/jvm,
#                   whichever is first to be 21 or newer
# Needs: mvn (Maven 3), a Java 21+, flock (util-linux). Progress goes to stderr; stdout carries
# only results.
#
# Costs (measured on 2 cores shared with other builds, load average ~8): from an empty cache,
# Maven's repository included, 31 s wall (15 s of CPU; 40-60 s while a cargo build ran beside
# it): Maven resolving its dependency plugin and the two jars, ~40 MB into Maven's repository
# (crd-generator 18.5 MB, api 1.5 MB, the rest the plugin and its dependencies), then the
# generator, 3.5 s alone, ~8 s under that load. With the jars already in Maven's repository 15 s.
# Warm (the CRDs already generated): 0.02-0.05 s, no JVM, no Maven. Cache: 430 KB of CRDs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- pinned versions ---------------------------------------------------------------------------
STRIMZI_VERSION=1.2.0
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
# The generator's classes are Java 21 bytecode (class file version 65).
JAVA_MIN=21

# Class of the model = file name, as in Strimzi's api/pom.xml.
CRDS=(
  io.strimzi.api.kafka.model.kafka.Kafka=040-Crd-kafka.yaml
  io.strimzi.api.kafka.model.topic.KafkaTopic=043-Crd-kafkatopic.yaml
  io.strimzi.api.kafka.model.user.KafkaUser=044-Crd-kafkauser.yaml
  io.strimzi.api.kafka.model.nodepool.KafkaNodePool=045-Crd-kafkanodepool.yaml
)
# Strimzi's own arguments (api/pom.xml, generate-crds), before the class=file pairs.
GENERATOR_ARGS=(
  --label app:strimzi
  --label strimzi.io/crd-install:true
  --target-kube 1.16+
  --crd-api-version v1
  --api-versions v1
  --storage-version v1
  --yaml
)

# ---- layout ------------------------------------------------------------------------------------
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUPPORT_DIR=$HACK_DIR/strimzi-crds

CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
CACHE_DIR=$CACHE_ROOT/strimzi-crds-$STRIMZI_VERSION
M2_REPO=$CACHE_ROOT/maven-repo

# ---- the cache ---------------------------------------------------------------------------------

# What the CRDs must have been generated from; any change regenerates them.
cache_stamp() {
  local sums
  sums=$(printf '%s\n' "${GENERATOR_ARGS[*]}" "${CRDS[*]}" | cat - "$SUPPORT_DIR/pom.xml" | sha256sum)
  echo "strimzi=$STRIMZI_VERSION inputs=${sums:0:16}"
}

cache_ok() {
  [[ -f $CACHE_DIR/stamp && $(<"$CACHE_DIR/stamp") == "$1" ]] || return 1
  local crd
  for crd in "${CRDS[@]}"; do [[ -s $CACHE_DIR/${crd#*=} ]] || return 1; done
}

# ---- Java --------------------------------------------------------------------------------------

# The major version of the java at $1, or nothing when it does not run.
java_major() {
  local v
  v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p') || true
  v=${v%%.*}
  [[ $v =~ ^[0-9]+$ ]] && echo "$v"
}

# A java of version JAVA_MIN or newer: JAVA21_HOME, JAVA_HOME, PATH, then /usr/lib/jvm/*.
find_java() {
  local candidates=() c v best='' best_v=0
  [[ -n ${JAVA21_HOME:-} ]] && candidates+=("$JAVA21_HOME/bin/java")
  [[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME/bin/java")
  c=$(command -v java 2>/dev/null) && candidates+=("$c")
  for c in "${candidates[@]}"; do
    [[ -x $c ]] || continue
    v=$(java_major "$c") || continue
    if ((v >= JAVA_MIN)); then
      echo "$c"
      return 0
    fi
    log "  $c is Java $v; the generator needs $JAVA_MIN+"
  done
  for c in /usr/lib/jvm/*/bin/java; do
    [[ -x $c ]] || continue
    v=$(java_major "$c") || continue
    if ((v >= JAVA_MIN && v > best_v)); then
      best=$c
      best_v=$v
    fi
  done
  [[ -n $best ]] || die "no Java $JAVA_MIN+ found (tried JAVA21_HOME, JAVA_HOME, PATH, /usr/lib/jvm/*): set JAVA21_HOME"
  echo "$best"
}

# ---- generating --------------------------------------------------------------------------------

# Check what the generator wrote: each file is the CRD of its kind, in group kafka.strimzi.io,
# namespaced, with one version v1 that is served and stored. (operator/tests/strimzi_crds.rs
# compares the whole spec with Strimzi's published files where they are at hand.)
check_crd() {
  local file=$1 kind=$2 plural header want
  plural=$(tr '[:upper:]' '[:lower:]' <<<"$kind")s
  # Everything before the schema: metadata, group, names, scope, the version's flags.
  header=$(sed '/^ *schema:/q' "$file")
  for want in "^kind: CustomResourceDefinition\$" "^  name: $plural\\.kafka\\.strimzi\\.io\$" \
    "^  group: kafka\\.strimzi\\.io\$" "^    kind: $kind\$" "^    plural: $plural\$" \
    "^  scope: Namespaced\$" "^  - name: v1\$" "^    served: true\$" "^    storage: true\$"; do
    grep -Eq "$want" <<<"$header" || die "$file: no line matching '$want' in its metadata"
  done
  (($(grep -c '^  - name: ' <<<"$header") == 1)) || die "$file: more than one version"
}

TMP_DIR=
cleanup() { if [[ -n $TMP_DIR ]]; then rm -rf "$TMP_DIR"; fi; }

ensure_crds() {
  local stamp
  stamp=$(cache_stamp)
  cache_ok "$stamp" && return 0

  command -v mvn >/dev/null || die "mvn (Maven) is needed to fetch Strimzi's jars"
  take_lock 8 "$CACHE_ROOT/.strimzi-crds-$STRIMZI_VERSION.lock"
  if cache_ok "$stamp"; then
    release_lock 8
    return 0
  fi
  # Holding the lock, any temp dir left here is from an interrupted run.
  rm -rf "$CACHE_ROOT/.strimzi-crds-$STRIMZI_VERSION.tmp."*

  TMP_DIR=$(mktemp -d "$CACHE_ROOT/.strimzi-crds-$STRIMZI_VERSION.tmp.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  chmod 755 "$TMP_DIR"
  local t0 java out jar crd class args=()
  t0=$(now_ms)
  java=$(find_java)
  log "generating Strimzi $STRIMZI_VERSION's CRDs into $CACHE_DIR (first run only; $java, Java $(java_major "$java"))"
  log "  fetching io.strimzi:api and io.strimzi:crd-generator $STRIMZI_VERSION (Maven repository $M2_REPO)"
  if ! mvn -B -ntp -Dstyle.color=never --strict-checksums -f "$SUPPORT_DIR/pom.xml" \
    -Dmaven.repo.local="$M2_REPO" -Dstrimzi.version="$STRIMZI_VERSION" \
    "$DEPENDENCY_PLUGIN:copy-dependencies" -DoutputDirectory="$TMP_DIR/lib" \
    >"$TMP_DIR/generate.log" 2>&1; then
    tail -n 40 "$TMP_DIR/generate.log" >&2
    die "Maven could not fetch Strimzi's jars (log above)"
  fi
  for jar in "api-$STRIMZI_VERSION.jar" "crd-generator-$STRIMZI_VERSION.jar"; do
    [[ -f $TMP_DIR/lib/$jar ]] || die "Maven fetched no $jar"
  done
  log "  fetched in $(since "$t0") s; running io.strimzi.crdgenerator.CrdGenerator"

  for crd in "${CRDS[@]}"; do args+=("${crd%%=*}=$TMP_DIR/${crd#*=}"); done
  if ! out=$("$java" -Xmx512m -Djava.awt.headless=true \
    -cp "$TMP_DIR/lib/api-$STRIMZI_VERSION.jar:$TMP_DIR/lib/crd-generator-$STRIMZI_VERSION.jar" \
    io.strimzi.crdgenerator.CrdGenerator "${GENERATOR_ARGS[@]}" "${args[@]}" 2>&1 </dev/null); then
    printf '%s\n' "$out" >&2
    die "the CRD generator failed (output above)"
  fi
  printf '%s\n' "$out" >>"$TMP_DIR/generate.log"
  for crd in "${CRDS[@]}"; do
    [[ -s $TMP_DIR/${crd#*=} ]] || die "the generator wrote no ${crd#*=}"
    class=${crd%%=*}
    check_crd "$TMP_DIR/${crd#*=}" "${class##*.}"
  done
  # Only the CRDs stay: the jars are in Maven's repository.
  rm -rf "${TMP_DIR:?}/lib"
  echo "$stamp" >"$TMP_DIR/stamp"
  if [[ -e $CACHE_DIR ]]; then # generated from other inputs: move it aside, then delete it
    local old="$CACHE_ROOT/.strimzi-crds-$STRIMZI_VERSION.tmp.old.$$"
    mv -T "$CACHE_DIR" "$old"
    rm -rf "$old"
  fi
  mv -T "$TMP_DIR" "$CACHE_DIR"
  TMP_DIR=
  trap - EXIT
  release_lock 8
  log "generated ${#CRDS[@]} CRDs in $(since "$t0") s"
}

# ---- commands ----------------------------------------------------------------------------------

main() {
  local cmd=${1:-generate}
  [[ $# -eq 0 ]] || shift
  case $cmd in
    generate | --env-file | --env-file=*)
      if [[ $cmd == --env-file* ]]; then set -- "$cmd" "$@"; fi
      env_file_option "$@"
      ensure_crds
      emit "STRIMZI_CRDS_DIR=$(cd "$CACHE_DIR" && pwd)"
      ;;
    versions)
      echo "STRIMZI_VERSION=$STRIMZI_VERSION"
      echo "DEPENDENCY_PLUGIN=$DEPENDENCY_PLUGIN"
      ;;
    -h | --help | help) usage 0 ;;
    *)
      log "unknown command: $cmd"
      usage
      ;;
  esac
}

main "$@"
