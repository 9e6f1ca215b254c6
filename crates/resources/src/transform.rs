//! Restore-time transforms: rules that match objects and patch them, in Coffer's own
//! format or in Velero's resource-modifier format unchanged; plus the storage-class and
//! image-registry mappings.
//!
//! JSON Patch (RFC 6902) and merge patch (RFC 7386) come from the `json-patch` crate.
//! Strategic merge patch has no Rust implementation outside Kubernetes' Go code, so a
//! faithful subset is written here: maps merge as in a merge patch, and the lists that
//! Kubernetes merges by key (containers, volumes, env, ports, volume mounts, ...) merge
//! item by item, honouring `$patch: delete` and `$patch: replace`. Other lists are
//! replaced, as in a merge patch. docs/transforms.md describes both formats.
//!
//! Coffer's format:
//! ```yaml
//! rules:
//!   - name: one-replica            # optional; reports name the rule
//!     match:                       # every condition given must hold
//!       group: apps                # exact ("" is the core group)
//!       kind: Deployment           # kind, or a kubectl resource name (deployments.apps)
//!       namespace: "prod-.*"       # regex, anchored
//!       name: "web.*"              # regex, anchored
//!       labels: {app: web}         # equality; or labelSelector: "app=web,tier in (a,b)"
//!       conditions:                # over the object
//!         - path: /spec/replicas   # JSON Pointer, or dotted .spec.replicas
//!           equals: 3              # or exists: true|false, or matches: "regex"
//!     jsonPatch: [{op: replace, path: /spec/replicas, value: 1}]
//!     mergePatch: {metadata: {labels: {restored: "true"}}}
//! ```

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::selector::{self, LabelSelector};
use crate::{Error, Result};

/// What a rule sees of an object besides its content.
pub struct ObjectInfo<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// Plural resource name ("deployments").
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

#[derive(Clone, Debug)]
enum Condition {
    Equals(String, Value),
    Exists(String, bool),
    Matches(String, Regex),
    /// Velero's `matches`: a JSON Patch `test` operation.
    Test(json_patch::PatchOperation),
}

#[derive(Clone, Debug, Default)]
struct Matcher {
    group: Option<String>,
    kind: Option<String>,
    /// Velero's groupResource glob ("deployments.apps", "*").
    group_resource: Option<Regex>,
    namespace: Option<Regex>,
    namespaces: Vec<String>,
    name: Option<Regex>,
    labels: Option<LabelSelector>,
    conditions: Vec<Condition>,
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    matcher: Matcher,
    json_patch: Vec<json_patch::PatchOperation>,
    merge_patches: Vec<Value>,
    strategic_patches: Vec<Value>,
}

/// An ordered list of rules from one or more files.
#[derive(Clone, Debug, Default)]
pub struct TransformSet {
    rules: Vec<Rule>,
}

// --- Coffer's format -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeFile {
    rules: Vec<NativeRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeRule {
    name: Option<String>,
    #[serde(rename = "match", default)]
    matcher: NativeMatch,
    #[serde(default)]
    json_patch: Vec<Value>,
    merge_patch: Option<Value>,
    strategic_merge_patch: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeMatch {
    group: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    label_selector: Option<String>,
    #[serde(default)]
    conditions: Vec<NativeCondition>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeCondition {
    path: String,
    equals: Option<Value>,
    exists: Option<bool>,
    matches: Option<String>,
}

// --- Velero's format ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VeleroFile {
    version: String,
    resource_modifier_rules: Vec<VeleroRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VeleroRule {
    conditions: VeleroConditions,
    #[serde(default)]
    patches: Vec<VeleroPatch>,
    #[serde(default)]
    merge_patches: Vec<VeleroPatchData>,
    #[serde(default)]
    strategic_patches: Vec<VeleroPatchData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VeleroConditions {
    #[serde(default)]
    namespaces: Vec<String>,
    group_resource: String,
    resource_name_regex: Option<String>,
    label_selector: Option<Value>,
    #[serde(default)]
    matches: Vec<VeleroMatch>,
}

#[derive(Deserialize)]
struct VeleroMatch {
    path: String,
    value: Value,
}

#[derive(Deserialize)]
struct VeleroPatch {
    operation: String,
    #[serde(default)]
    from: String,
    path: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VeleroPatchData {
    patch_data: String,
}

/// Velero's rule for a patch value given as a string: quoted means a string, `null`,
/// booleans, numbers, objects and arrays are JSON, anything else is a string.
fn velero_value(v: &Value) -> Value {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => return Value::String(String::new()),
        other => return other.clone(),
    };
    if s.is_empty() {
        return Value::String(s);
    }
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        return Value::String(s[1..s.len() - 1].to_string());
    }
    serde_json::from_str(&s).unwrap_or(Value::String(s))
}

fn pointer_of(path: &str) -> String {
    if path.starts_with('/') || path.is_empty() {
        path.to_string()
    } else {
        // Dotted form: .spec.replicas or spec.template.spec.containers.0.image
        let p: Vec<String> = path
            .trim_start_matches('.')
            .split('.')
            .map(|s| s.replace('~', "~0").replace('/', "~1"))
            .collect();
        format!("/{}", p.join("/"))
    }
}

fn anchored(re: &str, what: &str, rule: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| Error::Invalid(format!("{rule}: {what} regex {re:?} is invalid: {e}")))
}

fn parse_ops(ops: Vec<Value>, rule: &str) -> Result<Vec<json_patch::PatchOperation>> {
    serde_json::from_value::<json_patch::Patch>(Value::Array(ops))
        .map(|p| p.0)
        .map_err(|e| Error::Invalid(format!("{rule}: not a valid JSON Patch: {e}")))
}

/// A glob over "resource.group" where `*` does not cross dots, as Velero matches
/// `groupResource`; a lone `*` matches everything.
fn group_resource_glob(glob: &str, rule: &str) -> Result<Regex> {
    if glob == "*" {
        return Ok(Regex::new(".*").expect("valid"));
    }
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str("[^.]*"),
            '?' => re.push_str("[^.]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re)
        .map_err(|e| Error::Invalid(format!("{rule}: groupResource {glob:?} is invalid: {e}")))
}

impl TransformSet {
    /// Parses one file: Coffer's format, Velero's resource-modifier format, or a Velero
    /// ConfigMap holding the latter in its data.
    pub fn from_yaml(text: &str, source: &str) -> Result<TransformSet> {
        let doc: Value = serde_yaml::from_str(text)
            .map_err(|e| Error::Invalid(format!("{source}: not valid YAML: {e}")))?;
        if doc["kind"] == "ConfigMap" {
            let data = doc["data"]
                .as_object()
                .filter(|d| d.len() == 1)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{source}: a resource-modifier ConfigMap must hold exactly one data key"
                    ))
                })?;
            let inner = data
                .values()
                .next()
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Self::from_yaml(inner, source);
        }
        if doc.get("resourceModifierRules").is_some() {
            let f: VeleroFile = serde_json::from_value(doc).map_err(|e| {
                Error::Invalid(format!(
                    "{source}: not a valid Velero resource-modifier file: {e}"
                ))
            })?;
            return Self::from_velero(f, source);
        }
        let f: NativeFile = serde_json::from_value(doc).map_err(|e| {
            Error::Invalid(format!(
                "{source}: not a transform file ({e}); see docs/transforms.md"
            ))
        })?;
        let mut rules = Vec::new();
        for (i, r) in f.rules.into_iter().enumerate() {
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| format!("rule {} of {source}", i + 1));
            let m = r.matcher;
            let mut conditions = Vec::new();
            for c in m.conditions {
                let p = pointer_of(&c.path);
                conditions.push(match (c.equals, c.exists, c.matches) {
                    (Some(v), None, None) => Condition::Equals(p, v),
                    (None, Some(e), None) => Condition::Exists(p, e),
                    (None, None, Some(re)) => {
                        Condition::Matches(p, anchored(&re, "matches", &name)?)
                    }
                    _ => {
                        return Err(Error::Invalid(format!(
                            "{name}: condition on {} needs exactly one of equals, exists, matches",
                            c.path
                        )));
                    }
                });
            }
            let labels = match (m.labels, m.label_selector) {
                (Some(_), Some(_)) => {
                    return Err(Error::Invalid(format!(
                        "{name}: give labels or labelSelector, not both"
                    )));
                }
                (Some(l), None) => Some(LabelSelector::from_k8s(
                    &serde_json::json!({"matchLabels": l}),
                )?),
                (None, Some(s)) => Some(selector::parse(&s)?),
                (None, None) => None,
            };
            rules.push(Rule {
                matcher: Matcher {
                    group: m.group,
                    kind: m.kind,
                    namespace: m
                        .namespace
                        .map(|n| anchored(&n, "namespace", &name))
                        .transpose()?,
                    name: m.name.map(|n| anchored(&n, "name", &name)).transpose()?,
                    labels,
                    conditions,
                    ..Default::default()
                },
                json_patch: parse_ops(r.json_patch, &name)?,
                merge_patches: r.merge_patch.into_iter().collect(),
                strategic_patches: r.strategic_merge_patch.into_iter().collect(),
                name,
            });
        }
        Ok(TransformSet { rules })
    }

    fn from_velero(f: VeleroFile, source: &str) -> Result<TransformSet> {
        if f.version != "v1" {
            return Err(Error::Invalid(format!(
                "{source}: resource-modifier version {:?} is not supported (v1 is)",
                f.version
            )));
        }
        let mut rules = Vec::new();
        for (i, r) in f.resource_modifier_rules.into_iter().enumerate() {
            let name = format!("resourceModifierRules[{i}] of {source}");
            let c = r.conditions;
            let tests: Vec<Value> = c
                .matches
                .iter()
                .map(|m| serde_json::json!({"op": "test", "path": m.path, "value": velero_value(&m.value)}))
                .collect();
            let ops: Vec<Value> = r
                .patches
                .iter()
                .map(|p| {
                    let mut op = serde_json::json!({"op": p.operation, "path": p.path});
                    if !p.from.is_empty() {
                        op["from"] = Value::String(p.from.clone());
                    }
                    if matches!(p.operation.as_str(), "add" | "replace" | "test") {
                        op["value"] = velero_value(&p.value);
                    }
                    op
                })
                .collect();
            let patch_data = |d: &VeleroPatchData| -> Result<Value> {
                serde_yaml::from_str(&d.patch_data).map_err(|e| {
                    Error::Invalid(format!("{name}: patchData is not YAML or JSON: {e}"))
                })
            };
            rules.push(Rule {
                matcher: Matcher {
                    group_resource: Some(group_resource_glob(&c.group_resource, &name)?),
                    namespaces: c.namespaces,
                    // Velero matches resourceNameRegex unanchored (Go's MatchString).
                    name: c
                        .resource_name_regex
                        .as_deref()
                        .map(|re| {
                            Regex::new(re).map_err(|e| {
                                Error::Invalid(format!(
                                    "{name}: resourceNameRegex {re:?} is invalid: {e}"
                                ))
                            })
                        })
                        .transpose()?,
                    labels: c
                        .label_selector
                        .as_ref()
                        .map(LabelSelector::from_k8s)
                        .transpose()?,
                    conditions: parse_ops(tests, &name)?
                        .into_iter()
                        .map(Condition::Test)
                        .collect(),
                    ..Default::default()
                },
                json_patch: parse_ops(ops, &name)?,
                merge_patches: r
                    .merge_patches
                    .iter()
                    .map(patch_data)
                    .collect::<Result<_>>()?,
                strategic_patches: r
                    .strategic_patches
                    .iter()
                    .map(patch_data)
                    .collect::<Result<_>>()?,
                name,
            });
        }
        Ok(TransformSet { rules })
    }

    pub fn extend(&mut self, other: TransformSet) {
        self.rules.extend(other.rules);
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Applies every matching rule in order; returns the names of those that applied.
    pub fn apply(&self, info: &ObjectInfo, obj: &mut Value) -> Result<Vec<String>> {
        let mut applied = Vec::new();
        for r in &self.rules {
            if !r.matcher.matches(info, obj) {
                continue;
            }
            let what = || match info.namespace {
                Some(ns) => format!("{} {ns}/{}", info.kind, info.name),
                None => format!("{} {}", info.kind, info.name),
            };
            if !r.json_patch.is_empty() {
                json_patch::patch(obj, &r.json_patch).map_err(|e| {
                    Error::Invalid(format!("{}: JSON Patch failed on {}: {e}", r.name, what()))
                })?;
            }
            for m in &r.merge_patches {
                json_patch::merge(obj, m);
            }
            for s in &r.strategic_patches {
                strategic_merge(obj, s, "");
            }
            applied.push(r.name.clone());
        }
        Ok(applied)
    }
}

impl Matcher {
    fn matches(&self, info: &ObjectInfo, obj: &Value) -> bool {
        if self.group.as_deref().is_some_and(|g| g != info.group) {
            return false;
        }
        if let Some(k) = &self.kind {
            let (base, q) = k.split_once('.').unwrap_or((k, ""));
            let kind_ok = base == info.kind
                || base.eq_ignore_ascii_case(info.resource)
                || base.eq_ignore_ascii_case(info.kind);
            if !kind_ok || (!q.is_empty() && q != info.group) {
                return false;
            }
        }
        if let Some(g) = &self.group_resource {
            let gr = if info.group.is_empty() {
                info.resource.to_string()
            } else {
                format!("{}.{}", info.resource, info.group)
            };
            if !g.is_match(&gr) {
                return false;
            }
        }
        if !self.namespaces.is_empty()
            && !info
                .namespace
                .is_some_and(|ns| self.namespaces.iter().any(|n| n == ns))
        {
            return false;
        }
        if let Some(re) = &self.namespace
            && !re.is_match(info.namespace.unwrap_or_default())
        {
            return false;
        }
        if self.name.as_ref().is_some_and(|re| !re.is_match(info.name)) {
            return false;
        }
        if self.labels.as_ref().is_some_and(|l| !l.matches_object(obj)) {
            return false;
        }
        self.conditions.iter().all(|c| match c {
            Condition::Equals(p, v) => obj.pointer(p) == Some(v),
            Condition::Exists(p, e) => obj.pointer(p).is_some() == *e,
            Condition::Matches(p, re) => obj
                .pointer(p)
                .and_then(Value::as_str)
                .is_some_and(|s| re.is_match(s)),
            Condition::Test(op) => {
                let mut copy = obj.clone();
                json_patch::patch(&mut copy, std::slice::from_ref(op)).is_ok()
            }
        })
    }
}

/// The merge key of the lists Kubernetes merges item by item, by the list's field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases" => {
            if field == "hostAliases" {
                "ip"
            } else {
                "name"
            }
        }
        "volumeMounts" | "volumeDevices" => "mountPath",
        "ports" => "containerPort",
        "tolerations" => "key",
        _ => return None,
    })
}

/// A strategic merge patch over `doc` (see the module doc for what is supported).
pub fn strategic_merge(doc: &mut Value, patch: &Value, field: &str) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut p = p.clone();
                p.remove("$patch");
                *d = p;
                return;
            }
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    d.remove(k);
                } else if let Some(existing) = d.get_mut(k) {
                    strategic_merge(existing, v, k);
                } else {
                    let mut fresh = Value::Null;
                    strategic_merge(&mut fresh, v, k);
                    d.insert(k.clone(), fresh);
                }
            }
        }
        (Value::Array(d), Value::Array(p)) if merge_key(field).is_some() => {
            let key = merge_key(field).expect("checked");
            for item in p {
                let directive = item.get("$patch").and_then(Value::as_str);
                let pos = d
                    .iter()
                    .position(|x| x.get(key).is_some() && x.get(key) == item.get(key));
                match (directive, pos) {
                    (Some("delete"), Some(i)) => {
                        d.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => strategic_merge(&mut d[i], item, ""),
                    (_, None) => {
                        let mut fresh = Value::Null;
                        strategic_merge(&mut fresh, item, "");
                        d.push(fresh);
                    }
                }
            }
        }
        (d, p) => {
            // Scalars, plain lists and new subtrees replace; directives are stripped.
            let mut p = p.clone();
            strip_directives(&mut p);
            *d = p;
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// `--storage-class-mapping`: PVCs, PVs, StatefulSet claim templates and the legacy
/// annotation. Returns whether anything changed.
pub fn map_storage_classes(obj: &mut Value, mapping: &BTreeMap<String, String>) -> bool {
    if mapping.is_empty() {
        return false;
    }
    let mut changed = false;
    let mut map_at = |v: Option<&mut Value>| {
        if let Some(v) = v
            && let Some(new) = v.as_str().and_then(|s| mapping.get(s))
        {
            *v = Value::String(new.clone());
            changed = true;
        }
    };
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    match kind.as_str() {
        "PersistentVolumeClaim" | "PersistentVolume" => {
            map_at(obj.pointer_mut("/spec/storageClassName"));
            map_at(
                obj.pointer_mut("/metadata/annotations/volume.beta.kubernetes.io~1storage-class"),
            );
        }
        "StatefulSet" => {
            if let Some(ts) = obj
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for t in ts {
                    map_at(t.pointer_mut("/spec/storageClassName"));
                    map_at(t.pointer_mut(
                        "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
                    ));
                }
            }
        }
        _ => {}
    }
    changed
}

/// Splits an image reference into (registry, rest), making Docker Hub explicit:
/// "nginx:1" is ("docker.io", "library/nginx:1").
fn split_image(image: &str) -> (String, String) {
    match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        Some(_) => ("docker.io".to_string(), image.to_string()),
        None => ("docker.io".to_string(), format!("library/{image}")),
    }
}

/// `--image-registry-mapping OLD=NEW` where OLD is a registry host or host/path prefix
/// (Docker Hub images count as docker.io/library/...). Returns whether anything changed.
pub fn map_image_registries(obj: &mut Value, mapping: &BTreeMap<String, String>) -> bool {
    if mapping.is_empty() {
        return false;
    }
    let group = crate::discovery::split_api_version(obj["apiVersion"].as_str().unwrap_or_default())
        .0
        .to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let Some(spec) = crate::refs::pod_spec_mut(&group, &kind, obj) else {
        return false;
    };
    let mut changed = false;
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(image) = c["image"].as_str() else {
                continue;
            };
            let (registry, rest) = split_image(image);
            let full = format!("{registry}/{rest}");
            // The longest matching prefix wins.
            let best = mapping
                .iter()
                .filter(|(old, _)| {
                    full == **old || full.starts_with(&format!("{}/", old.trim_end_matches('/')))
                })
                .max_by_key(|(old, _)| old.len());
            if let Some((old, new)) = best {
                let tail = &full[old.trim_end_matches('/').len()..];
                c["image"] = Value::String(format!("{}{tail}", new.trim_end_matches('/')));
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info<'a>(
        kind: &'a str,
        resource: &'a str,
        group: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> ObjectInfo<'a> {
        ObjectInfo {
            group,
            version: "v1",
            kind,
            resource,
            namespace: Some(ns),
            name,
        }
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web-1", "namespace": "prod-a", "labels": {"app": "web"}},
               "spec": {"replicas": 3, "template": {"spec": {"containers": [
                   {"name": "app", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}]},
                   {"name": "side", "image": "quay.io/org/side:2"}]}}}})
    }

    #[test]
    fn native_rules_match_and_patch() {
        let t = TransformSet::from_yaml(
            r#"
rules:
  - name: one-replica
    match:
      group: apps
      kind: Deployment
      namespace: "prod-.*"
      name: "web.*"
      labels: {app: web}
      conditions:
        - {path: /spec/replicas, equals: 3}
        - {path: .spec.template.spec.containers.0.image, matches: "nginx:.*"}
    jsonPatch:
      - {op: replace, path: /spec/replicas, value: 1}
    mergePatch: {metadata: {labels: {restored: "true"}}}
  - name: never
    match: {kind: StatefulSet}
    mergePatch: {spec: {replicas: 0}}
  - name: not-in-prod-b
    match: {namespace: "prod-b"}
    mergePatch: {spec: {replicas: 0}}
"#,
            "t.yaml",
        )
        .unwrap();
        let mut d = deployment();
        let applied = t
            .apply(
                &info("Deployment", "deployments", "apps", "prod-a", "web-1"),
                &mut d,
            )
            .unwrap();
        assert_eq!(applied, vec!["one-replica"]);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["metadata"]["labels"],
            json!({"app": "web", "restored": "true"})
        );
        // Conditions no longer hold after the patch: applying again changes nothing more.
        let mut again = d.clone();
        t.apply(
            &info("Deployment", "deployments", "apps", "prod-a", "web-1"),
            &mut again,
        )
        .unwrap();
        assert_eq!(again, d);
        // The namespace regex is anchored: "xprod-a" does not match.
        let mut other = deployment();
        let applied = t
            .apply(
                &info("Deployment", "deployments", "apps", "xprod-a", "web-1"),
                &mut other,
            )
            .unwrap();
        assert!(applied.is_empty());
    }

    #[test]
    fn velero_format_unchanged() {
        let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
    resourceNameRegex: "^web-.*$"
    namespaces: [prod-a, prod-b]
    labelSelector:
      matchLabels: {app: web}
    matches:
    - path: /spec/replicas
      value: "3"
  patches:
  - operation: replace
    path: /spec/replicas
    value: "1"
  - operation: add
    path: /metadata/labels/version
    value: "\"2\""
  - operation: add
    path: /metadata/annotations
    value: '{"a": "b"}'
  - operation: replace
    path: /spec/template/spec/containers/0/image
    value: nginx:1.26
  mergePatches:
  - patchData: |
      {"metadata": {"labels": {"merged": "yes"}}}
  strategicPatches:
  - patchData: |
      spec:
        template:
          spec:
            containers:
            - name: app
              env:
              - name: B
                value: "2"
            - name: side
              $patch: delete
- conditions:
    groupResource: "*"
  patches:
  - operation: add
    path: /metadata/labels/everyone
    value: "true"
"#;
        let t = TransformSet::from_yaml(text, "velero.yaml").unwrap();
        let mut d = deployment();
        let applied = t
            .apply(
                &info("Deployment", "deployments", "apps", "prod-a", "web-1"),
                &mut d,
            )
            .unwrap();
        assert_eq!(applied.len(), 2);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["metadata"]["labels"]["version"], "2");
        assert_eq!(d["metadata"]["labels"]["merged"], "yes");
        assert_eq!(d["metadata"]["labels"]["everyone"], true);
        assert_eq!(d["metadata"]["annotations"], json!({"a": "b"}));
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["image"], "nginx:1.26");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        // The same rules wrapped in a ConfigMap, as Velero users keep them.
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: mods}}\ndata:\n  rules.yaml: |\n{}",
            text.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let t2 = TransformSet::from_yaml(&cm, "cm.yaml").unwrap();
        let mut d2 = deployment();
        t2.apply(
            &info("Deployment", "deployments", "apps", "prod-a", "web-1"),
            &mut d2,
        )
        .unwrap();
        assert_eq!(d2, d);
        // groupResource does not match another group's resource.
        let mut svc = json!({"kind": "Service", "metadata": {"name": "web-1", "labels": {"app": "web"}}, "spec": {"replicas": 3}});
        let applied = t
            .apply(
                &info("Service", "services", "", "prod-a", "web-1"),
                &mut svc,
            )
            .unwrap();
        assert_eq!(applied, vec!["resourceModifierRules[1] of velero.yaml"]);
    }

    #[test]
    fn errors_name_the_rule() {
        let t = TransformSet::from_yaml(
            "rules:\n- name: bad-path\n  jsonPatch: [{op: replace, path: /spec/nothing/here, value: 1}]\n",
            "t.yaml",
        )
        .unwrap();
        let mut d = deployment();
        let e = t
            .apply(
                &info("Deployment", "deployments", "apps", "prod-a", "web-1"),
                &mut d,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad-path") && e.contains("prod-a/web-1"), "{e}");
        let e = TransformSet::from_yaml("rules:\n- match: {name: \"(\"}\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule 1 of t.yaml") && e.contains("regex"), "{e}");
        let e = TransformSet::from_yaml("rules:\n- mach: {}\n", "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mach"), "{e}");
        let e = TransformSet::from_yaml("version: v2\nresourceModifierRules: []\n", "v.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("v2"), "{e}");
    }

    #[test]
    fn storage_classes_and_registries() {
        let m: BTreeMap<String, String> = [("standard".to_string(), "fast".to_string())].into();
        let mut pvc =
            json!({"kind": "PersistentVolumeClaim", "spec": {"storageClassName": "standard"}});
        assert!(map_storage_classes(&mut pvc, &m));
        assert_eq!(pvc["spec"]["storageClassName"], "fast");
        let mut sts = json!({"kind": "StatefulSet", "spec": {"volumeClaimTemplates": [
            {"spec": {"storageClassName": "standard"}}, {"spec": {"storageClassName": "other"}}]}});
        assert!(map_storage_classes(&mut sts, &m));
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][1]["spec"]["storageClassName"],
            "other"
        );

        let r: BTreeMap<String, String> = [
            ("docker.io".to_string(), "mirror.local".to_string()),
            ("quay.io/org".to_string(), "reg.local/quay".to_string()),
        ]
        .into();
        let mut d = deployment();
        assert!(map_image_registries(&mut d, &r));
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "mirror.local/library/nginx:1.25");
        assert_eq!(c[1]["image"], "reg.local/quay/side:2");
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert!(!map_image_registries(&mut cm, &r));
    }
}
