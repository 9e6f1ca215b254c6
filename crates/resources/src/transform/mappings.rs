//! The built-in mappings `--storage-class-mapping` and `--image-registry-mapping`, and
//! parsing their `OLD=NEW` flags.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Error;

pub(super) const LEGACY_SC_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

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
