//! The CRDs committed under deploy/crds/ are exactly what this crate generates; the test
//! fails when they are stale. `COFFER_REGENERATE=1 cargo test -p coffer-api --test crds`
//! rewrites them.

use std::path::Path;

#[test]
fn deploy_crds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let regenerate = std::env::var_os("COFFER_REGENERATE").is_some();
    if regenerate {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut expected = Vec::new();
    for crd in coffer_api::crds() {
        let name = coffer_api::crd_file_name(&crd);
        let yaml = coffer_api::crd_yaml(&crd);
        let path = dir.join(&name);
        if regenerate {
            std::fs::write(&path, &yaml).unwrap();
        } else {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == yaml,
                "deploy/crds/{name} is stale: run `COFFER_REGENERATE=1 cargo test -p coffer-api --test crds`"
            );
        }
        expected.push(name);
    }
    // No CRD file of a kind that no longer exists.
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n.contains(".coffer.dev"))
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(
        present, expected,
        "deploy/crds/ holds CRDs this crate does not generate"
    );
}

#[test]
fn user_yaml_of_the_issue_parses() {
    let docs = r#"
apiVersion: coffer.dev/v1alpha1
kind: BackupRepository
metadata: {name: main, namespace: shop}
spec:
  location: s3://backups/shop
  credentialsSecret: {name: s3-creds}
  keySecret: {name: repo-key}
  initialize: true
---
apiVersion: coffer.dev/v1alpha1
kind: Application
metadata: {name: shop, namespace: shop}
spec:
  labelSelector: {matchLabels: {app: shop}}
  volumes:
  - {selector: {matchLabels: {tier: db}}, policy: snapshotAndCopy}
  consistencyGroupLabel: coffer.dev/group
  hooks:
  - name: freeze
    labelSelector: {matchLabels: {tier: db}}
    pre:  [{exec: {container: db, command: [sh, -c, "sync"], onError: Fail, timeout: 30s}}]
    post: [{exec: {container: db, command: [sh, -c, "echo thawed"]}}]
---
apiVersion: coffer.dev/v1alpha1
kind: Backup
metadata: {name: shop-1, namespace: shop}
spec:
  application: shop
  repository: {name: main}
"#;
    let mut it = serde_yaml::Deserializer::from_str(docs);
    let repo: coffer_api::BackupRepository =
        serde::Deserialize::deserialize(it.next().unwrap()).unwrap();
    assert_eq!(repo.spec.settings.location, "s3://backups/shop");
    assert_eq!(repo.spec.settings.key_secret.name, "repo-key");
    assert!(repo.spec.settings.initialize && !repo.spec.settings.read_only);
    let app: coffer_api::Application = serde::Deserialize::deserialize(it.next().unwrap()).unwrap();
    assert_eq!(
        app.spec.volumes[0].policy,
        coffer_api::VolumePolicyKind::SnapshotAndCopy
    );
    assert_eq!(
        app.spec.hooks[0].pre[0].exec.on_error,
        coffer_api::OnError::Fail
    );
    assert_eq!(
        app.spec.hooks[0].post[0].exec.on_error,
        coffer_api::OnError::Fail,
        "onError defaults to Fail"
    );
    assert!(app.spec.selection.label_selector.is_some());
    let backup: coffer_api::Backup = serde::Deserialize::deserialize(it.next().unwrap()).unwrap();
    assert_eq!(backup.spec.application.as_deref(), Some("shop"));
    assert_eq!(
        backup.spec.repository.kind,
        coffer_api::RepositoryKind::BackupRepository
    );
    assert_eq!(
        backup.spec.deletion_policy,
        coffer_api::DeletionPolicy::Retain
    );
}

#[test]
fn the_restore_of_the_issue_parses() {
    let docs = r#"
apiVersion: coffer.dev/v1alpha1
kind: Restore
metadata: {name: shop-back, namespace: shop}
spec:
  backup: shop-1
  mode: new
  namespaceMapping: {shop: shop-copy}
  existing: skip
  rollback: false
  transforms: {configMap: my-modifiers}
---
apiVersion: coffer.dev/v1alpha1
kind: Restore
metadata: {name: dr, namespace: shop}
spec:
  repository: {name: main}
  manifest: 0123abcd
  mode: inPlace
  volumes: {exclude: [cache]}
"#;
    let mut it = serde_yaml::Deserializer::from_str(docs);
    let r: coffer_api::Restore = serde::Deserialize::deserialize(it.next().unwrap()).unwrap();
    assert_eq!(r.spec.backup.as_deref(), Some("shop-1"));
    assert_eq!(r.spec.mode, coffer_api::RestoreMode::New);
    assert_eq!(r.spec.namespace_mapping["shop"], "shop-copy");
    assert_eq!(r.spec.existing, Some(coffer_api::ExistingObjects::Skip));
    assert_eq!(r.spec.transforms.unwrap().config_map, "my-modifiers");
    let dr: coffer_api::Restore = serde::Deserialize::deserialize(it.next().unwrap()).unwrap();
    assert_eq!(dr.spec.mode, coffer_api::RestoreMode::InPlace);
    assert_eq!(dr.spec.manifest.as_deref(), Some("0123abcd"));
    assert_eq!(dr.spec.volumes.unwrap().exclude, vec!["cache".to_string()]);
    // The PVC of the issue names the populator's kind.
    let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_yaml::from_str(
        "metadata: {name: data-copy, namespace: shop}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n  dataSourceRef: {apiGroup: coffer.dev, kind: VolumeBackup, name: shop-1-data}\n",
    )
    .unwrap();
    let r = pvc.spec.unwrap().data_source_ref.unwrap();
    assert_eq!(
        (r.api_group.as_deref(), r.kind.as_str()),
        (Some(coffer_api::GROUP), "VolumeBackup")
    );
}
