//! The rule engine: which rules match an object and what applying them does (RFC 6902
//! JSON patches with Velero's number comparison in `test`, RFC 7386 merge patches, the
//! strategic merge), all or nothing per rule.

use json_patch::PatchOperation;
use serde_json::Value;

use super::ObjectInfo;
use super::native::NativeMatch;
use super::strategic::strategic_merge;
use super::velero::VeleroMatch;
use crate::Error;

/// One rule: where it came from, what it matches and what it does.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// Reported when the rule applies: the rule's name, or its location.
    pub(super) label: String,
    /// `source rules[i]` or `source resourceModifierRules[i]`.
    pub(super) location: String,
    /// Which file the rule came from; Velero rules match the object as it was before the
    /// first rule of their file.
    pub(super) file: usize,
    pub(super) matcher: Matcher,
    pub(super) actions: Vec<Action>,
}

impl Rule {
    /// How errors name the rule.
    pub(super) fn what(&self) -> String {
        if self.label == self.location {
            format!("transform {}", self.location)
        } else {
            format!("transform rule {:?} ({})", self.label, self.location)
        }
    }
}

/// What a rule matches, in its format's terms.
#[derive(Debug, Clone)]
pub(super) enum Matcher {
    Native(NativeMatch),
    Velero(VeleroMatch),
}

/// One patch a rule applies.
#[derive(Debug, Clone)]
pub(super) enum Action {
    Json(Vec<PatchOperation>),
    Merge(Value),
    Strategic(Value),
}

pub(super) fn json_equal(a: &Value, b: &Value) -> bool {
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

pub(super) enum JsonPatchFailure {
    TestFailed,
    Failed(String),
}

/// Applies RFC 6902 operations one by one (all or nothing: the caller works on a copy);
/// `test` compares numbers by value.
pub(super) fn apply_json_patch(
    doc: &mut Value,
    ops: &[PatchOperation],
) -> Result<(), JsonPatchFailure> {
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

/// Applies every matching rule in order (see [`super::TransformSet::apply`]).
pub(super) fn apply_rules(
    rules: &[Rule],
    info: &ObjectInfo,
    obj: &mut Value,
) -> Result<Vec<String>, Error> {
    let mut applied = Vec::new();
    // Velero evaluates a file's conditions on the object as it was before that file.
    let mut snapshot: Option<(usize, Value)> = None;
    for rule in rules {
        let matched = match &rule.matcher {
            Matcher::Native(m) => m.matches(info, obj),
            Matcher::Velero(m) => {
                if snapshot.as_ref().is_none_or(|(file, _)| *file != rule.file) {
                    snapshot = Some((rule.file, obj.clone()));
                }
                m.matches(info, snapshot.as_ref().map_or(&*obj, |(_, before)| before))
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
            check_required(rule, info, obj, &work)?;
            *obj = work;
            applied.push(rule.label.clone());
        }
    }
    Ok(applied)
}

/// The fields a restored object cannot do without. A rule that had them before and removes
/// or blanks them is an error naming the rule and the object (the restore could not
/// address the object any more).
fn check_required(
    rule: &Rule,
    info: &ObjectInfo,
    before: &Value,
    after: &Value,
) -> Result<(), Error> {
    if before.get("metadata").is_some_and(Value::is_object)
        && !after.get("metadata").is_some_and(Value::is_object)
    {
        return Err(Error::Invalid(format!(
            "{}: removes /metadata from {info}, which every restored object needs; patch fields inside /metadata instead",
            rule.what()
        )));
    }
    for pointer in ["/apiVersion", "/kind", "/metadata/name"] {
        let had = before
            .pointer(pointer)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        let has = after
            .pointer(pointer)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if had && !has {
            return Err(Error::Invalid(format!(
                "{}: removes {pointer} from {info}, which every restored object needs; change the rule so that it keeps {pointer}",
                rule.what()
            )));
        }
    }
    Ok(())
}
