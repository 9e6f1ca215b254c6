//! The simulated node through kube-rs: pods with PVCs, status, exec, logs, deletion.

mod common;

use std::time::Duration;

use common::{obj, wait_phase};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, AttachParams, DeleteParams, LogParams, PostParams};
use serde_json::json;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_with_pvc_exec_logs_exit_codes_and_deletion() {
    let (_dir, cluster) = common::start().await;
    let client = cluster.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pvcs.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    })))
    .await
    .unwrap();
    pods.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "writer"},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo hello-$(POD) > /data/hello.txt; echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.2; done"],
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "d", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    })))
    .await
    .unwrap();
    let pod = wait_phase(&pods, "writer", &["Running"], 60).await;
    let cs = &pod.status.unwrap().container_statuses.unwrap()[0];
    assert!(cs.state.as_ref().unwrap().running.is_some());

    // exec through kube-rs (WebSocket): sees the file in the PVC at the mountPath.
    let mut content = String::new();
    for _ in 0..50 {
        let mut p = pods
            .exec(
                "writer",
                ["cat", "/data/hello.txt"],
                &AttachParams::default().stderr(false),
            )
            .await
            .unwrap();
        content.clear();
        p.stdout()
            .unwrap()
            .read_to_string(&mut content)
            .await
            .unwrap();
        let status = p.take_status().unwrap().await.unwrap();
        if status.status.as_deref() == Some("Success") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(content.trim(), "hello-writer");
    // A failing command reports its exit code.
    let mut p = pods
        .exec("writer", ["sh", "-c", "exit 3"], &AttachParams::default())
        .await
        .unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert!(format!("{status:?}").contains("ExitCode"), "{status:?}");

    // The PVC is bound to a PV of the driver and its directory holds the file.
    let pvc = pvcs.get("data").await.unwrap();
    let pv = pvc.spec.unwrap().volume_name.unwrap();
    let path = cluster.storage().volume_path(&pv, false);
    assert_eq!(
        std::fs::read_to_string(path.join("hello.txt"))
            .unwrap()
            .trim(),
        "hello-writer"
    );

    // Logs, and follow.
    let logs = pods.logs("writer", &LogParams::default()).await.unwrap();
    assert!(logs.contains("started"), "{logs}");
    let mut lines = pods
        .log_stream(
            "writer",
            &LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .lines();
    assert_eq!(lines.try_next().await.unwrap().as_deref(), Some("started"));

    // A pod that exits with a code, restartPolicy Never.
    pods.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "fails"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "echo oops; exit 7"]}]},
    })))
    .await
    .unwrap();
    let pod = wait_phase(&pods, "fails", &["Failed"], 60).await;
    let cs = &pod.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        7
    );

    // restartPolicy OnFailure with back-off: restarts until it succeeds.
    pods.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "flaky"},
        "spec": {"restartPolicy": "OnFailure", "volumes": [{"name": "e", "emptyDir": {}}],
                 "containers": [{"name": "c", "image": "x", "volumeMounts": [{"name": "e", "mountPath": "/scratch"}],
                   "command": ["sh", "-c", "if [ -f /scratch/once ]; then exit 0; fi; touch /scratch/once; exit 1"]}]},
    })))
    .await
    .unwrap();
    let pod = wait_phase(&pods, "flaky", &["Succeeded"], 60).await;
    assert_eq!(
        pod.status.unwrap().container_statuses.unwrap()[0].restart_count,
        1
    );

    // A container without command and with an unknown image fails with a clear reason.
    pods.create(
        &PostParams::default(),
        &obj(json!({
            "metadata": {"name": "noentry"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        })),
    )
    .await
    .unwrap();
    let mut reason = String::new();
    for _ in 0..100 {
        let p = pods.get("noentry").await.unwrap();
        if let Some(w) = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.waiting)
            && w.reason.as_deref() == Some("CreateContainerError")
        {
            reason = w.message.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reason.contains("no known entrypoint"), "{reason}");

    // Graceful deletion: SIGTERM reaches the process, then the pod object goes away.
    let pids_before = cluster.pids();
    pods.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if pods.get_opt("writer").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pods.get_opt("writer").await.unwrap().is_none(),
        "pod not deleted"
    );
    let _ = pids_before;
    cluster.stop().await;
}
