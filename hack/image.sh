#!/usr/bin/env bash
# MetricStream's images without Docker and without a registry, for the single-node cluster on
# this machine (containerd imports them with `ctr`; pods use imagePullPolicy: Never). buildah
# (Debian's, daemonless, vfs storage in a throwaway directory, no RUN steps so no runtime needed)
# builds each image from a local root filesystem and writes a docker-archive.
#
#   hack/image.sh build [--binaries DIR] [--tag NAME] [--out DIR]
#                     the runtime image of the Dockerfile: its final stage, built by buildah with
#                     `FROM <distroless base>` replaced by a root filesystem assembled from this
#                     Debian host (the libraries `ldd` names for the binaries and the dynamic
#                     loader, CA certificates, passwd/group/nsswitch with uid/gid 65532 "nonroot",
#                     an empty /tmp, no shell) and `COPY --from=build /out/ DEST` by the binaries
#                     of DIR (default <CARGO_TARGET_DIR or <repo>/target>/release: `cargo build
#                     --release -p metricstream-operator -p metricstream-ingest -p
#                     metricstream-consumer`).
#                     Every other line of that stage (LABEL, USER, EXPOSE, ENTRYPOINT, CMD) is
#                     taken from the Dockerfile as it is, so the two cannot drift. Prints
#                     IMAGE=<name> (default localhost/metricstream:e2e) and IMAGE_ARCHIVE=<path>.
#                     Nothing is rebuilt when no input changed (the binaries, the libraries, the
#                     certificates, the Dockerfile, this script).
#   hack/image.sh pause   the pod sandbox image: Kubernetes' build/pause/linux/pause.c (from the
#                     k8s.io/kubernetes module in Go's module cache) compiled with
#                     `gcc -Os -static`, built with Kubernetes' own build/pause/Dockerfile
#                     (BASE=scratch): /pause, user 65535. Prints PAUSE_IMAGE=<name> (default
#                     localhost/metricstream/pause:3.10.1) and PAUSE_ARCHIVE=<path>.
#   hack/image.sh tools   a small image for test helper pods: Debian's busybox-static with
#                     sh, sleep, tar, cat and ls in /bin (its wget segfaults: do not use it),
#                     user 65532, CMD sleep infinity. Prints TOOLS_IMAGE=<name> (default
#                     localhost/metricstream/tools:e2e) and TOOLS_ARCHIVE=<path>.
#   hack/image.sh store   VictoriaMetrics single-node, the store of the e2e's remote-write stream:
#                     the binary hack/victoriametrics.sh builds and caches (static, pure Go) at
#                     /victoria-metrics-prod as in upstream's image, with the libraries ldd names
#                     if it ever is dynamic, passwd/group for 65532, an empty /tmp, no shell; user
#                     65532, EXPOSE 8428, ENTRYPOINT ["/victoria-metrics-prod"]. Prints
#                     STORE_IMAGE=<name> (localhost/metricstream/victoriametrics:v<version>, the
#                     version hack/victoriametrics.sh pins) and STORE_ARCHIVE=<path>.
#   hack/image.sh import ARCHIVE...   `ctr -n k8s.io images import` each archive into the
#                     containerd at CONTAINERD_ADDRESS (unpacked for its default snapshotter, or
#                     CONTAINERD_SNAPSHOTTER's), then checks that every image the archive names is
#                     listed and unpacked. Prints IMPORTED=<name> per image.
#   hack/image.sh check [--archive PATH | --no-archive]   compare the Dockerfile's runtime stage with the local
#                     recipe (the binaries it copies and where, user, entrypoint, cmd, ports) and,
#                     when the archive exists (default: the one `build` writes by default), with
#                     the built image's config and files: user, entrypoint, cmd, exposed ports,
#                     labels, the binaries present and executable by the user, no shell. Names
#                     every disagreement and exits 1 if there is one; prints CHECK=ok otherwise.
#   hack/image.sh recipe  print what the recipe takes from the Dockerfile (IMAGE_USER=,
#                     IMAGE_ENTRYPOINT=, IMAGE_CMD= (JSON), IMAGE_EXPOSE=, IMAGE_BINARIES= (paths));
#                     operator/tests/image.rs compares them with its own reading of the Dockerfile.
#   hack/image.sh context [--binaries DIR] [--out DIR]   assemble the build context of `build`
#                     (Containerfile, rootfs.tar, bin/) without building; prints CONTEXT=<dir>.
#                     Needs no buildah: operator/tests/image.rs checks it with stand-in binaries.
#
# Environment:
#   METRICSTREAM_IMAGE_DIR  where archives and build contexts go (default <repo>/target/image);
#                           --out overrides it
#   CONTAINERD_ADDRESS      containerd's socket for `import` (default /run/containerd/containerd.sock)
#   CONTAINERD_SNAPSHOTTER  the snapshotter `import` unpacks for (default: containerd's default,
#                           overlayfs, which the CRI plugin uses)
#   GOMODCACHE              Go's module cache holding k8s.io/kubernetes@v1.34.4 for `pause`
#                           (default ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/go/mod, shared
#                           with hack/envtest.sh; `go mod download` fills it when absent)
# Needs: root (buildah's storage; the rootfs carries files owned by 65532), Debian packages
# buildah, busybox-static (tools), containerd (ctr, for import), gcc and libc6-dev (pause), jq,
# installed with apt-get when missing; ldd, tar, sha256sum, flock.
# Progress goes to stderr; stdout carries only results.
#
# Costs (measured on 2 cores shared with other builds): installing buildah ~25 s (once); `build`
# ~25 s for the 290 MB of release binaries (they carry debuginfo: Cargo.toml's release profile;
# the archive is ~290 MB, uncompressed layers), ~3 s when nothing changed (hashing the inputs);
# `pause` ~1.5 s (gcc -static), `tools` ~1.3 s, `store` ~1.5 s (an 18 MB binary), each
# ~0.3 s when nothing changed; `import` ~9 s for the runtime image, ~1 s for the others. Disk: the archives under target/image (the
# build contexts are deleted after a build).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- pins and names ----------------------------------------------------------------------------
K8S_VERSION=1.34.4
PAUSE_TAG=3.10.1 # build/pause/Makefile's TAG in Kubernetes 1.34.4
DEFAULT_IMAGE=localhost/metricstream:e2e
PAUSE_IMAGE=localhost/metricstream/pause:$PAUSE_TAG
TOOLS_IMAGE=localhost/metricstream/tools:e2e
STORE_IMAGE_REPOSITORY=localhost/metricstream/victoriametrics # tagged v<hack/victoriametrics.sh's version>
# The binaries of the image, as the Dockerfile's build stage copies them to /out/ (`check`
# compares) and as `cargo build --release -p ...` names them.
BINARIES=(metricstream-operator metricstream-ingest metricstream-consumer)
# The user the root filesystem has passwd and group entries for (distroless' "nonroot").
NONROOT_UID=65532
# What the distroless base image carries in its config, which `FROM scratch` does not.
BASE_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
BASE_WORKDIR=/home/nonroot
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# ---- layout ------------------------------------------------------------------------------------
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
SCRIPT=$HACK_DIR/$(basename "${BASH_SOURCE[0]}")
DOCKERFILE=$REPO_DIR/Dockerfile
OUT_DIR=${METRICSTREAM_IMAGE_DIR:-$REPO_DIR/target/image}
# cargo's release output: CARGO_TARGET_DIR (relative to the repository) or <repo>/target.
RELEASE_DIR=$(cargo_target_dir "$REPO_DIR")/release
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
GOMODCACHE=${GOMODCACHE:-$CACHE_ROOT/go/mod}
CONTAINERD_ADDRESS=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}

# Install Debian packages that are missing (dpkg -s), non-interactively.
need_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing Debian packages (${missing[*]}); install them as root"
  log "installing ${missing[*]} (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
      --no-install-recommends "${missing[@]}" >&2; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
      --no-install-recommends "${missing[@]}" >&2
  fi
}

# One build of a kind at a time (hack/cluster.sh may call several commands at once).
lock() { take_lock 9 "$OUT_DIR/.$1.lock"; }

# A name usable as a file name: localhost/metricstream:e2e -> localhost_metricstream_e2e.
file_name() { printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_'; }

# ---- the Dockerfile ----------------------------------------------------------------------------

# Instructions of the Dockerfile, one a line: continuation lines joined, comments and blank
# lines dropped, each prefixed by its stage's number (0, 1, ...) and a tab.
instructions() {
  awk '
    /^[[:space:]]*#/ && !cont { next }
    {
      line = $0
      sub(/^[[:space:]]+/, "", line)
      if (cont) { buf = buf " " line } else { buf = line }
      if (buf ~ /\\[[:space:]]*$/) { sub(/[[:space:]]*\\[[:space:]]*$/, "", buf); cont = 1; next }
      cont = 0
      if (buf == "") next
      if (toupper(buf) ~ /^FROM[[:space:]]/) stage++
      print stage - 1 "\t" buf
    }' "$DOCKERFILE"
}

# The final (runtime) stage's instructions, without the stage number.
runtime_stage() {
  local last
  last=$(instructions | tail -n 1 | cut -f 1)
  instructions | awk -F '\t' -v s="$last" '$1 == s { sub(/^[^\t]*\t/, ""); print }'
}

# The arguments of the runtime stage's last KEYWORD instruction (the one that takes effect).
runtime_value() {
  runtime_stage | awk -v k="$1" 'toupper($1) == k { sub(/^[^[:space:]]+[[:space:]]+/, ""); v = $0 } END { print v }'
}

# An exec-form (JSON) ENTRYPOINT or CMD, compact; a shell form cannot run without a shell.
runtime_exec_form() {
  local value
  value=$(runtime_value "$1")
  [[ -n $value ]] || { echo null; return; }
  jq -ce 'if type == "array" then . else error("not an array") end' <<<"$value" 2>/dev/null \
    || die "the Dockerfile's $1 is not in exec form (JSON): $value (the image has no shell)"
}

# The destination of the runtime stage's `COPY --from=build /out/ DEST`.
runtime_bin_dir() {
  local copy
  copy=$(runtime_stage | awk 'toupper($1) == "COPY" && $2 ~ /^--from=/')
  [[ -n $copy ]] || die "the Dockerfile's runtime stage has no COPY --from=<build stage>"
  [[ $(wc -l <<<"$copy") == 1 ]] || die "the Dockerfile's runtime stage copies from a build stage more than once"
  awk '{ print $NF }' <<<"$copy"
}

# The binaries the build stage copies to /out/ (`cp target/release/NAME ... /out/`).
dockerfile_binaries() {
  instructions | grep -o 'target/release/[A-Za-z0-9_-]*' | sed 's#target/release/##' | sort -u
}

# Paths of the binaries in the image, per the Dockerfile.
binary_paths() {
  local dir bin
  dir=$(runtime_bin_dir)
  for bin in "${BINARIES[@]}"; do printf '%s/%s\n' "${dir%/}" "$bin"; done
}

cmd_recipe() {
  echo "IMAGE_USER=$(runtime_value USER)"
  echo "IMAGE_ENTRYPOINT=$(runtime_exec_form ENTRYPOINT)"
  echo "IMAGE_CMD=$(runtime_exec_form CMD)"
  echo "IMAGE_EXPOSE=$(runtime_value EXPOSE)"
  echo "IMAGE_BINARIES=$(binary_paths | paste -sd ' ')"
}

# ---- root filesystems --------------------------------------------------------------------------

write_accounts() {
  local etc=$1/etc
  mkdir -p "$etc"
  cat >"$etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$NONROOT_UID:$NONROOT_UID:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$etc/group" <<EOF
root:x:0:
tty:x:5:
nogroup:x:65534:
nonroot:x:$NONROOT_UID:
EOF
  printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' \
    'networks: files' 'protocols: files' 'services: files' >"$etc/nsswitch.conf"
  mkdir -p "$1/tmp" "$1/home/nonroot"
  chmod 1777 "$1/tmp"
  chmod 0700 "$1/home/nonroot"
  chown "$NONROOT_UID:$NONROOT_UID" "$1/home/nonroot"
}

# The shared libraries (and the dynamic loader) the given executables need, one path a line.
libraries() {
  local exe out
  for exe in "$@"; do
    out=$(ldd "$exe" 2>&1) || { [[ $out == *"not a dynamic executable"* ]] && continue; die "ldd $exe: $out"; }
    if grep -q 'not found' <<<"$out"; then die "ldd $exe: a library is missing on this host: $out"; fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
  done | sort -u
}

# A tar of a directory whose contents do not depend on when it was made or in which order the
# directory lists its files: ADD extracts it with the owners it records.
reproducible_tar() {
  tar --sort=name --mtime=@0 --numeric-owner --format=gnu -C "$1" -cf "$2" .
}

# The build context of the runtime image under $1: bin/ (the binaries), rootfs.tar (the base)
# and Containerfile (the Dockerfile's runtime stage on that base).
assemble_runtime_context() {
  local ctx=$1 bin_src=$2 bin lib
  rm -rf "$ctx"
  mkdir -p "$ctx/bin" "$ctx/rootfs"
  for bin in "${BINARIES[@]}"; do
    [[ -x $bin_src/$bin ]] || die "no executable $bin_src/$bin (cargo build --release -p metricstream-operator -p metricstream-ingest -p metricstream-consumer)"
    cp "$bin_src/$bin" "$ctx/bin/$bin"
    chmod 0755 "$ctx/bin/$bin"
  done
  local libs
  libs=$(libraries "${BINARIES[@]/#/$ctx/bin/}")
  for lib in $libs; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
  [[ -f $CA_BUNDLE ]] || need_packages ca-certificates
  mkdir -p "$ctx/rootfs/etc/ssl/certs"
  cp -L "$CA_BUNDLE" "$ctx/rootfs$CA_BUNDLE"
  if [[ -f /etc/os-release ]]; then cp -L /etc/os-release "$ctx/rootfs/etc/os-release"; fi
  write_accounts "$ctx/rootfs"
  reproducible_tar "$ctx/rootfs" "$ctx/rootfs.tar"
  rm -rf "$ctx/rootfs"

  local dest instr env
  dest=$(runtime_bin_dir)
  {
    echo "# Generated by hack/image.sh from the final stage of the Dockerfile: its base image"
    echo "# replaced by rootfs.tar (assembled from this host), its COPY --from by bin/."
    echo "FROM scratch"
    echo "ADD rootfs.tar /"
    for env in "${BASE_ENV[@]}"; do echo "ENV $env"; done
    echo "WORKDIR $BASE_WORKDIR"
    while IFS= read -r instr; do
      case $(awk '{ print toupper($1) }' <<<"$instr") in
        FROM | ARG) ;;
        COPY)
          [[ $instr == *--from=* ]] || die "the runtime stage copies from the build context ($instr): teach hack/image.sh"
          echo "COPY bin/ $dest" ;;
        LABEL | USER | EXPOSE | ENTRYPOINT | CMD | ENV | WORKDIR | STOPSIGNAL) echo "$instr" ;;
        *) die "the runtime stage has an instruction hack/image.sh cannot build without its base image: $instr" ;;
      esac
    done < <(runtime_stage)
  } >"$ctx/Containerfile"
  # Check the exec forms now rather than in the built image.
  runtime_exec_form ENTRYPOINT >/dev/null
  runtime_exec_form CMD >/dev/null
}

# ---- buildah -----------------------------------------------------------------------------------

BUILDAH_DIR=
cleanup_buildah() { if [[ -n $BUILDAH_DIR ]]; then rm -rf "$BUILDAH_DIR"; fi; }

# buildah_build NAME CONTEXT CONTAINERFILE ARCHIVE [BUILD ARGS...]: build in throwaway storage
# and write a docker-archive naming NAME.
buildah_build() {
  local name=$1 ctx=$2 file=$3 archive=$4
  shift 4
  need_packages buildah
  [[ $(id -u) == 0 ]] || die "buildah needs root here (vfs storage, files owned by $NONROOT_UID)"
  BUILDAH_DIR=$(mktemp -d "$OUT_DIR/.buildah.XXXXXX")
  trap cleanup_buildah EXIT
  trap 'exit 130' INT TERM
  printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$BUILDAH_DIR/policy.json"
  local storage=(--root "$BUILDAH_DIR/root" --runroot "$BUILDAH_DIR/run" --storage-driver vfs)
  # --timestamp 0: the created time and the files' times are fixed, so the same inputs make
  # the same image ID. No RUN instruction, so chroot isolation never starts anything.
  buildah "${storage[@]}" bud --quiet --isolation chroot --format docker --timestamp 0 \
    --signature-policy "$BUILDAH_DIR/policy.json" --pull-never "$@" \
    -f "$file" -t "$name" "$ctx" >/dev/null
  rm -f "$archive.tmp"
  buildah "${storage[@]}" push --quiet --signature-policy "$BUILDAH_DIR/policy.json" \
    "$name" "docker-archive:$archive.tmp:$name" >&2
  mv -f "$archive.tmp" "$archive"
  rm -rf "$BUILDAH_DIR"
  BUILDAH_DIR=
}

# The inputs' digest: the build is skipped when the archive was made from the same.
stamp_of() {
  { sha256sum "$SCRIPT"; printf '%s\n' "$@"; } | sha256sum | cut -c1-64
}

fresh() {
  [[ -f $1 && -f $1.stamp && $(<"$1.stamp") == "$2" ]]
}

# ---- commands ----------------------------------------------------------------------------------

cmd_context() {
  local bin_src=$RELEASE_DIR
  while (($#)); do
    case $1 in
      --binaries) bin_src=${2:?--binaries needs a directory}; shift 2 ;;
      --out) OUT_DIR=${2:?--out needs a directory}; shift 2 ;;
      *) die "context: unknown argument $1" ;;
    esac
  done
  lock context
  local ctx=$OUT_DIR/context
  assemble_runtime_context "$ctx" "$bin_src"
  echo "CONTEXT=$ctx"
}

cmd_build() {
  local bin_src=$RELEASE_DIR name=$DEFAULT_IMAGE
  while (($#)); do
    case $1 in
      --binaries) bin_src=${2:?--binaries needs a directory}; shift 2 ;;
      --tag) name=${2:?--tag needs an image name}; shift 2 ;;
      --out) OUT_DIR=${2:?--out needs a directory}; shift 2 ;;
      *) die "build: unknown argument $1" ;;
    esac
  done
  [[ $bin_src == /* ]] || bin_src=$PWD/$bin_src
  [[ $OUT_DIR == /* ]] || OUT_DIR=$PWD/$OUT_DIR
  local t0 bin stamp archive
  t0=$(now_ms)
  for bin in "${BINARIES[@]}"; do
    [[ -x $bin_src/$bin ]] || die "no executable $bin_src/$bin (cargo build --release -p metricstream-operator -p metricstream-ingest -p metricstream-consumer)"
  done
  lock "build-$(file_name "$name")"
  archive=$OUT_DIR/$(file_name "$name").tar
  local libs
  libs=$(libraries "${BINARIES[@]/#/$bin_src/}")
  # What the image is made of: binaries, the libraries ldd resolves them to, the certificates,
  # the Dockerfile, buildah's version.
  stamp=$(stamp_of "$name" "$(buildah --version 2>/dev/null || true)" \
    "$(cd "$bin_src" && sha256sum "${BINARIES[@]}")" \
    "$(xargs -r sha256sum <<<"$libs")" \
    "$(sha256sum "$DOCKERFILE" "$CA_BUNDLE" 2>/dev/null || true)")
  if fresh "$archive" "$stamp"; then
    log "$name is up to date ($archive, $(since "$t0") s)"
  else
    log "building $name from $bin_src"
    (cmd_check --no-archive) >/dev/null || die "the Dockerfile and the recipe disagree (above)"
    local ctx
    ctx=$OUT_DIR/context-$(file_name "$name")
    assemble_runtime_context "$ctx" "$bin_src"
    buildah_build "$name" "$ctx" "$ctx/Containerfile" "$archive"
    # The product must match the Dockerfile (user, paths, entrypoint, cmd, ports, no shell).
    (cmd_check --archive "$archive") >/dev/null || { rm -f "$archive"; die "the image disagrees with the Dockerfile (above); deleted it"; }
    echo "$stamp" >"$archive.stamp"
    rm -rf "$ctx" # as large as the binaries; `context` makes it again when wanted
    log "built $name in $(since "$t0") s: $archive ($(du -h "$archive" | cut -f1))"
  fi
  echo "IMAGE=$name"
  echo "IMAGE_ARCHIVE=$archive"
}

# pause.c of Kubernetes $K8S_VERSION from Go's module cache (extracted, the zip, or downloaded).
pause_source() {
  local rel=build/pause/linux/pause.c
  local dir=$GOMODCACHE/k8s.io/kubernetes@v$K8S_VERSION
  local zip=$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.zip
  if [[ -f $dir/$rel ]]; then cp "$dir/$rel" "$1"; return; fi
  if [[ ! -f $zip ]]; then
    command -v go >/dev/null || die "pause.c is not in $GOMODCACHE and there is no go to download k8s.io/kubernetes@v$K8S_VERSION"
    log "downloading k8s.io/kubernetes@v$K8S_VERSION into $GOMODCACHE (go mod download)"
    (cd "$(dirname "$1")" && GOMODCACHE=$GOMODCACHE GOFLAGS=-modcacherw GO111MODULE=on \
      go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null)
    if [[ -f $dir/$rel ]]; then cp "$dir/$rel" "$1"; return; fi
  fi
  need_packages unzip
  unzip -p "$zip" "k8s.io/kubernetes@v$K8S_VERSION/$rel" >"$1"
  [[ -s $1 ]] || die "$zip has no $rel"
}

cmd_pause() {
  (($# == 0)) || die "pause takes no arguments"
  local t0 archive stamp ctx
  t0=$(now_ms)
  lock pause
  archive=$OUT_DIR/$(file_name "$PAUSE_IMAGE").tar
  ctx=$OUT_DIR/context-pause
  rm -rf "$ctx"
  mkdir -p "$ctx/bin"
  pause_source "$ctx/pause.c"
  need_packages gcc libc6-dev
  stamp=$(stamp_of "$PAUSE_IMAGE" "$(buildah --version 2>/dev/null || true)" \
    "$(sha256sum <"$ctx/pause.c")" "$(gcc --version | head -n1)")
  if fresh "$archive" "$stamp"; then
    log "$PAUSE_IMAGE is up to date ($archive, $(since "$t0") s)"
  else
    # As build/pause/Makefile does (CFLAGS), then stripped.
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-metricstream" \
      -o "$ctx/bin/pause-linux-amd64" "$ctx/pause.c"
    strip "$ctx/bin/pause-linux-amd64"
    # Kubernetes' own Dockerfile for it (ADD bin/pause-linux-$ARCH /pause, USER 65535:65535,
    # ENTRYPOINT ["/pause"]), on scratch as its Linux images are.
    local dockerfile=$GOMODCACHE/k8s.io/kubernetes@v$K8S_VERSION/build/pause/Dockerfile
    if [[ ! -f $dockerfile ]]; then
      dockerfile=$ctx/Dockerfile
      # shellcheck disable=SC2016 # ${BASE} and ${ARCH} are the Dockerfile's, not the shell's
      printf '%s\n' 'ARG BASE' 'FROM ${BASE}' 'ARG ARCH' 'ADD bin/pause-linux-${ARCH} /pause' \
        'USER 65535:65535' 'ENTRYPOINT ["/pause"]' >"$dockerfile"
    fi
    buildah_build "$PAUSE_IMAGE" "$ctx" "$dockerfile" "$archive" \
      --build-arg BASE=scratch --build-arg ARCH=amd64
    echo "$stamp" >"$archive.stamp"
    log "built $PAUSE_IMAGE in $(since "$t0") s: $archive"
  fi
  echo "PAUSE_IMAGE=$PAUSE_IMAGE"
  echo "PAUSE_ARCHIVE=$archive"
}

cmd_tools() {
  (($# == 0)) || die "tools takes no arguments"
  local t0 archive stamp ctx busybox=/bin/busybox applet
  t0=$(now_ms)
  need_packages busybox-static
  ldd "$busybox" >/dev/null 2>&1 && die "$busybox is dynamically linked (Debian's busybox, not busybox-static?)"
  lock tools
  archive=$OUT_DIR/$(file_name "$TOOLS_IMAGE").tar
  stamp=$(stamp_of "$TOOLS_IMAGE" "$(buildah --version 2>/dev/null || true)" "$(sha256sum <"$busybox")")
  if fresh "$archive" "$stamp"; then
    log "$TOOLS_IMAGE is up to date ($archive, $(since "$t0") s)"
  else
    ctx=$OUT_DIR/context-tools
    rm -rf "$ctx"
    mkdir -p "$ctx/rootfs/bin"
    cp "$busybox" "$ctx/rootfs/bin/busybox"
    # What test pods use: a sink reader (sleep, tar), `helm test` (sh, printf, nc, head).
    for applet in sh sleep tar cat ls nc head grep printf echo; do ln -s busybox "$ctx/rootfs/bin/$applet"; done
    write_accounts "$ctx/rootfs"
    reproducible_tar "$ctx/rootfs" "$ctx/rootfs.tar"
    rm -rf "$ctx/rootfs"
    printf '%s\n' 'FROM scratch' 'ADD rootfs.tar /' 'ENV PATH=/bin' \
      "USER $NONROOT_UID:$NONROOT_UID" 'CMD ["sleep", "infinity"]' >"$ctx/Containerfile"
    buildah_build "$TOOLS_IMAGE" "$ctx" "$ctx/Containerfile" "$archive"
    echo "$stamp" >"$archive.stamp"
    log "built $TOOLS_IMAGE in $(since "$t0") s: $archive"
  fi
  echo "TOOLS_IMAGE=$TOOLS_IMAGE"
  echo "TOOLS_ARCHIVE=$archive"
}

cmd_store() {
  (($# == 0)) || die "store takes no arguments"
  local t0 archive stamp ctx binary version name lib
  t0=$(now_ms)
  binary=$(bash "$HACK_DIR/victoriametrics.sh" install | sed -n 's/^VICTORIAMETRICS=//p' | tail -n 1)
  version=$(bash "$HACK_DIR/victoriametrics.sh" version | sed -n 's/^VICTORIAMETRICS_VERSION=//p')
  [[ -x $binary && -n $version ]] || die "hack/victoriametrics.sh gave no binary ($binary) or version ($version)"
  name=$STORE_IMAGE_REPOSITORY:v$version
  lock store
  archive=$OUT_DIR/$(file_name "$name").tar
  local libs
  libs=$(libraries "$binary")
  stamp=$(stamp_of "$name" "$(buildah --version 2>/dev/null || true)" "$(sha256sum <"$binary")" \
    "$(xargs -r sha256sum <<<"$libs")")
  if fresh "$archive" "$stamp"; then
    log "$name is up to date ($archive, $(since "$t0") s)"
  else
    ctx=$OUT_DIR/context-store
    rm -rf "$ctx"
    mkdir -p "$ctx/rootfs"
    cp "$binary" "$ctx/rootfs/victoria-metrics-prod"
    chmod 0755 "$ctx/rootfs/victoria-metrics-prod"
    for lib in $libs; do
      mkdir -p "$ctx/rootfs$(dirname "$lib")"
      cp -L "$lib" "$ctx/rootfs$lib"
    done
    write_accounts "$ctx/rootfs"
    reproducible_tar "$ctx/rootfs" "$ctx/rootfs.tar"
    rm -rf "$ctx/rootfs"
    printf '%s\n' 'FROM scratch' 'ADD rootfs.tar /' "USER $NONROOT_UID:$NONROOT_UID" 'EXPOSE 8428' \
      'ENTRYPOINT ["/victoria-metrics-prod"]' >"$ctx/Containerfile"
    buildah_build "$name" "$ctx" "$ctx/Containerfile" "$archive"
    rm -rf "$ctx"
    echo "$stamp" >"$archive.stamp"
    log "built $name in $(since "$t0") s: $archive"
  fi
  echo "STORE_IMAGE=$name"
  echo "STORE_ARCHIVE=$archive"
}

# The image names a docker-archive carries.
archive_names() {
  tar -xOf "$1" manifest.json | jq -r '.[].RepoTags[]?'
}

cmd_import() {
  (($#)) || die "import needs one or more archives"
  need_packages containerd
  [[ -S $CONTAINERD_ADDRESS ]] || die "no containerd socket at $CONTAINERD_ADDRESS (set CONTAINERD_ADDRESS)"
  local ctr=(ctr --address "$CONTAINERD_ADDRESS" -n k8s.io) archive name t0 names status
  for archive in "$@"; do
    [[ -f $archive ]] || die "no archive $archive"
    t0=$(now_ms)
    names=$(archive_names "$archive")
    [[ -n $names ]] || die "$archive names no image (not a docker-archive of hack/image.sh?)"
    # Unpacked for the default snapshotter (or CONTAINERD_SNAPSHOTTER's, which ctr reads).
    "${ctr[@]}" images import "$archive" >&2
    for name in $names; do
      status=$("${ctr[@]}" images check "name==$name" | awk 'NR > 1 { print $4, $NF }')
      [[ -n $status ]] || die "$name is not listed after importing $archive"
      [[ $status == "complete "* ]] || die "$name is incomplete after importing $archive: $status"
      [[ $status == *true ]] || die "$name is not unpacked after importing $archive: $status"
      log "imported $name ($(since "$t0") s)"
      echo "IMPORTED=$name"
    done
  done
}

FAILURES=0
disagree() { log "disagreement: $*"; FAILURES=$((FAILURES + 1)); }

# compare WHAT DOCKERFILE_VALUE OTHER_VALUE OTHER_NAME
compare() {
  [[ $2 == "$3" ]] || disagree "$1: the Dockerfile has $2, $4 has $3"
}

cmd_check() {
  local archive
  archive=$OUT_DIR/$(file_name "$DEFAULT_IMAGE").tar
  while (($#)); do
    case $1 in
      --archive) archive=${2:?--archive needs a path}; shift 2 ;;
      --no-archive) archive=; shift ;;
      *) die "check: unknown argument $1" ;;
    esac
  done
  local user entrypoint cmd expose dir expected_bins bin

  # The recipe: which binaries and where, whose passwd entry.
  expected_bins=$(printf '%s\n' "${BINARIES[@]}" | sort -u)
  compare "the binaries copied to /out/" "$(dockerfile_binaries | paste -sd ' ')" \
    "$(paste -sd ' ' <<<"$expected_bins")" "hack/image.sh (BINARIES)"
  dir=$(runtime_bin_dir)
  compare "the binaries' directory" "$dir" "/usr/local/bin/" "the cluster's pods (the operator's command paths)"
  user=$(runtime_value USER)
  compare "the user" "$user" "$NONROOT_UID:$NONROOT_UID" "the recipe's passwd/group entries"
  entrypoint=$(runtime_exec_form ENTRYPOINT)
  cmd=$(runtime_exec_form CMD)
  expose=$(runtime_value EXPOSE)
  local entry_path
  entry_path=$(jq -r '.[0] // ""' <<<"$entrypoint")
  grep -qxF -- "$entry_path" <(binary_paths) \
    || disagree "the entrypoint: the Dockerfile runs $entry_path, not one of the binaries the recipe installs ($(binary_paths | paste -sd ' '))"

  if [[ -z $archive ]]; then
    :
  elif [[ ! -f $archive ]]; then
    log "no archive at $archive: compared the Dockerfile with the recipe only (run hack/image.sh build)"
  else
    local work config layers manifest
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the directory is local
    trap "rm -rf '$work'" EXIT
    tar -xf "$archive" -C "$work" manifest.json
    manifest=$work/manifest.json
    config=$(jq -r '.[0].Config' "$manifest")
    tar -xf "$archive" -C "$work" "$config"
    config=$work/$config
    compare "the user" "$user" "$(jq -r '.config.User // ""' "$config")" "the image config"
    compare "the entrypoint" "$entrypoint" "$(jq -c '.config.Entrypoint' "$config")" "the image config"
    compare "the cmd" "$cmd" "$(jq -c '.config.Cmd' "$config")" "the image config"
    local ports_df ports_image
    ports_df=$(for p in $expose; do [[ $p == */* ]] && echo "$p" || echo "$p/tcp"; done | sort | paste -sd ' ')
    ports_image=$(jq -r '.config.ExposedPorts // {} | keys[]' "$config" | sort | paste -sd ' ')
    compare "the exposed ports" "$ports_df" "$ports_image" "the image config"
    local key value
    while IFS='=' read -r key value; do
      [[ -n $key ]] || continue
      compare "the label $key" "$value" "$(jq -r --arg k "$key" '.config.Labels[$k] // "(none)"' "$config")" "the image config"
    done < <(runtime_stage | awk 'toupper($1) == "LABEL"' | sed -E 's/^[A-Za-z]+[[:space:]]+//' \
      | grep -oE '[A-Za-z0-9_.-]+="[^"]*"' | sed -E 's/="(.*)"$/=\1/')

    # The files: every layer's listing, later layers last.
    layers=$(jq -r '.[0].Layers[]' "$manifest")
    local listing=$work/listing
    for key in $layers; do
      tar -xOf "$archive" "$key" | tar --numeric-owner -tvf - | sed -E 's#^(([^ ]+ +){5})(\./|/)?#\1/#; s# -> .*$##'
    done >"$listing"
    local path line mode owner uid gid
    for path in $(binary_paths); do
      line=$(awk -v p="$path" '$NF == p' "$listing" | tail -n 1)
      if [[ -z $line ]]; then disagree "$path is not in the image"; continue; fi
      mode=${line%% *}
      owner=$(awk '{ print $2 }' <<<"$line")
      uid=${owner%/*} gid=${owner#*/}
      [[ $mode == -* ]] || { disagree "$path is not a regular file in the image ($mode)"; continue; }
      # Executable by the Dockerfile's user: as owner, as group or as other.
      if ! { [[ $uid == "${user%%:*}" && ${mode:3:1} == x ]] || [[ $gid == "${user##*:}" && ${mode:6:1} == x ]] \
          || [[ ${mode:9:1} == x ]]; }; then
        disagree "$path ($mode $owner) is not executable by $user"
      fi
    done
    for path in /bin/sh /usr/bin/sh /bin/bash /usr/bin/bash /bin/busybox; do
      if awk -v p="$path" '$NF == p { f = 1 } END { exit !f }' "$listing"; then
        disagree "the image has a shell: $path"
      fi
    done
    log "compared with $archive"
    rm -rf "$work"
    trap - EXIT
  fi
  ((FAILURES == 0)) || die "$FAILURES disagreement(s) between the Dockerfile and the local recipe"
  echo "CHECK=ok"
}

main() {
  (($#)) || usage
  local command=$1
  shift
  case $command in
    build) cmd_build "$@" ;;
    pause) cmd_pause "$@" ;;
    tools) cmd_tools "$@" ;;
    store) cmd_store "$@" ;;
    import) cmd_import "$@" ;;
    check) cmd_check "$@" ;;
    recipe) cmd_recipe "$@" ;;
    context) cmd_context "$@" ;;
    -h | --help | help) usage ;;
    *) log "unknown command: $command"; usage ;;
  esac
}

main "$@"
