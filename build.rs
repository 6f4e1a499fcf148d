//! Generates the gRPC code for KEDA's external scaler interface from `proto/externalscaler.proto`,
//! with a vendored `protoc` so that building needs no system protobuf compiler.

const PROTO: &str = "proto/externalscaler.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only the proto feeds code generation; anything else changing must not re-run protoc.
    println!("cargo:rerun-if-changed={PROTO}");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        // The client serves the integration tests and the push-latency bench.
        .build_client(true)
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &[PROTO], &["proto"])?;
    Ok(())
}
