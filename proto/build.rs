//! Compiles every contract under this folder with the vendored protoc and
//! emits the descriptor set that reflection and the gateway read.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "omninode/stamping/v1/stamping.proto",
    "omninode/orchestrator/v1/orchestrator.proto",
    "omninode/reducer/v1/reducer.proto",
    "omninode/events/v1/events.proto",
    "omninode/ingress/v1/ingress.proto",
    "omninode/api/v1/annotations.proto",
    "google/api/annotations.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

/// Compiled on their own, then named by path from the other packages: the
/// packages here live at the crate root (`crate::ingress`, not
/// `crate::omninode::ingress`), so a path prost makes relative across the
/// root would climb too far.
const ROOTED: &[(&[&str], &str, &str)] =
    &[(&["google/rpc/status.proto", "google/rpc/error_details.proto"], ".google.rpc", "crate::google::rpc")];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; the variable is read by prost-build below.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for (files, _, _) in ROOTED {
        tonic_prost_build::configure().build_client(false).build_server(false).compile_protos(files, &["."])?;
    }
    // What is only hashed arrives as `Bytes`: decoded without a copy, a view
    // of the received message.
    let mut config = tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("omninode_descriptor.bin"))
        .bytes(".omninode.stamping.v1.HashRequest.content")
        .bytes(".omninode.stamping.v1.HashStreamRequest.chunk");
    for (_, package, path) in ROOTED {
        config = config.extern_path(*package, *path);
    }
    config.compile_protos(PROTOS, &["."])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=google/api/http.proto");
    Ok(())
}
