//! Velero's restore resource-modifier format, read unchanged and applied with Velero's
//! semantics (see the module docs of [`super`]): glob `groupResource`, unanchored name
//! regexes, `matches` as JSON-patch tests, and `value` strings turned into JSON exactly as
//! Velero does.

use json_patch::PatchOperation;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::engine::{Action, Matcher, Rule, json_equal};
use super::{ObjectInfo, one_line, typed};
use crate::Error;
use crate::selector::LabelSelector;

/// A Velero rule's `conditions`, compiled.
#[derive(Debug, Clone)]
pub(super) struct VeleroMatch {
    namespaces: Vec<String>,
    group_resource: Regex,
    name: Option<Regex>,
    selector: Option<LabelSelector>,
    /// `matches` entries as (JSON pointer, expected value).
    tests: Vec<(String, Value)>,
}

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

pub(super) fn parse_velero(value: &Value, source: &str) -> Result<Vec<Rule>, Error> {
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
                    return Err(err(format!("conditions.matches[{j}]: not a test")));
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
pub(super) fn glob_regex(glob: &str) -> Result<Regex, String> {
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
    pub(super) fn matches(&self, info: &ObjectInfo, obj: &Value) -> bool {
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
pub(super) fn velero_test(obj: &Value, pointer: &str, want: &Value) -> bool {
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
