//! Compiles the CSI SnapshotMetadata gRPC definitions shipped in ../shared/k8s/proto
//! (pure Rust through protox: no system protoc needed).

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let shared = match std::env::var_os("COFFER_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => manifest.join("../../../shared"),
    };
    let proto_dir = shared.join("k8s/proto");
    let proto = proto_dir.join("snapshot-metadata.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=COFFER_SHARED_DIR");
    let fds = protox::compile([&proto], [&proto_dir]).unwrap_or_else(|e| {
        panic!(
            "cannot compile {} (set COFFER_SHARED_DIR to the directory holding k8s/proto): {e}",
            proto.display()
        )
    });
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate SnapshotMetadata gRPC code");
    let shared = shared.canonicalize().unwrap_or(shared);
    println!(
        "cargo:rustc-env=COFFER_SHARED_DIR_BUILD={}",
        shared.display()
    );
}
