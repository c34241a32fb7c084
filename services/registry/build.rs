//! Compiles the example adapter's proto (`example/`), which only the tests and the `testing`
//! feature include: it is not one of the shipped registries.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("example");
    let proto = root.join("shlyuz/example/v1/vehicle.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let file_descriptors = protox::compile([&proto], [&root])?;
    tonic_prost_build::configure()
        .build_client(false)
        .skip_protoc_run()
        .emit_rerun_if_changed(false)
        .compile_fds(file_descriptors)?;
    Ok(())
}
