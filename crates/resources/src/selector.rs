//! Label selectors: kubectl's string syntax (`app=web,tier!=cache,env in (a,b),!legacy`)
//! and the structured `matchLabels`/`matchExpressions` form, matched client-side.
//!
//! Written here because restore filters stored objects, which no API server sees, and
//! kube-rs only builds selector strings for the server; it does not parse or match them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.get(&r.key);
            match r.op {
                Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(obj["metadata"]["labels"].clone()).unwrap_or_default();
        self.matches(&labels)
    }

    /// The structured form (`{matchLabels: {...}, matchExpressions: [...]}`).
    pub fn from_k8s(sel: &Value) -> Result<LabelSelector> {
        let mut reqs = Vec::new();
        if let Some(m) = sel["matchLabels"].as_object() {
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| {
                    Error::Invalid(format!("matchLabels.{k}: value must be a string"))
                })?;
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::In,
                    values: vec![v.to_string()],
                });
            }
        }
        for e in sel["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"]
                .as_str()
                .ok_or_else(|| Error::Invalid("matchExpressions entry without key".into()))?;
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let op = match e["operator"].as_str() {
                Some("In") => Op::In,
                Some("NotIn") => Op::NotIn,
                Some("Exists") => Op::Exists,
                Some("DoesNotExist") => Op::NotExists,
                other => {
                    return Err(Error::Invalid(format!(
                        "matchExpressions {key}: operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                    )));
                }
            };
            reqs.push(Requirement {
                key: key.to_string(),
                op,
                values,
            });
        }
        Ok(LabelSelector { reqs })
    }
}

/// Parses kubectl's selector syntax.
pub fn parse(s: &str) -> Result<LabelSelector> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "label selector {s:?}: {why} (kubectl syntax: app=web,tier!=cache,env in (a,b),!legacy)"
        ))
    };
    let mut reqs = Vec::new();
    for part in split_top_level(s).map_err(|e| bad(&e))? {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let req = if let Some(key) = part.strip_prefix('!') {
            Requirement {
                key: check_key(key.trim()).map_err(|e| bad(&e))?,
                op: Op::NotExists,
                values: vec![],
            }
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement {
                key: check_key(k.trim()).map_err(|e| bad(&e))?,
                op: Op::NotIn,
                values: vec![check_value(v.trim()).map_err(|e| bad(&e))?],
            }
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement {
                key: check_key(k.trim()).map_err(|e| bad(&e))?,
                op: Op::In,
                values: vec![check_value(v.trim()).map_err(|e| bad(&e))?],
            }
        } else if let Some(open) = part.find('(') {
            let head: Vec<&str> = part[..open].split_whitespace().collect();
            let close = part
                .rfind(')')
                .filter(|c| *c == part.len() - 1)
                .ok_or_else(|| bad("missing closing parenthesis"))?;
            let (key, op) = match head.as_slice() {
                [k, "in"] => (*k, Op::In),
                [k, "notin"] => (*k, Op::NotIn),
                _ => return Err(bad(&format!("cannot read {part:?}"))),
            };
            let values = part[open + 1..close]
                .split(',')
                .map(|v| check_value(v.trim()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?;
            Requirement {
                key: check_key(key).map_err(|e| bad(&e))?,
                op,
                values,
            }
        } else {
            Requirement {
                key: check_key(part).map_err(|e| bad(&e))?,
                op: Op::Exists,
                values: vec![],
            }
        };
        reqs.push(req);
    }
    Ok(LabelSelector { reqs })
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> std::result::Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced parenthesis".into());
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parenthesis".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn check_key(k: &str) -> std::result::Result<String, String> {
    let name = k.rsplit('/').next().unwrap_or(k);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!("{k:?} is not a valid label key"))
    }
}

fn check_value(v: &str) -> std::result::Result<String, String> {
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?} is not a valid label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubectl_syntax() {
        let s = parse("app=web, tier!=cache,env in (prod, staging),!legacy,team").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("tier", "cache")
        ])));
        let n = parse("env notin (dev),app==web").unwrap();
        assert!(n.matches(&labels(&[("app", "web")])));
        assert!(!n.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(parse("").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn bad_selectors_say_why() {
        for s in ["a in in", "env in (a", "-x=1", "a=b c"] {
            let e = parse(s).unwrap_err().to_string();
            assert!(e.contains("label selector"), "{s}: {e}");
        }
    }

    #[test]
    fn structured_form() {
        let s = LabelSelector::from_k8s(&serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]},
                                 {"key": "team", "operator": "Exists"}]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("team", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("team", "x"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }
}
