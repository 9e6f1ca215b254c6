//! The strategic-merge-patch subset (see the module docs of [`super`]): maps merge as in
//! a JSON merge patch, known lists merge by key, and the `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` and `$setElementOrder` directives.

use serde_json::{Map, Value};

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
    match target {
        Value::Object(t) => smp_map(t, p, &mut Vec::new()),
        _ => Ok(()),
    }
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
    let key = match key {
        Some(key) if !whole_replace => key,
        _ => {
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
    };
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
