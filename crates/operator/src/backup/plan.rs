//! The Validate step: what a Backup covers. The application's definition (from its
//! Application or inline), the repository (it must be Ready), the selection as the
//! resources layer takes it, and each PVC with the policy that applies to it, its driver,
//! its VolumeSnapshotClass and its consistency group. Anything that cannot run is an
//! [`Error::Invalid`] and the backup fails validation with nothing written.

use std::collections::BTreeMap;

use coffer_api::{
    Application, ApplicationSpec, Backup, ClusterResources, RepositoryKind, RepositoryPhase,
    VolumePolicyKind, VolumeStatus,
};
use coffer_resources::collect::Selection;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};

use crate::backup::snapshots::vsclass_ar;
use crate::error::{Error, KubeContext, Result, is_not_found};
use crate::selector;

/// Label that picks a VolumeSnapshotClass for Coffer among several of one driver.
pub const SNAPSHOT_CLASS_LABEL: &str = "coffer.dev/volume-snapshot-class";
const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";

/// The application's definition: the named Application's spec, or the inline one.
pub async fn application(client: &Client, b: &Backup) -> Result<ApplicationSpec> {
    let ns = b.namespace().unwrap_or_default();
    match (&b.spec.application, &b.spec.selection) {
        (Some(_), Some(_)) => Err(Error::Invalid(
            "spec.application and spec.selection are both set: name an Application or give the selection inline, not both".into(),
        )),
        (Some(name), None) => {
            let api: Api<Application> = Api::namespaced(client.clone(), &ns);
            match api.get(name).await {
                Ok(a) => Ok(a.spec),
                Err(e) if is_not_found(&e) => Err(Error::Invalid(format!(
                    "Application {ns}/{name} does not exist: create it, or give the selection inline in spec.selection"
                ))),
                Err(e) => Err(e).kube_ctx(|| format!("reading Application {ns}/{name}")),
            }
        }
        (None, Some(sel)) => Ok(sel.clone()),
        // Neither: the Backup's own namespace, whole.
        (None, None) => Ok(ApplicationSpec::default()),
    }
}

/// Fails unless the referenced repository reports Ready (its message says why not).
pub async fn repository_ready(client: &Client, b: &Backup) -> Result<()> {
    let ns = b.namespace().unwrap_or_default();
    let r = &b.spec.repository;
    let (status, what) = match r.kind {
        RepositoryKind::BackupRepository => {
            let api: Api<coffer_api::BackupRepository> = Api::namespaced(client.clone(), &ns);
            let o = api
                .get_opt(&r.name)
                .await
                .kube_ctx(|| format!("reading BackupRepository {ns}/{}", r.name))?;
            (
                o.map(|o| o.status),
                format!("BackupRepository {ns}/{}", r.name),
            )
        }
        RepositoryKind::ClusterBackupRepository => {
            let api: Api<coffer_api::ClusterBackupRepository> = Api::all(client.clone());
            let o = api
                .get_opt(&r.name)
                .await
                .kube_ctx(|| format!("reading ClusterBackupRepository {}", r.name))?;
            (
                o.map(|o| o.status),
                format!("ClusterBackupRepository {}", r.name),
            )
        }
    };
    let Some(status) = status else {
        return Err(Error::Invalid(format!(
            "{what} does not exist: create it, or name another repository in spec.repository"
        )));
    };
    let status = status.unwrap_or_default();
    match status.phase {
        Some(RepositoryPhase::Ready) => {
            if r.kind == RepositoryKind::BackupRepository {
                // Checked by the repository controller; read-only repositories take no
                // backups.
            }
            Ok(())
        }
        Some(RepositoryPhase::Unavailable) => Err(Error::Invalid(format!(
            "{what} is Unavailable: {}",
            status.message.unwrap_or_default()
        ))),
        None => Err(Error::Retry(format!("{what} has not been checked yet"))),
    }
}

/// The namespaces an application covers (its own namespace when it names none).
pub fn namespaces(app: &ApplicationSpec, own: &str) -> Vec<String> {
    if app.selection.namespaces.is_empty() {
        vec![own.to_string()]
    } else {
        app.selection.namespaces.clone()
    }
}

/// The selection as the resources layer takes it.
pub fn selection(app: &ApplicationSpec, own: &str) -> Result<Selection> {
    let s = &app.selection;
    let selector = match &s.label_selector {
        Some(l) => selector::to_query(l)?,
        None => None,
    };
    let mut or_selectors = Vec::new();
    for l in &s.or_label_selectors {
        match selector::to_query(l)? {
            Some(q) => or_selectors.push(q),
            None => {
                return Err(Error::Invalid(
                    "an empty selector in orLabelSelectors would select everything: remove it, or drop orLabelSelectors".into(),
                ));
            }
        }
    }
    let objects = s
        .objects
        .iter()
        .map(|o| coffer_resources::collect::NamedObject {
            resource: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
        })
        .collect();
    Ok(Selection {
        namespaces: namespaces(app, own),
        all_namespaces: false,
        selector,
        or_selectors,
        objects,
        include_resources: s.included_resources.clone(),
        exclude_resources: s.excluded_resources.clone(),
        cluster_resources: match s.cluster_resources {
            ClusterResources::Auto => coffer_resources::collect::ClusterResources::Auto,
            ClusterResources::Include => coffer_resources::collect::ClusterResources::Include,
            ClusterResources::Exclude => coffer_resources::collect::ClusterResources::Exclude,
        },
    })
}

/// Whether the selection keeps PVCs at all (not excluded, and included when a list of
/// included resources is given).
fn pvcs_selected(app: &ApplicationSpec) -> bool {
    let is_pvc = |r: &String| {
        let r = r.to_ascii_lowercase();
        ["persistentvolumeclaims", "persistentvolumeclaim", "pvc"].contains(&r.as_str())
    };
    let s = &app.selection;
    !s.excluded_resources.iter().any(is_pvc)
        && (s.included_resources.is_empty() || s.included_resources.iter().any(is_pvc))
}

/// Every PVC the application covers, with the policy that applies and how it will be
/// snapshotted; PVCs of policy `exclude` are left out. Also returns warnings (unbound
/// PVCs).
pub async fn volumes(
    client: &Client,
    app: &ApplicationSpec,
    own: &str,
) -> Result<(Vec<VolumeStatus>, Vec<String>)> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    if !pvcs_selected(app) {
        return Ok((out, warnings));
    }
    let sel = &app.selection;
    // A PVC is the application's when a selector selects it (the label selector, or any
    // of the OR selectors; everything without either) or it is named.
    let selected = |pvc: &PersistentVolumeClaim, ns: &str| {
        let labels = pvc.labels();
        let by_label = match (&sel.label_selector, sel.or_label_selectors.is_empty()) {
            (None, true) => true,
            (Some(l), true) => selector::matches(l, labels),
            (l, false) => {
                l.as_ref().is_some_and(|l| selector::matches(l, labels))
                    || sel
                        .or_label_selectors
                        .iter()
                        .any(|o| selector::matches(o, labels))
            }
        };
        let named = sel.objects.iter().any(|o| {
            let k = o.kind.to_ascii_lowercase();
            ["persistentvolumeclaim", "persistentvolumeclaims", "pvc"].contains(&k.as_str())
                && o.name == pvc.name_any()
                && o.namespace.as_deref().is_none_or(|n| n == ns)
        });
        by_label || named
    };
    let classes = snapshot_classes(client).await?;
    for ns in namespaces(app, own) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let mut pvcs: Vec<PersistentVolumeClaim> = api
            .list(&ListParams::default())
            .await
            .kube_ctx(|| format!("listing the PVCs of namespace {ns}"))?
            .items
            .into_iter()
            .filter(|p| selected(p, &ns))
            .collect();
        pvcs.sort_by_key(|p| p.name_any());
        for pvc in pvcs {
            let name = pvc.name_any();
            let labels = pvc.labels().clone();
            let policy = app
                .volumes
                .iter()
                .find(|p| {
                    p.selector
                        .as_ref()
                        .is_none_or(|s| selector::matches(s, &labels))
                })
                .cloned()
                .unwrap_or_default();
            if policy.policy == VolumePolicyKind::Exclude {
                continue;
            }
            let spec = pvc.spec.clone().unwrap_or_default();
            let Some(pv_name) = spec.volume_name.clone().filter(|v| !v.is_empty()) else {
                warnings.push(format!(
                    "PVC {ns}/{name} is not bound to a volume: it holds no data to back up"
                ));
                continue;
            };
            let pv = Api::<PersistentVolume>::all(client.clone())
                .get(&pv_name)
                .await
                .kube_ctx(|| format!("reading PV {pv_name} of PVC {ns}/{name}"))?;
            let driver = pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .map(|c| c.driver.clone());
            let class = spec.storage_class_name.clone();
            let snapshot_class = match &driver {
                // A live copy needs no snapshot.
                _ if policy.policy == VolumePolicyKind::Live => None,
                None => {
                    return Err(Error::Invalid(format!(
                        "PVC {ns}/{name} (StorageClass {}) is not a CSI volume, so it cannot be snapshotted: set its volume policy to exclude",
                        class.as_deref().unwrap_or("none")
                    )));
                }
                Some(d) => Some(pick_class(&classes, d, policy.volume_snapshot_class.as_deref())
                    .map_err(|reason| {
                        Error::Invalid(format!(
                            "PVC {ns}/{name} (StorageClass {}, driver {d}) cannot be snapshotted: {reason}",
                            class.as_deref().unwrap_or("none")
                        ))
                    })?),
            };
            // A live copy is not snapshotted, so it is in no group.
            let group = app
                .consistency_group_label
                .as_ref()
                .and_then(|k| labels.get(k).cloned())
                .filter(|_| policy.policy != VolumePolicyKind::Live);
            let size = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone());
            out.push(VolumeStatus {
                pvc: name,
                namespace: ns.clone(),
                mode: policy.policy,
                volume_mode: Some(spec.volume_mode.unwrap_or_else(|| "Filesystem".into())),
                size,
                storage_class: class,
                driver,
                snapshot_class,
                group,
                ..Default::default()
            });
        }
    }
    Ok((out, warnings))
}

/// (name, driver, labels, annotations) of every VolumeSnapshotClass.
type ClassInfo = (
    String,
    String,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

async fn snapshot_classes(client: &Client) -> Result<Vec<ClassInfo>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &vsclass_ar());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        // The snapshot CRDs are not installed: no class exists.
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e).kube_ctx(|| "listing VolumeSnapshotClasses".into()),
    };
    Ok(list
        .into_iter()
        .map(|c| {
            let driver = c.data["driver"].as_str().unwrap_or_default().to_string();
            (
                c.name_any(),
                driver,
                c.labels().clone(),
                c.annotations().clone(),
            )
        })
        .collect())
}

/// The VolumeSnapshotClass for `driver`: the one the policy names, else the one labelled
/// for Coffer, else the driver's default, else the driver's only class.
fn pick_class(
    classes: &[ClassInfo],
    driver: &str,
    named: Option<&str>,
) -> std::result::Result<String, String> {
    let of_driver: Vec<&ClassInfo> = classes.iter().filter(|c| c.1 == driver).collect();
    if let Some(n) = named {
        return match classes.iter().find(|c| c.0 == n) {
            Some(c) if c.1 == driver => Ok(n.to_string()),
            Some(c) => Err(format!(
                "VolumeSnapshotClass {n} is for driver {}, not {driver}",
                c.1
            )),
            None => Err(format!("VolumeSnapshotClass {n} does not exist")),
        };
    }
    if of_driver.is_empty() {
        return Err(format!(
            "no VolumeSnapshotClass exists for driver {driver}: create one, or set the PVC's volume policy to exclude"
        ));
    }
    if let Some(c) = of_driver
        .iter()
        .find(|c| c.2.get(SNAPSHOT_CLASS_LABEL).is_some_and(|v| v == "true"))
    {
        return Ok(c.0.clone());
    }
    if let Some(c) = of_driver.iter().find(|c| {
        c.3.get(DEFAULT_CLASS_ANNOTATION)
            .is_some_and(|v| v == "true")
    }) {
        return Ok(c.0.clone());
    }
    if of_driver.len() == 1 {
        return Ok(of_driver[0].0.clone());
    }
    Err(format!(
        "driver {driver} has {} VolumeSnapshotClasses and none is the default or labelled {SNAPSHOT_CLASS_LABEL}=true: name one in the volume policy's volumeSnapshotClass",
        of_driver.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, driver: &str, label: bool, default: bool) -> ClassInfo {
        let mut l = BTreeMap::new();
        if label {
            l.insert(SNAPSHOT_CLASS_LABEL.to_string(), "true".to_string());
        }
        let mut a = BTreeMap::new();
        if default {
            a.insert(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string());
        }
        (name.into(), driver.into(), l, a)
    }

    #[test]
    fn class_choice_order_and_errors() {
        let cs = vec![
            class("a", "d1", false, false),
            class("b", "d1", false, true),
            class("c", "d1", true, false),
            class("x", "d2", false, false),
            class("y", "d2", false, false),
        ];
        assert_eq!(pick_class(&cs, "d1", None).unwrap(), "c");
        assert_eq!(pick_class(&cs, "d1", Some("a")).unwrap(), "a");
        assert!(
            pick_class(&cs, "d1", Some("x"))
                .unwrap_err()
                .contains("driver d2")
        );
        assert!(
            pick_class(&cs, "d2", None)
                .unwrap_err()
                .contains("2 VolumeSnapshotClasses")
        );
        assert!(
            pick_class(&cs, "d3", None)
                .unwrap_err()
                .contains("no VolumeSnapshotClass")
        );
        assert!(pick_class(&cs[..2], "d1", None).unwrap() == "b");
    }
}
