//! Converts every fixture in `tests/fixtures/old-api/` for a Kubernetes 1.26 target and
//! compares the result with `tests/fixtures/old-api/expected/<same name>`. The expected
//! files are what the end-to-end test creates on a real 1.26 API server.
//!
//! `COFFER_BLESS=1 cargo test -p coffer-resources --test old_api_fixtures` rewrites the
//! expected files from the current conversion (review the diff before committing).

use std::path::{Path, PathBuf};

use coffer_resources::convert::{check_structural, convert_for_target};
use serde_json::Value;

/// What a Kubernetes 1.26 API server serves, for the fixtures' kinds and their successors.
fn served_1_26(api_version: &str, kind: &str) -> bool {
    match api_version {
        "v1"
        | "apps/v1"
        | "batch/v1"
        | "policy/v1"
        | "rbac.authorization.k8s.io/v1"
        | "apiextensions.k8s.io/v1"
        | "autoscaling/v1"
        | "autoscaling/v2" => true,
        "networking.k8s.io/v1" => matches!(kind, "Ingress" | "IngressClass" | "NetworkPolicy"),
        _ => false,
    }
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old-api")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_fixture_converts_to_its_expected_object() {
    let files = fixtures();
    assert!(files.len() >= 8, "fixtures missing: {files:?}");
    let bless = std::env::var_os("COFFER_BLESS").is_some();
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let stored = load(&path);
        let from = stored["apiVersion"].as_str().unwrap().to_string();
        assert!(
            !served_1_26(&from, stored["kind"].as_str().unwrap()),
            "{name} is not an old API"
        );
        let c = convert_for_target(&stored, &served_1_26).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.changed(), "{name}");
        assert!(
            served_1_26(&c.to, stored["kind"].as_str().unwrap()),
            "{name}"
        );
        let expected_path = dir().join("expected").join(name);
        if bless {
            let mut text = format!(
                "# {name} converted from {} to {} for Kubernetes 1.26 (generated; see tests/old_api_fixtures.rs)\n",
                c.from, c.to
            );
            for n in &c.notes {
                text.push_str(&format!("# note: {n}\n"));
            }
            text.push_str(&serde_yaml::to_string(&c.object).unwrap());
            std::fs::write(&expected_path, text).unwrap();
        }
        let expected = load(&expected_path);
        assert_eq!(
            c.object, expected,
            "{name}: converted object differs from expected/{name}"
        );
        if c.object["kind"] == "CustomResourceDefinition" {
            for v in c.object["spec"]["versions"].as_array().unwrap() {
                check_structural(&v["schema"]["openAPIV3Schema"])
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}
