//! One stored object into the object the target gets: conversion to a served version,
//! what is never restored, namespace mapping, clone renames and Service addresses,
//! sanitising, transforms, storage-class and image-registry mappings, and the final
//! checks that the result is still an object Kubernetes can address.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::clone::{ServiceNames, provenance, rewrite_object_references, suffix_selector_labels};
use super::{Action, RestoreOptions};
use crate::archive::Entry;
use crate::collect::{is_builtin_group, name_of, namespace_of};
use crate::discovery::{Discovered, ServedResource, split_api_version};
use crate::refs;
use crate::sanitize::{SanitizeOptions, sanitize};
use crate::transform::{ObjectInfo, map_image_registries, map_storage_classes};

/// Why an object cannot be resolved now; with CRDs of the same restore it may later.
pub(super) const UNSERVED: &str = "not served by the target";

/// Clone renames: (group, kind, target namespace, stored name) to the new name.
pub(super) type Renames = BTreeMap<(String, String, Option<String>, String), String>;

/// One object on its way through the planner.
pub(super) struct Item {
    pub(super) res: ServedResource,
    /// The stored object's uid and owners (for ordering and owner rewriting).
    pub(super) old_uid: Option<String>,
    pub(super) owners: Vec<Value>,
    pub(super) src_ns: Option<String>,
    pub(super) src_name: String,
    pub(super) object: Value,
    pub(super) action: Action,
    pub(super) reason: Option<String>,
    pub(super) notes: Vec<String>,
    /// The uid of the object in the target, when it exists.
    pub(super) live_uid: Option<String>,
    /// Why it cannot be restored, when it cannot.
    pub(super) failure: Option<String>,
    /// How the object was sanitised (the live object is compared the same way).
    pub(super) sanitized_with: SanitizeOptions,
    /// Service addresses `--clone` could not decide, described.
    pub(super) undecided: Vec<String>,
}

impl Item {
    /// A stored object about to be planned (created unless the plan decides otherwise).
    pub(super) fn stored(
        e: &Entry,
        res: ServedResource,
        object: Value,
        notes: Vec<String>,
    ) -> Item {
        Item {
            old_uid: object["metadata"]["uid"].as_str().map(str::to_string),
            owners: object["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            src_ns: e.namespace.clone(),
            src_name: e.name.clone(),
            res,
            object,
            action: Action::Create,
            reason: None,
            notes,
            live_uid: None,
            failure: None,
            sanitized_with: SanitizeOptions::default(),
            undecided: Vec::new(),
        }
    }

    /// A Namespace the restore creates because its objects go into it.
    pub(super) fn new_namespace(res: ServedResource, name: &str) -> Item {
        Item {
            res,
            old_uid: None,
            owners: Vec::new(),
            src_ns: None,
            src_name: name.to_string(),
            object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            action: Action::Create,
            reason: Some("restored objects go into it".into()),
            notes: Vec::new(),
            live_uid: None,
            failure: None,
            sanitized_with: SanitizeOptions::default(),
            undecided: Vec::new(),
        }
    }

    pub(super) fn tgt_ns(&self) -> Option<&str> {
        namespace_of(&self.object)
    }

    pub(super) fn tgt_name(&self) -> &str {
        name_of(&self.object)
    }

    /// The stored `namespace/name` when the restore moves or renames the object.
    pub(super) fn from(&self) -> Option<String> {
        let moved = self.src_ns.as_deref() != self.tgt_ns() || self.src_name != self.tgt_name();
        moved.then(|| match &self.src_ns {
            Some(ns) => format!("{ns}/{}", self.src_name),
            None => self.src_name.clone(),
        })
    }
}

/// Why an object is never restored, even though it was stored.
pub(super) fn never_restored(group: &str, kind: &str, obj: &Value) -> Option<&'static str> {
    let controller_owner = obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"].as_bool() == Some(true));
    let owner_kind = controller_owner.and_then(|o| o["kind"].as_str());
    match (group, kind, owner_kind) {
        ("", "Pod", Some(_)) => Some("its controller creates its pods again"),
        ("apps", "ReplicaSet", Some("Deployment")) => {
            Some("its Deployment creates its ReplicaSets again")
        }
        ("batch", "Job", Some("CronJob")) => Some("its CronJob creates its Jobs again"),
        ("apps", "ControllerRevision", _) => Some("controllers record their revisions again"),
        ("", "PersistentVolumeClaim", _)
            if obj["metadata"]["labels"]["coffer.dev/restore-helper"].is_string() =>
        {
            Some("a Coffer helper claim")
        }
        _ => None,
    }
}

/// The object in a version the target serves, with the served resource and notes.
pub(super) fn resolve_target(
    disc: &Discovered,
    e: &Entry,
    obj: &Value,
) -> Result<(Value, ServedResource, Vec<String>), String> {
    if let Some(r) = disc.exact(&e.api_version, &e.kind) {
        return Ok((obj.clone(), r.clone(), Vec::new()));
    }
    let served = |api_version: &str, kind: &str| disc.exact(api_version, kind).is_some();
    match crate::convert::convert_for_target(obj, &served) {
        Ok(c) => {
            let r = disc
                .exact(&c.to, &e.kind)
                .or_else(|| {
                    let kind = c.object["kind"].as_str().unwrap_or(&e.kind);
                    disc.exact(&c.to, kind)
                })
                .ok_or_else(|| {
                    format!(
                        "{UNSERVED}: converted to {} but that is not served either",
                        c.to
                    )
                })?
                .clone();
            let mut notes = vec![format!("converted from {} to {}", c.from, c.to)];
            notes.extend(c.notes);
            Ok((c.object, r, notes))
        }
        Err(err) => {
            let (group, _) = split_api_version(&e.api_version);
            if !is_builtin_group(group) && disc.by_kind(group, &e.kind).is_none() {
                Err(format!(
                    "{UNSERVED}: {} {} has no CRD in the target and none in this restore (include its CRD or install it)",
                    e.api_version, e.kind
                ))
            } else {
                Err(err.to_string())
            }
        }
    }
}

/// What [`prepare`] needs besides the object.
pub(super) struct PrepareContext<'a> {
    pub(super) opts: &'a RestoreOptions,
    pub(super) renames: &'a Renames,
    pub(super) services: &'a ServiceNames,
    pub(super) restored_pvs: &'a BTreeSet<String>,
    pub(super) sanitize_base: SanitizeOptions,
    pub(super) snapshot_id: String,
    /// The source cluster (its API server, or the import origin), for provenance.
    pub(super) source_server: String,
}

impl PrepareContext<'_> {
    pub(super) fn map_ns(&self, ns: &str) -> String {
        self.opts
            .namespace_mapping
            .get(ns)
            .cloned()
            .unwrap_or_else(|| ns.to_string())
    }
}

/// Turns a stored object into the object the target gets.
pub(super) fn prepare(it: &mut Item, cx: &PrepareContext) -> Result<(), String> {
    let (group, kind) = (it.res.group.clone(), it.res.kind.clone());
    let opts = cx.opts;
    let obj = &mut it.object;
    if !obj.get("metadata").is_some_and(Value::is_object) {
        return Err("the stored object has no metadata".into());
    }
    // Namespace mapping, also where namespaces are named inside the object.
    if let Some(ns) = it.src_ns.as_deref() {
        obj["metadata"]["namespace"] = Value::String(cx.map_ns(ns));
    }
    if group.is_empty() && kind == "Namespace" {
        obj["metadata"]["name"] = Value::String(cx.map_ns(&it.src_name));
        if let Some(l) = obj
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            l.remove("kubernetes.io/metadata.name");
        }
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            if let Some(ns) = s["namespace"].as_str().map(|n| cx.map_ns(n))
                && let Some(m) = s.as_object_mut()
            {
                m.insert("namespace".into(), Value::String(ns));
            }
        }
    }
    if let Some(ns) = obj
        .pointer("/spec/claimRef/namespace")
        .and_then(Value::as_str)
        .map(|n| cx.map_ns(n))
        && let Some(claim) = obj
            .pointer_mut("/spec/claimRef")
            .and_then(Value::as_object_mut)
    {
        claim.insert("namespace".into(), Value::String(ns));
    }
    // Clone renames: the object, the references to renamed objects, and selector labels.
    if let Some(suffix) = &opts.clone_suffix {
        let tgt_ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        if let Some(new) = cx.renames.get(&(
            group.clone(),
            kind.clone(),
            tgt_ns.clone(),
            it.src_name.clone(),
        )) {
            obj["metadata"]["name"] = Value::String(new.clone());
        }
        refs::visit_refs_mut(&group, &kind, obj, &mut |g, k, _, name| {
            let Some(n) = name.as_str() else { return };
            let scope = if k == "ClusterRole" {
                None
            } else {
                tgt_ns.clone()
            };
            if let Some(new) = cx
                .renames
                .get(&(g.to_string(), k.to_string(), scope, n.to_string()))
            {
                *name = Value::String(new.clone());
            }
        });
        if group.is_empty() && kind == "PersistentVolumeClaim" {
            // A clone never takes over the original's volume.
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
            }
        }
        suffix_selector_labels(&group, &kind, obj, suffix)?;
        let origin = provenance(&cx.source_server, it.src_ns.as_deref(), &it.src_name);
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or("the stored object has no metadata")?;
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or("metadata.annotations is not a map")?;
        annotations.insert("coffer.dev/clone-of".into(), Value::String(origin));
        annotations.insert(
            "coffer.dev/backup-id".into(),
            Value::String(cx.snapshot_id.clone()),
        );
    }
    // Service addresses in configuration follow the Services they name.
    if !cx.services.is_empty() {
        let src_ns = it.src_ns.as_deref().unwrap_or_default();
        let (n, undecided) = rewrite_object_references(&group, &kind, obj, src_ns, cx.services);
        if n > 0 {
            it.notes.push(format!(
                "{n} Service address(es) rewritten to the restored Services"
            ));
        }
        it.undecided.extend(undecided);
    }
    // Sanitise.
    let opts_here = SanitizeOptions {
        keep_status: !it.res.status_subresource && !is_builtin_group(&group),
        keep_volume_binding: group.is_empty()
            && kind == "PersistentVolumeClaim"
            && opts.clone_suffix.is_none()
            && obj["spec"]["volumeName"]
                .as_str()
                .is_some_and(|pv| cx.restored_pvs.contains(pv)),
        ..cx.sanitize_base.clone()
    };
    sanitize(&group, &kind, obj, &opts_here);
    it.sanitized_with = opts_here;
    // Transforms (matching the object as backed up: its original namespace and name, as
    // Velero's resource modifiers do), then the storage-class and registry mappings.
    if !opts.transforms.is_empty() {
        let info = ObjectInfo {
            group: &group,
            version: &it.res.version,
            kind: &kind,
            resource: &it.res.resource,
            namespace: it.src_ns.as_deref(),
            name: &it.src_name,
        };
        let applied = opts
            .transforms
            .apply(&info, obj)
            .map_err(|e| format!("transform failed: {e}"))?;
        for a in applied {
            it.notes.push(format!("transform {a}"));
        }
        // A transform may rename or move the object; keep apiVersion/kind as they are.
        if obj["apiVersion"] != Value::String(it.res.api_version())
            || obj["kind"] != Value::String(kind.clone())
        {
            return Err("a transform changed apiVersion or kind, which a restore cannot follow; use a separate rule set per kind".into());
        }
    }
    if map_storage_classes(obj, &opts.storage_class_mapping) {
        it.notes.push("storage class mapped".into());
    }
    if map_image_registries(obj, &opts.image_registry_mapping) {
        it.notes.push("image registry mapped".into());
    }
    check_addressable(&it.res, obj)
}

/// The final object must still be one the API server can address: a map with metadata,
/// a valid name, and a valid namespace exactly when the kind is namespaced.
pub(super) fn check_addressable(res: &ServedResource, obj: &Value) -> Result<(), String> {
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return Err("the object has no metadata".into());
    };
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if let Some(p) = crate::names::path_segment_problem(name) {
        return Err(format!("its name {name:?} is not valid: {p}"));
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if res.namespaced => {
            if let Some(p) = crate::names::dns_label_problem(ns) {
                return Err(format!("its namespace {ns:?} is not valid: {p}"));
            }
        }
        None if res.namespaced => return Err("it has no namespace".into()),
        _ => {}
    }
    Ok(())
}
