//! The generated CRDs install into a real API server (Kubernetes 1.26, the oldest Coffer
//! supports), become Established, and keep every field of the objects users write: a
//! field the schema left out would be pruned silently by the server.

use coffer_api::{Application, Backup, BackupPhase, BackupRepository, BackupStatus};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn crds_install_and_keep_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = coffer_testcluster::TestCluster::start(dir.path())
        .await
        .expect("test cluster (set KUBEBUILDER_ASSETS)");
    let client = cluster.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in coffer_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("coffer-api-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("installing {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} not established"))
        .unwrap();
    }

    let ns = "shop";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();

    // Objects as users write them, every field set.
    let repo: BackupRepository = serde_json::from_value(json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "BackupRepository",
        "metadata": {"name": "main", "namespace": ns},
        "spec": {"location": "s3://backups/shop", "credentialsSecret": {"name": "s3-creds"},
                 "keySecret": {"name": "repo-key"}, "initialize": true, "readOnly": false,
                 "encryption": "chacha20-poly1305", "compression": "zstd:5"},
    }))
    .unwrap();
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": ns},
        "spec": {
            "namespaces": [ns], "labelSelector": {"matchLabels": {"app": "shop"}},
            "orLabelSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]}],
            "includedResources": ["deployments", "configmaps"], "excludedResources": ["secrets"],
            "objects": [{"kind": "ConfigMap", "name": "settings"}],
            "clusterResources": "include",
            "volumes": [{"selector": {"matchLabels": {"tier": "db"}}, "policy": "live", "volumeSnapshotClass": "fast"}],
            "consistencyGroupLabel": "coffer.dev/group",
            "hooks": [{"name": "freeze", "labelSelector": {"matchLabels": {"tier": "db"}},
                       "pre": [{"exec": {"container": "db", "command": ["sh", "-c", "sync"], "onError": "Continue", "timeout": "30s"}}],
                       "post": [{"exec": {"command": ["true"]}}]}],
        },
    }))
    .unwrap();
    let backup: Backup = serde_json::from_value(json!({
        "apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "shop-1", "namespace": ns},
        "spec": {"application": "shop", "repository": {"name": "main", "kind": "BackupRepository"},
                 "ttl": "720h", "labels": {"reason": "upgrade"}, "deletionPolicy": "Delete"},
    }))
    .unwrap();

    let repos: Api<BackupRepository> = Api::namespaced(client.clone(), ns);
    let got = repos.create(&PostParams::default(), &repo).await.unwrap();
    assert_eq!(got.spec, repo.spec, "no field of the repository is pruned");
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    let got = apps.create(&PostParams::default(), &app).await.unwrap();
    assert_eq!(got.spec, app.spec, "no field of the application is pruned");
    let backups: Api<Backup> = Api::namespaced(client.clone(), ns);
    let got = backups
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    assert_eq!(got.spec, backup.spec, "no field of the backup is pruned");

    // Status goes through the status subresource and keeps its fields too.
    let status = BackupStatus {
        phase: Some(BackupPhase::PartiallyFailed),
        message: Some("1 hook failed".into()),
        items: vec![coffer_api::StatusItem {
            kind: coffer_api::ItemKind::Hook,
            severity: coffer_api::Severity::Error,
            name: "freeze".into(),
            namespace: Some(ns.into()),
            reason: "pod db-0 container db: `sync` exited with 1".into(),
        }],
        volumes: vec![coffer_api::VolumeStatus {
            pvc: "data".into(),
            namespace: ns.into(),
            mode: coffer_api::VolumePolicyKind::SnapshotAndCopy,
            bytes_total: 1 << 30,
            changed_blocks: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let patched = backups
        .patch_status(
            "shop-1",
            &PatchParams::apply("coffer-api-test").force(),
            &Patch::Apply(
                &json!({"apiVersion": "coffer.dev/v1alpha1", "kind": "Backup", "status": status}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.status, Some(status));

    // Invalid enum values are refused by the server's validation.
    let bad: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<Backup>(&()),
    );
    let err = bad
        .create(
            &PostParams::default(),
            &serde_json::from_value({
                let mut b = serde_json::to_value(&backup).unwrap();
                b["metadata"] = json!({"name": "bad", "namespace": ns});
                b["spec"]["deletionPolicy"] = json!("Sometimes");
                b
            })
            .unwrap(),
        )
        .await
        .expect_err("an unknown deletionPolicy is refused");
    assert!(err.to_string().contains("deletionPolicy"), "{err}");
    cluster.stop().await;
}
