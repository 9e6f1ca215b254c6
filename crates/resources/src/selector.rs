//! Kubernetes label selectors: the string form (`app=web,tier in (a,b),!legacy`) and the
//! object form (`matchLabels` / `matchExpressions`), both compiled to one [`LabelSelector`].
//!
//! This module owns parsing, validating and evaluating label selectors against a label map.
//! It does not own field selectors, namespace selection or anything that needs the API
//! server. It is hand-written because the grammar is small and fixed by Kubernetes
//! (`k8s.io/apimachinery/pkg/labels`), the error messages have to tell a user which part
//! of their `--selector` is wrong, and no crate offers the same semantics without pulling
//! in a client.
//!
//! Semantics follow Kubernetes: requirements are ANDed; an empty selector matches
//! everything; `!=` and `notin` also match objects that lack the key; `in`, `=`, `>` and
//! `<` require the key to be present.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as K8sLabelSelector, LabelSelectorRequirement,
};
use serde_json::Value;

use crate::Error;

/// The relation a requirement tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value` (also true when the key is absent).
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)` (also true when the key is absent).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N`: the value parses as an integer greater than N.
    GreaterThan,
    /// `key<N`: the value parses as an integer less than N.
    LessThan,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the key's value is tested.
    pub operator: Operator,
    /// Sorted and deduplicated for the set operators; one value for the others; empty for
    /// `Exists` / `DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, first),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, first),
            Operator::LessThan => write!(f, "{}<{}", self.key, first),
        }
    }
}

/// A compiled label selector. `Display` prints the canonical string form, which
/// [`parse`] reads back to an equal selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Parses the string form used by `kubectl -l` and `--selector`:
/// `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, `a>1`, `a<1`,
/// comma-separated and ANDed. The empty string is the selector that matches everything.
pub fn parse(s: &str) -> Result<LabelSelector, Error> {
    let tokens = lex(s)?;
    let mut p = Parser {
        src: s,
        tokens,
        pos: 0,
    };
    let mut requirements = Vec::new();
    if p.peek() == &Tok::End {
        return Ok(LabelSelector { requirements });
    }
    loop {
        requirements.push(p.requirement()?);
        match p.next() {
            Tok::End => break,
            Tok::Comma => continue,
            other => {
                return Err(p.error(&format!(
                    "expected ',' or end after a requirement, found {other}"
                )));
            }
        }
    }
    Ok(LabelSelector { requirements })
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// True when the selector has no requirement and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, all of which must hold.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Like [`matches`](Self::matches), reading the labels from a full object's
    /// `metadata.labels` (an object without labels has none).
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&object_labels(obj))
    }

    /// Builds a selector from the object form (`matchLabels` and `matchExpressions`) with
    /// Kubernetes' validation: `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none.
    pub fn from_k8s(
        match_labels: Option<&BTreeMap<String, String>>,
        match_expressions: Option<&[LabelSelectorRequirement]>,
    ) -> Result<Self, Error> {
        let mut requirements = Vec::new();
        for (k, v) in match_labels.into_iter().flatten() {
            validate_key(k).map_err(|e| Error::Invalid(format!("matchLabels key {k:?}: {e}")))?;
            validate_value(v).map_err(|e| Error::Invalid(format!("matchLabels {k}={v:?}: {e}")))?;
            requirements.push(Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            });
        }
        for (i, e) in match_expressions.into_iter().flatten().enumerate() {
            let what = format!("matchExpressions[{i}] (key {:?})", e.key);
            validate_key(&e.key).map_err(|m| Error::Invalid(format!("{what}: {m}")))?;
            let values = e.values.clone().unwrap_or_default();
            let operator = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(Error::Invalid(format!(
                        "{what}: unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                    )));
                }
            };
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(Error::Invalid(format!(
                        "{what}: operator {} needs a non-empty values list",
                        e.operator
                    )));
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(Error::Invalid(format!(
                        "{what}: operator {} takes no values; remove the values list",
                        e.operator
                    )));
                }
                _ => {}
            }
            for v in &values {
                validate_value(v)
                    .map_err(|m| Error::Invalid(format!("{what}: value {v:?}: {m}")))?;
            }
            requirements.push(Requirement {
                key: e.key.clone(),
                operator,
                values: normalise_set(values),
            });
        }
        Ok(LabelSelector { requirements })
    }

    /// [`from_k8s`](Self::from_k8s) for a typed `metav1.LabelSelector`.
    pub fn from_k8s_selector(sel: &K8sLabelSelector) -> Result<Self, Error> {
        Self::from_k8s(sel.match_labels.as_ref(), sel.match_expressions.as_deref())
    }

    /// [`from_k8s`](Self::from_k8s) for a selector held as JSON (`{matchLabels: ...,
    /// matchExpressions: [...]}`), as found in stored objects and Velero files.
    pub fn from_value(v: &Value) -> Result<Self, Error> {
        if !v.is_object() && !v.is_null() {
            return Err(Error::Invalid(format!(
                "label selector must be an object with matchLabels and/or matchExpressions, found {v}"
            )));
        }
        if let Some(obj) = v.as_object() {
            for k in obj.keys() {
                if k != "matchLabels" && k != "matchExpressions" {
                    return Err(Error::Invalid(format!(
                        "label selector has unknown field {k:?}; only matchLabels and matchExpressions are allowed"
                    )));
                }
            }
        }
        let sel: K8sLabelSelector = serde_json::from_value(v.clone())
            .map_err(|e| Error::Invalid(format!("label selector {v}: {e}")))?;
        Self::from_k8s_selector(&sel)
    }
}

/// The `metadata.labels` of a full object as a map (non-string values are ignored).
pub fn object_labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn normalise_set(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values.dedup();
    values
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters, alphanumeric at both ends with `-`, `_`, `.` inside.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "key prefix {p:?} must be a lowercase DNS subdomain such as example.com"
            ));
        }
    }
    if name.is_empty() {
        return Err("label key must not be empty".into());
    }
    check_name_chars(name).map_err(|m| format!("key name {name:?} {m}"))
}

/// Checks a label value: empty, or like a key name.
fn validate_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    check_name_chars(v).map_err(|m| format!("label value {v:?} {m}"))
}

fn check_name_chars(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("is longer than 63 characters".into());
    }
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("must start and end with a letter or digit".into());
    }
    if !b
        .iter()
        .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
    {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s:?}"),
            Tok::Bang => f.write_str("'!'"),
            Tok::Eq => f.write_str("'='"),
            Tok::DoubleEq => f.write_str("'=='"),
            Tok::NotEq => f.write_str("'!='"),
            Tok::Gt => f.write_str("'>'"),
            Tok::Lt => f.write_str("'<'"),
            Tok::In => f.write_str("'in'"),
            Tok::NotIn => f.write_str("'notin'"),
            Tok::Open => f.write_str("'('"),
            Tok::Close => f.write_str("')'"),
            Tok::Comma => f.write_str("','"),
            Tok::End => f.write_str("end of selector"),
        }
    }
}

fn lex(s: &str) -> Result<Vec<Tok>, Error> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        match c {
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Tok::NotEq);
                } else {
                    out.push(Tok::Bang);
                }
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Tok::DoubleEq);
                } else {
                    out.push(Tok::Eq);
                }
            }
            '>' => {
                chars.next();
                out.push(Tok::Gt);
            }
            '<' => {
                chars.next();
                out.push(Tok::Lt);
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "!=<>(),".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    _ => Tok::Ident(word),
                });
            }
        }
    }
    out.push(Tok::End);
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, what: &str) -> Error {
        Error::Invalid(format!(
            "label selector {:?}: {what}; write it like app=web,tier in (a,b),!legacy",
            self.src
        ))
    }

    fn key(&mut self) -> Result<String, Error> {
        match self.next() {
            Tok::Ident(k) => {
                validate_key(&k).map_err(|m| self.error(&m))?;
                Ok(k)
            }
            other => Err(self.error(&format!("expected a label key, found {other}"))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, Error> {
        if self.peek() == &Tok::Bang {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: vec![],
            });
        }
        let key = self.key()?;
        let operator = match self.peek() {
            Tok::Comma | Tok::End => {
                return Ok(Requirement {
                    key,
                    operator: Operator::Exists,
                    values: vec![],
                });
            }
            Tok::Eq | Tok::DoubleEq => Operator::Equals,
            Tok::NotEq => Operator::NotEquals,
            Tok::Gt => Operator::GreaterThan,
            Tok::Lt => Operator::LessThan,
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            other => {
                let other = other.clone();
                return Err(self.error(&format!(
                    "after key {key:?} expected one of =, ==, !=, in, notin, >, <, ',' or end, found {other}"
                )));
            }
        };
        self.next();
        let values = match operator {
            Operator::In | Operator::NotIn => self.set(&key)?,
            _ => {
                let v = match self.peek() {
                    // `a=` selects the empty value, as in Kubernetes.
                    Tok::Comma | Tok::End => String::new(),
                    Tok::Ident(v) => {
                        let v = v.clone();
                        self.next();
                        v
                    }
                    other => {
                        let other = other.clone();
                        return Err(
                            self.error(&format!("expected a value for key {key:?}, found {other}"))
                        );
                    }
                };
                validate_value(&v).map_err(|m| self.error(&m))?;
                if matches!(operator, Operator::GreaterThan | Operator::LessThan)
                    && v.parse::<i64>().is_err()
                {
                    return Err(self.error(&format!(
                        "'>' and '<' need an integer value, found {v:?} for key {key:?}"
                    )));
                }
                vec![v]
            }
        };
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    fn set(&mut self, key: &str) -> Result<Vec<String>, Error> {
        match self.next() {
            Tok::Open => {}
            other => {
                return Err(self.error(&format!(
                    "expected '(' after in/notin for key {key:?}, found {other}"
                )));
            }
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Tok::Ident(v) if expect_value => {
                    validate_value(&v).map_err(|m| self.error(&m))?;
                    values.push(v);
                    expect_value = false;
                }
                Tok::Comma if !expect_value => expect_value = true,
                // An empty slot (`in ()` or `in (a,)`) stands for the empty value.
                Tok::Comma => values.push(String::new()),
                Tok::Close => {
                    if expect_value {
                        values.push(String::new());
                    }
                    break;
                }
                other => {
                    return Err(self.error(&format!(
                        "in the value list of key {key:?} expected a value, ',' or ')', found {other}"
                    )));
                }
            }
        }
        Ok(normalise_set(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
        assert!(parse("   ").unwrap().is_empty());
    }

    #[test]
    fn equality_forms() {
        let s = parse("app=web,tier==front").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "front")])));
    }

    #[test]
    fn not_equals_matches_missing_key() {
        let s = parse("env!=prod").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn set_operators() {
        let s = parse("tier in (a, b),f notin (z)").unwrap();
        assert!(s.matches(&labels(&[("tier", "a")])));
        assert!(s.matches(&labels(&[("tier", "b"), ("f", "y")])));
        assert!(!s.matches(&labels(&[("tier", "c")])));
        assert!(!s.matches(&labels(&[])), "in requires the key");
        assert!(!s.matches(&labels(&[("tier", "a"), ("f", "z")])));
        let r = &s.requirements()[0];
        assert_eq!(r.operator, Operator::In);
        assert_eq!(r.values, vec!["a", "b"]);
    }

    #[test]
    fn exists_and_not_exists() {
        let s = parse("g,!h").unwrap();
        assert!(s.matches(&labels(&[("g", "")])));
        assert!(!s.matches(&labels(&[("g", "1"), ("h", "1")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn full_example_from_docs() {
        let s = parse("a=b,c!=d,e in (x,y),f notin (z),g,!h").unwrap();
        assert_eq!(s.requirements().len(), 6);
        let l = labels(&[("a", "b"), ("e", "x"), ("g", "1")]);
        assert!(s.matches(&l));
        let mut l2 = l.clone();
        l2.insert("c".into(), "d".into());
        assert!(!s.matches(&l2));
        let mut l3 = l.clone();
        l3.insert("h".into(), "".into());
        assert!(!s.matches(&l3));
    }

    #[test]
    fn numeric_comparisons() {
        let s = parse("gen>3,size<10").unwrap();
        assert!(s.matches(&labels(&[("gen", "4"), ("size", "9")])));
        assert!(!s.matches(&labels(&[("gen", "3"), ("size", "9")])));
        assert!(!s.matches(&labels(&[("gen", "x"), ("size", "9")])));
        assert!(parse("gen>x").is_err());
    }

    #[test]
    fn prefixed_keys_and_empty_value() {
        let s = parse("app.kubernetes.io/name=web,empty=").unwrap();
        assert!(s.matches(&labels(&[("app.kubernetes.io/name", "web"), ("empty", "")])));
        assert!(!s.matches(&labels(&[
            ("app.kubernetes.io/name", "web"),
            ("empty", "x")
        ])));
    }

    #[test]
    fn display_round_trips() {
        for src in ["a=b,c!=d,e in (x,y),f notin (z),g,!h", "x>1,y<2", ""] {
            let s = parse(src).unwrap();
            assert_eq!(parse(&s.to_string()).unwrap(), s);
        }
        assert_eq!(parse("e in (y, x, x)").unwrap().to_string(), "e in (x,y)");
    }

    #[test]
    fn parse_errors_are_explained() {
        for bad in [
            "a=b,",
            "=b",
            "a in b",
            "a in (b",
            "a b",
            "a=(b)",
            "!",
            "a=b)",
            "-bad=x",
            "a=has space",
            "Upper.Case/x=y",
            "a=,b",
        ] {
            match parse(bad) {
                Err(Error::Invalid(m)) => {
                    assert!(m.contains("label selector"), "{bad}: {m}");
                    assert!(!m.contains('\n'), "{bad}: one line: {m}");
                }
                Ok(s) if bad == "a=,b" => assert_eq!(s.requirements().len(), 2),
                other => panic!("{bad}: expected an error, got {other:?}"),
            }
        }
        let Err(Error::Invalid(m)) = parse("a in b") else {
            panic!()
        };
        assert!(m.contains("expected '('"), "{m}");
    }

    #[test]
    fn long_values_rejected() {
        let long = "x".repeat(64);
        assert!(parse(&format!("a={long}")).is_err());
        assert!(parse(&format!("a={}", "x".repeat(63))).is_ok());
    }

    #[test]
    fn from_k8s_object_form() {
        let s = LabelSelector::from_value(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "team", "operator": "Exists"}
            ]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "x"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "x"),
            ("env", "prod")
        ])));
        assert_eq!(
            s.to_string(),
            "app=web,tier in (a,b),!legacy,env notin (prod),team"
        );
    }

    #[test]
    fn from_k8s_empty_matches_everything() {
        let s = LabelSelector::from_value(&json!({})).unwrap();
        assert!(s.matches(&labels(&[("a", "b")])));
        let s = LabelSelector::from_k8s(None, None).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn from_k8s_validation() {
        let cases = [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "non-empty values",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "takes no values",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
                "unknown operator",
            ),
            (json!({"matchLabels": {"a": "b c"}}), "matchLabels"),
            (json!({"matchLabel": {"a": "b"}}), "unknown field"),
            (json!("app=web"), "must be an object"),
        ];
        for (v, want) in cases {
            match LabelSelector::from_value(&v) {
                Err(Error::Invalid(m)) => assert!(m.contains(want), "{v}: {m}"),
                other => panic!("{v}: expected error, got {other:?}"),
            }
        }
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let s = parse("app=web").unwrap();
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
    }
}
