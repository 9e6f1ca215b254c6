//! References between objects: which ConfigMaps, Secrets, PVCs, ServiceAccounts, Services
//! and Roles an object names, found and rewritten in one place.
//!
//! Restore uses the same walk twice: to check that a partial restore's dependencies exist
//! in the target, and to rename references when `--clone` renames the objects they name.
//! One mutable visitor serves both, so that what is checked is exactly what is renamed.

use serde_json::Value;

use crate::discovery::ServedResource;

/// The pod spec inside an object of a workload kind (Pod, pod templates of Deployments,
/// StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs, CronJobs,
/// PodTemplates).
pub fn pod_spec<'a>(r: &ServedResource, o: &'a Value) -> Option<&'a Value> {
    let p = pod_spec_pointer(&r.group, &r.kind)?;
    o.pointer(p)
}

/// The pod spec inside an object of a workload kind, mutable (see [`pod_spec`]).
pub fn pod_spec_mut<'a>(group: &str, kind: &str, o: &'a mut Value) -> Option<&'a mut Value> {
    let p = pod_spec_pointer(group, kind)?;
    o.pointer_mut(p)
}

/// The pod template metadata (labels) of a workload, or the Pod's own metadata.
pub fn pod_metadata_mut<'a>(group: &str, kind: &str, o: &'a mut Value) -> Option<&'a mut Value> {
    let p = pod_spec_pointer(group, kind)?;
    let meta = format!("{}/metadata", p.trim_end_matches("/spec"));
    if meta == "/metadata" {
        return o.pointer_mut("/metadata");
    }
    o.pointer_mut(&meta)
}

fn pod_spec_pointer(group: &str, kind: &str) -> Option<&'static str> {
    Some(match (group, kind) {
        ("", "Pod") => "/spec",
        ("", "PodTemplate") => "/template/spec",
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("extensions", "Deployment" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => "/spec/template/spec",
        ("batch", "CronJob") => "/spec/jobTemplate/spec/template/spec",
        _ => return None,
    })
}

/// A reference to another object by name, in the referrer's namespace (or cluster-wide
/// for cluster-scoped kinds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The referenced object's API group ("" for core).
    pub group: &'static str,
    /// The referenced object's kind.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Whether the object cannot work without it (an `optional: true` volume or env
    /// source is not required).
    pub required: bool,
}

/// Calls `f(group, kind, required, name_value)` for every reference inside `o`, with a
/// mutable handle on the JSON string holding the name.
pub fn visit_refs_mut(
    group: &str,
    kind: &str,
    o: &mut Value,
    f: &mut dyn FnMut(&'static str, &'static str, bool, &mut Value),
) {
    if let Some(spec) = pod_spec_mut(group, kind, o) {
        visit_pod_spec(spec, f);
    }
    let optional = |v: &Value| v["optional"].as_bool() == Some(true);
    match (group, kind) {
        ("apps", "StatefulSet") => {
            if let Some(s) = o.pointer_mut("/spec/serviceName") {
                f("", "Service", false, s);
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let role_kind = if o["roleRef"]["kind"] == "ClusterRole" {
                "ClusterRole"
            } else {
                "Role"
            };
            if let Some(n) = o.pointer_mut("/roleRef/name") {
                f("rbac.authorization.k8s.io", role_kind, true, n);
            }
            for s in array_mut(o, "/subjects") {
                if s["kind"] == "ServiceAccount"
                    && let Some(n) = s.get_mut("name")
                {
                    // A binding is still valid without its subject; not required.
                    f("", "ServiceAccount", false, n);
                }
            }
        }
        ("networking.k8s.io", "Ingress") => {
            if let Some(n) = o.pointer_mut("/spec/defaultBackend/service/name") {
                f("", "Service", true, n);
            }
            for rule in array_mut(o, "/spec/rules") {
                for path in array_mut(rule, "/http/paths") {
                    if let Some(n) = path.pointer_mut("/backend/service/name") {
                        f("", "Service", true, n);
                    }
                }
            }
            for tls in array_mut(o, "/spec/tls") {
                if let Some(n) = tls.get_mut("secretName") {
                    f("", "Secret", true, n);
                }
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let target = &o["spec"]["scaleTargetRef"];
            let k = match (target["kind"].as_str(), target["apiVersion"].as_str()) {
                (Some("Deployment"), _) => Some(("apps", "Deployment")),
                (Some("StatefulSet"), _) => Some(("apps", "StatefulSet")),
                (Some("ReplicaSet"), _) => Some(("apps", "ReplicaSet")),
                _ => None,
            };
            if let Some((g, k)) = k
                && let Some(n) = o.pointer_mut("/spec/scaleTargetRef/name")
            {
                f(g, k, true, n);
            }
        }
        ("", "ServiceAccount") => {
            for s in array_mut(o, "/imagePullSecrets") {
                if let Some(n) = s.get_mut("name") {
                    f("", "Secret", false, n);
                }
            }
            for s in array_mut(o, "/secrets") {
                if let Some(n) = s.get_mut("name") {
                    f("", "Secret", false, n);
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            for p in ["/spec/dataSource", "/spec/dataSourceRef"] {
                if let Some(src) = o.pointer_mut(p)
                    && src["kind"] == "PersistentVolumeClaim"
                    && src["namespace"].is_null()
                    && let Some(n) = src.get_mut("name")
                {
                    f("", "PersistentVolumeClaim", true, n);
                }
            }
        }
        _ => {}
    }
    let _ = optional;
}

fn visit_pod_spec(
    spec: &mut Value,
    f: &mut dyn FnMut(&'static str, &'static str, bool, &mut Value),
) {
    let optional = |v: &Value| v["optional"].as_bool() == Some(true);
    if let Some(sa) = spec.get_mut("serviceAccountName") {
        f("", "ServiceAccount", true, sa);
    } else if let Some(sa) = spec.get_mut("serviceAccount") {
        f("", "ServiceAccount", true, sa);
    }
    for s in array_mut(spec, "/imagePullSecrets") {
        if let Some(n) = s.get_mut("name") {
            f("", "Secret", false, n);
        }
    }
    for v in array_mut(spec, "/volumes") {
        if let Some(cm) = v.get_mut("configMap") {
            let req = !optional(cm);
            if let Some(n) = cm.get_mut("name") {
                f("", "ConfigMap", req, n);
            }
        }
        if let Some(s) = v.get_mut("secret") {
            let req = !optional(s);
            if let Some(n) = s.get_mut("secretName") {
                f("", "Secret", req, n);
            }
        }
        if let Some(n) = v.pointer_mut("/persistentVolumeClaim/claimName") {
            f("", "PersistentVolumeClaim", true, n);
        }
        for src in array_mut(v, "/projected/sources") {
            if let Some(cm) = src.get_mut("configMap") {
                let req = !optional(cm);
                if let Some(n) = cm.get_mut("name") {
                    f("", "ConfigMap", req, n);
                }
            }
            if let Some(s) = src.get_mut("secret") {
                let req = !optional(s);
                if let Some(n) = s.get_mut("name") {
                    f("", "Secret", req, n);
                }
            }
        }
    }
    for list in ["/containers", "/initContainers", "/ephemeralContainers"] {
        for c in array_mut(spec, list) {
            for e in array_mut(c, "/envFrom") {
                if let Some(r) = e.get_mut("configMapRef") {
                    let req = !optional(r);
                    if let Some(n) = r.get_mut("name") {
                        f("", "ConfigMap", req, n);
                    }
                }
                if let Some(r) = e.get_mut("secretRef") {
                    let req = !optional(r);
                    if let Some(n) = r.get_mut("name") {
                        f("", "Secret", req, n);
                    }
                }
            }
            for e in array_mut(c, "/env") {
                if let Some(r) = e.pointer_mut("/valueFrom/configMapKeyRef") {
                    let req = !optional(r);
                    if let Some(n) = r.get_mut("name") {
                        f("", "ConfigMap", req, n);
                    }
                }
                if let Some(r) = e.pointer_mut("/valueFrom/secretKeyRef") {
                    let req = !optional(r);
                    if let Some(n) = r.get_mut("name") {
                        f("", "Secret", req, n);
                    }
                }
            }
        }
    }
}

fn array_mut<'a>(v: &'a mut Value, pointer: &str) -> impl Iterator<Item = &'a mut Value> {
    v.pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Every reference inside an object.
pub fn references(group: &str, kind: &str, o: &Value) -> Vec<Reference> {
    let mut copy = o.clone();
    let mut out = Vec::new();
    visit_refs_mut(group, kind, &mut copy, &mut |g, k, required, name| {
        if let Some(n) = name.as_str() {
            out.push(Reference {
                group: g,
                kind: k,
                name: n.to_string(),
                required,
            });
        }
    });
    out.sort();
    out.dedup();
    out
}

/// Pointers to the label selectors of an object, as (pointer, is a LabelSelector with
/// matchLabels/matchExpressions; otherwise a plain map as in Services).
pub fn selector_pointers(group: &str, kind: &str) -> &'static [(&'static str, bool)] {
    match (group, kind) {
        ("", "Service") | ("", "ReplicationController") => &[("/spec/selector", false)],
        ("apps", _) | ("batch", "Job") => &[("/spec/selector", true)],
        ("batch", "CronJob") => &[("/spec/jobTemplate/spec/selector", true)],
        ("policy", "PodDisruptionBudget") => &[("/spec/selector", true)],
        ("networking.k8s.io", "NetworkPolicy") => &[("/spec/podSelector", true)],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_every_reference_of_a_deployment() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {
                "serviceAccountName": "web-sa",
                "volumes": [
                    {"name": "a", "configMap": {"name": "cfg"}},
                    {"name": "b", "secret": {"secretName": "creds", "optional": true}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [{"configMap": {"name": "extra"}}]}}
                ],
                "containers": [{"name": "x",
                    "envFrom": [{"secretRef": {"name": "env-secret"}}],
                    "env": [{"name": "P", "valueFrom": {"configMapKeyRef": {"name": "cfg2", "key": "k"}}}]
                }]
            }}}
        });
        let refs = references("apps", "Deployment", &d);
        let names: Vec<(&str, &str, bool)> = refs
            .iter()
            .map(|r| (r.kind, r.name.as_str(), r.required))
            .collect();
        for want in [
            ("ConfigMap", "cfg", true),
            ("ConfigMap", "cfg2", true),
            ("ConfigMap", "extra", true),
            ("Secret", "creds", false),
            ("Secret", "env-secret", true),
            ("PersistentVolumeClaim", "data", true),
            ("ServiceAccount", "web-sa", true),
        ] {
            assert!(names.contains(&want), "{want:?} missing from {names:?}");
        }
        assert_eq!(names.len(), 7);
    }

    #[test]
    fn renames_in_place() {
        let mut rb = json!({
            "kind": "RoleBinding",
            "roleRef": {"kind": "Role", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"},
            "subjects": [{"kind": "ServiceAccount", "name": "web-sa", "namespace": "shop"},
                         {"kind": "User", "name": "alice"}]
        });
        visit_refs_mut(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            &mut rb,
            &mut |_, _, _, n| {
                *n = Value::String(format!("{}-copy", n.as_str().unwrap()));
            },
        );
        assert_eq!(rb["roleRef"]["name"], "reader-copy");
        assert_eq!(rb["subjects"][0]["name"], "web-sa-copy");
        assert_eq!(rb["subjects"][1]["name"], "alice");
    }
}
