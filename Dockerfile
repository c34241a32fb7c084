# syntax=docker/dockerfile:1
# The `shlyuz` binary: one image for every target (`shlyuz serve --target gateway|registry|notify|
# intake|housing`, `shlyuz migrate`). Build: docker build -t shlyuz:0.1.0 .
# Kubernetes manifests and operations: k8s/ and docs/operations.md.

# --- build: release binary from the workspace as it is (protox compiles the protos; no protoc) ---
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of
# the cached target dir because cache mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin shlyuz \
    && install -D -m 0755 target/release/shlyuz /out/shlyuz

# --- runtime: glibc + libgcc only, no shell, no package manager, uid/gid 65532 ---
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="shlyuz" \
      org.opencontainers.image.description="Shlyuz integration gateway and services" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/shlyuz /usr/local/bin/shlyuz
WORKDIR /var/lib/shlyuz
USER 65532:65532
# gRPC (gateway 50051, registry 50052, notify 50053, intake 50054, housing 50055), plaintext
# health for kubelet probes (8081), admin HTTP /metrics and /livez (9464).
EXPOSE 50051 50052 50053 50054 50055 8081 9464
ENTRYPOINT ["/usr/local/bin/shlyuz"]
CMD ["--help"]
