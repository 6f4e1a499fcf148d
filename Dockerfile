# The one image of the product: the operator, the API server (`serve`) and the runner pods'
# credentials init container all run this binary.
#   docker build -t REGISTRY/github-action-autoscaler:TAG .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate: the build needs nothing beyond Rust.
RUN cargo build --release --locked --bin github-action-autoscaler

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/github-action-autoscaler /usr/local/bin/github-action-autoscaler
# The manifests the operator writes run it as this user, with a read-only root file system.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/github-action-autoscaler"]
