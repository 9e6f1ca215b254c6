//! Coffer's native transform format (see the module docs of [`super`]): its file layout,
//! the `match` block (group, version, kind, namespace and name regexes, labels, selector,
//! conditions) and dotted or JSON-Pointer paths.

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::engine::{Action, Matcher, Rule, json_equal};
use super::{ObjectInfo, one_line, typed};
use crate::Error;
use crate::selector::{self, LabelSelector};

/// A native rule's `match` block, compiled.
#[derive(Debug, Clone, Default)]
pub(super) struct NativeMatch {
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

pub(super) fn parse_native(value: &Value, source: &str) -> Result<Vec<Rule>, Error> {
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
            } else if let Some(re) = c.matches {
                ConditionTest::Matches(anchored(&re, &format!("{at}: matches"))?)
            } else {
                return Err(format!("{at}: give exactly one of equals, exists, matches"));
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
pub(super) fn to_pointer(path: &str) -> Result<String, String> {
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
    pub(super) fn matches(&self, info: &ObjectInfo, obj: &Value) -> bool {
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
