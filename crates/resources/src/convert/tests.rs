use super::*;
use serde_json::json;

/// What a Kubernetes 1.26 API server serves, for the kinds these tests use.
pub(crate) fn served_1_26(api_version: &str, kind: &str) -> bool {
    match api_version {
        "v1"
        | "apps/v1"
        | "batch/v1"
        | "policy/v1"
        | "rbac.authorization.k8s.io/v1"
        | "apiextensions.k8s.io/v1"
        | "autoscaling/v1"
        | "autoscaling/v2"
        | "admissionregistration.k8s.io/v1"
        | "scheduling.k8s.io/v1"
        | "coordination.k8s.io/v1"
        | "events.k8s.io/v1"
        | "discovery.k8s.io/v1"
        | "node.k8s.io/v1"
        | "storage.k8s.io/v1" => true,
        "networking.k8s.io/v1" => matches!(kind, "Ingress" | "IngressClass" | "NetworkPolicy"),
        // Still served in 1.26, removed in 1.27.
        "storage.k8s.io/v1beta1" => kind == "CSIStorageCapacity",
        _ => false,
    }
}

fn convert(obj: Value) -> Converted {
    convert_for_target(&obj, &served_1_26).unwrap_or_else(|e| panic!("{e}"))
}

fn convert_err(obj: Value) -> ConvertError {
    convert_for_target(&obj, &served_1_26).expect_err("expected an error")
}

/// Compares field by field so a failure names the first differing path.
fn assert_same(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                let gv = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}/{k} missing; got {got}"));
                assert_same(gv, wv, &format!("{path}/{k}"));
            }
            for k in g.keys() {
                assert!(w.contains_key(k), "{path}/{k} unexpected: {}", g[k]);
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{path}: length differs: {got} vs {want}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_same(gv, wv, &format!("{path}/{i}"));
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}

fn has_note(c: &Converted, part: &str) -> bool {
    c.notes.iter().any(|n| n.contains(part))
}

#[test]
fn served_version_is_returned_unchanged() {
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}, "spec": {}});
    let c = convert(obj.clone());
    assert_eq!(c.object, obj);
    assert_eq!((c.from.as_str(), c.to.as_str()), ("apps/v1", "apps/v1"));
    assert!(c.notes.is_empty());
    assert!(!c.changed());
    // An old version the target still serves is left alone too.
    let old = json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "spec": {"backend": {"serviceName": "a", "servicePort": 80}}});
    let c = convert_for_target(&old, &|_, _| true).unwrap();
    assert_eq!(c.object, old);
}

#[test]
fn deployment_apps_v1beta1_without_selector() {
    let c = convert(json!({
        "apiVersion": "apps/v1beta1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"replicas": 2, "rollbackTo": {"revision": 2},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    }));
    assert!(c.changed());
    assert_eq!(
        (c.from.as_str(), c.to.as_str()),
        ("apps/v1beta1", "apps/v1")
    );
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"replicas": 2,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
                     "selector": {"matchLabels": {"app": "web"}},
                     "revisionHistoryLimit": 2}
        }),
        "",
    );
    assert!(has_note(&c, "spec.selector was unset"));
    assert!(has_note(&c, "rollbackTo"));
    assert!(has_note(&c, "revisionHistoryLimit=2"));
}

#[test]
fn deployment_extensions_pins_old_defaults() {
    let c = convert(json!({
        "apiVersion": "extensions/v1beta1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}
    }));
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {}},
                     "selector": {"matchLabels": {"app": "web"}},
                     "revisionHistoryLimit": 2147483647,
                     "progressDeadlineSeconds": 2147483647,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}}
        }),
        "",
    );
    assert!(has_note(&c, "pinned extensions/v1beta1 defaults"));
}

#[test]
fn deployment_keeps_stored_values_and_recreate_strategy() {
    let c = convert(json!({
        "apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "db"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, "revisionHistoryLimit": 5,
                 "progressDeadlineSeconds": 120, "strategy": {"type": "Recreate"},
                 "template": {"metadata": {"labels": {"app": "db", "x": "y"}}, "spec": {}}}
    }));
    assert_same(
        &c.object["spec"],
        &json!({
            "selector": {"matchLabels": {"app": "db"}}, "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 120, "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": {"app": "db", "x": "y"}}, "spec": {}}
        }),
        "/spec",
    );
    assert!(c.notes.is_empty(), "{:?}", c.notes);
}

#[test]
fn apps_v1beta2_needs_only_the_api_version() {
    let spec = json!({"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}});
    for kind in ["Deployment", "DaemonSet", "ReplicaSet", "StatefulSet"] {
        let c = convert(
            json!({"apiVersion": "apps/v1beta2", "kind": kind, "metadata": {"name": "x"}, "spec": spec.clone()}),
        );
        assert_same(
            &c.object,
            &json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "x"}, "spec": spec.clone()}),
            kind,
        );
        assert!(c.notes.is_empty(), "{kind}: {:?}", c.notes);
    }
}

#[test]
fn daemonset_extensions() {
    let c = convert(json!({
        "apiVersion": "extensions/v1beta1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"templateGeneration": 4, "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {}}}
    }));
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {}},
                     "selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": {"type": "OnDelete"}}
        }),
        "",
    );
    assert!(has_note(&c, "templateGeneration"));
    assert!(has_note(&c, "pinned OnDelete"));
    // A stored strategy stays as stored.
    let c = convert(json!({
        "apiVersion": "extensions/v1beta1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
                 "selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {}}}
    }));
    assert_eq!(
        c.object["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}})
    );
}

#[test]
fn statefulset_and_replicaset() {
    let c = convert(json!({
        "apiVersion": "apps/v1beta1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "template": {"metadata": {"labels": {"app": "db"}}, "spec": {}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}
    }));
    assert_same(
        &c.object["spec"],
        &json!({
            "serviceName": "db", "template": {"metadata": {"labels": {"app": "db"}}, "spec": {}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}],
            "selector": {"matchLabels": {"app": "db"}},
            "updateStrategy": {"type": "OnDelete"}
        }),
        "/spec",
    );
    let c = convert(json!({
        "apiVersion": "extensions/v1beta1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "rs"}}, "spec": {}}}
    }));
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
            "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "rs"}}, "spec": {}},
                     "selector": {"matchLabels": {"app": "rs"}}}
        }),
        "",
    );
}

#[test]
fn workload_without_selector_or_labels_is_an_error() {
    let e = convert_err(json!({
        "apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"template": {"spec": {}}}
    }));
    let m = e.to_string();
    assert!(matches!(e, ConvertError::Invalid { .. }));
    assert!(
        m.contains("extensions/v1beta1 Deployment ns/web cannot be converted to apps/v1"),
        "{m}"
    );
    assert!(m.contains("spec.selector"), "{m}");
    let e = convert_err(
        json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "x"}}),
    );
    assert!(e.to_string().contains("has no spec"), "{e}");
}

#[test]
fn ingress_extensions_to_networking_v1() {
    let c = convert(json!({
        "apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "web"},
        "spec": {
            "backend": {"serviceName": "default-http", "servicePort": 80},
            "tls": [{"hosts": ["a.example.com"], "secretName": "tls"}],
            "rules": [{"host": "a.example.com", "http": {"paths": [
                {"path": "/", "backend": {"serviceName": "web", "servicePort": "http"}},
                {"path": "/api", "pathType": "Prefix", "backend": {"serviceName": "api", "servicePort": 8080}},
                {"path": "/s", "backend": {"serviceName": "s", "servicePort": "9090"}},
                {"path": "/r", "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "b"}}}
            ]}}]
        }
    }));
    assert_eq!(c.to, "networking.k8s.io/v1");
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
            "spec": {
                "tls": [{"hosts": ["a.example.com"], "secretName": "tls"}],
                "rules": [{"host": "a.example.com", "http": {"paths": [
                    {"path": "/", "backend": {"service": {"name": "web", "port": {"name": "http"}}}, "pathType": "ImplementationSpecific"},
                    {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 8080}}}},
                    {"path": "/s", "backend": {"service": {"name": "s", "port": {"number": 9090}}}, "pathType": "ImplementationSpecific"},
                    {"path": "/r", "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "b"}}, "pathType": "ImplementationSpecific"}
                ]}}],
                "defaultBackend": {"service": {"name": "default-http", "port": {"number": 80}}}
            }
        }),
        "",
    );
    assert!(has_note(&c, "pathType"));
    assert!(has_note(&c, "\"9090\""));
}

#[test]
fn ingress_networking_v1beta1_and_fallback_to_v1beta1() {
    let obj = json!({"apiVersion": "networking.k8s.io/v1beta1", "kind": "Ingress", "metadata": {"name": "i"},
        "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Exact", "backend": {"serviceName": "a", "servicePort": 1}}]}}]}});
    let c = convert(obj);
    assert_same(
        &c.object["spec"],
        &json!({"rules": [{"http": {"paths": [
        {"path": "/", "pathType": "Exact", "backend": {"service": {"name": "a", "port": {"number": 1}}}}]}}]}),
        "/spec",
    );
    // A 1.18 cluster serves networking.k8s.io/v1beta1 but not v1: the shape stays.
    let old = json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"},
        "spec": {"backend": {"serviceName": "a", "servicePort": 80}}});
    let served = |av: &str, _: &str| av == "networking.k8s.io/v1beta1";
    let c = convert_for_target(&old, &served).unwrap();
    assert_eq!(c.to, "networking.k8s.io/v1beta1");
    assert_eq!(c.object["spec"], old["spec"]);
    // Missing port is an error.
    let e = convert_err(
        json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"},
        "spec": {"backend": {"serviceName": "a"}}}),
    );
    assert!(
        e.to_string()
            .contains("spec.backend has serviceName but no servicePort"),
        "{e}"
    );
}

#[test]
fn network_policy_and_ingress_class() {
    let spec = json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "b"}}}]}]});
    let c = convert(
        json!({"apiVersion": "extensions/v1beta1", "kind": "NetworkPolicy", "metadata": {"name": "np"}, "spec": spec.clone()}),
    );
    assert_same(
        &c.object,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "np"}, "spec": spec}),
        "",
    );
    let c = convert(
        json!({"apiVersion": "networking.k8s.io/v1beta1", "kind": "IngressClass", "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    );
    assert_eq!(c.object["apiVersion"], json!("networking.k8s.io/v1"));
}

#[test]
fn pod_security_policy_is_removed() {
    for av in ["extensions/v1beta1", "policy/v1beta1"] {
        let e = convert_err(
            json!({"apiVersion": av, "kind": "PodSecurityPolicy", "metadata": {"name": "p"}}),
        );
        assert!(matches!(e, ConvertError::Removed { .. }));
        let m = e.to_string();
        assert!(
            m.contains("removed in Kubernetes 1.25") && m.contains("Pod Security Admission"),
            "{m}"
        );
        assert!(!e.is_skip());
    }
}

#[test]
fn cronjob_batch_v1beta1() {
    let spec = json!({"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}});
    for av in ["batch/v1beta1", "batch/v2alpha1"] {
        let c = convert(
            json!({"apiVersion": av, "kind": "CronJob", "metadata": {"name": "cj"}, "spec": spec.clone()}),
        );
        assert_same(
            &c.object,
            &json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"}, "spec": spec.clone()}),
            av,
        );
        assert!(c.notes.is_empty());
    }
}

#[test]
fn pdb_policy_v1beta1() {
    let c = convert(
        json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    assert_same(
        &c.object,
        &json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        "",
    );
    assert!(c.notes.is_empty());
    for empty in [
        json!({}),
        json!({"matchLabels": {}}),
        json!({"matchLabels": null, "matchExpressions": []}),
    ] {
        let c = convert(
            json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
            "spec": {"maxUnavailable": "50%", "selector": empty}}),
        );
        assert_same(
            &c.object["spec"],
            &json!({"maxUnavailable": "50%"}),
            "/spec",
        );
        assert!(
            has_note(&c, "selects no pods in policy/v1beta1 but every pod"),
            "{:?}",
            c.notes
        );
    }
}

#[test]
fn rbac_v1beta1_and_v1alpha1() {
    let rules = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    for kind in ["Role", "ClusterRole"] {
        let c = convert(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1beta1", "kind": kind, "metadata": {"name": "r"}, "rules": rules.clone()}),
        );
        assert_same(
            &c.object,
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": "r"}, "rules": rules.clone()}),
            kind,
        );
    }
    let c = convert(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1beta1", "kind": "ClusterRole", "metadata": {"name": "agg"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}, "rules": []}),
    );
    assert_eq!(
        c.object["aggregationRule"],
        json!({"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]})
    );

    let c = convert(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1beta1", "kind": "RoleBinding", "metadata": {"name": "rb", "namespace": "n"},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "n"}, {"kind": "Group", "name": "g"}]}),
    );
    assert_same(
        &c.object,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb", "namespace": "n"},
        "roleRef": {"kind": "Role", "name": "r", "apiGroup": "rbac.authorization.k8s.io"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "n"},
                     {"kind": "Group", "name": "g", "apiGroup": "rbac.authorization.k8s.io"}]}),
        "",
    );

    let c = convert(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1alpha1", "kind": "ClusterRoleBinding", "metadata": {"name": "crb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "apiVersion": "rbac.authorization.k8s.io/v1alpha1", "name": "jane"},
                     {"kind": "ServiceAccount", "apiVersion": "", "name": "sa", "namespace": "n"}]}),
    );
    assert_same(
        &c.object["subjects"],
        &json!([
        {"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "ServiceAccount", "name": "sa", "namespace": "n", "apiGroup": ""}]),
        "/subjects",
    );
    assert!(has_note(&c, "apiVersion (v1alpha1) replaced by apiGroup"));
}

#[test]
fn storage_v1beta1_kinds() {
    let sc = json!({"apiVersion": "storage.k8s.io/v1beta1", "kind": "StorageClass", "metadata": {"name": "fast"},
        "provisioner": "ebs.csi.aws.com", "parameters": {"type": "gp3"}, "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true});
    let c = convert(sc.clone());
    let mut want = sc;
    want["apiVersion"] = json!("storage.k8s.io/v1");
    assert_same(&c.object, &want, "");
    for kind in ["VolumeAttachment", "CSIDriver", "CSINode"] {
        let c = convert(
            json!({"apiVersion": "storage.k8s.io/v1beta1", "kind": kind, "metadata": {"name": "x"}, "spec": {"a": 1}}),
        );
        assert_same(
            &c.object,
            &json!({"apiVersion": "storage.k8s.io/v1", "kind": kind, "metadata": {"name": "x"}, "spec": {"a": 1}}),
            kind,
        );
    }
    // 1.26 still serves storage.k8s.io/v1beta1 CSIStorageCapacity: no conversion.
    let cap = json!({"apiVersion": "storage.k8s.io/v1beta1", "kind": "CSIStorageCapacity", "metadata": {"name": "c"}, "storageClassName": "fast"});
    assert!(!convert(cap.clone()).changed());
    let c = convert_for_target(&cap, &|av, _| av == "storage.k8s.io/v1").unwrap();
    assert_eq!(c.object["apiVersion"], json!("storage.k8s.io/v1"));
}

#[test]
fn hpa_v2beta1_metrics() {
    let c = convert(json!({
        "apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "annotations": {
            "autoscaling.alpha.kubernetes.io/behavior": "{\"scaleDown\":{\"stabilizationWindowSeconds\":60}}"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 70}},
                {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "512Mi"}},
                {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "targetAverageUtilization": 60}},
                {"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "100", "selector": {"matchLabels": {"v": "1"}}}},
                {"type": "Object", "object": {"target": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
                                              "metricName": "requests", "targetValue": "2k"}},
                {"type": "Object", "object": {"target": {"kind": "Service", "name": "s"}, "metricName": "q", "targetValue": "1", "averageValue": "10"}},
                {"type": "External", "external": {"metricName": "queue", "metricSelector": {"matchLabels": {"q": "jobs"}}, "targetValue": "30"}},
                {"type": "External", "external": {"metricName": "lag", "targetAverageValue": "5"}}
            ]
        },
        "status": {"currentReplicas": 1, "desiredReplicas": 1}
    }));
    assert_eq!(c.to, "autoscaling/v2");
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "512Mi"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Pods", "pods": {"metric": {"name": "rps", "selector": {"matchLabels": {"v": "1"}}}, "target": {"type": "AverageValue", "averageValue": "100"}}},
                    {"type": "Object", "object": {"describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
                                                  "metric": {"name": "requests"}, "target": {"type": "Value", "value": "2k"}}},
                    {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "s"}, "metric": {"name": "q"},
                                                  "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "jobs"}}}, "target": {"type": "Value", "value": "30"}}},
                    {"type": "External", "external": {"metric": {"name": "lag"}, "target": {"type": "AverageValue", "averageValue": "5"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
            }
        }),
        "",
    );
    assert!(has_note(&c, "dropped status"));
    assert!(has_note(&c, "spec.behavior"));
}

#[test]
fn hpa_v2beta1_falls_back_to_v2beta2_and_errors() {
    let obj = json!({"apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"maxReplicas": 2, "metrics": [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 50}}]}});
    let c = convert_for_target(&obj, &|av, _| av == "autoscaling/v2beta2").unwrap();
    assert_eq!(c.to, "autoscaling/v2beta2");
    assert_eq!(
        c.object["spec"]["metrics"][0]["resource"]["target"],
        json!({"type": "Utilization", "averageUtilization": 50})
    );
    let e = convert_err(
        json!({"apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"maxReplicas": 2, "metrics": [{"type": "Resource", "resource": {"name": "cpu"}}]}}),
    );
    assert!(
        e.to_string()
            .contains("spec.metrics[0].resource has no target"),
        "{e}"
    );
    let e = convert_err(
        json!({"apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"maxReplicas": 2, "metrics": [{"type": "Pods", "pods": {"targetAverageValue": "1"}}]}}),
    );
    assert!(e.to_string().contains("no metricName"), "{e}");
    // v2beta2 has the v2 shape.
    let spec = json!({"maxReplicas": 3, "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]});
    let c = convert(
        json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "spec": spec.clone()}),
    );
    assert_same(&c.object["spec"], &spec, "/spec");
    assert_eq!(c.object["apiVersion"], json!("autoscaling/v2"));
}

#[test]
fn admission_webhooks_v1beta1() {
    let c = convert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1beta1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "vw"},
        "webhooks": [
            {"name": "a.example.com", "clientConfig": {"service": {"namespace": "n", "name": "s"}},
             "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
            {"name": "b.example.com", "clientConfig": {"url": "https://b.example.com"}, "sideEffects": "NoneOnDryRun",
             "admissionReviewVersions": ["v1", "v1beta1"], "failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": 5}
        ]
    }));
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "vw"},
            "webhooks": [
                {"name": "a.example.com", "clientConfig": {"service": {"namespace": "n", "name": "s"}},
                 "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                 "sideEffects": "None", "admissionReviewVersions": ["v1beta1"],
                 "failurePolicy": "Ignore", "matchPolicy": "Exact", "timeoutSeconds": 30},
                {"name": "b.example.com", "clientConfig": {"url": "https://b.example.com"}, "sideEffects": "NoneOnDryRun",
                 "admissionReviewVersions": ["v1", "v1beta1"], "failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": 5}
            ]
        }),
        "",
    );
    assert!(has_note(
        &c,
        "webhook a.example.com: sideEffects unset (Unknown)"
    ));
    assert!(has_note(&c, "admissionReviewVersions was unset"));
    assert!(has_note(&c, "failurePolicy=\"Ignore\""));
    assert!(!c.notes.iter().any(|n| n.contains("b.example.com")));
    let c = convert(
        json!({"apiVersion": "admissionregistration.k8s.io/v1beta1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mw"}, "webhooks": [{"name": "m", "sideEffects": "Some", "admissionReviewVersions": ["v1beta1"],
        "failurePolicy": "Fail", "matchPolicy": "Exact", "timeoutSeconds": 10, "reinvocationPolicy": "IfNeeded"}]}),
    );
    assert_eq!(c.object["webhooks"][0]["sideEffects"], json!("None"));
    assert!(has_note(&c, "sideEffects Some"));
}

#[test]
fn same_shape_moves() {
    let cases = [
        (
            "scheduling.k8s.io/v1beta1",
            "PriorityClass",
            "scheduling.k8s.io/v1",
        ),
        (
            "scheduling.k8s.io/v1alpha1",
            "PriorityClass",
            "scheduling.k8s.io/v1",
        ),
        (
            "coordination.k8s.io/v1beta1",
            "Lease",
            "coordination.k8s.io/v1",
        ),
        ("node.k8s.io/v1beta1", "RuntimeClass", "node.k8s.io/v1"),
    ];
    for (from, kind, to) in cases {
        let c = convert(
            json!({"apiVersion": from, "kind": kind, "metadata": {"name": "x"}, "value": 1000, "handler": "runc"}),
        );
        assert_same(
            &c.object,
            &json!({"apiVersion": to, "kind": kind, "metadata": {"name": "x"}, "value": 1000, "handler": "runc"}),
            from,
        );
    }
}

#[test]
fn runtime_class_v1alpha1_moves_handler() {
    let c = convert(
        json!({"apiVersion": "node.k8s.io/v1alpha1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"},
        "spec": {"runtimeHandler": "runsc", "overhead": {"podFixed": {"cpu": "250m"}}, "scheduling": {"nodeSelector": {"sandbox": "true"}}}}),
    );
    assert_same(
        &c.object,
        &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"},
        "handler": "runsc", "overhead": {"podFixed": {"cpu": "250m"}}, "scheduling": {"nodeSelector": {"sandbox": "true"}}}),
        "",
    );
    let e = convert_err(
        json!({"apiVersion": "node.k8s.io/v1alpha1", "kind": "RuntimeClass", "metadata": {"name": "x"}, "spec": {}}),
    );
    assert!(e.to_string().contains("runtimeHandler"), "{e}");
}

#[test]
fn endpoint_slice_topology() {
    let c = convert(json!({
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice", "metadata": {"name": "s-abc"},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "n1",
             "topology": {"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "z1", "topology.kubernetes.io/region": "r1"}},
            {"addresses": ["10.0.0.2"], "topology": {"kubernetes.io/hostname": "n2", "topology.kubernetes.io/zone": "z2"}},
            {"addresses": ["10.0.0.3"], "nodeName": "n3", "topology": {"kubernetes.io/hostname": "n3"}},
            {"addresses": ["10.0.0.4"]},
            {"addresses": ["10.0.0.5"], "nodeName": "n5", "topology": {"kubernetes.io/hostname": "other"}}
        ]
    }));
    assert_same(
        &c.object,
        &json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "s-abc"},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "n1", "zone": "z1",
                 "deprecatedTopology": {"topology.kubernetes.io/region": "r1"}},
                {"addresses": ["10.0.0.2"], "zone": "z2", "nodeName": "n2"},
                {"addresses": ["10.0.0.3"], "nodeName": "n3"},
                {"addresses": ["10.0.0.4"]},
                {"addresses": ["10.0.0.5"], "nodeName": "n5", "deprecatedTopology": {"kubernetes.io/hostname": "other"}}
            ]
        }),
        "",
    );
}

#[test]
fn events_are_skipped() {
    for av in ["events.k8s.io/v1beta1", "v1"] {
        let e = convert_for_target(
            &json!({"apiVersion": av, "kind": "Event", "metadata": {"name": "e"}}),
            &|_, _| false,
        )
        .unwrap_err();
        assert!(e.is_skip(), "{e}");
        assert!(e.to_string().contains("not restored"));
    }
}

#[test]
fn unknown_and_unserved_errors() {
    let e = convert_err(
        json!({"apiVersion": "example.com/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}}),
    );
    assert_eq!(
        e.to_string(),
        "apiVersion example.com/v1alpha1 kind Widget is not served by the target cluster and coffer knows no conversion; transform it with --transform (jsonPatch on /apiVersion) or install the API"
    );
    let e = convert_for_target(
        &json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {}}),
        &|_, _| false,
    )
    .unwrap_err();
    assert!(matches!(e, ConvertError::NoServedSuccessor { .. }));
    assert!(e.to_string().contains("(batch/v1)"), "{e}");
    assert_eq!(
        convert_err(json!({"kind": "X"})),
        ConvertError::Malformed("apiVersion")
    );
    assert_eq!(
        convert_err(json!({"apiVersion": "v9"})),
        ConvertError::Malformed("kind")
    );
    let as_crate_error: crate::Error = e.into();
    assert!(as_crate_error.to_string().contains("batch/v1beta1"));
    assert!(!convert_err(json!({"kind": "X"})).to_string().contains('\n'));
}

// ---------------------------------------------------------------------------------------
// CustomResourceDefinition

const CRD_V1BETA1: &str = r#"
apiVersion: apiextensions.k8s.io/v1beta1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  version: v1
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  preserveUnknownFields: false
  subresources:
    status: {}
  additionalPrinterColumns:
    - {name: Spec, type: string, description: The cron spec, JSONPath: .spec.cronSpec}
    - {name: Replicas, type: integer, JSONPath: .spec.replicas, priority: 1}
  validation:
    openAPIV3Schema:
      type: object
      properties:
        spec:
          type: object
          properties:
            cronSpec: {type: string, pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'}
            replicas: {type: integer, minimum: 1, maximum: 10}
"#;

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap()
}

#[test]
fn crd_top_level_version_validation_and_columns() {
    let c = convert(yaml(CRD_V1BETA1));
    let want = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 10}}}}}},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Spec", "type": "string", "description": "The cron spec", "jsonPath": ".spec.cronSpec"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "priority": 1}]
            }]
        }
    });
    assert_same(&c.object, &want, "");
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    check_structural(&c.object["spec"]["versions"][0]["schema"]["openAPIV3Schema"]).unwrap();
}

#[test]
fn crd_preserve_unknown_fields_default_and_missing_schema() {
    // No preserveUnknownFields (v1beta1 default true) and no schema at all.
    let c = convert(json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
                 "names": {"plural": "things", "kind": "Thing"},
                 "versions": [{"name": "v1", "served": true, "storage": true},
                              {"name": "v1beta1", "served": true, "storage": false}]}
    }));
    let schema = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    assert_same(
        &c.object["spec"],
        &json!({
            "group": "example.com", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": schema.clone()},
                         {"name": "v1beta1", "served": true, "storage": false, "schema": schema}]
        }),
        "/spec",
    );
    assert!(has_note(&c, "version v1 had no schema"));
    assert!(has_note(&c, "version v1beta1 had no schema"));

    // A schema with preserveUnknownFields unset gets the marker on every object, nested
    // ones included (v1beta1 pruned none of their fields).
    let c = convert(json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
                 "version": "v1",
                 "validation": {"openAPIV3Schema": {"properties": {"spec": {"properties": {"size": {"type": "string"}}}}}}}
    }));
    assert_same(
        &c.object["spec"]["versions"],
        &json!([{
            "name": "v1", "served": true, "storage": true,
            "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": {"size": {"type": "string"}}, "type": "object",
                                                                   "x-kubernetes-preserve-unknown-fields": true}},
                                           "type": "object", "x-kubernetes-preserve-unknown-fields": true}}
        }]),
        "/spec/versions",
    );
    assert!(has_note(&c, "preserveUnknownFields was true"));
    assert!(has_note(&c, "set missing types to object"));
}

#[test]
fn crd_per_version_schemas_subresources_and_columns() {
    let c = convert(json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "dbs.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "dbs", "kind": "Db"},
                 "preserveUnknownFields": false,
                 "versions": [
                    {"name": "v2", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.r", "statusReplicasPath": ".status.r"}},
                     "additionalPrinterColumns": [{"name": "R", "type": "integer", "JSONPath": ".spec.r"}]},
                    {"name": "v1", "served": true, "storage": false, "deprecated": true, "deprecationWarning": "use v2",
                     "schema": {"openAPIV3Schema": {"type": "object"}}}
                 ],
                 "conversion": {"strategy": "Webhook",
                                "webhookClientConfig": {"service": {"namespace": "db", "name": "conv", "path": "/convert"}, "caBundle": "Cg=="}}}
    }));
    assert_same(
        &c.object["spec"],
        &json!({
            "group": "example.com", "scope": "Namespaced", "names": {"plural": "dbs", "kind": "Db"},
            "versions": [
                {"name": "v2", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.r", "statusReplicasPath": ".status.r"}},
                 "additionalPrinterColumns": [{"name": "R", "type": "integer", "jsonPath": ".spec.r"}]},
                {"name": "v1", "served": true, "storage": false, "deprecated": true, "deprecationWarning": "use v2",
                 "schema": {"openAPIV3Schema": {"type": "object"}}}
            ],
            "conversion": {"strategy": "Webhook", "webhook": {
                "clientConfig": {"service": {"namespace": "db", "name": "conv", "path": "/convert"}, "caBundle": "Cg=="},
                "conversionReviewVersions": ["v1beta1"]}}
        }),
        "/spec",
    );
    assert!(has_note(&c, "conversionReviewVersions was unset"));

    let c = convert(json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition", "metadata": {"name": "a.example.com"},
        "spec": {"group": "example.com", "version": "v1", "names": {"plural": "a", "kind": "A"}, "scope": "Namespaced",
                 "preserveUnknownFields": false, "validation": {"openAPIV3Schema": {"type": "object"}},
                 "conversion": {"strategy": "None"}}
    }));
    assert_eq!(c.object["spec"]["conversion"], json!({"strategy": "None"}));
}

#[test]
fn crd_schema_is_made_structural() {
    let c = convert(json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition", "metadata": {"name": "x.example.com"},
        "spec": {"group": "example.com", "version": "v1", "names": {"plural": "x", "kind": "X"}, "scope": "Namespaced",
                 "preserveUnknownFields": false,
                 "validation": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "labels": {"type": "object"}}, "required": ["name"]},
                        "spec": {"type": "object",
                                 "additionalProperties": false,
                                 "properties": {
                                    "port": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                    "any": {"description": "anything"},
                                    "list": {"items": {"type": "string"}, "uniqueItems": true},
                                    "mode": {"type": "string", "x-kubernetes-preserve-unknown-fields": false},
                                    "choice": {"type": "object",
                                               "properties": {"a": {"type": "string"}},
                                               "oneOf": [{"required": ["a"], "properties": {"a": {"type": "string", "minLength": 1}}},
                                                         {"required": ["b"], "properties": {"b": {"description": "x"}}}]}
                                 }}
                    }}}}
    }));
    let schema = &c.object["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    check_structural(schema).unwrap_or_else(|e| panic!("{e}: {schema}"));
    let spec = &schema["properties"]["spec"];
    assert_same(
        &schema["properties"]["metadata"],
        &json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}}),
        "/metadata",
    );
    assert!(spec.get("additionalProperties").is_none());
    assert_same(
        &spec["properties"]["port"],
        &json!({"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true}),
        "/port",
    );
    assert_same(
        &spec["properties"]["any"],
        &json!({"description": "anything", "x-kubernetes-preserve-unknown-fields": true}),
        "/any",
    );
    assert_same(
        &spec["properties"]["list"],
        &json!({"items": {"type": "string"}, "type": "array"}),
        "/list",
    );
    assert_same(
        &spec["properties"]["mode"],
        &json!({"type": "string"}),
        "/mode",
    );
    assert_same(
        &spec["properties"]["choice"],
        &json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"x-kubernetes-preserve-unknown-fields": true}},
            "oneOf": [{"required": ["a"], "properties": {"a": {"minLength": 1}}},
                      {"required": ["b"], "properties": {"b": {}}}]
        }),
        "/choice",
    );
    for part in [
        "uniqueItems",
        "additionalProperties: false",
        "metadata may only restrict",
        "x-kubernetes-int-or-string",
        "inside allOf/anyOf/oneOf/not",
        "field b appears only inside",
    ] {
        assert!(has_note(&c, part), "{part}: {:?}", c.notes);
    }
}

#[test]
fn crd_errors_and_protected_groups() {
    let e = convert_err(
        json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "x.example.com"}, "spec": {"group": "example.com", "names": {"plural": "x", "kind": "X"}}}),
    );
    assert!(
        e.to_string()
            .contains("neither spec.version nor spec.versions"),
        "{e}"
    );
    let e = convert_err(
        json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "x.example.com"}, "spec": {"group": "example.com", "version": "v1",
        "validation": {"openAPIV3Schema": {"type": "string"}}}}),
    );
    assert!(e.to_string().contains("root must be of type object"), "{e}");
    let e = convert_err(
        json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "x.example.com"}, "spec": {"group": "example.com", "version": "v1",
        "conversion": {"strategy": "Webhook"}}}),
    );
    assert!(
        e.to_string().contains("webhookClientConfig is missing"),
        "{e}"
    );

    let c = convert(
        json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "snaps.snapshot.storage.k8s.io"}, "spec": {"group": "snapshot.storage.k8s.io", "version": "v1beta1",
        "names": {"plural": "snaps", "kind": "Snap"}, "scope": "Namespaced"}}),
    );
    assert!(
        c.object["metadata"]["annotations"]["api-approved.kubernetes.io"]
            .as_str()
            .unwrap()
            .starts_with("unapproved")
    );
    assert!(has_note(&c, "protected"));
    let c = convert(
        json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "a.x.k8s.io", "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/pull/1111"}},
        "spec": {"group": "x.k8s.io", "version": "v1", "names": {"plural": "a", "kind": "A"}, "scope": "Namespaced"}}),
    );
    assert_eq!(
        c.object["metadata"]["annotations"]["api-approved.kubernetes.io"],
        json!("https://github.com/kubernetes/enhancements/pull/1111")
    );
}

#[test]
fn crd_v1beta1_preserve_unknown_fields_marks_nested_objects() {
    // v1beta1 with preserveUnknownFields (the default) pruned nothing; in v1 every object
    // of the schema must carry the marker or its unknown fields are pruned.
    let c = convert(json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
                 "version": "v1",
                 "validation": {"openAPIV3Schema": {"type": "object", "properties": {
                     "metadata": {"type": "object"},
                     "spec": {"type": "object", "properties": {
                         "size": {"type": "integer"},
                         "server": {"type": "object", "properties": {"port": {"type": "integer"}}},
                         "rules": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}},
                         "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                     }}
                 }}}}
    }));
    let schema = &c.object["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let marked = |p: &str| {
        schema
            .pointer(p)
            .and_then(|s| s.get("x-kubernetes-preserve-unknown-fields"))
            == Some(&json!(true))
    };
    for p in [
        "",
        "/properties/spec",
        "/properties/spec/properties/server",
        "/properties/spec/properties/rules/items",
    ] {
        assert!(marked(p), "{p} not marked: {schema:#}");
    }
    // Not where v1 forbids it or where it means nothing.
    assert!(!marked("/properties/metadata"), "{schema:#}");
    assert!(!marked("/properties/spec/properties/labels"), "{schema:#}");
    assert!(!marked("/properties/spec/properties/size"), "{schema:#}");
    check_structural(schema).unwrap();
    // preserveUnknownFields: false pruned before too: no markers added.
    let c = convert(json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
                 "version": "v1", "preserveUnknownFields": false,
                 "validation": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}
    }));
    assert!(
        !c.object
            .to_string()
            .contains("x-kubernetes-preserve-unknown-fields"),
        "{:#}",
        c.object
    );
}

#[test]
fn crd_schema_properties_that_are_not_maps_are_errors() {
    for schema in [
        json!({"type": "object", "properties": ["spec", "status"]}),
        json!({"type": "object", "properties": {"spec": "a string"}}),
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": 3}}}),
        json!({"type": "object", "properties": "x", "anyOf": [{"properties": {"a": {}}}]}),
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"properties": [1]}]}),
    ] {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
                     "version": "v1", "validation": {"openAPIV3Schema": schema.clone()}}
        });
        let err = convert_for_target(&crd, &served_1_26)
            .expect_err(&schema.to_string())
            .to_string();
        assert!(
            err.contains("not a map") || err.contains("must be a map"),
            "{schema}: {err}"
        );
        assert!(!err.contains('\n'));
    }
}
