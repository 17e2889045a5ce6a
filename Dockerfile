# syntax=docker/dockerfile:1
#
# huaweicloud-job-exporter container image.
#
#   docker build -t huaweicloud-job-exporter:0.1.0 .
#   docker run --rm -p 10037:10037 huaweicloud-job-exporter:0.1.0 demo --web.listen-address=:10037
#
# Build stage: the official Rust image, the locked dependency set.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target dir between builds (BuildKit);
# the binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/huaweicloud-job-exporter /out/huaweicloud-job-exporter

# Runtime stage: distroless glibc image (no shell, no package manager), user
# nonroot = 65532:65532. The binary uses rustls, so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
# No HEALTHCHECK: distroless has no shell or HTTP client to run one, and the
# orchestrator probes /-/healthy and /-/ready itself (deploy/kubernetes).
# checkov:skip=CKV_DOCKER_2:no shell or HTTP client in distroless; Kubernetes probes /-/healthy and /-/ready
LABEL org.opencontainers.image.title="huaweicloud-job-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Huawei Cloud asynchronous jobs"
COPY --from=builder /out/huaweicloud-job-exporter /usr/local/bin/huaweicloud-job-exporter
# Build-time smoke check: the binary starts and links in the runtime image.
# Exec form, since distroless has no shell.
RUN ["/usr/local/bin/huaweicloud-job-exporter", "--version"]
USER 65532:65532
EXPOSE 10037
ENTRYPOINT ["/usr/local/bin/huaweicloud-job-exporter"]
CMD ["--config.file=/etc/huaweicloud-job-exporter/config.yml", "--web.listen-address=:10037"]
