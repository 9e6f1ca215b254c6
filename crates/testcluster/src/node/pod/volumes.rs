//! A pod's volumes on the host: PVCs (their PV's directory or image), hostPath,
//! emptyDir, ConfigMap, Secret, downward API, projected (with ServiceAccount tokens) and
//! generic ephemeral volumes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::launch::VolSource;
use super::status::PodRuntime;
use crate::node::Node;

pub(super) async fn prepare_volumes(
    node: &Node,
    rt: &PodRuntime,
    pod: &Pod,
) -> Result<HashMap<String, VolSource>> {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = rt.namespace.clone();
    let client = node.cfg.client.clone();
    let mut out = HashMap::new();
    let mut handles = Vec::new();
    let voldir = rt.dir.join("volumes");
    for v in spec.volumes.iter().flatten() {
        let dir = voldir.join(&v.name);
        let claim = if let Some(pvc) = &v.persistent_volume_claim {
            Some(pvc.claim_name.clone())
        } else if v.ephemeral.is_some() {
            Some(format!("{}-{}", rt.name, v.name))
        } else {
            None
        };
        // Volumes of files (ConfigMap, Secret, downward API, projected): written below.
        let files = if let Some(claim) = claim {
            let (path, block, handle) = claim_path(node, &ns, &claim).await?;
            handles.extend(handle);
            out.insert(v.name.clone(), VolSource { path, block });
            continue;
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir)?;
            None
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&p)?;
            }
            out.insert(
                v.name.clone(),
                VolSource {
                    path: p,
                    block: false,
                },
            );
            continue;
        } else if let Some(cm) = &v.config_map {
            let optional = cm.optional.unwrap_or(false);
            let items = cm.items.as_deref();
            let files = config_map_files(&client, &ns, &cm.name, items, optional).await?;
            Some((files, cm.default_mode))
        } else if let Some(sec) = &v.secret {
            let name = sec.secret_name.clone().unwrap_or_default();
            let optional = sec.optional.unwrap_or(false);
            let files = secret_files(&client, &ns, &name, sec.items.as_deref(), optional).await?;
            Some((files, sec.default_mode))
        } else if let Some(dapi) = &v.downward_api {
            let files = downward_files(pod, dapi.items.as_deref().unwrap_or(&[]))?;
            Some((files, dapi.default_mode))
        } else if let Some(proj) = &v.projected {
            let mut files = BTreeMap::new();
            for src in proj.sources.iter().flatten() {
                if let Some(t) = &src.service_account_token {
                    let sa = spec
                        .service_account_name
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    let (audience, expiry) = (t.audience.clone(), t.expiration_seconds);
                    let token = request_token(&client, &ns, &sa, pod, audience, expiry).await?;
                    files.insert(t.path.clone(), (token.into_bytes(), None));
                }
                if let Some(cm) = &src.config_map {
                    // This API server (OpenShift's tree) also projects openshift-service-ca.crt,
                    // whose publisher is disabled here: treat it as optional.
                    let optional =
                        cm.optional.unwrap_or(false) || cm.name == "openshift-service-ca.crt";
                    let items = cm.items.as_deref();
                    files.extend(config_map_files(&client, &ns, &cm.name, items, optional).await?);
                }
                if let Some(s) = &src.secret {
                    let optional = s.optional.unwrap_or(false);
                    let items = s.items.as_deref();
                    files.extend(secret_files(&client, &ns, &s.name, items, optional).await?);
                }
                if let Some(d) = &src.downward_api {
                    files.extend(downward_files(pod, d.items.as_deref().unwrap_or(&[]))?);
                }
            }
            Some((files, proj.default_mode))
        } else {
            bail!(
                "volume {}: this volume type is not supported by the simulated node",
                v.name
            );
        };
        if let Some((files, default_mode)) = files {
            write_files(&dir, &files, default_mode)?;
        }
        out.insert(
            v.name.clone(),
            VolSource {
                path: dir,
                block: false,
            },
        );
    }
    *rt.handles.lock().unwrap() = handles;
    Ok(out)
}

/// Where a bound PVC's volume is on the host: (path, block, volume handle if it is one of
/// the simulated driver's).
pub(super) async fn claim_path(
    node: &Node,
    ns: &str,
    claim: &str,
) -> Result<(PathBuf, bool, Option<String>)> {
    let client = node.cfg.client.clone();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs
        .get(claim)
        .await
        .with_context(|| format!("PVC {claim}"))?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .ok_or_else(|| anyhow!("waiting for PVC {claim} to be bound"))?;
    let pv = Api::<PersistentVolume>::all(client).get(&pv_name).await?;
    let pspec = pv.spec.unwrap_or_default();
    let block = pspec.volume_mode.as_deref() == Some("Block");
    if let Some(csi) = &pspec.csi {
        if csi.driver != crate::DRIVER {
            bail!(
                "PV {pv_name} uses CSI driver {} which the simulated node does not have",
                csi.driver
            );
        }
        let path = node.cfg.volumes.volume_path(&csi.volume_handle, block);
        Ok((path, block, Some(csi.volume_handle.clone())))
    } else if let Some(hp) = &pspec.host_path {
        Ok((PathBuf::from(&hp.path), block, None))
    } else if let Some(local) = &pspec.local {
        Ok((PathBuf::from(&local.path), block, None))
    } else {
        bail!(
            "PV {pv_name} has a volume source the simulated node cannot mount (csi with {}, hostPath and local work)",
            crate::DRIVER
        )
    }
}

pub(super) async fn request_token(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({
        "expirationSeconds": expiration.unwrap_or(3607),
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
    });
    if let Some(a) = audience {
        spec["audiences"] = json!([a]);
    }
    let req =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let tr: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {ns}/{sa}"))?;
    Ok(tr.status.map(|s| s.token).unwrap_or_default())
}

/// Files of a volume: relative path -> (contents, mode of this file if the item sets one).
pub(super) type Files = BTreeMap<String, (Vec<u8>, Option<i32>)>;

/// Every key as a file of its name, or only the listed keys at their paths and modes
/// (a listed key that is missing is an error unless the source is optional).
pub(super) fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Files> {
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, (v, None))).collect()),
        Some(items) => {
            let mut out = BTreeMap::new();
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(it.path.clone(), (v.clone(), it.mode));
                    }
                    None if optional => {}
                    None => bail!("key {} not found", it.key),
                }
            }
            Ok(out)
        }
    }
}

/// A ConfigMap or Secret that a volume or env refers to; None if missing and optional.
pub(super) async fn get_source<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(o) => Ok(Some(o)),
        None if optional => Ok(None),
        None => bail!(
            "{} \"{name}\" not found",
            K::kind(&Default::default()).to_lowercase()
        ),
    }
}

/// A ConfigMap's `data` (what env refers to) and, with `binary`, its `binaryData`
/// (volumes hold both).
pub(super) async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
    binary: bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let Some(cm) = get_source::<ConfigMap>(client, ns, name, optional).await? else {
        return Ok(BTreeMap::new());
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    if binary {
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
    }
    Ok(data)
}

pub(super) async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let Some(s) = get_source::<Secret>(client, ns, name, optional).await? else {
        return Ok(BTreeMap::new());
    };
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    data.extend(
        s.string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    Ok(data)
}

pub(super) async fn config_map_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Files> {
    let data = config_map_data(client, ns, name, optional, true).await?;
    select_items(data, items, optional).with_context(|| format!("configmap {name}"))
}

pub(super) async fn secret_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Files> {
    let data = secret_data(client, ns, name, optional).await?;
    select_items(data, items, optional).with_context(|| format!("secret {name}"))
}

pub(super) fn downward_files(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
) -> Result<Files> {
    let mut out = BTreeMap::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_value(pod, &f.field_path)?
        } else if it.resource_field_ref.is_some() {
            "0".to_string()
        } else {
            String::new()
        };
        out.insert(it.path.clone(), (value.into_bytes(), it.mode));
    }
    Ok(out)
}

pub(super) fn fmt_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward-API field path.
pub(super) fn field_value(pod: &Pod, path: &str) -> Result<String> {
    let md = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let sub = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "metadata.labels" => fmt_map(&md.labels.clone().unwrap_or_default()),
        "metadata.annotations" => fmt_map(&md.annotations.clone().unwrap_or_default()),
        "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
        "status.podIPs" | "status.hostIPs" => "127.0.0.1".into(),
        _ => {
            if let Some(k) = sub("metadata.labels") {
                md.labels
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = sub("metadata.annotations") {
                md.annotations
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default()
            } else {
                bail!("unsupported fieldRef {path}")
            }
        }
    })
}

/// Writes a volume's files; each file gets its item's mode, else the volume's
/// defaultMode, else 0644.
pub(super) fn write_files(dir: &Path, files: &Files, default_mode: Option<i32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (rel, (data, mode)) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data)?;
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(mode.or(default_mode).unwrap_or(0o644) as u32),
        )?;
    }
    Ok(())
}
