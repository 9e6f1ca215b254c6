//! Real controllers over the simulated node: a kube-runtime Controller on a CRD, and a
//! StatefulSet with volumeClaimTemplates.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::obj;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::wait::{await_condition, conditions};
use kube::{CustomResource, CustomResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, schemars::JsonSchema)]
#[kube(
    group = "test.coffer.dev",
    version = "v1",
    kind = "Greeting",
    namespaced,
    status = "GreetingStatus"
)]
/// A test kind whose controller writes a greeting into its status.
pub struct GreetingSpec {
    name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, schemars::JsonSchema)]
/// What the controller wrote.
pub struct GreetingStatus {
    message: String,
}

#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_crd_and_statefulset_gets_bound_pvcs() {
    let (_dir, cluster) = common::start().await;
    let client = cluster.client();

    // A CRD and a kube-runtime Controller that reconciles it.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Greeting::crd())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "greetings.test.coffer.dev",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let greetings: Api<Greeting> = Api::namespaced(client.clone(), "default");
    let ctl = tokio::spawn(
        Controller::new(greetings.clone(), Default::default())
            .run(
                |g: Arc<Greeting>, api: Arc<Api<Greeting>>| async move {
                    let msg = format!("hello, {}", g.spec.name);
                    let patch = Patch::Merge(json!({"status": {"message": msg}}));
                    api.patch_status(
                        g.metadata.name.as_deref().unwrap(),
                        &PatchParams::default(),
                        &patch,
                    )
                    .await
                    .ok();
                    Ok::<_, Never>(Action::await_change())
                },
                |_, _, _| Action::requeue(Duration::from_secs(1)),
                Arc::new(greetings.clone()),
            )
            .for_each(|_| async {}),
    );
    greetings
        .create(
            &PostParams::default(),
            &Greeting::new(
                "g",
                GreetingSpec {
                    name: "coffer".into(),
                },
            ),
        )
        .await
        .unwrap();
    let done = await_condition(greetings.clone(), "g", |g: Option<&Greeting>| {
        g.and_then(|g| g.status.as_ref())
            .is_some_and(|s| s.message == "hello, coffer")
    });
    tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .unwrap()
        .unwrap();
    ctl.abort();

    // A StatefulSet with volumeClaimTemplates: the real controller makes PVCs, the
    // provisioner and PV binder bind them, the node runs the pods.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    sts.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "db", "image": "x", "command": ["sh", "-c", "hostname > /var/db/who; exec sleep 3600"],
                                "volumeMounts": [{"name": "data", "mountPath": "/var/db"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": coffer_testcluster::STORAGE_CLASS_WFFC,
                "resources": {"requests": {"storage": "8Mi"}}}}],
        },
    })))
    .await
    .unwrap();
    let ready = await_condition(sts.clone(), "db", |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.ready_replicas == Some(2))
    });
    tokio::time::timeout(Duration::from_secs(90), ready)
        .await
        .expect("StatefulSet ready")
        .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    for i in 0..2 {
        let pvc = pvcs.get(&format!("data-db-{i}")).await.unwrap();
        assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
        let pv = pvc.spec.unwrap().volume_name.unwrap();
        let who = cluster.storage().volume_path(&pv, false).join("who");
        for _ in 0..50 {
            if std::fs::read_to_string(&who).is_ok_and(|s| !s.trim().is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&who).unwrap().trim(),
            format!("db-{i}")
        );
    }
    cluster.stop().await;
}
