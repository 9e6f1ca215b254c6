//! The restore data mover's pod and Secret, as the volume populator and the in-place
//! restore both start them: `coffer mover restore` writing one snapshot into one PVC, the
//! repository's settings from a Secret beside it, no ServiceAccount token (it reads the
//! repository and writes the volume, nothing else), and its outcome read back from the
//! last lines of its log.

use std::collections::BTreeMap;

use coffer_repo::Location;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, LogParams, ObjectMeta};
use serde_json::json;

use crate::backup::movers::{SECRET_DIR, create, from_json};
use crate::error::{KubeContext, Result};
use crate::mover::restore::{BLOCK_TARGET, FS_TARGET, parse_result};
use crate::repository::RepositoryAccess;

/// One restore mover.
pub struct RestorePod<'a> {
    /// The pod's name.
    pub name: &'a str,
    /// The repository Secret's name.
    pub secret: &'a str,
    /// Their namespace (the PVC's).
    pub namespace: &'a str,
    /// Their labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Their owner, if any.
    pub owner: Option<Vec<OwnerReference>>,
    /// The PVC written.
    pub claim: &'a str,
    /// The repository snapshot.
    pub snapshot: &'a str,
    /// Block (true) or file tree.
    pub block: bool,
    /// Into a volume in use: block `--delta`, file tree `--delete`.
    pub in_place: bool,
    /// The node to run on (WaitForFirstConsumer), if chosen.
    pub node: Option<&'a str>,
}

/// Creates the Secret and the pod (each only if absent).
pub async fn start(
    client: &kube::Client,
    p: &RestorePod<'_>,
    access: &RepositoryAccess,
    image: &str,
) -> Result<()> {
    let ns = p.namespace;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(p.secret.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(p.labels.clone()),
            owner_references: p.owner.clone(),
            ..Default::default()
        },
        data: Some(access.mover_secret_data()),
        ..Default::default()
    };
    create(
        &Api::<Secret>::namespaced(client.clone(), ns),
        &secret,
        &format!("Secret {ns}/{}", p.secret),
    )
    .await?;
    let target = if p.block { BLOCK_TARGET } else { FS_TARGET };
    let mut args = vec![
        "mover".to_string(),
        "restore".into(),
        "--snapshot".into(),
        p.snapshot.to_string(),
        "--target".into(),
        target.into(),
        "--mode".into(),
        if p.block { "block" } else { "fs" }.into(),
    ];
    if p.in_place {
        args.push(if p.block { "--delta" } else { "--delete" }.into());
    }
    if access.uses_key_file() {
        args.extend(["--key-file".into(), format!("{SECRET_DIR}/key")]);
    }
    let mut volumes = vec![
        json!({"name": "target", "persistentVolumeClaim": {"claimName": p.claim}}),
        json!({"name": "cache", "emptyDir": {}}),
        json!({"name": "repo", "secret": {"secretName": p.secret, "defaultMode": 0o400}}),
    ];
    let mut mounts = vec![
        json!({"name": "cache", "mountPath": "/cache"}),
        json!({"name": "repo", "mountPath": SECRET_DIR, "readOnly": true}),
    ];
    if let Location::Local(path) = &access.location {
        // The node's directory, as the backup movers see it (opening the repository may
        // write its session marker, so not read-only).
        volumes
            .push(json!({"name": "repository", "hostPath": {"path": path, "type": "Directory"}}));
        mounts.push(json!({"name": "repository", "mountPath": path}));
    }
    let mut container = json!({
        "name": "mover",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "envFrom": [{"secretRef": {"name": p.secret}}],
        "env": [
            {"name": "COFFER_CACHE_DIR", "value": "/cache"},
            {"name": "COFFER_LOG", "value": "info"},
        ],
        "volumeMounts": mounts,
    });
    if p.block {
        container["volumeDevices"] = json!([{"name": "target", "devicePath": BLOCK_TARGET}]);
    } else {
        container["volumeMounts"]
            .as_array_mut()
            .expect("volumeMounts is an array")
            .push(json!({"name": "target", "mountPath": FS_TARGET}));
    }
    let pod: Pod = from_json(
        json!({
            "metadata": {"name": p.name, "namespace": ns, "labels": p.labels, "ownerReferences": p.owner},
            "spec": {
                "nodeName": p.node,
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [container],
                "volumes": volumes,
            },
        }),
        "a restore mover's pod",
    )?;
    create(
        &Api::<Pod>::namespaced(client.clone(), ns),
        &pod,
        &format!("pod {ns}/{}", p.name),
    )
    .await
}

/// The last line of pod `name`'s log (why a mover failed), or "" when unreadable.
pub async fn last_log_line(pods: &Api<Pod>, name: &str) -> String {
    pods.logs(
        name,
        &LogParams {
            tail_lines: Some(3),
            limit_bytes: Some(2000),
            ..Default::default()
        },
    )
    .await
    .map(|l| l.trim().lines().last().unwrap_or_default().to_string())
    .unwrap_or_default()
}

/// A finished restore mover's outcome: bytes written and seconds (zero when it printed
/// none).
pub async fn outcome(pods: &Api<Pod>, ns: &str, name: &str) -> Result<(u64, f64)> {
    let log = pods
        .logs(
            name,
            &LogParams {
                tail_lines: Some(20),
                ..Default::default()
            },
        )
        .await
        .kube_ctx(|| format!("reading the log of pod {ns}/{name}"))?;
    Ok(parse_result(&log)
        .map(|s| (s.bytes_written, s.duration_s))
        .unwrap_or_default())
}
