//! Retrieval of old backups: objects stored in API versions the target no longer serves,
//! converted along the moves Kubernetes made (the deprecated-API migration guide), field
//! changes included. Anything else that is not served is reported, never guessed.
//!
//! Hand-written because the conversions live in the API server's Go code; no crate has
//! them. Each conversion is a small function over JSON, tested field by field.

use serde_json::{Map, Value, json};

/// A converted object.
#[derive(Clone, Debug)]
pub struct Converted {
    pub object: Value,
    pub from: String,
    pub to: String,
    /// Lossy or semantic changes the user should know about.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

type Conversion = fn(&mut Value, &mut Vec<String>) -> Result<(), ConvertError>;

/// The known successors of (apiVersion, kind), newest first, with the conversion.
fn successors(api_version: &str, kind: &str) -> Vec<(&'static str, Conversion)> {
    let same: Conversion = |_, _| Ok(());
    match (api_version, kind) {
        (
            "extensions/v1beta1" | "apps/v1beta1" | "apps/v1beta2",
            "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet",
        ) => {
            vec![("apps/v1", workload_to_apps_v1)]
        }
        ("extensions/v1beta1" | "networking.k8s.io/v1beta1", "Ingress") => {
            vec![("networking.k8s.io/v1", ingress_to_v1)]
        }
        ("extensions/v1beta1" | "networking.k8s.io/v1beta1", "IngressClass") => {
            vec![("networking.k8s.io/v1", same)]
        }
        ("extensions/v1beta1", "NetworkPolicy") => vec![("networking.k8s.io/v1", same)],
        ("batch/v1beta1" | "batch/v2alpha1", "CronJob") => vec![("batch/v1", same)],
        ("policy/v1beta1", "PodDisruptionBudget") => vec![("policy/v1", pdb_to_v1)],
        (
            "rbac.authorization.k8s.io/v1beta1" | "rbac.authorization.k8s.io/v1alpha1",
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding",
        ) => {
            vec![("rbac.authorization.k8s.io/v1", rbac_to_v1)]
        }
        (
            "storage.k8s.io/v1beta1" | "storage.k8s.io/v1alpha1",
            "StorageClass" | "VolumeAttachment" | "CSIDriver" | "CSINode" | "CSIStorageCapacity",
        ) => {
            vec![("storage.k8s.io/v1", same)]
        }
        ("scheduling.k8s.io/v1beta1" | "scheduling.k8s.io/v1alpha1", "PriorityClass") => {
            vec![("scheduling.k8s.io/v1", same)]
        }
        ("coordination.k8s.io/v1beta1", "Lease") => vec![("coordination.k8s.io/v1", same)],
        ("node.k8s.io/v1beta1", "RuntimeClass") => vec![("node.k8s.io/v1", same)],
        ("node.k8s.io/v1alpha1", "RuntimeClass") => {
            vec![("node.k8s.io/v1", runtime_class_alpha_to_v1)]
        }
        ("discovery.k8s.io/v1beta1", "EndpointSlice") => {
            vec![("discovery.k8s.io/v1", endpoint_slice_to_v1)]
        }
        (
            "admissionregistration.k8s.io/v1beta1",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
        ) => {
            vec![("admissionregistration.k8s.io/v1", webhooks_to_v1)]
        }
        ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition") => {
            vec![("apiextensions.k8s.io/v1", crd_to_v1)]
        }
        ("autoscaling/v2beta2", "HorizontalPodAutoscaler") => vec![("autoscaling/v2", same)],
        ("autoscaling/v2beta1", "HorizontalPodAutoscaler") => {
            vec![("autoscaling/v2", hpa_v2beta1_to_v2)]
        }
        ("certificates.k8s.io/v1beta1", "CertificateSigningRequest") => {
            vec![("certificates.k8s.io/v1", same)]
        }
        _ => vec![],
    }
}

/// Converts `obj` to the newest version the target serves among its known successors.
pub fn convert_for_target(
    obj: &Value,
    served: &dyn Fn(&str, &str) -> bool,
) -> Result<Converted, ConvertError> {
    let from = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    if kind == "PodSecurityPolicy" && (from == "extensions/v1beta1" || from == "policy/v1beta1") {
        return Err(ConvertError(format!(
            "{from} PodSecurityPolicy was removed in Kubernetes 1.25 without a successor; use Pod Security Admission labels on the namespace instead (exclude podsecuritypolicies from the restore)"
        )));
    }
    let candidates = successors(&from, &kind);
    let Some((to, convert)) = candidates.into_iter().find(|(to, _)| served(to, &kind)) else {
        return Err(ConvertError(format!(
            "apiVersion {from} kind {kind} is not served by the target cluster and coffer knows no conversion to a served version; transform it with --transform (a jsonPatch on /apiVersion) or install the API"
        )));
    };
    let mut object = obj.clone();
    let mut notes = Vec::new();
    convert(&mut object, &mut notes)?;
    object["apiVersion"] = Value::String(to.to_string());
    Ok(Converted {
        object,
        from,
        to: to.to_string(),
        notes,
    })
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    v[key].as_object_mut().expect("just made an object")
}

fn workload_to_apps_v1(o: &mut Value, notes: &mut Vec<String>) -> Result<(), ConvertError> {
    let kind = o["kind"].as_str().unwrap_or_default().to_string();
    let from = o["apiVersion"].as_str().unwrap_or_default().to_string();
    let spec = obj_mut(o, "spec");
    spec.remove("rollbackTo");
    spec.remove("templateGeneration");
    if spec.get("selector").is_none_or(Value::is_null) {
        let labels = spec
            .get("template")
            .and_then(|t| t["metadata"]["labels"].as_object())
            .cloned()
            .ok_or_else(|| {
                ConvertError(format!(
                    "{kind} has no selector and no pod template labels to derive one from (apps/v1 requires a selector)"
                ))
            })?;
        spec.insert("selector".into(), json!({"matchLabels": labels}));
        notes.push("spec.selector set from the pod template labels (apps/v1 requires it)".into());
    }
    // Defaults that changed between the beta versions and apps/v1, kept as they were.
    let old_default_strategy = match (from.as_str(), kind.as_str()) {
        ("extensions/v1beta1", "DaemonSet") | ("apps/v1beta1", "StatefulSet") => Some("OnDelete"),
        _ => None,
    };
    if let Some(s) = old_default_strategy
        && spec.get("updateStrategy").is_none()
    {
        spec.insert("updateStrategy".into(), json!({"type": s}));
        notes.push(format!(
            "updateStrategy {s} kept explicitly ({from} defaulted to it; apps/v1 defaults to RollingUpdate)"
        ));
    }
    if kind == "Deployment" && from == "extensions/v1beta1" {
        spec.entry("progressDeadlineSeconds")
            .or_insert(json!(i32::MAX));
        spec.entry("revisionHistoryLimit")
            .or_insert(json!(i32::MAX));
    }
    Ok(())
}

/// An extensions-style backend {serviceName, servicePort} or {resource}.
fn backend_to_v1(b: &Value) -> Value {
    if b.get("resource").is_some() {
        return json!({"resource": b["resource"]});
    }
    let port = match &b["servicePort"] {
        Value::Number(n) => json!({"number": n}),
        Value::String(s) => match s.parse::<u64>() {
            Ok(n) => json!({"number": n}),
            Err(_) => json!({"name": s}),
        },
        _ => json!({}),
    };
    json!({"service": {"name": b["serviceName"], "port": port}})
}

fn ingress_to_v1(o: &mut Value, notes: &mut Vec<String>) -> Result<(), ConvertError> {
    let spec = obj_mut(o, "spec");
    if let Some(b) = spec.remove("backend") {
        spec.insert("defaultBackend".into(), backend_to_v1(&b));
    }
    let mut defaulted = false;
    if let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) {
        for r in rules {
            if let Some(paths) = r.pointer_mut("/http/paths").and_then(Value::as_array_mut) {
                for p in paths {
                    let b = p["backend"].clone();
                    p["backend"] = backend_to_v1(&b);
                    if p.get("pathType").is_none() {
                        p["pathType"] = json!("ImplementationSpecific");
                        defaulted = true;
                    }
                }
            }
        }
    }
    if defaulted {
        notes.push("pathType set to ImplementationSpecific where it was absent".into());
    }
    Ok(())
}

fn pdb_to_v1(o: &mut Value, notes: &mut Vec<String>) -> Result<(), ConvertError> {
    let sel = &o["spec"]["selector"];
    let empty = sel.is_null()
        || (sel["matchLabels"].as_object().is_none_or(Map::is_empty)
            && sel["matchExpressions"].as_array().is_none_or(Vec::is_empty));
    if empty {
        notes.push(
            "an empty selector selected no pods in policy/v1beta1 and selects every pod in the namespace in policy/v1"
                .into(),
        );
    }
    Ok(())
}

fn rbac_to_v1(o: &mut Value, _notes: &mut Vec<String>) -> Result<(), ConvertError> {
    // v1alpha1 subjects carry apiVersion instead of apiGroup.
    if let Some(subjects) = o.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            let m = s.as_object_mut().expect("subjects are objects");
            if m.remove("apiVersion").is_some() && !m.contains_key("apiGroup") {
                let group = if m.get("kind").and_then(Value::as_str) == Some("ServiceAccount") {
                    ""
                } else {
                    "rbac.authorization.k8s.io"
                };
                m.insert("apiGroup".into(), json!(group));
            }
        }
    }
    Ok(())
}

fn runtime_class_alpha_to_v1(o: &mut Value, _n: &mut Vec<String>) -> Result<(), ConvertError> {
    let spec = o
        .as_object_mut()
        .and_then(|m| m.remove("spec"))
        .unwrap_or(Value::Null);
    if let Some(h) = spec.get("runtimeHandler") {
        o["handler"] = h.clone();
    }
    if let Some(x) = spec.get("overhead") {
        o["overhead"] = x.clone();
    }
    if let Some(x) = spec.get("scheduling") {
        o["scheduling"] = x.clone();
    }
    Ok(())
}

fn endpoint_slice_to_v1(o: &mut Value, notes: &mut Vec<String>) -> Result<(), ConvertError> {
    if let Some(eps) = o.get_mut("endpoints").and_then(Value::as_array_mut) {
        for e in eps {
            let m = e.as_object_mut().expect("endpoints are objects");
            if let Some(t) = m.remove("topology") {
                if let Some(zone) = t.get("topology.kubernetes.io/zone") {
                    m.insert("zone".into(), zone.clone());
                }
                m.insert("deprecatedTopology".into(), t);
                notes.push("endpoints[].topology moved to deprecatedTopology".into());
            }
        }
    }
    Ok(())
}

fn webhooks_to_v1(o: &mut Value, notes: &mut Vec<String>) -> Result<(), ConvertError> {
    if let Some(hooks) = o.get_mut("webhooks").and_then(Value::as_array_mut) {
        for h in hooks {
            let name = h["name"].as_str().unwrap_or_default().to_string();
            match h["sideEffects"].as_str() {
                Some("None" | "NoneOnDryRun") => {}
                other => {
                    notes.push(format!(
                        "webhook {name}: sideEffects {other:?} is not allowed in v1; set to None (check the webhook has none)"
                    ));
                    h["sideEffects"] = json!("None");
                }
            }
            if h.get("admissionReviewVersions").is_none() {
                h["admissionReviewVersions"] = json!(["v1beta1"]);
                notes.push(format!(
                    "webhook {name}: admissionReviewVersions set to [v1beta1], the v1beta1 default"
                ));
            }
            // v1beta1 defaults that v1 changed.
            if h.get("matchPolicy").is_none() {
                h["matchPolicy"] = json!("Exact");
            }
            if h.get("timeoutSeconds").is_none() {
                h["timeoutSeconds"] = json!(30);
            }
            if h.get("failurePolicy").is_none() {
                h["failurePolicy"] = json!("Ignore");
            }
        }
    }
    Ok(())
}

fn crd_to_v1(o: &mut Value, notes: &mut Vec<String>) -> Result<(), ConvertError> {
    let spec = obj_mut(o, "spec");
    let validation = spec.remove("validation");
    let subresources = spec.remove("subresources");
    let columns = spec.remove("additionalPrinterColumns");
    let single = spec.remove("version");
    let preserve = spec.remove("preserveUnknownFields");
    let mut versions: Vec<Value> = spec
        .remove("versions")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    if versions.is_empty() {
        let name = single
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| {
                ConvertError(
                    "CustomResourceDefinition has neither spec.version nor spec.versions".into(),
                )
            })?;
        versions.push(json!({"name": name, "served": true, "storage": true}));
    }
    let columns_v1 = columns.as_ref().map(fix_columns);
    let mut defaulted_schema = false;
    for v in &mut versions {
        let m = v
            .as_object_mut()
            .ok_or_else(|| ConvertError("spec.versions entries must be objects".into()))?;
        let own_schema = m
            .remove("schema")
            .and_then(|s| s.get("openAPIV3Schema").cloned());
        let mut schema = own_schema
            .or_else(|| {
                validation
                    .as_ref()
                    .and_then(|v| v.get("openAPIV3Schema").cloned())
            })
            .unwrap_or_else(|| {
                defaulted_schema = true;
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
            });
        if preserve.as_ref().and_then(Value::as_bool) != Some(false) {
            // v1beta1 defaulted preserveUnknownFields to true; v1 says it in the schema.
            schema["x-kubernetes-preserve-unknown-fields"] = json!(true);
        }
        if schema.get("type").is_none() {
            schema["type"] = json!("object");
        }
        m.insert("schema".into(), json!({"openAPIV3Schema": schema}));
        if !m.contains_key("subresources")
            && let Some(s) = &subresources
        {
            m.insert("subresources".into(), s.clone());
        }
        if let Some(cols) = m
            .remove("additionalPrinterColumns")
            .as_ref()
            .map(fix_columns)
            .or_else(|| columns_v1.clone())
        {
            m.insert("additionalPrinterColumns".into(), cols);
        }
    }
    spec.insert("versions".into(), Value::Array(versions));
    if let Some(conv) = spec.get_mut("conversion").and_then(Value::as_object_mut)
        && conv.get("strategy").and_then(Value::as_str) == Some("Webhook")
    {
        let client = conv.remove("webhookClientConfig");
        let review = conv
            .remove("conversionReviewVersions")
            .unwrap_or_else(|| json!(["v1beta1"]));
        conv.insert(
            "webhook".into(),
            json!({"clientConfig": client.unwrap_or(Value::Null), "conversionReviewVersions": review}),
        );
    }
    if defaulted_schema {
        notes.push(
            "no validation schema: v1 requires one, so a schema preserving unknown fields was used"
                .into(),
        );
    }
    Ok(())
}

/// Printer columns: v1 spells `JSONPath` as `jsonPath`.
fn fix_columns(columns: &Value) -> Value {
    Value::Array(
        columns
            .as_array()
            .into_iter()
            .flatten()
            .map(|col| {
                let mut col = col.clone();
                if let Some(m) = col.as_object_mut()
                    && let Some(p) = m.remove("JSONPath")
                {
                    m.insert("jsonPath".into(), p);
                }
                col
            })
            .collect(),
    )
}

fn hpa_v2beta1_to_v2(o: &mut Value, _notes: &mut Vec<String>) -> Result<(), ConvertError> {
    let Some(metrics) = o.pointer_mut("/spec/metrics").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for m in metrics {
        let t = m["type"].as_str().unwrap_or_default().to_string();
        let key = match t.as_str() {
            "Resource" => "resource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            "ContainerResource" => "containerResource",
            other => {
                return Err(ConvertError(format!(
                    "HorizontalPodAutoscaler metric type {other:?} is unknown"
                )));
            }
        };
        let src = m[key].as_object().cloned().unwrap_or_default();
        let mut out = Map::new();
        let mut target = Map::new();
        for (k, v) in src {
            match k.as_str() {
                "targetAverageUtilization" => {
                    target.insert("type".into(), json!("Utilization"));
                    target.insert("averageUtilization".into(), v);
                }
                "targetAverageValue" => {
                    target.insert("type".into(), json!("AverageValue"));
                    target.insert("averageValue".into(), v);
                }
                "targetValue" => {
                    target.insert("type".into(), json!("Value"));
                    target.insert("value".into(), v);
                }
                "metricName" => {
                    out.entry("metric")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .unwrap()
                        .insert("name".into(), v);
                }
                "metricSelector" | "selector" => {
                    out.entry("metric")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .unwrap()
                        .insert("selector".into(), v);
                }
                "target" if key == "object" => {
                    out.insert("describedObject".into(), v);
                }
                _ => {
                    out.insert(k, v);
                }
            }
        }
        out.insert("target".into(), Value::Object(target));
        m[key] = Value::Object(out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served_126(api_version: &str, _kind: &str) -> bool {
        [
            "apps/v1",
            "networking.k8s.io/v1",
            "batch/v1",
            "policy/v1",
            "rbac.authorization.k8s.io/v1",
            "storage.k8s.io/v1",
            "apiextensions.k8s.io/v1",
            "autoscaling/v2",
            "autoscaling/v1",
            "admissionregistration.k8s.io/v1",
        ]
        .contains(&api_version)
    }

    fn convert(o: Value) -> Converted {
        convert_for_target(&o, &served_126).unwrap()
    }

    #[test]
    fn deployment_gets_a_selector() {
        let c = convert(json!({"apiVersion": "apps/v1beta1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "rollbackTo": {"revision": 1},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}));
        assert_eq!(c.object["apiVersion"], "apps/v1");
        assert_eq!(
            c.object["spec"]["selector"],
            json!({"matchLabels": {"app": "web"}})
        );
        assert!(c.object["spec"].get("rollbackTo").is_none());
        assert_eq!(c.from, "apps/v1beta1");
        assert_eq!(c.notes.len(), 1);
        let ds = convert(
            json!({"apiVersion": "extensions/v1beta1", "kind": "DaemonSet",
            "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}}}}),
        );
        assert_eq!(
            ds.object["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );
    }

    #[test]
    fn ingress_backends_reshaped() {
        let c = convert(
            json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress",
            "metadata": {"name": "i"},
            "spec": {"backend": {"serviceName": "default", "servicePort": 80},
                     "rules": [{"host": "a.example.com", "http": {"paths": [
                        {"path": "/", "backend": {"serviceName": "web", "servicePort": "http"}},
                        {"path": "/api", "pathType": "Prefix", "backend": {"serviceName": "api", "servicePort": 8080}}]}}]}}),
        );
        assert_eq!(c.object["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(
            c.object["spec"]["defaultBackend"],
            json!({"service": {"name": "default", "port": {"number": 80}}})
        );
        let paths = &c.object["spec"]["rules"][0]["http"]["paths"];
        assert_eq!(
            paths[0]["backend"],
            json!({"service": {"name": "web", "port": {"name": "http"}}})
        );
        assert_eq!(paths[0]["pathType"], "ImplementationSpecific");
        assert_eq!(paths[1]["pathType"], "Prefix");
        assert_eq!(paths[1]["backend"]["service"]["port"]["number"], 8080);
    }

    #[test]
    fn crd_v1beta1_to_v1() {
        let c = convert(
            json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gadgets.example.com"},
            "spec": {"group": "example.com", "version": "v1", "scope": "Namespaced",
                     "names": {"plural": "gadgets", "kind": "Gadget"},
                     "preserveUnknownFields": false,
                     "subresources": {"status": {}},
                     "additionalPrinterColumns": [{"name": "Size", "type": "integer", "JSONPath": ".spec.size"}],
                     "validation": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}}),
        );
        let spec = &c.object["spec"];
        assert!(spec.get("validation").is_none() && spec.get("version").is_none());
        let v = &spec["versions"][0];
        assert_eq!(v["name"], "v1");
        assert_eq!(v["served"], true);
        assert_eq!(v["storage"], true);
        assert_eq!(v["subresources"], json!({"status": {}}));
        assert_eq!(v["additionalPrinterColumns"][0]["jsonPath"], ".spec.size");
        assert!(v["additionalPrinterColumns"][0].get("JSONPath").is_none());
        assert_eq!(
            v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"]["type"],
            "integer"
        );
        assert!(
            v["schema"]["openAPIV3Schema"]
                .get("x-kubernetes-preserve-unknown-fields")
                .is_none()
        );
        // Without a schema: one preserving unknown fields, with a note.
        let c = convert(
            json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "versions": [{"name": "v1", "served": true, "storage": true}],
                     "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"}}}),
        );
        assert_eq!(
            c.object["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(c.notes.len(), 1);
    }

    #[test]
    fn hpa_metrics_reshaped() {
        let c = convert(
            json!({"apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 70}},
                                 {"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "100"}}]}}),
        );
        assert_eq!(c.object["apiVersion"], "autoscaling/v2");
        let m = &c.object["spec"]["metrics"];
        assert_eq!(
            m[0]["resource"],
            json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}})
        );
        assert_eq!(
            m[1]["pods"],
            json!({"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "100"}})
        );
    }

    #[test]
    fn simple_moves_and_refusals() {
        for (from, kind, to) in [
            ("batch/v1beta1", "CronJob", "batch/v1"),
            ("policy/v1beta1", "PodDisruptionBudget", "policy/v1"),
            (
                "rbac.authorization.k8s.io/v1beta1",
                "RoleBinding",
                "rbac.authorization.k8s.io/v1",
            ),
            (
                "storage.k8s.io/v1beta1",
                "StorageClass",
                "storage.k8s.io/v1",
            ),
            (
                "autoscaling/v2beta2",
                "HorizontalPodAutoscaler",
                "autoscaling/v2",
            ),
        ] {
            let c = convert(json!({"apiVersion": from, "kind": kind, "metadata": {"name": "x"}}));
            assert_eq!(c.object["apiVersion"], to);
        }
        let e = convert_for_target(
            &json!({"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy"}),
            &served_126,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Pod Security Admission"), "{e}");
        let e = convert_for_target(
            &json!({"apiVersion": "example.com/v1alpha1", "kind": "Gizmo"}),
            &served_126,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("example.com/v1alpha1") && e.contains("--transform"),
            "{e}"
        );
        // v1alpha1 RBAC subjects.
        let c = convert(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1alpha1", "kind": "RoleBinding",
            "subjects": [{"kind": "User", "name": "alice", "apiVersion": "rbac.authorization.k8s.io/v1alpha1"}]}),
        );
        assert_eq!(
            c.object["subjects"][0],
            json!({"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"})
        );
    }
}
