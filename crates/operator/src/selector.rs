//! Label selectors: the API's structured form turned into the kubectl syntax the API
//! server evaluates, and evaluated locally against an object's labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::{Error, Result};

/// The selector in the API server's `labelSelector` syntax; None for an empty selector
/// (everything).
pub fn to_query(sel: &LabelSelector) -> Result<Option<String>> {
    let mut parts = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    return Err(Error::Invalid(format!(
                        "label selector expression on {:?}: operator {} needs values",
                        e.key, e.operator
                    )));
                }
                let op = if e.operator == "In" { "in" } else { "notin" };
                parts.push(format!("{} {op} ({})", e.key, values.join(",")));
            }
            "Exists" => parts.push(e.key.clone()),
            "DoesNotExist" => parts.push(format!("!{}", e.key)),
            other => {
                return Err(Error::Invalid(format!(
                    "label selector operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                )));
            }
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join(","))
    })
}

/// Whether `labels` satisfy `sel` (an empty selector matches everything).
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn sel() -> LabelSelector {
        LabelSelector {
            match_labels: Some([("app".to_string(), "shop".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["db".into(), "cache".into()]),
                },
                LabelSelectorRequirement {
                    key: "skip".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        }
    }

    #[test]
    fn query_syntax_and_local_evaluation_agree() {
        assert_eq!(
            to_query(&sel()).unwrap().unwrap(),
            "app=shop,tier in (db,cache),!skip"
        );
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(matches(&sel(), &l(&[("app", "shop"), ("tier", "db")])));
        assert!(!matches(&sel(), &l(&[("app", "shop"), ("tier", "web")])));
        assert!(!matches(
            &sel(),
            &l(&[("app", "shop"), ("tier", "db"), ("skip", "1")])
        ));
        assert!(matches(&LabelSelector::default(), &l(&[])));
        assert_eq!(to_query(&LabelSelector::default()).unwrap(), None);
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(to_query(&bad).unwrap_err().to_string().contains("Near"));
    }
}
