//! `coffer backup ...` against a real API server (the test cluster), without an operator:
//! the test plays the operator's part by writing the status, VolumeBackups and mover
//! pods itself, and checks what the real binary creates, prints and exits with.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coffer_api::{Backup, BackupPhase, DeletionPolicy, RepositoryKind, VolumeBackup};
use coffer_testcluster::TestCluster;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

const NS: &str = "shop";

/// Runs the coffer binary. The simulated node (its kubelet answers `logs`) runs on this
/// test's runtime: the wait for the process leaves the other worker to it.
fn coffer(kubeconfig: &Path, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "coffer failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

#[track_caller]
fn fails(o: Output) -> String {
    assert!(
        !o.status.success(),
        "coffer should have failed: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line of error, got: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    err
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in coffer_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("backup-cli-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established")
        .unwrap();
    }
}

/// Writes a Backup's status as the operator would.
async fn set_status(client: &Client, name: &str, status: Value) {
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// Starts `coffer backup create NAME --wait` and returns it once its Backup exists.
async fn create_waiting(
    client: &Client,
    kubeconfig: &Path,
    name: &str,
    timeout: &str,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "backup",
            "create",
            name,
            "-n",
            NS,
            "--application",
            "shop",
            "--wait",
            "--timeout",
            timeout,
            "--kubeconfig",
        ])
        .arg(kubeconfig)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api, name, |b: Option<&Backup>| b.is_some()),
    )
    .await
    .expect("the Backup is created")
    .unwrap();
    child
}

async fn finish(child: tokio::process::Child) -> Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("coffer backup create --wait ends")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_commands_against_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path().join("cluster"))
        .await
        .expect("start the test cluster (KUBEBUILDER_ASSETS)");
    let kc = cluster.kubeconfig_path().to_path_buf();
    let kc = kc.as_path();
    let client = cluster.client();

    // Before the CRDs are installed: one line saying how to install them.
    let err = fails(coffer(kc, &["backup", "get", "-n", NS]));
    assert!(
        err.contains("Coffer's CRDs are not installed: kubectl apply -k deploy/"),
        "{err}"
    );
    let err = fails(coffer(kc, &["backup", "describe", "x", "-n", NS]));
    assert!(err.contains("Coffer's CRDs are not installed"), "{err}");
    // No cluster at all: one line naming the kubeconfig.
    let err = fails(coffer(
        Path::new("/nonexistent/kubeconfig"),
        &["backup", "get"],
    ));
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");

    install_crds(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();

    // Nothing yet.
    let out = coffer(kc, &["backup", "get", "-n", NS]);
    assert!(out.status.success() && stdout(&out).is_empty());
    assert!(stderr(&out).contains("no backups found in namespace shop"));

    // create, of an Application and inline.
    let text = ok(coffer(
        kc,
        &[
            "backup",
            "create",
            "shop-1",
            "-n",
            NS,
            "--application",
            "shop",
            "--repository",
            "main",
            "--ttl",
            "720h",
            "--label",
            "reason=upgrade",
        ],
    ));
    assert!(
        text.contains("backup shop-1 created in namespace shop"),
        "{text}"
    );
    ok(coffer(
        kc,
        &[
            "backup",
            "create",
            "shop-2",
            "-n",
            NS,
            "--selector",
            "app=shop,tier!=cache",
            "--include-resources",
            "deployments,configmaps",
            "--cluster-repository",
            "--repository",
            "central",
            "--deletion-policy",
            "Delete",
        ],
    ));
    let err = fails(coffer(
        kc,
        &["backup", "create", "shop-1", "-n", NS, "--application", "x"],
    ));
    assert!(
        err.contains("backup shop-1 already exists in namespace shop"),
        "{err}"
    );
    let err = fails(coffer(
        kc,
        &[
            "backup",
            "create",
            "b",
            "-n",
            "nowhere",
            "--application",
            "x",
        ],
    ));
    assert!(err.contains("nowhere"), "{err}");

    // get -o json: a List of what create wrote, as the server kept it.
    let list: Value =
        serde_json::from_str(&ok(coffer(kc, &["backup", "get", "-n", NS, "-o", "json"]))).unwrap();
    assert_eq!(list["kind"], "List");
    let items: Vec<Backup> = serde_json::from_value(list["items"].clone()).unwrap();
    assert_eq!(items.len(), 2);
    let b1 = &items[0].spec;
    assert_eq!(b1.application.as_deref(), Some("shop"));
    assert_eq!(b1.repository.name, "main");
    assert_eq!(b1.ttl.as_deref(), Some("720h"));
    assert_eq!(b1.labels["reason"], "upgrade");
    let b2 = &items[1].spec;
    assert_eq!(b2.repository.kind, RepositoryKind::ClusterBackupRepository);
    assert_eq!(b2.deletion_policy, DeletionPolicy::Delete);
    let sel = &b2.selection.as_ref().unwrap().selection;
    assert_eq!(sel.included_resources, ["deployments", "configmaps"]);
    let ls = sel.label_selector.as_ref().unwrap();
    assert_eq!(ls.match_labels.as_ref().unwrap()["app"], "shop");
    assert_eq!(ls.match_expressions.as_ref().unwrap()[0].operator, "NotIn");
    // One object by name, as YAML.
    let one: Backup = serde_yaml::from_str(&ok(coffer(
        kc,
        &["backup", "get", "shop-1", "-n", NS, "-o", "yaml"],
    )))
    .unwrap();
    assert_eq!(one.metadata.name.as_deref(), Some("shop-1"));
    // All namespaces, as a table.
    let table = ok(coffer(kc, &["backup", "get", "-A"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("NAMESPACE   NAME     PHASE   APPLICATION"),
        "{table}"
    );
    assert!(lines[2].contains("(inline)") && lines[2].contains("central (cluster)"));

    // The operator's part: status, a VolumeBackup, a mover pod.
    set_status(
        &client,
        "shop-1",
        json!({
            "phase": "PartiallyFailed", "message": "1 hook failed",
            "startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:02:03Z",
            "progress": {"objects": 42, "volumesDone": 1, "volumesTotal": 1,
                         "bytesDone": 268435456u64, "bytesTotal": 268435456u64},
            "items": [{"kind": "Hook", "severity": "Error", "name": "freeze", "namespace": NS,
                       "reason": "pod db-0 container db: `sync` exited 1"}],
            "hooks": {"attempted": 2, "failed": 1},
            "resourcesSnapshot": "aaaa1111", "manifest": "cccc3333", "size": "1.0 MiB",
            "volumes": [{"pvc": "data", "namespace": NS, "mode": "snapshotAndCopy",
                         "volumeBackup": "shop-1-data", "snapshotId": "bbbb2222",
                         "bytesTotal": 268435456u64, "bytesRead": 3145728, "bytesNew": 1048576,
                         "changedBlocks": false, "fullReadReason": "first backup of this volume"}],
        }),
    )
    .await;
    let vbs: Api<VolumeBackup> = Api::namespaced(client.clone(), NS);
    vbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "VolumeBackup",
            "metadata": {"name": "shop-1-data", "namespace": NS,
                         "labels": {"coffer.dev/backup": "shop-1"}},
            "spec": {"backup": "shop-1", "sourcePvc": "data", "sourceNamespace": NS,
                     "size": "256Mi", "volumeMode": "Block", "repository": {"name": "main"}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    vbs.patch_status(
        "shop-1-data",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Completed", "message": "copied"}})),
    )
    .await
    .unwrap();

    let text = ok(coffer(kc, &["backup", "describe", "shop-1", "-n", NS]));
    for want in [
        "Name:                 shop-1\n",
        "Application:          shop (Application in shop)\n",
        "Repository:           main (BackupRepository in shop)\n",
        "Phase:                PartiallyFailed\n",
        "Message:              1 hook failed\n",
        "Duration:             2m3s\n",
        "Progress:             42 objects; volumes 1 of 1; 256.0 MiB of 256.0 MiB\n",
        "Resources snapshot:   aaaa1111\n",
        "Manifest:             cccc3333\n",
        "Hooks:                2 attempted, 1 failed\n",
        "  Error    Hook      shop/freeze: pod db-0 container db: `sync` exited 1\n",
        "  shop/data (snapshotAndCopy)\n",
        "    Bytes:            256.0 MiB total, 3.0 MiB read, 1.0 MiB new\n",
        "    Read:             full read: first backup of this volume\n",
        "  shop-1-data: Completed, pvc shop/data (Block, 256Mi): copied\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let table = ok(coffer(kc, &["backup", "get", "-n", NS]));
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == [
                "shop-1",
                "PartiallyFailed",
                "shop",
                "main",
                "2024-05-01",
                "10:00:00",
                "UTC",
                "2m3s",
                "1.0",
                "MiB",
                "1"
            ],
        "{table}"
    );
    let err = fails(coffer(kc, &["backup", "describe", "nope", "-n", NS]));
    assert!(
        err.contains("backup nope not found in namespace shop"),
        "{err}"
    );

    // logs: none, then a mover pod's.
    let out = coffer(kc, &["backup", "logs", "shop-1", "-n", NS]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains(
            "no mover pods of backup shop-1 are left; movers' logs are kept only while their pods exist"
        ),
        "{}",
        stderr(&out)
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "shop-1-data-mover", "labels": {"coffer.dev/backup": "shop-1"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "mover", "image": "coffer",
                     "command": ["sh", "-c", "echo moving shop-1-data; echo done"]}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "shop-1-data-mover", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Succeeded")
        }),
    )
    .await
    .expect("the mover pod ends")
    .unwrap();
    let text = ok(coffer(kc, &["backup", "logs", "shop-1", "-n", NS]));
    assert_eq!(
        text,
        "== pod shop-1-data-mover ==\nmoving shop-1-data\ndone\n"
    );

    // create --wait: progress per change on stderr, the description on stdout, and the
    // exit status by the final phase.
    let child = create_waiting(&client, kc, "shop-3", "60s").await;
    set_status(
        &client,
        "shop-3",
        json!({"phase": "InProgress", "step": "data", "startTime": "2024-05-01T10:00:00Z",
               "progress": {"objects": 5, "volumesDone": 0, "volumesTotal": 1,
                            "bytesDone": 0, "bytesTotal": 1048576}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_status(
        &client,
        "shop-3",
        json!({"phase": "Completed", "completionTime": "2024-05-01T10:00:07Z",
               "progress": {"objects": 5, "volumesDone": 1, "volumesTotal": 1,
                            "bytesDone": 1048576, "bytesTotal": 1048576}}),
    )
    .await;
    let out = finish(child).await;
    let text = ok(out.clone());
    assert!(text.contains("Phase:                Completed\n"), "{text}");
    assert!(text.contains("Duration:             7s\n"), "{text}");
    let progress = stderr(&out);
    assert!(
        progress
            .contains("backup shop-3: InProgress (data), 5 objects, volumes 0/1, 0 B of 1.0 MiB"),
        "{progress}"
    );
    assert!(
        progress.contains("backup shop-3: Completed, 5 objects, volumes 1/1, 1.0 MiB of 1.0 MiB"),
        "{progress}"
    );

    let child = create_waiting(&client, kc, "shop-4", "60s").await;
    set_status(
        &client,
        "shop-4",
        json!({"phase": "Failed", "message": "pre hook freeze failed in pod db-0"}),
    )
    .await;
    let out = finish(child).await;
    assert!(!out.status.success());
    assert!(stdout(&out).contains("Phase:                Failed\n"));
    assert!(
        stderr(&out)
            .lines()
            .last()
            .unwrap()
            .contains("error: backup shop-4 ended Failed: pre hook freeze failed in pod db-0"),
        "{}",
        stderr(&out)
    );

    // No operator picks it up: the deadline ends the wait with a hint.
    let out = finish(create_waiting(&client, kc, "shop-5", "2s").await).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("backup shop-5 is still New after 2s (--timeout)")
            && err.contains("no operator has picked it up"),
        "{err}"
    );

    // delete: what happens to the data, by the policy.
    let text = ok(coffer(kc, &["backup", "delete", "shop-1", "-n", NS]));
    assert_eq!(
        text,
        "backup shop-1 deleted; its data stays in the repository (deletionPolicy Retain)\n"
    );
    let text = ok(coffer(
        kc,
        &["backup", "delete", "shop-2", "-n", NS, "--wait"],
    ));
    assert_eq!(
        text,
        "backup shop-2 deleted; it is forgotten in the repository by the operator (deletionPolicy Delete)\nbackup shop-2 is gone\n"
    );
    // --forget turns Retain into Delete first; the operator's finalizer would see it.
    let backups: Api<Backup> = Api::namespaced(client.clone(), NS);
    backups
        .patch_metadata(
            "shop-3",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": ["coffer.dev/test"]}})),
        )
        .await
        .unwrap();
    let text = ok(coffer(
        kc,
        &["backup", "delete", "shop-3", "-n", NS, "--forget"],
    ));
    assert!(text.contains("(deletionPolicy Delete)"), "{text}");
    let held = backups.get("shop-3").await.unwrap();
    assert_eq!(held.spec.deletion_policy, DeletionPolicy::Delete);
    assert!(held.metadata.deletion_timestamp.is_some());
    let text = ok(coffer(kc, &["backup", "describe", "shop-3", "-n", NS]));
    assert!(text.contains("Deleting:"), "{text}");
    backups
        .patch_metadata(
            "shop-3",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let err = fails(coffer(kc, &["backup", "delete", "shop-1", "-n", NS]));
    assert!(
        err.contains("backup shop-1 not found in namespace shop"),
        "{err}"
    );
    assert_eq!(
        backups
            .get_opt("shop-1")
            .await
            .unwrap()
            .map(|b| b.status.and_then(|s| s.phase)),
        None::<Option<BackupPhase>>
    );

    cluster.stop().await;
}
