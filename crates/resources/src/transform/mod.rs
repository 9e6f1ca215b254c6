//! Restore-time transforms: user rules that rewrite objects before they are created, plus
//! the two built-in mappings `--storage-class-mapping` and `--image-registry-mapping`.
//!
//! This module owns the transform file formats (coffer's native format and Velero's
//! resource-modifier format, also wrapped in a Velero ConfigMap), rule matching, and
//! applying RFC 6902 JSON patches, RFC 7386 merge patches and a strategic-merge-patch
//! subset to a `serde_json::Value`. It does not own which objects are restored, namespace
//! mapping, sanitising or API-version conversion (see [`crate::convert`]), and it never
//! talks to the API server.
//!
//! Matching, Velero's quirks and the strategic merge are hand-written: Velero's behaviour
//! (how it turns `value` strings into JSON, glob `groupResource`, conditions evaluated on
//! the object as it was before the file's first rule) has to be reproduced exactly, and
//! a real strategic merge needs the Go type schemas, which no Rust crate carries. RFC 6902
//! and RFC 7386 come from the `json-patch` crate.
//!
//! # Native format
//!
//! ```yaml
//! rules:
//!   - name: scale-down-web          # optional; used in reports and errors
//!     match:                        # every condition given must hold; none = every object
//!       group: apps                 # exact API group ("" = core)
//!       version: v1                 # exact API version (rarely needed)
//!       kind: Deployment            # Kind, resource plural, or kubectl-style "deployments.apps"
//!       namespace: "prod-.*"        # regex, anchored; cluster-scoped objects have namespace ""
//!       name: "web.*"               # regex, anchored
//!       labels: {app: web}          # every label must be equal
//!       labelSelector: "tier in (a,b),!legacy"   # kubectl selector syntax
//!       conditions:                 # over the object as it is when the rule runs
//!         - path: /spec/replicas    # JSON Pointer, or dotted: .spec.containers[0].image
//!           equals: 3               # exactly one of equals / exists / matches
//!         - path: /metadata/annotations/skip
//!           exists: false
//!         - path: .spec.template.spec.containers[0].image
//!           matches: "nginx:.*"     # anchored regex over a string value
//!     jsonPatch:                    # RFC 6902, values are plain YAML
//!       - {op: replace, path: /spec/replicas, value: 1}
//!     mergePatch:                   # RFC 7386
//!       metadata: {labels: {restored: "true"}}
//!     strategicMergePatch:          # the subset described below
//!       spec: {template: {spec: {containers: [{name: web, image: web:2}]}}}
//! ```
//!
//! A rule needs at least one of `jsonPatch`, `mergePatch`, `strategicMergePatch`; they run
//! in that order. Rules run in file order and each sees the result of the ones before it.
//! A failing JSON-patch `test` operation makes the rule not apply (it is not an error);
//! any other patch failure is an error naming the rule and the object.
//!
//! # Velero format
//!
//! A file with `version: v1` and `resourceModifierRules:` is read as Velero's restore
//! resource modifiers, unchanged, with Velero's semantics: `groupResource` is a glob with
//! `.` as separator matched against `resource.group`; `resourceNameRegex` is unanchored;
//! `namespaces` is ignored for cluster-scoped objects; `matches` are JSON-patch `test`s;
//! a rule's conditions see the object as it was before the first rule of its file; only
//! the first non-empty of `patches`, `mergePatches`, `strategicPatches` is applied; every
//! `value` is turned into JSON text exactly as Velero does (see [`velero_json_value`]).
//! A Velero ConfigMap (`kind: ConfigMap`, rules YAML in its single `data` key) is read too.
//! Known differences: YAML 1.1-only scalars (`yes`, `on`) are YAML 1.2 strings here; a
//! `value` given as a YAML map or list is accepted as that JSON value (Velero rejects it);
//! a strategic patch on a kind unknown to Velero's scheme is applied here, not rejected.
//!
//! # Strategic merge patch subset
//!
//! Objects merge as in a JSON merge patch (`null` deletes a key). Lists merge by key,
//! whatever the kind, for these field names: `containers`, `initContainers`,
//! `ephemeralContainers`, `volumes`, `imagePullSecrets`, `env`, `resourceClaims` by `name`;
//! `volumeMounts` by `mountPath`; `volumeDevices` by `devicePath`; `ports` by
//! `containerPort` inside a container and by `port` elsewhere (Service); `hostAliases` by
//! `ip`; `topologySpreadConstraints` by `topologyKey`; `ownerReferences` by `uid`;
//! `conditions` by `type`; `volumeClaimTemplates` by `metadata.name`. `finalizers` merges
//! as a set. Other lists are replaced. Directives: `$patch: delete` on a list item or map,
//! `$patch: replace` on a map or as a list item (replaces the whole list), `$patch: merge`,
//! `$retainKeys`, `$deleteFromPrimitiveList/<field>`; `$setElementOrder/<field>` is
//! accepted and ignored (order is not changed). Not supported: kind-specific merge keys
//! beyond the list above, `$patch: delete` on the whole object, and schema validation of
//! the patch (unknown fields are merged in as written).
//!
//! The pieces: [`engine`](self) runs rules over an object (matching, JSON and merge patches,
//! the required-field check); `native` and `velero` read the two file formats into rules;
//! `strategic` is the strategic merge; `mappings` holds the built-in storage-class and
//! image-registry mappings.

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

mod engine;
mod mappings;
mod native;
mod strategic;
mod velero;

use engine::Rule;
pub use mappings::{
    map_image, map_image_registries, map_storage_classes, normalize_image, parse_mapping,
};
use native::parse_native;
pub use strategic::strategic_merge;
use velero::parse_velero;
pub use velero::velero_json_value;

#[cfg(test)]
use {
    mappings::LEGACY_SC_ANNOTATION,
    native::to_pointer,
    std::collections::BTreeMap,
    velero::{glob_regex, velero_test},
};

/// What the caller knows about the object being restored: its identity as backed up (the
/// namespace before any namespace mapping, as Velero also matches).
#[derive(Debug, Clone, Copy)]
pub struct ObjectInfo<'a> {
    /// The API group ("" for the core group).
    pub group: &'a str,
    /// The API version.
    pub version: &'a str,
    /// The kind.
    pub kind: &'a str,
    /// Plural resource name, e.g. `deployments`.
    pub resource: &'a str,
    /// The namespace as backed up (None for cluster-scoped objects).
    pub namespace: Option<&'a str>,
    /// The name as backed up.
    pub name: &'a str,
}

impl ObjectInfo<'_> {
    /// `resource.group`, or just `resource` for the core group, as Velero names it.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn namespace(&self) -> &str {
        self.namespace.unwrap_or("")
    }
}

impl fmt::Display for ObjectInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} {}", self.version, self.kind)?;
        } else {
            write!(f, "{}/{} {}", self.group, self.version, self.kind)?;
        }
        match self.namespace {
            Some(ns) if !ns.is_empty() => write!(f, " {ns}/{}", self.name),
            _ => write!(f, " {}", self.name),
        }
    }
}

/// An ordered list of transform rules, read from one or more files.
#[derive(Debug, Clone, Default)]
pub struct TransformSet {
    rules: Vec<Rule>,
    /// Number of files (documents) read, so that extended sets keep distinct file ids.
    files: usize,
}

impl TransformSet {
    /// Parses one transform file. Accepts coffer's native format, Velero's resource
    /// modifier format (`version: v1`, `resourceModifierRules:`) unchanged, a Velero
    /// ConfigMap holding either in its single data key, and several of these as YAML
    /// documents separated by `---`. `source_name` (usually the file name) appears in
    /// reports and errors.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<TransformSet, Error> {
        let mut set = TransformSet::default();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let mut yaml = serde_yaml::Value::deserialize(doc)
                .map_err(|e| Error::Invalid(format!("{source_name}: not valid YAML: {e}")))?;
            if yaml.is_null() {
                continue;
            }
            yaml.apply_merge().map_err(|e| {
                Error::Invalid(format!("{source_name}: bad YAML merge key (<<): {e}"))
            })?;
            let value = serde_json::to_value(&yaml).map_err(|e| {
                Error::Invalid(format!(
                    "{source_name}: cannot be read as JSON-compatible YAML ({e}); use string map keys"
                ))
            })?;
            let source = if i == 0 {
                source_name.to_string()
            } else {
                format!("{source_name} document {}", i + 1)
            };
            set.extend(parse_document(&value, &source)?);
        }
        Ok(set)
    }

    /// Appends `other`'s rules after this set's rules.
    pub fn extend(&mut self, other: TransformSet) {
        let base = self.files;
        self.rules.extend(other.rules.into_iter().map(|mut r| {
            r.file += base;
            r
        }));
        self.files += other.files;
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Applies every matching rule in order and returns the labels (name, or file and
    /// index) of the rules that applied. A failing patch is an error naming the rule and
    /// the object; the object is then left as the earlier rules made it.
    pub fn apply(&self, info: &ObjectInfo, obj: &mut Value) -> Result<Vec<String>, Error> {
        engine::apply_rules(&self.rules, info, obj)
    }
}

fn parse_document(value: &Value, source: &str) -> Result<TransformSet, Error> {
    let Some(top) = value.as_object() else {
        return Err(Error::Invalid(format!(
            "{source}: a transform file must be a YAML mapping with `rules:` (coffer) or `version: v1` and `resourceModifierRules:` (Velero)"
        )));
    };
    if top.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        return parse_configmap(top, source);
    }
    let rules = if top.contains_key("resourceModifierRules") || top.contains_key("version") {
        if top.contains_key("rules") {
            return Err(Error::Invalid(format!(
                "{source}: has both `rules` (coffer format) and Velero keys; split them into two files"
            )));
        }
        parse_velero(value, source)?
    } else if top.contains_key("rules") {
        parse_native(value, source)?
    } else {
        let keys: Vec<&str> = top.keys().map(String::as_str).collect();
        return Err(Error::Invalid(format!(
            "{source}: not a transform file (top-level keys {keys:?}); expected `rules:` (coffer format) or `version: v1` with `resourceModifierRules:` (Velero format)"
        )));
    };
    Ok(TransformSet { rules, files: 1 })
}

fn parse_configmap(top: &Map<String, Value>, source: &str) -> Result<TransformSet, Error> {
    let name = top
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let data = top.get("data").and_then(Value::as_object);
    let Some(data) = data.filter(|d| d.len() == 1) else {
        let n = data.map_or(0, Map::len);
        return Err(Error::Invalid(format!(
            "{source}: ConfigMap {name} must have exactly one data key holding the rules YAML (as Velero requires), it has {n}"
        )));
    };
    let Some((key, text)) = data.iter().next() else {
        return Err(Error::Invalid(format!(
            "{source}: ConfigMap {name} has no data key"
        )));
    };
    let Some(text) = text.as_str() else {
        return Err(Error::Invalid(format!(
            "{source}: ConfigMap {name} data key {key:?} must be a string holding the rules YAML"
        )));
    };
    TransformSet::from_yaml(text, &format!("{source} (ConfigMap {name} key {key})"))
}

/// Deserializes with the path of the failing field in the message.
fn typed<T: DeserializeOwned>(value: &Value, source: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::Invalid(format!("{source}: {inner}"))
        } else {
            Error::Invalid(format!("{source}: {path}: {inner}"))
        }
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
