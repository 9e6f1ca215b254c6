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
    // Not restarted: no lastState, as a kubelet reports it.
    assert!(
        cs.last_state
            .as_ref()
            .is_none_or(|l| l.terminated.is_none()),
        "{cs:?}"
    );
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

    // A command that cannot be started: StartError, exit code 128.
    pods.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "nocmd"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["/no/such/program"]}]},
    })))
    .await
    .unwrap();
    let pod = wait_phase(&pods, "nocmd", &["Failed"], 60).await;
    let cs = &pod.status.unwrap().container_statuses.unwrap()[0];
    let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert!(
        t.message.as_ref().unwrap().contains("/no/such/program"),
        "{t:?}"
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

/// Parses the lines `PATH MODE BASE64` that the pod below prints for each file.
fn parse_files(logs: &str) -> std::collections::BTreeMap<String, (String, Vec<u8>)> {
    use base64::Engine;
    logs.lines()
        .filter_map(|l| l.strip_prefix("FILE "))
        .map(|l| {
            let mut it = l.split(' ');
            let path = it.next().unwrap().to_string();
            let mode = it.next().unwrap().to_string();
            let data = base64::engine::general_purpose::STANDARD
                .decode(it.next().unwrap_or(""))
                .unwrap();
            (path, (mode, data))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_secret_downward_and_projected_volumes_and_env() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    let (dir, cluster) = common::start().await;
    let client = cluster.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(
            &pp,
            &obj(json!({
                "metadata": {"name": "app-config"},
                "data": {"a.txt": "alpha", "b.txt": "beta", "greeting": "hello"},
                "binaryData": {"bin": "AAEC/w=="},
            })),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(
            &pp,
            &obj(json!({
                "metadata": {"name": "app-secret"},
                "stringData": {"user": "admin", "pass": "s3cr3t"},
            })),
        )
        .await
        .unwrap();
    let host_dir = dir.path().join("host-path");
    let script = r#"
for f in $(find /cm /sec /dapi /proj /opt-cm -type f -o -type l | sort); do
  echo "FILE $f $(stat -L -c %a $f) $(base64 -w0 < $f)"
done
echo "ENV GREETING=$GREETING"
echo "ENV PASS=$PASS"
echo "ENV POD=$POD_NAME NS=$POD_NS NODE=$NODE IP=$POD_IP APP=$APP_LABEL"
echo "ENV CM_greeting=$CM_greeting"
echo "ENV SEC_user=$SEC_user"
echo "ENV COMBINED=$COMBINED"
echo "ENV MISSING=${MISSING-unset}"
echo "MISC pwd=$(pwd)"
echo from-pod > /hp/from-pod && echo "MISC hostPath written"
if echo x > /hp-ro/denied 2>/dev/null; then echo "MISC readOnly writable"; else echo "MISC readOnly refused"; fi
echo in-sub > /sub/file && echo "MISC subPath written"
echo "MISC ephemeral $(cat /eph/sub/file)"
echo "MISC in-cluster $(KUBECONFIG=/dev/null kubectl get pods 2>&1 | grep -o 'User "[^"]*"')"
"#;
    pods.create(&pp, &obj(json!({
        "metadata": {"name": "cfg", "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "n1"}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "x", "command": ["sh", "-c", script],
            "env": [
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "pass"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP_LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "COMBINED", "value": "$(POD_NAME)/$(GREETING)/$$(POD_NAME)"},
                {"name": "MISSING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "nope", "optional": true}}},
            ],
            "envFrom": [{"prefix": "CM_", "configMapRef": {"name": "app-config"}},
                        {"prefix": "SEC_", "secretRef": {"name": "app-secret"}}],
            "workingDir": "/wdir/inner",
            "volumeMounts": [
                {"name": "hp", "mountPath": "/hp"}, {"name": "hp", "mountPath": "/hp-ro", "readOnly": true},
                {"name": "eph", "mountPath": "/eph"}, {"name": "eph", "mountPath": "/sub", "subPath": "sub"},
                {"name": "cm", "mountPath": "/cm"}, {"name": "sec", "mountPath": "/sec"},
                {"name": "dapi", "mountPath": "/dapi"}, {"name": "proj", "mountPath": "/proj"},
                {"name": "opt-cm", "mountPath": "/opt-cm"},
            ]}],
            "volumes": [
                {"name": "hp", "hostPath": {"path": host_dir.to_str().unwrap(), "type": "DirectoryOrCreate"}},
                {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Mi"}}}}}},
                {"name": "cm", "configMap": {"name": "app-config", "defaultMode": 0o440,
                    "items": [{"key": "a.txt", "path": "conf/a.txt"}, {"key": "bin", "path": "bin", "mode": 0o600}]}},
                {"name": "sec", "secret": {"secretName": "app-secret", "defaultMode": 0o400}},
                {"name": "dapi", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "note", "fieldRef": {"fieldPath": "metadata.annotations['note']"}, "mode": 0o444},
                    {"path": "meta/name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "proj", "projected": {"defaultMode": 0o640, "sources": [
                    {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 3600, "path": "token"}},
                    {"configMap": {"name": "app-config", "items": [{"key": "b.txt", "path": "cm-b"}]}},
                    {"secret": {"name": "app-secret", "items": [{"key": "user", "path": "s/user"}]}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                {"name": "opt-cm", "configMap": {"name": "does-not-exist", "optional": true}},
            ]},
    })))
    .await
    .unwrap();
    wait_phase(&pods, "cfg", &["Succeeded"], 60).await;
    let logs = pods.logs("cfg", &LogParams::default()).await.unwrap();
    let files = parse_files(&logs);
    let file = |p: &str| {
        let (mode, data) = files
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing: {logs}"));
        (mode.as_str(), String::from_utf8_lossy(data).into_owned())
    };
    // ConfigMap: only the listed items, at their paths, defaultMode or the item's mode.
    assert_eq!(file("/cm/conf/a.txt"), ("440", "alpha".into()));
    assert_eq!(files["/cm/bin"], ("600".into(), vec![0, 1, 2, 255]));
    // Secret: every key, defaultMode.
    assert_eq!(file("/sec/user"), ("400", "admin".into()));
    assert_eq!(file("/sec/pass"), ("400", "s3cr3t".into()));
    // Downward API: labels as key="value" lines, an annotation, the name; 0644 default.
    assert_eq!(
        file("/dapi/labels"),
        ("644", "app=\"web\"\ntier=\"front\"".into())
    );
    assert_eq!(file("/dapi/note"), ("444", "n1".into()));
    assert_eq!(file("/dapi/meta/name"), ("644", "cfg".into()));
    // Projected: ConfigMap, Secret and downward API items and a service-account token.
    assert_eq!(file("/proj/cm-b"), ("640", "beta".into()));
    assert_eq!(file("/proj/s/user"), ("640", "admin".into()));
    assert_eq!(file("/proj/ns"), ("640", "default".into()));
    let in_volumes: Vec<&String> = files.keys().collect();
    assert_eq!(
        in_volumes,
        [
            "/cm/bin",
            "/cm/conf/a.txt",
            "/dapi/labels",
            "/dapi/meta/name",
            "/dapi/note",
            "/proj/cm-b",
            "/proj/ns",
            "/proj/s/user",
            "/proj/token",
            "/sec/pass",
            "/sec/user",
        ],
        "{logs}"
    );
    // The token is the pod's, for the audience asked: the API server's TokenReview says so.
    let (_, token) = file("/proj/token");
    let review: TokenReview = Api::all(client.clone())
        .create(
            &pp,
            &obj(json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": ["vault"]},
            })),
        )
        .await
        .unwrap();
    let st = review.status.unwrap();
    assert_eq!(st.authenticated, Some(true), "{st:?}");
    let user = st.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:default")
    );
    assert_eq!(
        user.extra.unwrap()["authentication.kubernetes.io/pod-name"],
        vec!["cfg".to_string()]
    );
    assert_eq!(st.audiences, Some(vec!["vault".to_string()]));
    // Env from ConfigMap and Secret keys, field refs, envFrom with prefixes, expansion.
    let env: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .collect();
    assert_eq!(
        env,
        [
            "GREETING=hello",
            "PASS=s3cr3t",
            "POD=cfg NS=default NODE=sim-node-0 IP=127.0.0.1 APP=web",
            "CM_greeting=hello",
            "SEC_user=admin",
            "COMBINED=cfg/hello/$(POD_NAME)",
            "MISSING=unset",
        ],
        "{logs}"
    );
    // workingDir, hostPath (created), a readOnly mount, subPath, a generic ephemeral
    // volume (its PVC made by the real ephemeral-volume controller), and an in-cluster
    // client (kubectl without kubeconfig) authenticated as the pod's ServiceAccount.
    let misc: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("MISC "))
        .collect();
    assert_eq!(
        misc,
        [
            "pwd=/wdir/inner",
            "hostPath written",
            "readOnly refused",
            "subPath written",
            "ephemeral in-sub",
            "in-cluster User \"system:serviceaccount:default:default\"",
        ],
        "{logs}"
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("from-pod")).unwrap(),
        "from-pod\n"
    );
    let eph = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .get("cfg-eph")
        .await
        .unwrap();
    let eph_dir = cluster
        .storage()
        .volume_path(&eph.spec.unwrap().volume_name.unwrap(), false);
    assert_eq!(
        std::fs::read_to_string(eph_dir.join("sub/file")).unwrap(),
        "in-sub\n"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_restarts_and_kubectl_logs_previous_tail() {
    use common::{kubectl, kubectl_until};

    let (_dir, cluster) = common::start().await;
    let client = cluster.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    // Two init containers, then a main container that fails once and is restarted
    // (restartPolicy Always): the order of everything that ran is in /w/order.
    let main = "echo main >> /w/order; n=$(grep -c main /w/order); \
                for i in 1 2 3 4 5; do echo run$n-line$i; done; \
                if [ $n -lt 2 ]; then exit 3; fi; exec sleep 3600";
    pods.create(&pp, &obj(json!({
        "metadata": {"name": "inits"},
        "spec": {"terminationGracePeriodSeconds": 1, "volumes": [{"name": "w", "emptyDir": {}}],
            "initContainers": [
                {"name": "first", "image": "x", "command": ["sh", "-c", "echo first >> /w/order; echo first-init-log"],
                 "volumeMounts": [{"name": "w", "mountPath": "/w"}]},
                {"name": "second", "image": "x", "command": ["sh", "-c", "test \"$(cat /w/order)\" = first && echo second >> /w/order"],
                 "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
            "containers": [{"name": "main", "image": "x", "command": ["sh", "-c", main],
                 "volumeMounts": [{"name": "w", "mountPath": "/w"}]}]},
    })))
    .await
    .unwrap();
    // Init containers that fail: restartPolicy Never fails the pod, Always retries the
    // init container with back-off; the main container never starts in either.
    for (name, policy) in [("init-fails", "Never"), ("init-loops", "Always")] {
        pods.create(&pp, &obj(json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1,
                "initContainers": [{"name": "setup", "image": "x", "command": ["sh", "-c", "echo setting up; exit 2"]}],
                "containers": [{"name": "main", "image": "x", "command": ["sh", "-c", "echo should not run"]}]},
        })))
        .await
        .unwrap();
    }

    // The main container runs a second time: logs of both instances, tail, order.
    let ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| c[0].restart_count == 1 && c[0].ready)
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        kube::runtime::wait::await_condition(pods.clone(), "inits", ready),
    )
    .await
    .expect("main container restarted once and ready")
    .unwrap();
    let current = kubectl_until(&cluster, &["logs", "inits", "-c", "main"], 20, |o| {
        o.contains("line5")
    })
    .await;
    let lines = |run: u32, from: u32| -> String {
        (from..=5).map(|i| format!("run{run}-line{i}\n")).collect()
    };
    assert_eq!(current, lines(2, 1));
    let (ok, previous, err) = kubectl(&cluster, &["logs", "inits", "-c", "main", "--previous"]);
    assert!(ok, "{err}");
    assert_eq!(previous, lines(1, 1));
    let (ok, tail, err) = kubectl(&cluster, &["logs", "inits", "--tail=2"]);
    assert!(ok, "{err}");
    assert_eq!(tail, lines(2, 4));
    let (ok, tail, err) = kubectl(&cluster, &["logs", "inits", "-p", "--tail", "1"]);
    assert!(ok, "{err}");
    assert_eq!(tail, lines(1, 5));
    let (ok, init_log, err) = kubectl(&cluster, &["logs", "inits", "-c", "first"]);
    assert!(ok, "{err}");
    assert_eq!(init_log, "first-init-log\n");
    let (ok, order, err) = kubectl(
        &cluster,
        &["exec", "inits", "-c", "main", "--", "cat", "/w/order"],
    );
    assert!(ok, "{err}");
    assert_eq!(order, "first\nsecond\nmain\nmain\n");
    // kubectl exec -i: stdin reaches the command and its end closes it.
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args([
            "exec",
            "-i",
            "inits",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo done >&2",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "THROUGH STDIN\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "done\n");
    let st = pods.get("inits").await.unwrap().status.unwrap();
    for s in st.init_container_statuses.as_ref().unwrap() {
        let t = s.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
        assert_eq!(s.restart_count, 0);
    }
    let main_status = &st.container_statuses.unwrap()[0];
    let last = main_status
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    let (ok, table, _) = kubectl(&cluster, &["get", "pod", "inits", "--no-headers"]);
    assert!(ok);
    let cols: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["1/1", "Running", "1"], "{table}");

    // restartPolicy Never: the pod fails, as kubectl shows it, and main never ran.
    let pod = wait_phase(&pods, "init-fails", &["Failed"], 60).await;
    let st = pod.status.unwrap();
    let init = &st.init_container_statuses.as_ref().unwrap()[0];
    let t = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (2, Some("Error")));
    let main_status = &st.container_statuses.as_ref().unwrap()[0];
    let waiting = main_status
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("PodInitializing"));
    assert_eq!(main_status.restart_count, 0);
    let initialized = st
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Initialized");
    assert_eq!(initialized.unwrap().status, "False");
    let (_, table, _) = kubectl(&cluster, &["get", "pod", "init-fails", "--no-headers"]);
    let cols: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["0/1", "Init:Error"], "{table}");
    let (ok, setup_log, _) = kubectl(&cluster, &["logs", "init-fails", "-c", "setup"]);
    assert!(ok);
    assert_eq!(setup_log, "setting up\n");
    let (ok, _, err) = kubectl(&cluster, &["logs", "init-fails", "-c", "main"]);
    assert!(!ok);
    assert!(
        err.contains("is waiting to start: PodInitializing"),
        "{err}"
    );

    // restartPolicy Always: the init container is retried with back-off, the pod stays
    // Pending and kubectl shows Init:CrashLoopBackOff.
    kubectl_until(
        &cluster,
        &["get", "pod", "init-loops", "--no-headers"],
        30,
        |o| {
            let cols: Vec<&str> = o.split_whitespace().collect();
            cols.get(2) == Some(&"Init:CrashLoopBackOff") && cols.get(3).is_some_and(|r| *r != "0")
        },
    )
    .await;
    let st = pods.get("init-loops").await.unwrap().status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let init = &st.init_container_statuses.as_ref().unwrap()[0];
    assert!(init.restart_count >= 1);
    let last = init
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.exit_code, 2);
    let main_status = &st.container_statuses.as_ref().unwrap()[0];
    assert!(main_status.state.as_ref().unwrap().waiting.is_some());
    assert_eq!(main_status.started, Some(false));
    cluster.stop().await;
}
