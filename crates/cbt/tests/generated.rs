//! The gRPC code in src/proto/ is generated from proto/snapshot-metadata.proto and
//! committed, so that building Coffer needs no protobuf compiler and no file outside this
//! repository. This test regenerates it and fails when the committed code is stale;
//! `COFFER_REGENERATE=1 cargo test -p coffer-cbt --test generated` rewrites it.

use std::path::Path;

#[test]
fn generated_code_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = root.join("proto");
    let fds = protox::compile([proto_dir.join("snapshot-metadata.proto")], [&proto_dir])
        .expect("the proto file compiles");
    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("code generation");
    let fresh = std::fs::read_to_string(out.path().join("snapshotmetadata.rs")).unwrap();
    let committed_path = root.join("src/proto/snapshotmetadata.rs");
    if std::env::var_os("COFFER_REGENERATE").is_some() {
        std::fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == fresh,
        "src/proto/snapshotmetadata.rs is stale: run `COFFER_REGENERATE=1 cargo test -p coffer-cbt --test generated`"
    );
}
