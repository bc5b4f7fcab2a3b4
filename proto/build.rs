//! Compiles every contract under this folder with the vendored protoc and
//! emits the descriptor set that reflection and the gateway read.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "omninode/stamping/v1/stamping.proto",
    "omninode/orchestrator/v1/orchestrator.proto",
    "omninode/reducer/v1/reducer.proto",
    "omninode/events/v1/events.proto",
    "omninode/api/v1/annotations.proto",
    "google/api/annotations.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; the variable is read by prost-build below.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("omninode_descriptor.bin"))
        .compile_protos(PROTOS, &["."])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=google/api/http.proto");
    Ok(())
}
