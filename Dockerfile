# syntax=docker/dockerfile:1
#
# One image for all three binaries: metricstream-operator, metricstream-ingest and
# metricstream-consumer. The operator starts the workloads from the image it runs itself (by
# default), so one tag pins a matching operator and data plane, a cluster pulls and caches one
# image, and the binaries share most of their dependencies. Each workload runs its own command.
#
#   docker build -t metricstream:dev .
#
# The build stage compiles librdkafka from source (statically linked; see Cargo.toml), which needs
# only the C toolchain, make, perl, bash and the OpenSSL headers (libssl-dev, for Kafka TLS and
# SCRAM) that the Rust Debian image already has. The runtime is distroless: glibc, libgcc,
# OpenSSL's libssl3 (which the binaries link dynamically, so the base image's security updates
# reach it) and CA certificates, no shell, user 65532.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target directory between builds (BuildKit); the binaries
# are copied out of the cached target directory because it is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p metricstream-operator -p metricstream-ingest -p metricstream-consumer \
    && mkdir -p /out \
    && cp target/release/metricstream-operator target/release/metricstream-ingest \
          target/release/metricstream-consumer /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="MetricStream" \
      org.opencontainers.image.description="Kubernetes-native metrics ingestion: operator, HTTP ingest and consumer" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
# The same uid the operator's workloads and the chart's security contexts use.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/metricstream-operator"]
CMD ["run"]
