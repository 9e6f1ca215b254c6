//! Import: Kubernetes objects from YAML or JSON files (kubectl output, GitOps manifests,
//! an unpacked Velero backup) stored as a resources snapshot, so that they restore with
//! everything `resources restore` offers: ordering, conversion of old API versions,
//! mapping, transforms. This is also how backups from clusters long gone come back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use coffer_repo::Repository;
use coffer_repo::progress::{SharedProgress, Unit};
use serde::Deserialize;
use serde_json::Value;

use crate::archive::{ClusterInfo, RecordedSelection, write_snapshot};
use crate::collect::BackupSummary;
use crate::discovery::{ServedResource, split_api_version};
use crate::{Error, Result};

/// The plural resource name Kubernetes derives from a kind (its own rule for CRDs
/// without an explicit plural, and right for every built-in kind).
pub fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower == "endpoints" {
        return lower;
    }
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if lower.ends_with('s')
        || lower.ends_with('x')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        return format!("{lower}es");
    }
    format!("{lower}s")
}

/// Files under `paths` (directories walked in name order), YAML or JSON.
fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                walk(&e, out)?;
            } else if e
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                out.push(e);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::Invalid(format!("{} does not exist", p.display())));
        }
    }
    Ok(out)
}

/// Reads every object in the files: multi-document YAML, JSON, and `List` kinds
/// unpacked. The first copy of an object wins (an unpacked Velero backup holds each
/// object once per version directory).
pub fn read_objects(paths: &[PathBuf]) -> Result<Vec<(ServedResource, Value)>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for f in manifest_files(paths)? {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", f.display())))?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let v = Value::deserialize(doc).map_err(|e| {
                Error::Invalid(format!(
                    "{}: document {} is not valid YAML: {e}",
                    f.display(),
                    i + 1
                ))
            })?;
            if v.is_null() {
                continue;
            }
            let items = if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
                v["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![v]
            };
            for mut o in items {
                // An empty namespace is no namespace (kubectl writes it for cluster
                // objects); the catalog records only real ones.
                if o["metadata"]["namespace"].as_str() == Some("")
                    && let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    meta.remove("namespace");
                }
                let (Some(api_version), Some(kind), Some(name)) = (
                    o["apiVersion"].as_str(),
                    o["kind"].as_str(),
                    o["metadata"]["name"].as_str(),
                ) else {
                    return Err(Error::Invalid(format!(
                        "{}: document {} is not a Kubernetes object (apiVersion, kind and metadata.name are required)",
                        f.display(),
                        i + 1
                    )));
                };
                let ns = o["metadata"]["namespace"].as_str().map(str::to_string);
                let (group, version) = split_api_version(api_version);
                let bad_name = crate::names::path_segment_problem(name)
                    .map(|p| format!("name {name:?}: {p}"))
                    .or_else(|| {
                        let ns = ns.as_deref()?;
                        crate::names::dns_label_problem(ns)
                            .map(|p| format!("namespace {ns:?}: {p}"))
                    })
                    .or_else(|| {
                        [group, version, kind]
                            .into_iter()
                            .filter(|v| !v.is_empty())
                            .find_map(|v| {
                                crate::names::path_segment_problem(v).map(|p| format!("{v:?}: {p}"))
                            })
                    })
                    .or_else(|| {
                        version
                            .is_empty()
                            .then(|| "apiVersion has no version".to_string())
                    });
                if let Some(problem) = bad_name {
                    return Err(Error::Invalid(format!(
                        "{}: document {}: {kind} {name:?} is not a valid Kubernetes object ({problem})",
                        f.display(),
                        i + 1
                    )));
                }
                if !seen.insert((
                    group.to_string(),
                    kind.to_string(),
                    ns.clone(),
                    name.to_string(),
                )) {
                    continue;
                }
                let res = ServedResource {
                    group: group.to_string(),
                    version: version.to_string(),
                    kind: kind.to_string(),
                    resource: plural_of(kind),
                    singular: kind.to_ascii_lowercase(),
                    short_names: Vec::new(),
                    namespaced: ns.is_some(),
                    verbs: Vec::new(),
                    status_subresource: false,
                };
                out.push((res, o));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid(
            "no Kubernetes objects found in the given files".into(),
        ));
    }
    Ok(out)
}

/// Stores the objects of `paths` as a resources snapshot whose source is `origin`.
pub async fn import(
    repo: &Repository,
    paths: &[PathBuf],
    origin: &str,
    tags: BTreeMap<String, String>,
    progress: &SharedProgress,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let objects = read_objects(paths)?;
    progress.stage("storing", Unit::Items, Some(objects.len() as u64));
    let mut collected: Vec<ServedResource> = Vec::new();
    let mut types = BTreeMap::new();
    let mut namespaces = BTreeSet::new();
    for (r, o) in &objects {
        if !collected
            .iter()
            .any(|c| c.group == r.group && c.version == r.version && c.kind == r.kind)
        {
            collected.push(r.clone());
        }
        *types.entry(r.group_resource()).or_insert(0) += 1;
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            namespaces.insert(ns.to_string());
        }
    }
    let namespaces: Vec<String> = namespaces.into_iter().collect();
    let (snap, bytes_new) = write_snapshot(
        repo,
        ClusterInfo {
            server: origin.to_string(),
            uid: None,
            version: String::new(),
        },
        RecordedSelection {
            namespaces: namespaces.clone(),
            cluster_resources: "auto".into(),
            ..Default::default()
        },
        collected,
        &objects,
        tags,
        format!("import:{origin}"),
        0,
        progress,
    )
    .await?;
    Ok(BackupSummary {
        snapshot_id: snap.id.to_hex(),
        objects: objects.len(),
        warnings: Vec::new(),
        namespaces,
        types,
        bytes_new,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_match_kubernetes() {
        for (k, p) in [
            ("Deployment", "deployments"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Endpoints", "endpoints"),
            ("StorageClass", "storageclasses"),
            ("Gateway", "gateways"),
            ("Mesh", "meshes"),
            ("Proxy", "proxies"),
            ("Key", "keys"),
        ] {
            assert_eq!(plural_of(k), p);
        }
    }

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: n}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s, namespace: n}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: n}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let objs = read_objects(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<(String, bool)> = objs
            .iter()
            .map(|(r, o)| {
                (
                    format!("{}/{}", r.kind, o["metadata"]["name"].as_str().unwrap()),
                    r.namespaced,
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("ConfigMap/a".into(), true),
                ("Secret/s".into(), true),
                ("Namespace/n".into(), false)
            ]
        );
        std::fs::write(dir.path().join("c.yaml"), "kind: Thing\n").unwrap();
        let e = read_objects(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml") && e.contains("not a Kubernetes object"),
            "{e}"
        );
    }
}
