# facevault container image.
#
#   docker build -t facevault:0.1.0 .
#
# Build: the release binary with the locked dependency set (protoc is vendored
# by the build script; no system protobuf needed). Runtime: distroless with
# glibc and CA certificates, no shell, no package manager, non-root.
#
# CI cannot pull base images, so scripts/container-test.sh assembles this
# runtime stage's layout FROM scratch around the CI-built release binary and
# runs it with podman as the Helm chart runs it: keep the two in step.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin facevault \
 && install -D -m 0755 target/release/facevault /out/facevault

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/facevault /usr/local/bin/facevault
# nonroot = 65532:65532; numeric so runAsNonRoot can verify it.
USER 65532:65532
# 50051: mTLS gRPC (server.listen). 8081: plaintext gRPC health only
# (server.health_listen), for kubelet probes.
EXPOSE 50051 8081
ENV FACEVAULT_CONFIG=/etc/facevault/facevault.toml
ENTRYPOINT ["/usr/local/bin/facevault", "serve"]
