//! Start-up, stop and isolation of test clusters.

mod common;

use std::time::Duration;

use coffer_testcluster::{Options, TestCluster};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

#[tokio::test]
async fn missing_assets_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        assets_dir: Some(dir.path().join("nope")),
        ..Default::default()
    };
    let err = TestCluster::start_with(dir.path(), opts)
        .await
        .err()
        .expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("KUBEBUILDER_ASSETS"), "{msg}");
}

#[tokio::test]
async fn two_clusters_side_by_side_and_nothing_left_behind() {
    let (_d1, c1) = common::start().await;
    let (_d2, c2) = common::start().await;
    eprintln!(
        "start-up times: {:?} {:?}",
        c1.startup_time(),
        c2.startup_time()
    );
    assert_ne!(c1.server_url(), c2.server_url());
    for c in [&c1, &c2] {
        let client = c.client();
        let ns: Api<Namespace> = Api::all(client.clone());
        ns.get("default").await.unwrap();
        let sc: Api<StorageClass> = Api::all(client.clone());
        let class = sc.get(coffer_testcluster::STORAGE_CLASS).await.unwrap();
        assert_eq!(class.provisioner, coffer_testcluster::DRIVER);
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in [
            "volumesnapshots.snapshot.storage.k8s.io",
            "volumesnapshotcontents.snapshot.storage.k8s.io",
            "volumesnapshotclasses.snapshot.storage.k8s.io",
            "volumegroupsnapshots.groupsnapshot.storage.k8s.io",
            "snapshotmetadataservices.cbt.storage.k8s.io",
        ] {
            crds.get(name).await.unwrap();
        }
        let nodes: Api<Node> = Api::all(client);
        let node = nodes.get(coffer_testcluster::NODE_NAME).await.unwrap();
        let ready = node
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready);
        assert!(c.kubeconfig_path().is_file());
    }
    let pids: Vec<i32> = c1.pids().into_iter().chain(c2.pids()).collect();
    assert!(pids.len() >= 8, "{pids:?}");
    assert!(pids.iter().all(|p| common::alive(*p)));
    c1.stop().await;
    drop(c2); // drop also ends every process
    // Killed processes are reaped by their parents: wait for that, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut left: Vec<i32> = pids.clone();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left.retain(|p| common::alive(*p));
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
