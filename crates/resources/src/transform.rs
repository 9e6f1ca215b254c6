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

use std::collections::BTreeMap;
use std::fmt;

use json_patch::PatchOperation;
use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;
use crate::selector::{self, LabelSelector};

/// What the caller knows about the object being restored: its identity as backed up (the
/// namespace before any namespace mapping, as Velero also matches).
#[derive(Debug, Clone, Copy)]
pub struct ObjectInfo<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// Plural resource name, e.g. `deployments`.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
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

#[derive(Debug, Clone)]
struct Rule {
    /// Reported when the rule applies: the rule's name, or its location.
    label: String,
    /// `source rules[i]` or `source resourceModifierRules[i]`.
    location: String,
    /// Which file the rule came from; Velero rules match the object as it was before the
    /// first rule of their file.
    file: usize,
    matcher: Matcher,
    actions: Vec<Action>,
}

impl Rule {
    fn what(&self) -> String {
        if self.label == self.location {
            format!("transform {}", self.location)
        } else {
            format!("transform rule {:?} ({})", self.label, self.location)
        }
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    Native(NativeMatch),
    Velero(VeleroMatch),
}

#[derive(Debug, Clone, Default)]
struct NativeMatch {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    namespace: Option<Regex>,
    name: Option<Regex>,
    labels: BTreeMap<String, String>,
    selector: Option<LabelSelector>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    pointer: String,
    test: ConditionTest,
}

#[derive(Debug, Clone)]
enum ConditionTest {
    Equals(Value),
    Exists(bool),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct VeleroMatch {
    namespaces: Vec<String>,
    group_resource: Regex,
    name: Option<Regex>,
    selector: Option<LabelSelector>,
    /// `matches` entries as (JSON pointer, expected value).
    tests: Vec<(String, Value)>,
}

#[derive(Debug, Clone)]
enum Action {
    Json(Vec<PatchOperation>),
    Merge(Value),
    Strategic(Value),
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
        let mut applied = Vec::new();
        // Velero evaluates a file's conditions on the object as it was before that file.
        let mut snapshot: Option<(usize, Value)> = None;
        for rule in &self.rules {
            let matched = match &rule.matcher {
                Matcher::Native(m) => m.matches(info, obj),
                Matcher::Velero(m) => {
                    if snapshot.as_ref().map(|(f, _)| *f) != Some(rule.file) {
                        snapshot = Some((rule.file, obj.clone()));
                    }
                    let (_, before) = snapshot.as_ref().expect("snapshot was just set");
                    m.matches(info, before)
                }
            };
            if !matched {
                continue;
            }
            let mut work = obj.clone();
            let mut skipped = false;
            for action in &rule.actions {
                match action {
                    Action::Json(ops) => match apply_json_patch(&mut work, ops) {
                        Ok(()) => {}
                        Err(JsonPatchFailure::TestFailed) => {
                            skipped = true;
                            break;
                        }
                        Err(JsonPatchFailure::Failed(msg)) => {
                            return Err(Error::Invalid(format!(
                                "{}: jsonPatch failed on {info}: {msg}; fix the path or narrow the rule's match",
                                rule.what()
                            )));
                        }
                    },
                    Action::Merge(p) => json_patch::merge(&mut work, p),
                    Action::Strategic(p) => strategic_merge(&mut work, p).map_err(|msg| {
                        Error::Invalid(format!(
                            "{}: strategic merge patch failed on {info}: {msg}",
                            rule.what()
                        ))
                    })?,
                }
            }
            if !skipped {
                *obj = work;
                applied.push(rule.label.clone());
            }
        }
        Ok(applied)
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

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
    let (key, text) = data.iter().next().expect("one key");
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

/// `Some(value)` even for `null`, so that `equals: null` differs from no `equals`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeFile {
    rules: Option<Vec<NativeRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeRule {
    name: Option<String>,
    #[serde(rename = "match")]
    matches: Option<NativeMatchSpec>,
    json_patch: Option<Vec<Value>>,
    merge_patch: Option<Value>,
    strategic_merge_patch: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NativeMatchSpec {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    label_selector: Option<String>,
    conditions: Option<Vec<NativeCondition>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeCondition {
    path: String,
    #[serde(default, deserialize_with = "present")]
    equals: Option<Value>,
    exists: Option<bool>,
    matches: Option<String>,
}

fn anchored(re: &str, what: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        format!(
            "{what} regex {re:?} is invalid ({})",
            one_line(&e.to_string())
        )
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_native(value: &Value, source: &str) -> Result<Vec<Rule>, Error> {
    let file: NativeFile = typed(value, source)?;
    let rules = file.rules.unwrap_or_default();
    if rules.is_empty() {
        return Err(Error::Invalid(format!(
            "{source}: `rules` is empty; add at least one rule or drop the file"
        )));
    }
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let location = format!("{source} rules[{i}]");
            let label = r.name.clone().unwrap_or_else(|| location.clone());
            let what = match &r.name {
                Some(n) => format!("{source}: rule {n:?} (rules[{i}])"),
                None => format!("{source}: rules[{i}]"),
            };
            let err = |m: String| Error::Invalid(format!("{what}: {m}"));
            let matcher = match r.matches {
                None => NativeMatch::default(),
                Some(m) => native_match(m).map_err(err)?,
            };
            let mut actions = Vec::new();
            if let Some(ops) = r.json_patch {
                let ops = ops
                    .into_iter()
                    .enumerate()
                    .map(|(j, op)| {
                        serde_json::from_value::<PatchOperation>(op.clone()).map_err(|e| {
                            err(format!(
                                "jsonPatch[{j}] {op} is not an RFC 6902 operation ({e}); write {{op: replace, path: /spec/x, value: 1}}"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                actions.push(Action::Json(ops));
            }
            if let Some(p) = r.merge_patch {
                actions.push(Action::Merge(p));
            }
            if let Some(p) = r.strategic_merge_patch {
                if !p.is_object() {
                    return Err(err("strategicMergePatch must be a mapping".into()));
                }
                actions.push(Action::Strategic(p));
            }
            if actions.is_empty() {
                return Err(err(
                    "has no patch; add jsonPatch, mergePatch or strategicMergePatch".into(),
                ));
            }
            Ok(Rule {
                label,
                location,
                file: 0,
                matcher: Matcher::Native(matcher),
                actions,
            })
        })
        .collect()
}

fn native_match(m: NativeMatchSpec) -> Result<NativeMatch, String> {
    let selector = m
        .label_selector
        .as_deref()
        .map(selector::parse)
        .transpose()
        .map_err(|e| format!("match.labelSelector: {e}"))?;
    let conditions = m
        .conditions
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("match.conditions[{i}] (path {:?})", c.path);
            let pointer = to_pointer(&c.path).map_err(|e| format!("{at}: {e}"))?;
            let given = [c.equals.is_some(), c.exists.is_some(), c.matches.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(format!("{at}: give exactly one of equals, exists, matches"));
            }
            let test = if let Some(v) = c.equals {
                ConditionTest::Equals(v)
            } else if let Some(e) = c.exists {
                ConditionTest::Exists(e)
            } else {
                let re = c.matches.expect("one is given");
                ConditionTest::Matches(anchored(&re, &format!("{at}: matches"))?)
            };
            Ok(Condition { pointer, test })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(NativeMatch {
        group: m.group,
        version: m.version,
        kind: m.kind.map(|k| k.to_ascii_lowercase()),
        namespace: m
            .namespace
            .as_deref()
            .map(|r| anchored(r, "match.namespace"))
            .transpose()?,
        name: m
            .name
            .as_deref()
            .map(|r| anchored(r, "match.name"))
            .transpose()?,
        labels: m.labels.unwrap_or_default(),
        selector,
        conditions,
    })
}

/// Turns a condition path into a JSON Pointer: `/a/b` is taken as is (RFC 6901);
/// `.a.b[0].c` or `a.b[0].c` is split on dots with `[n]` as a list index.
fn to_pointer(path: &str) -> Result<String, String> {
    if path.is_empty() || path == "." {
        return Ok(String::new());
    }
    if path.starts_with('/') {
        // Validate the escapes: `~` must be followed by 0 or 1.
        let b = path.as_bytes();
        for (i, c) in b.iter().enumerate() {
            if *c == b'~' && !matches!(b.get(i + 1), Some(b'0') | Some(b'1')) {
                return Err(
                    "JSON Pointer has '~' not followed by 0 or 1; write ~0 for ~ and ~1 for /"
                        .into(),
                );
            }
        }
        return Ok(path.to_string());
    }
    let mut out = String::new();
    let body = path.strip_prefix('.').unwrap_or(path);
    for part in body.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && rest.is_empty() {
            return Err(
                "empty segment in dotted path; write .spec.replicas or /spec/replicas".into(),
            );
        }
        if !name.is_empty() {
            out.push('/');
            out.push_str(&name.replace('~', "~0").replace('/', "~1"));
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| "unclosed '[' in dotted path".to_string())?;
            let idx = &rest[1..close];
            if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "list index [{idx}] must be a number; use a JSON Pointer for other keys"
                ));
            }
            out.push('/');
            out.push_str(idx);
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err("unexpected text after ']' in dotted path".into());
            }
        }
    }
    Ok(out)
}

impl NativeMatch {
    fn matches(&self, info: &ObjectInfo, obj: &Value) -> bool {
        if self.group.as_deref().is_some_and(|g| g != info.group) {
            return false;
        }
        if self.version.as_deref().is_some_and(|v| v != info.version) {
            return false;
        }
        if let Some(k) = &self.kind {
            let kind = info.kind.to_ascii_lowercase();
            let ok = *k == kind
                || k == info.resource
                || (!info.group.is_empty()
                    && (*k == format!("{}.{}", info.resource, info.group)
                        || *k == format!("{kind}.{}", info.group)));
            if !ok {
                return false;
            }
        }
        if self
            .namespace
            .as_ref()
            .is_some_and(|re| !re.is_match(info.namespace()))
        {
            return false;
        }
        if self.name.as_ref().is_some_and(|re| !re.is_match(info.name)) {
            return false;
        }
        if !self.labels.is_empty() || self.selector.is_some() {
            let labels = selector::object_labels(obj);
            if self.labels.iter().any(|(k, v)| labels.get(k) != Some(v)) {
                return false;
            }
            if self.selector.as_ref().is_some_and(|s| !s.matches(&labels)) {
                return false;
            }
        }
        self.conditions.iter().all(|c| {
            let at = obj.pointer(&c.pointer);
            match &c.test {
                ConditionTest::Equals(want) => at.is_some_and(|v| json_equal(v, want)),
                ConditionTest::Exists(want) => at.is_some() == *want,
                ConditionTest::Matches(re) => {
                    at.and_then(Value::as_str).is_some_and(|s| re.is_match(s))
                }
            }
        })
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as Go's
/// decoding to `float64` makes them in Velero's `test`.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

enum JsonPatchFailure {
    TestFailed,
    Failed(String),
}

/// Applies RFC 6902 operations one by one (all or nothing: the caller works on a copy);
/// `test` compares numbers by value.
fn apply_json_patch(doc: &mut Value, ops: &[PatchOperation]) -> Result<(), JsonPatchFailure> {
    for (i, op) in ops.iter().enumerate() {
        if let PatchOperation::Test(t) = op {
            match doc.pointer(t.path.as_str()) {
                Some(v) if json_equal(v, &t.value) => continue,
                _ => return Err(JsonPatchFailure::TestFailed),
            }
        }
        json_patch::patch(doc, std::slice::from_ref(op)).map_err(|e| {
            let name = op_name(op);
            JsonPatchFailure::Failed(format!("operation {i} ({name} {}): {}", op.path(), e.kind))
        })?;
    }
    Ok(())
}

fn op_name(op: &PatchOperation) -> &'static str {
    match op {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    }
}

// ---------------------------------------------------------------------------------------
// Velero

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VeleroFile {
    version: Option<String>,
    resource_modifier_rules: Option<Vec<VeleroRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VeleroRule {
    conditions: Option<VeleroConditions>,
    patches: Option<Vec<VeleroPatch>>,
    merge_patches: Option<Vec<VeleroPatchData>>,
    strategic_patches: Option<Vec<VeleroPatchData>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VeleroConditions {
    namespaces: Option<Vec<String>>,
    group_resource: Option<String>,
    resource_name_regex: Option<String>,
    label_selector: Option<Value>,
    matches: Option<Vec<VeleroMatchRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VeleroMatchRule {
    path: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VeleroPatch {
    operation: Option<String>,
    from: Option<String>,
    path: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VeleroPatchData {
    patch_data: Option<String>,
}

fn parse_velero(value: &Value, source: &str) -> Result<Vec<Rule>, Error> {
    let file: VeleroFile = typed(value, source)?;
    let version = file.version.unwrap_or_default();
    if !version.eq_ignore_ascii_case("v1") {
        return Err(Error::Invalid(format!(
            "{source}: unsupported Velero resource modifier version {version:?}; Velero and coffer read `version: v1`"
        )));
    }
    let rules = file.resource_modifier_rules.unwrap_or_default();
    if rules.is_empty() {
        return Err(Error::Invalid(format!(
            "{source}: resourceModifierRules is empty; add at least one rule"
        )));
    }
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let location = format!("{source} resourceModifierRules[{i}]");
            let err = |m: String| Error::Invalid(format!("{location}: {m}"));
            let c = r.conditions.ok_or_else(|| {
                err("conditions is required (at least conditions.groupResource)".into())
            })?;
            let gr = c.group_resource.unwrap_or_default();
            if gr.is_empty() {
                return Err(err(
                    "conditions.groupResource cannot be empty; e.g. deployments.apps, persistentvolumeclaims or *".into(),
                ));
            }
            let group_resource = glob_regex(&gr)
                .map_err(|m| err(format!("conditions.groupResource {gr:?}: {m}")))?;
            let name = match c.resource_name_regex.as_deref() {
                None | Some("") => None,
                Some(re) => Some(Regex::new(re).map_err(|e| {
                    err(format!(
                        "conditions.resourceNameRegex {re:?} is invalid ({})",
                        one_line(&e.to_string())
                    ))
                })?),
            };
            let selector = c
                .label_selector
                .as_ref()
                .filter(|v| !v.is_null())
                .map(LabelSelector::from_value)
                .transpose()
                .map_err(|e| err(format!("conditions.labelSelector: {e}")))?;
            let mut tests = Vec::new();
            for (j, m) in c.matches.unwrap_or_default().into_iter().enumerate() {
                let path = m.path.unwrap_or_default();
                if path.is_empty() {
                    return Err(err(format!("conditions.matches[{j}]: path is required")));
                }
                let op = velero_op("test", "", &path, m.value.as_ref())
                    .map_err(|m| err(format!("conditions.matches[{j}]: {m}")))?;
                let PatchOperation::Test(t) = op else {
                    unreachable!("built a test operation")
                };
                tests.push((t.path.to_string(), t.value));
            }
            let mut actions = Vec::new();
            let patches = r.patches.unwrap_or_default();
            let merges = r.merge_patches.unwrap_or_default();
            let strategics = r.strategic_patches.unwrap_or_default();
            // Velero applies only the first non-empty kind of patch.
            if !patches.is_empty() {
                let ops = patches
                    .into_iter()
                    .enumerate()
                    .map(|(j, p)| {
                        let operation = p.operation.unwrap_or_default().to_ascii_lowercase();
                        if !["add", "remove", "replace", "move", "copy", "test"]
                            .contains(&operation.as_str())
                        {
                            return Err(err(format!(
                                "patches[{j}]: unsupported operation {operation:?}; use add, remove, replace, move, copy or test"
                            )));
                        }
                        let path = p.path.unwrap_or_default();
                        if path.is_empty() {
                            return Err(err(format!("patches[{j}]: path cannot be empty")));
                        }
                        velero_op(&operation, &p.from.unwrap_or_default(), &path, p.value.as_ref())
                            .map_err(|m| err(format!("patches[{j}]: {m}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                actions.push(Action::Json(ops));
            } else if !merges.is_empty() {
                for (j, p) in merges.into_iter().enumerate() {
                    let v = patch_data(p.patch_data.as_deref())
                        .map_err(|m| err(format!("mergePatches[{j}].patchData: {m}")))?;
                    actions.push(Action::Merge(v));
                }
            } else if !strategics.is_empty() {
                for (j, p) in strategics.into_iter().enumerate() {
                    let v = patch_data(p.patch_data.as_deref())
                        .map_err(|m| err(format!("strategicPatches[{j}].patchData: {m}")))?;
                    if !v.is_object() {
                        return Err(err(format!(
                            "strategicPatches[{j}].patchData must be a mapping"
                        )));
                    }
                    actions.push(Action::Strategic(v));
                }
            } else {
                return Err(err(
                    "has no patch data; add patches, mergePatches or strategicPatches".into(),
                ));
            }
            Ok(Rule {
                label: location.clone(),
                location,
                file: 0,
                matcher: Matcher::Velero(VeleroMatch {
                    namespaces: c.namespaces.unwrap_or_default(),
                    group_resource,
                    name,
                    selector,
                    tests,
                }),
                actions,
            })
        })
        .collect()
}

fn patch_data(text: Option<&str>) -> Result<Value, String> {
    let text = text.unwrap_or("");
    let v: Value = serde_yaml::from_str(text)
        .map_err(|e| format!("is neither YAML nor JSON ({})", one_line(&e.to_string())))?;
    Ok(v)
}

/// A Velero `value` as the Go string Velero reads it into (`sigs.k8s.io/yaml` turns YAML
/// numbers and booleans into their text, and null into ""); a map or list is kept as JSON.
fn go_string(v: Option<&Value>) -> Result<String, Value> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        // Go writes integral floats without a fraction (`1.0` is "1").
        Some(Value::Number(n)) => Ok(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
            _ => n.to_string(),
        }),
        Some(other) => Err(other.clone()),
    }
}

/// Velero's rule for a patch `value` string (`addQuotes`): quoted as a JSON string when it
/// is empty, wrapped in double quotes (which are removed: `"\"true\""` is the string
/// `true`), or anything but `null`, a boolean (any case), text starting with `{` or `[`,
/// or a number; otherwise inserted as raw JSON. Returns the JSON text Velero writes.
pub fn velero_json_value(value: &str) -> String {
    let quoted = |s: &str| format!("\"{s}\"");
    if value.is_empty() {
        return quoted(value);
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return quoted(&value[1..value.len() - 1]);
    }
    let lower = value.to_ascii_lowercase();
    if value == "null"
        || lower == "true"
        || lower == "false"
        || value.starts_with('{')
        || value.starts_with('[')
        || go_parse_float(value)
    {
        return value.to_string();
    }
    quoted(value)
}

/// Whether Go's `strconv.ParseFloat(s, 64)` accepts `s` (decimal, hex float, inf, nan,
/// underscores only with a base prefix are not needed: Go rejects them in decimals).
fn go_parse_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if ["inf", "infinity", "nan"].contains(&lower.as_str()) {
        return true;
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        // Hex float: mantissa with optional '.', mandatory p exponent.
        let Some((mant, exp)) = hex.split_once('p') else {
            return false;
        };
        let mant_ok = !mant.is_empty()
            && mant != "."
            && mant.chars().filter(|c| *c == '.').count() <= 1
            && mant
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '.' || c == '_');
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        return mant_ok && !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit());
    }
    // Decimal: digits, optional fraction, optional exponent; Rust's parser agrees with Go
    // here once inf/nan are handled above.
    !body.is_empty()
        && body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && body.parse::<f64>().is_ok()
}

/// Builds one operation the way Velero does: as JSON text
/// `{"op": "..", "from": "..", "path": "..", "value": <velero_json_value>}`, then decodes it.
fn velero_op(
    op: &str,
    from: &str,
    path: &str,
    value: Option<&Value>,
) -> Result<PatchOperation, String> {
    let value_json = match go_string(value) {
        Ok(s) => velero_json_value(&s),
        Err(v) => v.to_string(),
    };
    let text =
        format!(r#"{{"op": "{op}", "from": "{from}", "path": "{path}", "value": {value_json}}}"#);
    let json: Value = serde_json::from_str(&text).map_err(|e| {
        let text: String = text
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect();
        format!(
            "Velero writes this operation as the JSON text {text} which does not parse ({e}); quote the value as a JSON string or escape \\\" and \\\\"
        )
    })?;
    serde_json::from_value::<PatchOperation>(json).map_err(|e| {
        format!("operation {text} is not a valid JSON patch ({e}); paths are JSON Pointers like /spec/replicas")
    })
}

/// Compiles a gobwas-style glob with `.` as separator: `*` matches within one
/// dot-separated part, `**` across parts, `?` one character, `[abc]`/`[!abc]`/`[a-z]`
/// classes, `{a,b}` alternatives, `\` escapes.
fn glob_regex(glob: &str) -> Result<Regex, String> {
    let chars: Vec<char> = glob.chars().collect();
    let mut pos = 0;
    let body = glob_part(&chars, &mut pos, false)?;
    if pos != chars.len() {
        return Err(format!("unexpected {:?} at position {pos}", chars[pos]));
    }
    Regex::new(&format!("^(?:{body})$")).map_err(|e| format!("cannot be compiled ({e})"))
}

fn glob_part(c: &[char], pos: &mut usize, in_braces: bool) -> Result<String, String> {
    let mut out = String::new();
    while *pos < c.len() {
        let ch = c[*pos];
        match ch {
            '*' => {
                if c.get(*pos + 1) == Some(&'*') {
                    out.push_str(".*");
                    *pos += 2;
                } else {
                    out.push_str("[^.]*");
                    *pos += 1;
                }
            }
            '?' => {
                out.push_str("[^.]");
                *pos += 1;
            }
            '[' => {
                let end = c[*pos..]
                    .iter()
                    .position(|&x| x == ']')
                    .ok_or_else(|| "unclosed '[' in glob".to_string())?;
                let inner: String = c[*pos + 1..*pos + end].iter().collect();
                let (neg, inner) = match inner.strip_prefix('!') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, inner),
                };
                if inner.is_empty() {
                    return Err("empty character class in glob".into());
                }
                let escaped: String = inner
                    .chars()
                    .map(|x| {
                        if x == '-' || x.is_alphanumeric() {
                            x.to_string()
                        } else {
                            format!("\\{x}")
                        }
                    })
                    .collect();
                out.push_str(&format!("[{}{escaped}]", if neg { "^" } else { "" }));
                *pos += end + 1;
            }
            '{' => {
                *pos += 1;
                let mut alts = vec![glob_part(c, pos, true)?];
                loop {
                    match c.get(*pos) {
                        Some(',') => {
                            *pos += 1;
                            alts.push(glob_part(c, pos, true)?);
                        }
                        Some('}') => {
                            *pos += 1;
                            break;
                        }
                        _ => return Err("unclosed '{' in glob".into()),
                    }
                }
                out.push_str(&format!("(?:{})", alts.join("|")));
            }
            ',' | '}' if in_braces => return Ok(out),
            '\\' => {
                let next = c
                    .get(*pos + 1)
                    .ok_or_else(|| "glob ends with '\\'".to_string())?;
                out.push_str(&regex::escape(&next.to_string()));
                *pos += 2;
            }
            _ => {
                out.push_str(&regex::escape(&ch.to_string()));
                *pos += 1;
            }
        }
    }
    Ok(out)
}

impl VeleroMatch {
    fn matches(&self, info: &ObjectInfo, obj: &Value) -> bool {
        let ns = info.namespace();
        if !ns.is_empty()
            && !self.namespaces.is_empty()
            && !self.namespaces.iter().any(|n| n == "*" || n == ns)
        {
            return false;
        }
        if !self.group_resource.is_match(&info.group_resource()) {
            return false;
        }
        if self.name.as_ref().is_some_and(|re| !re.is_match(info.name)) {
            return false;
        }
        if self
            .selector
            .as_ref()
            .is_some_and(|s| !s.matches_object(obj))
        {
            return false;
        }
        self.tests
            .iter()
            .all(|(ptr, want)| velero_test(obj, ptr, want))
    }
}

/// Velero's `matches`: a JSON-patch `test` where a missing parent fails, and a missing
/// last key equals `null`.
fn velero_test(obj: &Value, pointer: &str, want: &Value) -> bool {
    if let Some(v) = obj.pointer(pointer) {
        return json_equal(v, want);
    }
    let parent = match pointer.rfind('/') {
        Some(i) => &pointer[..i],
        None => return false,
    };
    match obj.pointer(parent) {
        Some(Value::Object(_)) => want.is_null(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Strategic merge patch (subset)

/// Applies a strategic merge patch (the subset in the module docs) to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if p.get("$patch").and_then(Value::as_str) == Some("delete") {
        return Err("$patch: delete on the whole object is not supported".into());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        unreachable!()
    };
    let mut path = Vec::new();
    smp_map(t, p, &mut path)
}

fn path_str(path: &[String], field: &str) -> String {
    let mut s: String = path.iter().map(|p| format!("{p}.")).collect();
    s.push_str(field);
    s
}

fn smp_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    match patch.get("$patch").map(|d| d.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            let mut fresh = Map::new();
            let mut rest = patch.clone();
            rest.shift_remove("$patch");
            smp_map(&mut fresh, &rest, path)?;
            *target = fresh;
            return Ok(());
        }
        Some(d) => {
            return Err(format!(
                "unsupported $patch directive {:?} at {}; use replace, merge or (on list items) delete",
                d.unwrap_or("?"),
                if path.is_empty() {
                    "the top level".to_string()
                } else {
                    path.join(".")
                }
            ));
        }
    }
    let retain: Option<Vec<String>> = match patch.get("$retainKeys") {
        None => None,
        Some(Value::Array(keys)) => Some(
            keys.iter()
                .map(|k| {
                    k.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "$retainKeys must list strings".to_string())
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err("$retainKeys must be a list of field names".into()),
    };
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let Value::Array(del) = pv else {
                return Err(format!("{k} must be a list"));
            };
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!(
                "unsupported directive {k:?} at {}",
                path_str(path, "")
            ));
        }
        if pv.is_null()
            || pv
                .as_object()
                .and_then(|m| m.get("$patch"))
                .and_then(Value::as_str)
                == Some("delete")
        {
            target.shift_remove(k);
            continue;
        }
        match (target.get_mut(k), pv) {
            (Some(Value::Object(tm)), Value::Object(pm)) => {
                path.push(k.clone());
                let r = smp_map(tm, pm, path);
                path.pop();
                r?;
            }
            (Some(Value::Array(ta)), Value::Array(pa)) => smp_list(k, ta, pa, path)?,
            _ => {
                let fresh = fresh_value(k, pv, path)?;
                target.insert(k.clone(), fresh);
            }
        }
    }
    if let Some(keep) = retain {
        target.retain(|k, _| keep.contains(k));
    }
    Ok(())
}

/// A patch value for a key the target lacks (or holds with another type): merged into an
/// empty value so that directives and nulls inside are resolved.
fn fresh_value(field: &str, pv: &Value, path: &mut Vec<String>) -> Result<Value, String> {
    match pv {
        Value::Object(pm) => {
            let mut m = Map::new();
            path.push(field.to_string());
            let r = smp_map(&mut m, pm, path);
            path.pop();
            r?;
            Ok(Value::Object(m))
        }
        Value::Array(pa) => {
            let mut v = Vec::new();
            smp_list(field, &mut v, pa, path)?;
            Ok(Value::Array(v))
        }
        other => Ok(other.clone()),
    }
}

enum MergeKey {
    Field(&'static str),
    /// `volumeClaimTemplates` merge by `metadata.name`.
    MetadataName,
    /// A list of scalars merged as a set.
    Set,
}

fn merge_key(field: &str, path: &[String]) -> Option<MergeKey> {
    let in_container = path.last().is_some_and(|p| {
        matches!(
            p.as_str(),
            "containers" | "initContainers" | "ephemeralContainers"
        )
    });
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims" => MergeKey::Field("name"),
        "volumeMounts" => MergeKey::Field("mountPath"),
        "volumeDevices" => MergeKey::Field("devicePath"),
        "ports" if in_container => MergeKey::Field("containerPort"),
        "ports" => MergeKey::Field("port"),
        "hostAliases" => MergeKey::Field("ip"),
        "topologySpreadConstraints" => MergeKey::Field("topologyKey"),
        "ownerReferences" => MergeKey::Field("uid"),
        "conditions" => MergeKey::Field("type"),
        "volumeClaimTemplates" => MergeKey::MetadataName,
        "finalizers" => MergeKey::Set,
        _ => return None,
    })
}

fn is_directive(item: &Value, which: &str) -> bool {
    item.as_object()
        .and_then(|m| m.get("$patch"))
        .and_then(Value::as_str)
        == Some(which)
}

fn smp_list(
    field: &str,
    target: &mut Vec<Value>,
    patch: &[Value],
    path: &mut Vec<String>,
) -> Result<(), String> {
    let key = merge_key(field, path);
    let whole_replace = patch
        .iter()
        .any(|i| is_directive(i, "replace") && i.as_object().is_some_and(|m| m.len() == 1));
    if whole_replace || key.is_none() {
        let mut out = Vec::new();
        for item in patch {
            let marker =
                is_directive(item, "replace") && item.as_object().is_some_and(|m| m.len() == 1);
            if (whole_replace && marker) || is_directive(item, "delete") {
                continue;
            }
            out.push(fresh_value(field, item, path)?);
        }
        *target = out;
        return Ok(());
    }
    let key = key.expect("checked");
    let key_of = |v: &Value| -> Option<Value> {
        match key {
            MergeKey::Field(k) => v.get(k).cloned(),
            MergeKey::MetadataName => v.pointer("/metadata/name").cloned(),
            MergeKey::Set => Some(v.clone()),
        }
    };
    let key_name = match key {
        MergeKey::Field(k) => k,
        MergeKey::MetadataName => "metadata.name",
        MergeKey::Set => "",
    };
    for item in patch {
        if let MergeKey::Set = key {
            if !target.contains(item) {
                target.push(item.clone());
            }
            continue;
        }
        let Some(pm) = item.as_object() else {
            return Err(format!(
                "list {} merges by {key_name} but the patch has a non-object item {item}",
                path_str(path, field)
            ));
        };
        let Some(k) = key_of(item) else {
            return Err(format!(
                "an item of list {} has no merge key {key_name}; add it, or replace the list with a {{$patch: replace}} item",
                path_str(path, field)
            ));
        };
        if is_directive(item, "delete") {
            target.retain(|t| key_of(t).as_ref() != Some(&k));
            continue;
        }
        path.push(field.to_string());
        let r = match target.iter_mut().find(|t| key_of(t).as_ref() == Some(&k)) {
            Some(Value::Object(tm)) => smp_map(tm, pm, path),
            Some(other) => {
                let mut m = Map::new();
                let r = smp_map(&mut m, pm, path);
                *other = Value::Object(m);
                r
            }
            None => {
                let mut m = Map::new();
                let r = smp_map(&mut m, pm, path);
                target.push(Value::Object(m));
                r
            }
        };
        path.pop();
        r?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Built-in mappings

const LEGACY_SC_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn map_string_at(v: Option<&mut Value>, mapping: &BTreeMap<String, String>) -> bool {
    if let Some(slot) = v
        && let Some(new) = slot.as_str().and_then(|s| mapping.get(s))
        && slot.as_str() != Some(new.as_str())
    {
        *slot = Value::String(new.clone());
        return true;
    }
    false
}

fn map_claim_like(obj: &mut Value, mapping: &BTreeMap<String, String>) -> bool {
    let a = map_string_at(obj.pointer_mut("/spec/storageClassName"), mapping);
    let b = map_string_at(
        obj.get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(|a| a.get_mut(LEGACY_SC_ANNOTATION)),
        mapping,
    );
    a | b
}

/// `--storage-class-mapping OLD=NEW`: rewrites `spec.storageClassName` of
/// PersistentVolumeClaims and PersistentVolumes, `spec.volumeClaimTemplates[].spec
/// .storageClassName` of StatefulSets, and the legacy annotation
/// `volume.beta.kubernetes.io/storage-class` on each of them. Returns true if anything
/// changed.
pub fn map_storage_classes(obj: &mut Value, mapping: &BTreeMap<String, String>) -> bool {
    if mapping.is_empty() {
        return false;
    }
    match kind_of(obj) {
        "PersistentVolumeClaim" | "PersistentVolume" => map_claim_like(obj, mapping),
        "StatefulSet" => {
            let mut changed = false;
            if let Some(Value::Array(vcts)) = obj.pointer_mut("/spec/volumeClaimTemplates") {
                for vct in vcts {
                    changed |= map_claim_like(vct, mapping);
                }
            }
            changed
        }
        _ => false,
    }
}

/// Splits an image reference into its normalised form `host/path[:tag][@digest]` as
/// Docker reads it: no host means `docker.io`, and a single-component docker.io path gets
/// `library/`. `index.docker.io` is `docker.io`.
pub fn normalize_image(image: &str) -> String {
    let (host, rest) = match image.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest.to_string())
        }
        _ => ("docker.io", image.to_string()),
    };
    let host = if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    };
    let rest = if host == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    format!("{host}/{rest}")
}

fn normalize_prefix(key: &str) -> String {
    let key = key.trim_end_matches('/');
    match key.split_once('/') {
        Some(("index.docker.io", rest)) => format!("docker.io/{rest}"),
        None if key == "index.docker.io" => "docker.io".to_string(),
        _ => key.to_string(),
    }
}

/// The image after registry mapping, or None when no mapping applies.
pub fn map_image(image: &str, mapping: &BTreeMap<String, String>) -> Option<String> {
    if image.is_empty() {
        return None;
    }
    let full = normalize_image(image);
    let mut best: Option<(usize, String)> = None;
    for (old, new) in mapping {
        let prefix = normalize_prefix(old);
        if prefix.is_empty() {
            continue;
        }
        let Some(rest) = full.strip_prefix(&prefix) else {
            continue;
        };
        let boundary_ok = if prefix.contains('/') {
            rest.is_empty() || rest.starts_with(['/', ':', '@'])
        } else {
            rest.starts_with('/')
        };
        if boundary_ok && best.as_ref().is_none_or(|(len, _)| prefix.len() > *len) {
            best = Some((prefix.len(), format!("{}{rest}", new.trim_end_matches('/'))));
        }
    }
    best.map(|(_, s)| s).filter(|s| s != image)
}

fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "/spec",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => "/spec/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        "PodTemplate" => "/template/spec",
        _ => return None,
    })
}

/// Image registry mapping `OLD=NEW`, a prefix on the registry host or host/path
/// (`docker.io=registry.local`, `quay.io/org=reg.local/mirror`); the longest matching
/// prefix wins, a host-only prefix matches whole hosts, a host/path prefix whole path
/// components. Images without a host are `docker.io` images (`nginx:1` is
/// `docker.io/library/nginx:1`). Applies to every container, init container and ephemeral
/// container of Pods and of the pod templates of Deployments, StatefulSets, DaemonSets,
/// ReplicaSets, ReplicationControllers, Jobs, CronJobs and PodTemplates. Returns true if
/// anything changed.
pub fn map_image_registries(obj: &mut Value, mapping: &BTreeMap<String, String>) -> bool {
    if mapping.is_empty() {
        return false;
    }
    let Some(ptr) = pod_spec_pointer(kind_of(obj)) else {
        return false;
    };
    let Some(spec) = obj.pointer_mut(ptr) else {
        return false;
    };
    let mut changed = false;
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers {
                if let Some(slot) = c.get_mut("image")
                    && let Some(new) = slot.as_str().and_then(|i| map_image(i, mapping))
                {
                    *slot = Value::String(new);
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Parses `OLD=NEW` mapping flags (as given to `--storage-class-mapping` or
/// `--image-registry-mapping`); several may be comma-separated.
pub fn parse_mapping(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for v in values.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let Some((old, new)) = v.split_once('=') else {
            return Err(Error::Invalid(format!(
                "{flag} {v:?}: expected OLD=NEW, e.g. {flag} standard=fast"
            )));
        };
        let (old, new) = (old.trim(), new.trim());
        if old.is_empty() || new.is_empty() {
            return Err(Error::Invalid(format!(
                "{flag} {v:?}: both sides of OLD=NEW must be non-empty"
            )));
        }
        if let Some(prev) = out.insert(old.to_string(), new.to_string())
            && prev != new
        {
            return Err(Error::Invalid(format!(
                "{flag}: {old} is mapped twice ({prev} and {new}); keep one"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
