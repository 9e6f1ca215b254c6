//! Sanitising: what a stored object must lose before it is created again.
//!
//! Server-assigned identity and bookkeeping (uid, resourceVersion, timestamps, managed
//! fields), status where the API server ignores it anyway, addresses the cluster assigns
//! (Service cluster IPs and node ports), bindings that would point at old volumes, and
//! the pieces controllers add to the objects they generate. Owner references are not
//! touched here: the restore run rewrites them once it knows the new uids.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the sanitiser needs to know about the restore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SanitizeOptions {
    /// Keep Service nodePorts (they may collide in the target).
    pub preserve_node_ports: bool,
    /// Keep `status` (custom resources without a status subresource store it as data).
    pub keep_status: bool,
    /// For PVCs: keep spec.volumeName (the PV is restored in the same run).
    pub keep_volume_binding: bool,
}

/// PVC annotations that record a binding or a provisioner's claim on the volume.
const PVC_BINDING_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// Labels the Job controller adds to its pods' template and selector.
const JOB_CONTROLLER_LABELS: &[&str] = &["controller-uid", "batch.kubernetes.io/controller-uid"];

/// Cleans `obj` in place.
pub fn sanitize(group: &str, kind: &str, obj: &mut Value, opts: &SanitizeOptions) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
        ] {
            // generateName only matters with an empty name, which stored objects never have.
            meta.remove(f);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("deployment.kubernetes.io/revision");
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if !opts.keep_status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    match (group, kind) {
        ("", "Service") => sanitize_service(obj, opts.preserve_node_ports),
        ("", "PersistentVolumeClaim") if !opts.keep_volume_binding => {
            remove(obj, "/spec", "volumeName");
            remove_annotations(obj, PVC_BINDING_ANNOTATIONS);
        }
        ("", "PersistentVolume") => {
            // The old claim's uid and version; the binder matches on namespace and name.
            remove(obj, "/spec/claimRef", "uid");
            remove(obj, "/spec/claimRef", "resourceVersion");
            remove_annotations(obj, &["pv.kubernetes.io/bound-by-controller"]);
        }
        ("", "Pod") => {
            remove(obj, "/spec", "nodeName");
            strip_service_account_token_volume(obj);
        }
        // The selector and these labels name the old Job's uid; the API server generates
        // new ones (unless the user manages the selector).
        ("batch", "Job")
            if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) =>
        {
            remove(obj, "/spec", "selector");
            for l in JOB_CONTROLLER_LABELS {
                remove(obj, "/spec/template/metadata/labels", l);
            }
        }
        ("", "ServiceAccount") => {
            // Token Secrets are never restored; keep only references to other Secrets.
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(secrets) = obj.get_mut("secrets").and_then(Value::as_array_mut) {
                let prefix = format!("{name}-token-");
                secrets.retain(|s| !s["name"].as_str().is_some_and(|n| n.starts_with(&prefix)));
                if secrets.is_empty()
                    && let Some(o) = obj.as_object_mut()
                {
                    o.remove("secrets");
                }
            }
        }
        _ => {}
    }
}

fn sanitize_service(obj: &mut Value, preserve_node_ports: bool) {
    let headless = obj["spec"]["clusterIP"] == "None";
    if !headless {
        remove(obj, "/spec", "clusterIP");
        remove(obj, "/spec", "clusterIPs");
    }
    if !preserve_node_ports {
        remove(obj, "/spec", "healthCheckNodePort");
        if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
}

/// The projected token volume the ServiceAccount admission plugin injects; the target's
/// admission injects its own, and two would collide on the mount path.
fn strip_service_account_token_volume(obj: &mut Value) {
    let is_token = |n: &str| n.starts_with("kube-api-access-") || n.contains("-token-");
    let mut removed = Vec::new();
    if let Some(vols) = obj
        .pointer_mut("/spec/volumes")
        .and_then(Value::as_array_mut)
    {
        vols.retain(|v| {
            let n = v["name"].as_str().unwrap_or_default();
            let token = is_token(n) && (v["projected"].is_object() || v["secret"].is_object());
            if token {
                removed.push(n.to_string());
            }
            !token
        });
    }
    for list in ["/spec/containers", "/spec/initContainers"] {
        if let Some(cs) = obj.pointer_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    mounts.retain(|m| {
                        !removed
                            .iter()
                            .any(|r| m["name"].as_str() == Some(r.as_str()))
                    });
                }
            }
        }
    }
}

fn remove(obj: &mut Value, pointer: &str, field: &str) {
    if let Some(m) = obj.pointer_mut(pointer).and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

fn remove_annotations(obj: &mut Value, names: &[&str]) {
    if let Some(a) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for n in names {
            a.remove(*n);
        }
        if a.is_empty()
            && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_loses_addresses_unless_headless() {
        let mut s = json!({"metadata": {"name": "web", "uid": "1", "resourceVersion": "9",
            "managedFields": [], "creationTimestamp": "x"},
            "spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "type": "NodePort",
                     "ports": [{"port": 80, "nodePort": 30080}]},
            "status": {"loadBalancer": {}}});
        sanitize("", "Service", &mut s, &SanitizeOptions::default());
        assert_eq!(
            s,
            json!({"metadata": {"name": "web"},
                   "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
        );
        let mut h = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        sanitize("", "Service", &mut h, &SanitizeOptions::default());
        assert_eq!(h["spec"]["clusterIP"], "None");
    }

    #[test]
    fn pvc_binding_dropped_only_when_asked() {
        let pvc = json!({"metadata": {"name": "data", "annotations": {
                "pv.kubernetes.io/bind-completed": "yes", "team": "a"}},
            "spec": {"volumeName": "pv-1", "storageClassName": "fast"}});
        let mut a = pvc.clone();
        sanitize(
            "",
            "PersistentVolumeClaim",
            &mut a,
            &SanitizeOptions::default(),
        );
        assert_eq!(a["spec"], json!({"storageClassName": "fast"}));
        assert_eq!(a["metadata"]["annotations"], json!({"team": "a"}));
        let mut b = pvc.clone();
        let keep = SanitizeOptions {
            keep_volume_binding: true,
            ..Default::default()
        };
        sanitize("", "PersistentVolumeClaim", &mut b, &keep);
        assert_eq!(b["spec"]["volumeName"], "pv-1");
    }

    #[test]
    fn job_selector_and_controller_labels_dropped() {
        let mut j = json!({"metadata": {"name": "j"}, "spec": {
            "selector": {"matchLabels": {"controller-uid": "abc"}},
            "template": {"metadata": {"labels": {"controller-uid": "abc", "job-name": "j", "app": "x"}}}}});
        sanitize("batch", "Job", &mut j, &SanitizeOptions::default());
        assert!(j["spec"]["selector"].is_null());
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"],
            json!({"job-name": "j", "app": "x"})
        );
    }
}
