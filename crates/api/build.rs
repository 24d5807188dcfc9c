//! Compiles `api/*.proto` with the vendored `protoc`, so a fresh machine needs nothing
//! installed, and keeps the descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let api = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../api");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The protos live outside this crate: without this, editing one would not rebuild it.
    println!("cargo:rerun-if-changed={}", api.display());
    println!("cargo:rerun-if-changed=build.rs");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("financing_descriptor.bin"))
        .compile_with_config(
            config,
            &[api.join("commands.proto"), api.join("queries.proto")],
            &[api, protoc_bin_vendored::include_path()?],
        )?;
    Ok(())
}
