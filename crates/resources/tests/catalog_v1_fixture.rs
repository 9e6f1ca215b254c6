//! A resources snapshot with a format-1 catalog, written by the release before catalog
//! format 2 (`tests/fixtures/catalog-v1/make.sh`, committed), still reads back: every
//! object equal to the file it was imported from. Then the same objects written anew
//! (format 2) read back the same, entry for entry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_repo::progress::{NoProgress, SharedProgress};
use coffer_repo::{Location, OpenOptions, OpendalStorage, Repository, Secret, StorageOptions};
use coffer_resources::archive::{CATALOG_FORMAT, CATALOG_FORMAT_V1, Catalog, write_snapshot};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog-v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The objects the fixture was imported from, as JSON.
fn originals() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture().join("objects/shop.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .collect()
}

use serde::Deserialize;

async fn open(dir: &Path) -> Repository {
    let loc = Location::parse(dir.join("repo").to_str().unwrap()).unwrap();
    let storage = Arc::new(OpendalStorage::new(&loc, &StorageOptions::default()).unwrap());
    Repository::open(
        storage,
        &Secret::Password("fixture".into()),
        &OpenOptions::new(dir.join("cache"), "test-host", "tester"),
    )
    .await
    .unwrap()
}

fn same_entries(a: &Catalog, b: &Catalog) {
    assert_eq!(a.entries, b.entries);
    assert_eq!(a.cluster, b.cluster);
    assert_eq!(a.selection, b.selection);
    let mut ca = a.collected.clone();
    let mut cb = b.collected.clone();
    ca.sort_by(|x, y| (&x.group, &x.kind).cmp(&(&y.group, &y.kind)));
    cb.sort_by(|x, y| (&x.group, &x.kind).cmp(&(&y.group, &y.kind)));
    assert_eq!(ca, cb);
}

#[tokio::test]
async fn a_format_1_catalog_written_by_the_last_release_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture().join("repo"), &dir.path().join("repo"));
    let repo = open(dir.path()).await;
    let id = std::fs::read_to_string(fixture().join("snapshot-id")).unwrap();
    let snap = repo.find_snapshot(id.trim()).await.unwrap();
    let old = Catalog::load(&repo, &snap).await.unwrap();
    assert_eq!(old.format, CATALOG_FORMAT_V1);
    let originals = originals();
    assert_eq!(old.entries.len(), originals.len());
    for want in &originals {
        let name = want["metadata"]["name"].as_str().unwrap();
        let ns = want["metadata"]["namespace"].as_str();
        let kind = want["kind"].as_str().unwrap();
        let found: Vec<_> = old
            .entries
            .iter()
            .filter(|e| e.kind == kind && e.name == name && e.namespace.as_deref() == ns)
            .collect();
        assert_eq!(found.len(), 1, "{kind}/{name}");
        let got = Catalog::read_object(&repo, found[0]).await.unwrap();
        assert_eq!(&got, want, "{kind}/{name} reads back as it was imported");
    }

    // The same objects written now: a format-2 catalog with the same entries (the
    // object streams are the same bytes, so the same chunks).
    let mut objects = Vec::new();
    for e in &old.entries {
        let r = old
            .collected
            .iter()
            .find(|r| r.kind == e.kind && r.group == e.group())
            .unwrap()
            .clone();
        objects.push((r, Catalog::read_object(&repo, e).await.unwrap()));
    }
    let progress: SharedProgress = Arc::new(NoProgress);
    let (snap2, _) = write_snapshot(
        &repo,
        old.cluster.clone(),
        old.selection.clone(),
        old.collected.clone(),
        &objects,
        Default::default(),
        "fixture".into(),
        0,
        &progress,
    )
    .await
    .unwrap();
    let new = Catalog::load(&repo, &snap2).await.unwrap();
    assert_eq!(new.format, CATALOG_FORMAT);
    same_entries(&old, &new);
    let root = repo.read_stream(&snap2.root).await.unwrap();
    assert!(root.starts_with(b"{\"header\":{\"format\":2,"));
}
