//! API-version conversion for restoring old backups: when a backup holds an object in an
//! API version the target cluster no longer serves, rewrite it to the newest served
//! successor, following the Kubernetes deprecated API migration guide.
//!
//! This module owns the table of known moves (old group/version/kind to successors), the
//! field reshaping each move needs, and the notes on anything lossy or on a default that
//! changed. It does not own discovery (the caller passes `served`), transforms (see
//! [`crate::transform`]) or sanitising for restore (status, managedFields, ...), and it
//! never talks to the API server.
//!
//! It is hand-written because the conversions live in the API server's Go code
//! (internal types plus generated converters) that no Rust crate carries, and most moves
//! need only a few field changes; where the old version's defaults differ from the new
//! one's, the old default is written explicitly so the restored object behaves as the
//! backed-up one did, and a note says so.

use serde_json::{Map, Value, json};
use thiserror::Error;

/// A converted object. When the stored version is served, `from == to`, the object is
/// unchanged and there are no notes.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The object in the target version.
    pub object: Value,
    /// The stored API version.
    pub from: String,
    /// The API version converted to (equal to `from` when nothing changed).
    pub to: String,
    /// One line each: what was lossy, what default was pinned, what to check.
    pub notes: Vec<String>,
}

impl Converted {
    /// True when the object was rewritten to another API version.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

/// Why an object cannot be restored in the target cluster's API versions.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConvertError {
    /// The stored version is unserved and coffer knows no move for it.
    #[error(
        "apiVersion {api_version} kind {kind} is not served by the target cluster and coffer knows no conversion; transform it with --transform (jsonPatch on /apiVersion) or install the API"
    )]
    Unknown {
        /// The stored API version.
        api_version: String,
        /// The kind.
        kind: String,
    },
    /// The stored version is unserved and no successor is served.
    #[error(
        "apiVersion {api_version} kind {kind} is not served by the target cluster, nor is any successor coffer can convert to ({successors}); install one of those API versions or exclude the object"
    )]
    NoServedSuccessor {
        /// The stored API version.
        api_version: String,
        /// The kind.
        kind: String,
        /// The successors coffer could convert to, comma-separated.
        successors: String,
    },
    /// The API was removed without a successor.
    #[error("apiVersion {api_version} kind {kind} cannot be restored: {reason}")]
    Removed {
        /// The stored API version.
        api_version: String,
        /// The kind.
        kind: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The object cannot be reshaped for the successor.
    #[error("{api_version} {kind} {name} cannot be converted to {to}: {reason}")]
    Invalid {
        /// The stored API version.
        api_version: String,
        /// The kind.
        kind: String,
        /// `namespace/name` of the object.
        name: String,
        /// The successor it was converted to.
        to: String,
        /// What is wrong with the object.
        reason: String,
    },
    /// Objects that are never restored when their API is gone (events); callers treat
    /// this as "skip", not as a failure.
    #[error("apiVersion {api_version} kind {kind} is skipped: {reason}")]
    Skip {
        /// The stored API version.
        api_version: String,
        /// The kind.
        kind: String,
        /// Why it is skipped.
        reason: String,
    },
    /// The stored object lacks apiVersion or kind.
    #[error("stored object has no {0}; it is not a Kubernetes object and cannot be restored")]
    Malformed(&'static str),
}

impl ConvertError {
    /// True for objects that should be skipped quietly rather than reported as failures.
    pub fn is_skip(&self) -> bool {
        matches!(self, ConvertError::Skip { .. })
    }
}

impl From<ConvertError> for crate::Error {
    fn from(e: ConvertError) -> Self {
        crate::Error::Invalid(e.to_string())
    }
}

/// Returns the converted object (apiVersion updated, fields reshaped) and notes on
/// anything lossy, or an error saying it cannot be converted and why. `served(apiVersion,
/// kind)` tells what the target serves; the object is converted only when its stored
/// version is not served, to the newest served version among the known successors.
pub fn convert_for_target(
    obj: &Value,
    served: &dyn Fn(&str, &str) -> bool,
) -> Result<Converted, ConvertError> {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ConvertError::Malformed("apiVersion"))?;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ConvertError::Malformed("kind"))?;
    if served(api_version, kind) {
        return Ok(Converted {
            object: obj.clone(),
            from: api_version.to_string(),
            to: api_version.to_string(),
            notes: Vec::new(),
        });
    }
    let (successors, conv) = match lookup(api_version, kind) {
        Move::Unknown => {
            return Err(ConvertError::Unknown {
                api_version: api_version.into(),
                kind: kind.into(),
            });
        }
        Move::Removed(reason) => {
            return Err(ConvertError::Removed {
                api_version: api_version.into(),
                kind: kind.into(),
                reason: reason.into(),
            });
        }
        Move::Skip(reason) => {
            return Err(ConvertError::Skip {
                api_version: api_version.into(),
                kind: kind.into(),
                reason: reason.into(),
            });
        }
        Move::To(successors, conv) => (successors, conv),
    };
    let Some(to) = successors.iter().find(|s| served(s, kind)) else {
        return Err(ConvertError::NoServedSuccessor {
            api_version: api_version.into(),
            kind: kind.into(),
            successors: successors.join(", "),
        });
    };
    let mut object = obj.clone();
    let mut notes = Notes::default();
    let ctx = Ctx {
        from: api_version,
        to,
        kind,
    };
    conv(&mut object, &ctx, &mut notes).map_err(|reason| ConvertError::Invalid {
        api_version: api_version.into(),
        kind: kind.into(),
        name: object_name(obj),
        to: to.to_string(),
        reason,
    })?;
    object["apiVersion"] = Value::String(to.to_string());
    Ok(Converted {
        object,
        from: api_version.to_string(),
        to: to.to_string(),
        notes: notes.0,
    })
}

fn object_name(obj: &Value) -> String {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

struct Ctx<'a> {
    from: &'a str,
    to: &'a str,
    kind: &'a str,
}

/// Notes without duplicates, in the order first given.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }
}

type Conv = fn(&mut Value, &Ctx, &mut Notes) -> Result<(), String>;

enum Move {
    Unknown,
    Removed(&'static str),
    Skip(&'static str),
    /// Successors, newest first, and the conversion to any of them.
    To(&'static [&'static str], Conv),
}

/// The known moves. Successors are listed newest first.
fn lookup(api_version: &str, kind: &str) -> Move {
    const APPS_V1: &[&str] = &["apps/v1"];
    match (api_version, kind) {
        (
            "extensions/v1beta1" | "apps/v1beta1" | "apps/v1beta2",
            "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet",
        ) => Move::To(APPS_V1, workload),
        ("extensions/v1beta1", "Ingress") => Move::To(
            &["networking.k8s.io/v1", "networking.k8s.io/v1beta1"],
            ingress,
        ),
        ("networking.k8s.io/v1beta1", "Ingress") => Move::To(&["networking.k8s.io/v1"], ingress),
        ("networking.k8s.io/v1beta1", "IngressClass") => {
            Move::To(&["networking.k8s.io/v1"], same_shape)
        }
        ("extensions/v1beta1", "NetworkPolicy") => Move::To(&["networking.k8s.io/v1"], same_shape),
        ("extensions/v1beta1" | "policy/v1beta1", "PodSecurityPolicy") => Move::Removed(
            "PodSecurityPolicy was removed in Kubernetes 1.25 with no replacement API; use Pod Security Admission namespace labels or a policy engine instead, and exclude it from the restore",
        ),
        ("batch/v1beta1" | "batch/v2alpha1", "CronJob") => Move::To(&["batch/v1"], same_shape),
        ("policy/v1beta1", "PodDisruptionBudget") => Move::To(&["policy/v1"], pdb),
        (
            "rbac.authorization.k8s.io/v1beta1" | "rbac.authorization.k8s.io/v1alpha1",
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding",
        ) => Move::To(&["rbac.authorization.k8s.io/v1"], rbac),
        (
            "storage.k8s.io/v1beta1",
            "StorageClass" | "VolumeAttachment" | "CSIDriver" | "CSINode" | "CSIStorageCapacity",
        )
        | ("storage.k8s.io/v1alpha1", "VolumeAttachment" | "CSIStorageCapacity") => {
            Move::To(&["storage.k8s.io/v1"], same_shape)
        }
        ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition") => {
            Move::To(&["apiextensions.k8s.io/v1"], crd)
        }
        ("autoscaling/v2beta1", "HorizontalPodAutoscaler") => {
            Move::To(&["autoscaling/v2", "autoscaling/v2beta2"], hpa_v2beta1)
        }
        ("autoscaling/v2beta2", "HorizontalPodAutoscaler") => {
            Move::To(&["autoscaling/v2"], same_shape)
        }
        (
            "admissionregistration.k8s.io/v1beta1",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
        ) => Move::To(&["admissionregistration.k8s.io/v1"], webhooks),
        ("scheduling.k8s.io/v1beta1" | "scheduling.k8s.io/v1alpha1", "PriorityClass") => {
            Move::To(&["scheduling.k8s.io/v1"], same_shape)
        }
        ("coordination.k8s.io/v1beta1", "Lease") => {
            Move::To(&["coordination.k8s.io/v1"], same_shape)
        }
        ("events.k8s.io/v1beta1" | "events.k8s.io/v1" | "v1", "Event") => {
            Move::Skip("events record what happened in the source cluster and are not restored")
        }
        ("discovery.k8s.io/v1beta1", "EndpointSlice") => {
            Move::To(&["discovery.k8s.io/v1"], endpoint_slice)
        }
        ("node.k8s.io/v1beta1", "RuntimeClass") => Move::To(&["node.k8s.io/v1"], same_shape),
        ("node.k8s.io/v1alpha1", "RuntimeClass") => {
            Move::To(&["node.k8s.io/v1"], runtime_class_alpha)
        }
        _ => Move::Unknown,
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn spec_mut<'a>(obj: &'a mut Value, ctx: &Ctx) -> Result<&'a mut Map<String, Value>, String> {
    obj.get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("the {} has no spec", ctx.kind))
}

fn non_empty_object(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|m| !m.is_empty())
}

fn same_shape(_: &mut Value, _: &Ctx, _: &mut Notes) -> Result<(), String> {
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Workloads

/// extensions/v1beta1, apps/v1beta1, apps/v1beta2 Deployment, DaemonSet, ReplicaSet,
/// StatefulSet to apps/v1.
fn workload(obj: &mut Value, ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    let spec = spec_mut(obj, ctx)?;
    let selector_missing = spec.get("selector").is_none_or(Value::is_null);
    if selector_missing {
        let labels = spec
            .get("template")
            .and_then(|t| t.pointer("/metadata/labels"))
            .filter(|l| non_empty_object(Some(l)))
            .cloned()
            .ok_or_else(|| {
                "apps/v1 requires spec.selector and the pod template has no labels to default it from; add spec.selector (matching spec.template.metadata.labels) with --transform".to_string()
            })?;
        spec.insert("selector".into(), json!({ "matchLabels": labels }));
        notes.add(format!(
            "spec.selector was unset; set to the pod template labels, as {} defaulted it",
            ctx.from
        ));
    }
    match ctx.kind {
        "Deployment" => {
            if spec.shift_remove("rollbackTo").is_some() {
                notes.add("dropped spec.rollbackTo: apps/v1 has no rollback request; roll back with kubectl rollout undo");
            }
            let mut pinned = Vec::new();
            let (history, surge_unavail) = match ctx.from {
                // No limit, and one pod at a time.
                "extensions/v1beta1" => (Some(json!(2147483647)), Some(json!(1))),
                "apps/v1beta1" => (Some(json!(2)), None),
                _ => (None, None),
            };
            if let Some(h) = history
                && !spec.contains_key("revisionHistoryLimit")
            {
                spec.insert("revisionHistoryLimit".into(), h.clone());
                pinned.push(format!("revisionHistoryLimit={h}"));
            }
            if ctx.from == "extensions/v1beta1" && !spec.contains_key("progressDeadlineSeconds") {
                // 2147483647 means "no deadline" to the deployment controller.
                spec.insert("progressDeadlineSeconds".into(), json!(2147483647));
                pinned.push("progressDeadlineSeconds=2147483647 (no deadline)".into());
            }
            if let Some(n) = surge_unavail {
                let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
                if let Some(st) = strategy.as_object_mut() {
                    if !st.contains_key("type") {
                        st.insert("type".into(), json!("RollingUpdate"));
                    }
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            for k in ["maxUnavailable", "maxSurge"] {
                                if !ru.contains_key(k) {
                                    ru.insert(k.into(), n.clone());
                                    pinned.push(format!("strategy.rollingUpdate.{k}={n}"));
                                }
                            }
                        }
                    }
                }
            }
            if !pinned.is_empty() {
                notes.add(format!(
                    "pinned {} defaults that apps/v1 changed: {}",
                    ctx.from,
                    pinned.join(", ")
                ));
            }
        }
        "DaemonSet" => {
            if spec.shift_remove("templateGeneration").is_some() {
                notes.add("dropped spec.templateGeneration: apps/v1 DaemonSets track revisions with ControllerRevisions");
            }
            if ctx.from == "extensions/v1beta1" && !spec.contains_key("updateStrategy") {
                spec.insert("updateStrategy".into(), json!({"type": "OnDelete"}));
                notes.add("spec.updateStrategy was unset; pinned OnDelete, the extensions/v1beta1 default (apps/v1 defaults to RollingUpdate)");
            }
        }
        "StatefulSet" if ctx.from == "apps/v1beta1" && !spec.contains_key("updateStrategy") => {
            spec.insert("updateStrategy".into(), json!({"type": "OnDelete"}));
            notes.add("spec.updateStrategy was unset; pinned OnDelete, the apps/v1beta1 default (apps/v1 defaults to RollingUpdate)");
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Ingress

fn ingress(obj: &mut Value, ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    if ctx.to != "networking.k8s.io/v1" {
        // extensions/v1beta1 and networking.k8s.io/v1beta1 have the same shape.
        return Ok(());
    }
    let spec = spec_mut(obj, ctx)?;
    if let Some(b) = spec.shift_remove("backend") {
        let b = ingress_backend(&b, "spec.backend", notes)?;
        spec.insert("defaultBackend".into(), b);
    }
    let mut defaulted = false;
    if let Some(Value::Array(rules)) = spec.get_mut("rules") {
        for (i, rule) in rules.iter_mut().enumerate() {
            let Some(Value::Array(paths)) = rule.pointer_mut("/http/paths") else {
                continue;
            };
            for (j, p) in paths.iter_mut().enumerate() {
                let Some(p) = p.as_object_mut() else {
                    continue;
                };
                if let Some(b) = p.get("backend") {
                    let at = format!("spec.rules[{i}].http.paths[{j}].backend");
                    let nb = ingress_backend(b, &at, notes)?;
                    p.insert("backend".into(), nb);
                }
                if p.get("pathType").is_none_or(Value::is_null) {
                    p.insert("pathType".into(), json!("ImplementationSpecific"));
                    defaulted = true;
                }
            }
        }
    }
    if defaulted {
        notes.add(
            "pathType was unset on some paths; set ImplementationSpecific, the v1beta1 default",
        );
    }
    Ok(())
}

fn ingress_backend(b: &Value, at: &str, notes: &mut Notes) -> Result<Value, String> {
    let Some(m) = b.as_object() else {
        return Err(format!("{at} is not an object"));
    };
    let mut out = Map::new();
    if let Some(name) = m.get("serviceName") {
        let port = match m.get("servicePort") {
            Some(Value::Number(n)) => json!({ "number": n }),
            Some(Value::String(s)) => match s.parse::<u32>() {
                Ok(n) => {
                    notes.add(format!(
                        "{at}.servicePort {s:?} is a number written as a string; converted to port.number {n}"
                    ));
                    json!({ "number": n })
                }
                Err(_) => json!({ "name": s }),
            },
            _ => {
                return Err(format!(
                    "{at} has serviceName but no servicePort; networking.k8s.io/v1 requires a port"
                ));
            }
        };
        out.insert("service".into(), json!({ "name": name, "port": port }));
    }
    if let Some(r) = m.get("resource") {
        out.insert("resource".into(), r.clone());
    }
    if out.is_empty() {
        return Err(format!(
            "{at} has neither serviceName/servicePort nor resource"
        ));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------
// PodDisruptionBudget

fn pdb(obj: &mut Value, ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    let spec = spec_mut(obj, ctx)?;
    let empty_selector = spec.get("selector").is_some_and(|s| match s {
        Value::Object(m) => ["matchLabels", "matchExpressions"]
            .iter()
            .all(|k| match m.get(*k) {
                None | Some(Value::Null) => true,
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            }),
        _ => false,
    });
    if empty_selector {
        spec.shift_remove("selector");
        notes.add("spec.selector was empty, which selects no pods in policy/v1beta1 but every pod of the namespace in policy/v1; removed it so the budget still selects no pods");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// RBAC

fn rbac(obj: &mut Value, ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    const RBAC: &str = "rbac.authorization.k8s.io";
    if let Some(Value::Array(subjects)) = obj.get_mut("subjects") {
        for s in subjects.iter_mut() {
            let Some(s) = s.as_object_mut() else {
                continue;
            };
            let kind = s
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if s.shift_remove("apiVersion").is_some() {
                notes.add("subjects[].apiVersion (v1alpha1) replaced by apiGroup");
            }
            let has_group = s.get("apiGroup").and_then(Value::as_str).is_some();
            match kind.as_str() {
                "User" | "Group" if !has_group => {
                    s.insert("apiGroup".into(), json!(RBAC));
                }
                "ServiceAccount" if !has_group && ctx.from.ends_with("v1alpha1") => {
                    s.insert("apiGroup".into(), json!(""));
                }
                _ => {}
            }
        }
    }
    if let Some(Value::Object(role_ref)) = obj.get_mut("roleRef")
        && role_ref
            .get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        role_ref.insert("apiGroup".into(), json!(RBAC));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// CustomResourceDefinition

fn crd(obj: &mut Value, ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    let group = obj
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let spec = spec_mut(obj, ctx)?;
    let top_schema = spec
        .shift_remove("validation")
        .and_then(|v| v.get("openAPIV3Schema").cloned());
    let top_subresources = spec.shift_remove("subresources");
    let top_columns = spec.shift_remove("additionalPrinterColumns");
    let version = spec.shift_remove("version");
    // v1beta1 defaults preserveUnknownFields to true; v1 has no such switch.
    let preserve = match spec.shift_remove("preserveUnknownFields") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(format!(
                "spec.preserveUnknownFields {other} is not a boolean"
            ));
        }
    };
    let mut versions = match spec.shift_remove("versions") {
        Some(Value::Array(v)) if !v.is_empty() => v,
        _ => match version.as_ref().and_then(Value::as_str) {
            Some(name) => vec![json!({"name": name, "served": true, "storage": true})],
            None => return Err("has neither spec.version nor spec.versions".into()),
        },
    };
    let single = versions.len() == 1;
    for v in versions.iter_mut() {
        let Some(v) = v.as_object_mut() else {
            return Err("spec.versions has an item that is not an object".into());
        };
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        for (k, default) in [("served", true), ("storage", single)] {
            if !v.contains_key(k) {
                v.insert(k.into(), json!(default));
            }
        }
        let schema = v
            .shift_remove("schema")
            .and_then(|s| s.get("openAPIV3Schema").cloned())
            .or_else(|| top_schema.clone());
        let schema = match schema {
            None => {
                notes.add(format!(
                    "version {name} had no schema, which apiextensions.k8s.io/v1 requires; set {{type: object, x-kubernetes-preserve-unknown-fields: true}} (accepts anything, as before)"
                ));
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
            }
            Some(mut s) => {
                let Some(m) = s.as_object_mut() else {
                    return Err(format!("version {name}: openAPIV3Schema is not an object"));
                };
                structural(m, &format!("version {name} schema"), true, notes)?;
                if preserve {
                    preserve_unknown_fields(m, true);
                    notes.add("spec.preserveUnknownFields was true (the v1beta1 default): set x-kubernetes-preserve-unknown-fields: true on every object of the schema, nested ones included, so the API server keeps every field it kept before");
                }
                s
            }
        };
        check_structural(&schema).map_err(|p| {
            format!("version {name}: the schema cannot be made structural automatically ({p}); fix it with --transform")
        })?;
        v.insert("schema".into(), json!({ "openAPIV3Schema": schema }));
        if !v.contains_key("subresources")
            && let Some(sub) = &top_subresources
        {
            v.insert("subresources".into(), sub.clone());
        }
        let columns = v
            .shift_remove("additionalPrinterColumns")
            .or_else(|| top_columns.clone());
        if let Some(Value::Array(cols)) = columns {
            let cols = cols
                .into_iter()
                .map(|c| match c {
                    Value::Object(m) => Value::Object(
                        m.into_iter()
                            .map(|(k, v)| {
                                if k == "JSONPath" {
                                    ("jsonPath".to_string(), v)
                                } else {
                                    (k, v)
                                }
                            })
                            .collect(),
                    ),
                    other => other,
                })
                .collect();
            v.insert("additionalPrinterColumns".into(), Value::Array(cols));
        }
    }
    spec.insert("versions".into(), Value::Array(versions));
    if let Some(Value::Object(conv)) = spec.get_mut("conversion") {
        let client_config = conv.shift_remove("webhookClientConfig");
        let review = conv.shift_remove("conversionReviewVersions");
        if conv.get("strategy").and_then(Value::as_str) == Some("Webhook") {
            let client_config = client_config
                .ok_or("spec.conversion.strategy is Webhook but webhookClientConfig is missing")?;
            let review = match review {
                Some(r) => r,
                None => {
                    notes.add("spec.conversion.conversionReviewVersions was unset; set [v1beta1], the v1beta1 default (apiextensions.k8s.io/v1 requires it)");
                    json!(["v1beta1"])
                }
            };
            conv.insert(
                "webhook".into(),
                json!({"clientConfig": client_config, "conversionReviewVersions": review}),
            );
        }
    }
    let protected = group == "k8s.io"
        || group == "kubernetes.io"
        || group.ends_with(".k8s.io")
        || group.ends_with(".kubernetes.io");
    if protected {
        let meta = obj
            .as_object_mut()
            .ok_or("not an object")?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let ann = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(ann) = ann.as_object_mut()
                && !ann.contains_key("api-approved.kubernetes.io")
            {
                ann.insert(
                    "api-approved.kubernetes.io".into(),
                    json!("unapproved, converted by coffer from apiextensions.k8s.io/v1beta1"),
                );
                notes.add(format!(
                    "group {group} is protected in apiextensions.k8s.io/v1; set annotation api-approved.kubernetes.io to \"unapproved, ...\" so the API server accepts it"
                ));
            }
        }
    }
    Ok(())
}

const JUNCTORS: [&str; 3] = ["allOf", "anyOf", "oneOf"];

/// Marks every object of a schema `x-kubernetes-preserve-unknown-fields: true`: a v1beta1
/// CRD with `preserveUnknownFields` pruned nothing, while apiextensions.k8s.io/v1 prunes
/// unknown fields at every object that lacks the marker, nested ones included. Maps
/// (`additionalProperties`) keep their keys anyway; the root's `metadata` may not carry
/// it; allOf/anyOf/oneOf/not may not carry any x-kubernetes-* keyword.
fn preserve_unknown_fields(s: &mut Map<String, Value>, root: bool) {
    let is_object = s.get("type").and_then(Value::as_str) == Some("object");
    if is_object && !s.contains_key("additionalProperties") {
        s.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    if let Some(Value::Object(props)) = s.get_mut("properties") {
        for (k, p) in props.iter_mut() {
            if root && k == "metadata" {
                continue;
            }
            if let Some(p) = p.as_object_mut() {
                preserve_unknown_fields(p, false);
            }
        }
    }
    if let Some(Value::Object(items)) = s.get_mut("items") {
        preserve_unknown_fields(items, false);
    }
    if let Some(Value::Object(ap)) = s.get_mut("additionalProperties") {
        preserve_unknown_fields(ap, false);
    }
}

/// Makes a v1beta1 schema structural, as apiextensions.k8s.io/v1 requires, noting every
/// change: types inferred or replaced by x-kubernetes-preserve-unknown-fields, forbidden
/// keywords dropped, value validations in allOf/anyOf/oneOf/not stripped of type-like
/// keywords, metadata restricted to name and generateName at the root.
fn structural(
    s: &mut Map<String, Value>,
    at: &str,
    root: bool,
    notes: &mut Notes,
) -> Result<(), String> {
    if s.get("uniqueItems") == Some(&json!(true)) {
        s.shift_remove("uniqueItems");
        notes.add(format!("{at}: dropped uniqueItems: true, which apiextensions.k8s.io/v1 forbids (duplicates are no longer rejected)"));
    }
    if s.get("additionalProperties") == Some(&json!(false)) {
        s.shift_remove("additionalProperties");
        notes.add(format!("{at}: dropped additionalProperties: false, which apiextensions.k8s.io/v1 forbids (unknown fields are pruned instead of rejected)"));
    }
    if s.contains_key("properties") && s.contains_key("additionalProperties") {
        s.shift_remove("additionalProperties");
        notes.add(format!("{at}: dropped additionalProperties next to properties (apiextensions.k8s.io/v1 allows only one)"));
    }
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(false)) {
        s.shift_remove("x-kubernetes-preserve-unknown-fields");
    }
    if s.get("properties").is_some_and(|p| !p.is_object()) {
        return Err(format!(
            "{at}: properties is not a map of field names to schemas; fix the CRD with --transform or exclude it"
        ));
    }
    if let Some(Value::Object(props)) = s.get("properties")
        && let Some((k, _)) = props.iter().find(|(_, p)| !p.is_object())
    {
        return Err(format!(
            "{at}.{k}: the schema of a field must be a map; fix the CRD with --transform or exclude it"
        ));
    }
    let has_type = s
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !has_type {
        s.shift_remove("type");
        if is_int_or_string_any_of(s) && !s.contains_key("x-kubernetes-int-or-string") {
            s.insert("x-kubernetes-int-or-string".into(), json!(true));
            notes.add(format!(
                "{at}: anyOf [integer, string] marked x-kubernetes-int-or-string"
            ));
        }
    }
    let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if !has_type {
        if root || s.contains_key("properties") || s.contains_key("additionalProperties") {
            s.insert("type".into(), json!("object"));
            notes.add(format!(
                "{at}: set missing types to object where properties are given"
            ));
        } else if s.contains_key("items") {
            s.insert("type".into(), json!("array"));
            notes.add(format!(
                "{at}: set missing types to array where items are given"
            ));
        } else if !int_or_string && !preserve {
            s.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
            notes.add(format!("{at}: fields without a type now carry x-kubernetes-preserve-unknown-fields: true (any value, as before)"));
        }
    }
    if root && s.get("type").and_then(Value::as_str) != Some("object") {
        return Err(format!("{at}: the schema root must be of type object"));
    }
    if root
        && let Some(Value::Object(props)) = s.get_mut("properties")
        && let Some(Value::Object(meta)) = props.get_mut("metadata")
    {
        let allowed: Map<String, Value> = meta
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .filter(|(k, _)| *k == "name" || *k == "generateName")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let before = meta.clone();
        meta.retain(|k, _| k == "type" || k == "properties");
        meta.insert("type".into(), json!("object"));
        if allowed.is_empty() {
            meta.shift_remove("properties");
        } else {
            meta.insert("properties".into(), Value::Object(allowed));
        }
        if *meta != before {
            notes.add(format!("{at}: metadata may only restrict name and generateName in apiextensions.k8s.io/v1; dropped the rest"));
        }
    }
    if let Some(Value::Object(props)) = s.get_mut("properties") {
        for (k, p) in props.iter_mut() {
            if let Some(p) = p.as_object_mut() {
                structural(p, &format!("{at}.{k}"), false, notes)?;
            }
        }
    }
    match s.get_mut("items") {
        Some(Value::Object(items)) => structural(items, &format!("{at}[]"), false, notes)?,
        Some(Value::Array(_)) => {
            return Err(format!(
                "{at}: items is a list of schemas; apiextensions.k8s.io/v1 needs one schema"
            ));
        }
        _ => {}
    }
    if let Some(Value::Object(ap)) = s.get_mut("additionalProperties") {
        structural(ap, &format!("{at}.*"), false, notes)?;
    }
    if !int_or_string {
        let mut junctions: Vec<Value> = Vec::new();
        for j in JUNCTORS {
            if let Some(Value::Array(list)) = s.get(j) {
                junctions.extend(list.iter().cloned());
            }
        }
        if let Some(n) = s.get("not") {
            junctions.push(n.clone());
        }
        let mut cleaned: Vec<Value> = Vec::new();
        for mut j in junctions {
            if let Some(jm) = j.as_object_mut() {
                junction(jm, s, at, notes)?;
            }
            cleaned.push(j);
        }
        let mut it = cleaned.into_iter();
        for j in JUNCTORS {
            if let Some(Value::Array(list)) = s.get_mut(j) {
                for slot in list.iter_mut() {
                    if let Some(clean) = it.next() {
                        *slot = clean;
                    }
                }
            }
        }
        if s.contains_key("not")
            && let Some(clean) = it.next()
        {
            s.insert("not".into(), clean);
        }
    }
    Ok(())
}

fn is_int_or_string_any_of(s: &Map<String, Value>) -> bool {
    let Some(Value::Array(list)) = s.get("anyOf") else {
        return false;
    };
    let mut types: Vec<&str> = list
        .iter()
        .filter_map(|x| x.get("type").and_then(Value::as_str))
        .collect();
    types.sort();
    list.len() == 2 && types == ["integer", "string"]
}

/// Strips from a value validation (inside allOf/anyOf/oneOf/not) what structural schemas
/// forbid there, and makes sure every field it names is also specified in `outer`.
fn junction(
    j: &mut Map<String, Value>,
    outer: &mut Map<String, Value>,
    at: &str,
    notes: &mut Notes,
) -> Result<(), String> {
    let forbidden = [
        "type",
        "description",
        "default",
        "additionalProperties",
        "nullable",
    ];
    let mut dropped = false;
    for k in forbidden {
        dropped |= j.shift_remove(k).is_some();
    }
    let before = j.len();
    j.retain(|k, _| !k.starts_with("x-kubernetes-"));
    dropped |= j.len() != before;
    if dropped {
        notes.add(format!("{at}: dropped type, description, default, nullable, additionalProperties and x-kubernetes-* inside allOf/anyOf/oneOf/not, which structural schemas forbid"));
    }
    if j.get("properties").is_some_and(|p| !p.is_object()) {
        return Err(format!(
            "{at}: properties inside allOf/anyOf/oneOf/not is not a map of field names to schemas"
        ));
    }
    if let Some(Value::Object(jprops)) = j.get_mut("properties") {
        for (k, jp) in jprops.iter_mut() {
            let Some(outer_props) = outer
                .entry("properties")
                .or_insert_with(|| json!({}))
                .as_object_mut()
            else {
                return Err(format!(
                    "{at}: properties is not a map of field names to schemas"
                ));
            };
            let op = outer_props.entry(k.clone()).or_insert_with(|| {
                notes.add(format!("{at}: field {k} appears only inside allOf/anyOf/oneOf/not; added it as x-kubernetes-preserve-unknown-fields"));
                json!({"x-kubernetes-preserve-unknown-fields": true})
            });
            if let (Some(jp), Some(op)) = (jp.as_object_mut(), op.as_object_mut()) {
                junction(jp, op, &format!("{at}.{k}"), notes)?;
            }
        }
    }
    if let Some(Value::Object(ji)) = j.get_mut("items") {
        let oi = outer.entry("items").or_insert_with(|| {
            notes.add(format!("{at}: items appear only inside allOf/anyOf/oneOf/not; added them as x-kubernetes-preserve-unknown-fields"));
            json!({"x-kubernetes-preserve-unknown-fields": true})
        });
        if let Some(oi) = oi.as_object_mut() {
            junction(ji, oi, &format!("{at}[]"), notes)?;
        }
    }
    for jn in JUNCTORS {
        if let Some(Value::Array(list)) = j.get_mut(jn) {
            for x in list.iter_mut() {
                if let Some(x) = x.as_object_mut() {
                    junction(x, outer, at, notes)?;
                }
            }
        }
    }
    if let Some(Value::Object(n)) = j.get_mut("not") {
        junction(n, outer, at, notes)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HorizontalPodAutoscaler

fn hpa_v2beta1(obj: &mut Value, ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    // The API server keeps v2 fields that v2beta1 cannot express in an annotation.
    const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
    let mut behavior = None;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(Value::Object(ann)) = meta.get_mut("annotations")
    {
        behavior = ann.shift_remove(BEHAVIOR);
        if ann.is_empty() {
            meta.shift_remove("annotations");
        }
    }
    let spec = spec_mut(obj, ctx)?;
    if let Some(Value::Array(metrics)) = spec.get_mut("metrics") {
        for (i, m) in metrics.iter_mut().enumerate() {
            *m = hpa_metric(m, i)?;
        }
    }
    if let Some(b) = behavior {
        match b
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        {
            Some(parsed) if !spec.contains_key("behavior") => {
                spec.insert("behavior".into(), parsed);
                notes.add(format!("moved annotation {BEHAVIOR} to spec.behavior"));
            }
            _ => notes.add(format!(
                "dropped annotation {BEHAVIOR} (not valid JSON, or spec.behavior is set)"
            )),
        }
    }
    if obj
        .as_object_mut()
        .ok_or("not an object")?
        .shift_remove("status")
        .is_some()
    {
        notes.add("dropped status: its v2beta1 shape differs and the controller recomputes it");
    }
    Ok(())
}

fn metric_target(m: &Map<String, Value>, at: &str) -> Result<Value, String> {
    if let Some(u) = m.get("targetAverageUtilization") {
        Ok(json!({"type": "Utilization", "averageUtilization": u}))
    } else if let Some(v) = m.get("targetAverageValue") {
        Ok(json!({"type": "AverageValue", "averageValue": v}))
    } else if let Some(v) = m.get("targetValue") {
        Ok(json!({"type": "Value", "value": v}))
    } else {
        Err(format!(
            "{at} has no target (targetAverageUtilization, targetAverageValue or targetValue)"
        ))
    }
}

fn metric_identifier(
    name: Option<&Value>,
    selector: Option<&Value>,
    at: &str,
) -> Result<Value, String> {
    let name = name.ok_or_else(|| format!("{at} has no metricName"))?;
    let mut id = json!({ "name": name });
    if let Some(s) = selector.filter(|s| !s.is_null()) {
        id["selector"] = s.clone();
    }
    Ok(id)
}

fn hpa_metric(m: &Value, i: usize) -> Result<Value, String> {
    let at = format!("spec.metrics[{i}]");
    let ty = m
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at} has no type"))?;
    let field = match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        other => return Err(format!("{at} has unknown metric type {other}")),
    };
    let at = format!("{at}.{field}");
    let src = m
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{at} is missing"))?;
    let out = match ty {
        "Resource" | "ContainerResource" => {
            let mut o = json!({ "name": src.get("name").cloned().unwrap_or(Value::Null) });
            if let Some(c) = src.get("container") {
                o["container"] = c.clone();
            }
            o["target"] = metric_target(src, &at)?;
            o
        }
        "Pods" => json!({
            "metric": metric_identifier(src.get("metricName"), src.get("selector"), &at)?,
            "target": {"type": "AverageValue", "averageValue": src.get("targetAverageValue").cloned()
                .ok_or_else(|| format!("{at} has no targetAverageValue"))?},
        }),
        "Object" => {
            let target = match src.get("averageValue") {
                Some(v) => json!({"type": "AverageValue", "averageValue": v}),
                None => json!({"type": "Value", "value": src.get("targetValue").cloned()
                    .ok_or_else(|| format!("{at} has neither targetValue nor averageValue"))?}),
            };
            json!({
                "describedObject": src.get("target").cloned().ok_or_else(|| format!("{at} has no target object"))?,
                "metric": metric_identifier(src.get("metricName"), src.get("selector"), &at)?,
                "target": target,
            })
        }
        _ => {
            let target = match (src.get("targetAverageValue"), src.get("targetValue")) {
                (Some(v), _) => json!({"type": "AverageValue", "averageValue": v}),
                (None, Some(v)) => json!({"type": "Value", "value": v}),
                (None, None) => {
                    return Err(format!(
                        "{at} has neither targetValue nor targetAverageValue"
                    ));
                }
            };
            json!({
                "metric": metric_identifier(src.get("metricName"), src.get("metricSelector"), &at)?,
                "target": target,
            })
        }
    };
    let mut res = Map::new();
    res.insert("type".into(), json!(ty));
    res.insert(field.into(), out);
    Ok(Value::Object(res))
}

// ---------------------------------------------------------------------------------------
// Admission webhooks

fn webhooks(obj: &mut Value, _ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    let Some(Value::Array(hooks)) = obj.get_mut("webhooks") else {
        return Ok(());
    };
    for h in hooks.iter_mut() {
        let Some(h) = h.as_object_mut() else {
            continue;
        };
        let name = h
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        match h.get("sideEffects").and_then(Value::as_str) {
            Some("None") | Some("NoneOnDryRun") => {}
            other => {
                notes.add(format!(
                    "webhook {name}: sideEffects {} is not allowed in admissionregistration.k8s.io/v1; set None (check the webhook really has no side effects)",
                    other.unwrap_or("unset (Unknown)")
                ));
                h.insert("sideEffects".into(), json!("None"));
            }
        }
        if !h.contains_key("admissionReviewVersions") {
            h.insert("admissionReviewVersions".into(), json!(["v1beta1"]));
            notes.add(format!("webhook {name}: admissionReviewVersions was unset; set [v1beta1], the v1beta1 default (v1 requires it)"));
        }
        let mut pinned = Vec::new();
        for (k, v) in [
            ("failurePolicy", json!("Ignore")),
            ("matchPolicy", json!("Exact")),
            ("timeoutSeconds", json!(30)),
        ] {
            if !h.contains_key(k) {
                pinned.push(format!("{k}={v}"));
                h.insert(k.into(), v);
            }
        }
        if !pinned.is_empty() {
            notes.add(format!(
                "webhook {name}: pinned v1beta1 defaults that v1 changed: {}",
                pinned.join(", ")
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// EndpointSlice, RuntimeClass

fn endpoint_slice(obj: &mut Value, _ctx: &Ctx, notes: &mut Notes) -> Result<(), String> {
    const ZONE: &str = "topology.kubernetes.io/zone";
    const HOST: &str = "kubernetes.io/hostname";
    let Some(Value::Array(eps)) = obj.get_mut("endpoints") else {
        return Ok(());
    };
    for ep in eps.iter_mut() {
        let Some(ep) = ep.as_object_mut() else {
            continue;
        };
        let Some(Value::Object(mut topo)) = ep.shift_remove("topology") else {
            continue;
        };
        if let Some(zone) = topo.shift_remove(ZONE)
            && !ep.contains_key("zone")
        {
            ep.insert("zone".into(), zone);
        }
        // The hostname becomes nodeName when that is unset, and is dropped when equal
        // to it; a different hostname stays in deprecatedTopology (as the API server does).
        if let Some(host) = topo.get(HOST).cloned() {
            match ep.get("nodeName") {
                None | Some(Value::Null) => {
                    ep.insert("nodeName".into(), host);
                    topo.shift_remove(HOST);
                }
                Some(n) if *n == host => {
                    topo.shift_remove(HOST);
                }
                Some(_) => {}
            }
        }
        if !topo.is_empty() {
            ep.insert("deprecatedTopology".into(), Value::Object(topo));
        }
        notes.add(
            "endpoints[].topology moved: the zone label to zone, the rest to deprecatedTopology",
        );
    }
    Ok(())
}

fn runtime_class_alpha(obj: &mut Value, _ctx: &Ctx, _notes: &mut Notes) -> Result<(), String> {
    let o = obj.as_object_mut().ok_or("not an object")?;
    let Some(Value::Object(spec)) = o.shift_remove("spec") else {
        return Err("node.k8s.io/v1alpha1 RuntimeClass has no spec".into());
    };
    for (from, to) in [
        ("runtimeHandler", "handler"),
        ("overhead", "overhead"),
        ("scheduling", "scheduling"),
    ] {
        if let Some(v) = spec.get(from) {
            o.insert(to.into(), v.clone());
        }
    }
    if !o.contains_key("handler") {
        return Err("spec.runtimeHandler is missing; node.k8s.io/v1 requires handler".into());
    }
    Ok(())
}

/// Checks a CRD schema against the structural-schema rules of apiextensions.k8s.io/v1
/// that a conversion can break or has to fix: a type (or int-or-string / preserve-unknown
/// marker) everywhere, an object root, no `uniqueItems: true`, no `additionalProperties:
/// false` or next to `properties`, only name/generateName under the root `metadata`, and
/// no type-like keywords or unknown fields inside allOf/anyOf/oneOf/not. Returns the first
/// problem with its path. It does not check CEL rules, defaults or formats.
pub fn check_structural(schema: &Value) -> Result<(), String> {
    structural_problem(schema, "openAPIV3Schema", true)
}

fn structural_problem(s: &Value, at: &str, root: bool) -> Result<(), String> {
    let m = s.as_object().ok_or(format!("{at}: not an object"))?;
    let ty = m.get("type").and_then(Value::as_str);
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let ios = m.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if ty.is_none() && !preserve && !ios {
        return Err(format!("{at}: no type"));
    }
    if root && ty != Some("object") {
        return Err(format!("{at}: root type must be object"));
    }
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(false)) {
        return Err(format!("{at}: preserve-unknown-fields false"));
    }
    if m.get("uniqueItems") == Some(&json!(true)) {
        return Err(format!("{at}: uniqueItems"));
    }
    if m.get("additionalProperties") == Some(&json!(false)) {
        return Err(format!("{at}: additionalProperties false"));
    }
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        return Err(format!("{at}: properties and additionalProperties"));
    }
    for k in [
        "$ref",
        "$schema",
        "definitions",
        "dependencies",
        "id",
        "patternProperties",
    ] {
        if m.contains_key(k) {
            return Err(format!("{at}: forbidden {k}"));
        }
    }
    if m.get("properties").is_some_and(|p| !p.is_object()) {
        return Err(format!("{at}: properties is not a map"));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            if root && k == "metadata" {
                let pm = p
                    .as_object()
                    .ok_or(format!("{at}.metadata: not an object"))?;
                if pm.keys().any(|k| k != "type" && k != "properties") {
                    return Err(format!("{at}.metadata: restricted"));
                }
                if let Some(mp) = pm.get("properties").and_then(Value::as_object)
                    && mp.keys().any(|k| k != "name" && k != "generateName")
                {
                    return Err(format!("{at}.metadata: only name/generateName"));
                }
            }
            structural_problem(p, &format!("{at}.{k}"), false)?;
        }
    }
    if let Some(items) = m.get("items") {
        structural_problem(items, &format!("{at}[]"), false)?;
    }
    if let Some(ap) = m.get("additionalProperties").filter(|v| v.is_object()) {
        structural_problem(ap, &format!("{at}.*"), false)?;
    }
    if !ios {
        for j in ["allOf", "anyOf", "oneOf"] {
            for x in m.get(j).and_then(Value::as_array).into_iter().flatten() {
                check_junction(x, m, &format!("{at}.{j}"))?;
            }
        }
        if let Some(n) = m.get("not") {
            check_junction(n, m, &format!("{at}.not"))?;
        }
    }
    Ok(())
}

fn check_junction(j: &Value, outer: &Map<String, Value>, at: &str) -> Result<(), String> {
    let m = j.as_object().ok_or(format!("{at}: not an object"))?;
    for k in [
        "type",
        "description",
        "default",
        "additionalProperties",
        "nullable",
    ] {
        if m.contains_key(k) {
            return Err(format!("{at}: {k} inside a junction"));
        }
    }
    if m.keys().any(|k| k.starts_with("x-kubernetes-")) {
        return Err(format!("{at}: x-kubernetes-* inside a junction"));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let op = outer
                .get("properties")
                .and_then(|o| o.get(k))
                .and_then(Value::as_object)
                .ok_or(format!("{at}.{k}: not specified outside the junction"))?;
            check_junction(p, op, &format!("{at}.{k}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
