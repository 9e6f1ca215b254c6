//! The `Resources` step: the backup's objects restored through the resources layer's plan
//! and apply, with one adjustment the operator makes to the plan (a value): each PVC
//! created whose source PVC has data in the backup gets a `dataSourceRef` to a
//! VolumeBackup made for it in its target namespace, so that Coffer's volume populator
//! fills it. Everything else (namespace mapping, clone, transforms, storage-class and
//! image mappings, existing objects, rollback, order) is the resources layer's.

use std::collections::BTreeMap;

use coffer_api::{
    ExistingObjects, ItemKind, ObjectCounts, Restore, RestoreMethod, RestoreMode, RestoreSpec,
    RestoreStatus, VolumeBackup, VolumeBackupSpec, VolumeRestorePhase, VolumeStatus,
};
use coffer_resources::client::Cluster;
use coffer_resources::restore::{
    Action, ApplyOptions, ExistingPolicy, Outcome, RestoreOptions, apply, plan,
};
use coffer_resources::transform::TransformSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;

use super::{RESTORE_LABEL, RESTORED_BY, Source, item, pending_volume, restore_label};
use crate::backup::manifest::BackupManifest;
use crate::backup::movers::create;
use crate::context::Context;
use crate::error::{Error, KubeContext, Result};
use crate::names::{MANAGED_BY, object_name};
use crate::populator::SOURCE_KIND;

/// Coffer's own kinds are never restored: a restored Backup would run again, a restored
/// VolumeBackup or Restore would describe work that did not happen here.
const NEVER_RESTORED: &[&str] = &[
    "backups.coffer.dev",
    "volumebackups.coffer.dev",
    "restores.coffer.dev",
];

/// Every StorageClass the restored PVCs will use (after the mapping) must exist.
pub async fn check_storage_classes(
    ctx: &Context,
    spec: &RestoreSpec,
    m: &BackupManifest,
) -> Result<()> {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    for v in &m.volumes {
        let Some(from) = &v.storage_class else {
            continue;
        };
        let to = spec.storage_class_mapping.get(from).unwrap_or(from);
        if api
            .get_opt(to)
            .await
            .kube_ctx(|| format!("reading StorageClass {to}"))?
            .is_none()
        {
            return Err(Error::Invalid(if to == from {
                format!(
                    "StorageClass {to} of PVC {}/{} does not exist in this cluster: map it to one that does with spec.storageClassMapping ({to}: NEW)",
                    v.namespace, v.pvc
                )
            } else {
                format!(
                    "StorageClass {to} (spec.storageClassMapping of {from}, PVC {}/{}) does not exist: fix the mapping (kubectl get storageclass)",
                    v.namespace, v.pvc
                )
            }));
        }
    }
    Ok(())
}

/// The rules of the transforms ConfigMap, every key a rules file, in key order.
async fn transforms(ctx: &Context, ns: &str, spec: &RestoreSpec) -> Result<TransformSet> {
    let mut set = TransformSet::default();
    let Some(t) = &spec.transforms else {
        return Ok(set);
    };
    let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .get_opt(&t.config_map)
        .await
        .kube_ctx(|| format!("reading ConfigMap {ns}/{}", t.config_map))?
        .ok_or_else(|| {
            Error::Invalid(format!(
                "spec.transforms names ConfigMap {ns}/{}, which does not exist",
                t.config_map
            ))
        })?;
    for (key, text) in cm.data.unwrap_or_default() {
        let source = format!("ConfigMap {ns}/{} key {key}", t.config_map);
        set.extend(
            TransformSet::from_yaml(&text, &source)
                .map_err(|e| Error::Invalid(format!("{source}: {e}")))?,
        );
    }
    Ok(set)
}

/// Whether the volume filter lets source PVC `v` have its data back.
pub fn wanted(spec: &RestoreSpec, v: &VolumeStatus) -> bool {
    let Some(f) = &spec.volumes else {
        return true;
    };
    let matches = |s: &String| *s == v.pvc || *s == format!("{}/{}", v.namespace, v.pvc);
    (f.include.is_empty() || f.include.iter().any(matches)) && !f.exclude.iter().any(matches)
}

/// Restores the objects, recording counts, failures and the volumes to fill in `st`.
pub async fn restore(
    ctx: &Context,
    r: &Restore,
    source: &Source,
    st: &mut RestoreStatus,
) -> Result<()> {
    let ns = r.namespace().unwrap_or_default();
    let spec = &r.spec;
    let m = &source.manifest;
    let snap_id = m.resources_snapshot.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "backup {}/{} holds no resources snapshot (it failed before storing its objects)",
            m.namespace, m.name
        ))
    })?;
    let snap = source.repo.find_snapshot(&snap_id).await?;
    let in_place = spec.mode == RestoreMode::InPlace;
    let mut exclude = spec.exclude_resources.clone();
    exclude.extend(NEVER_RESTORED.iter().map(|s| s.to_string()));
    if in_place {
        // The PVCs are there and their data was written by the movers; their specs are
        // mostly immutable.
        exclude.extend([
            "persistentvolumeclaims".to_string(),
            "persistentvolumes".to_string(),
        ]);
    }
    let opts = RestoreOptions {
        namespaces: Vec::new(),
        namespace_mapping: spec.namespace_mapping.clone(),
        include_resources: spec.include_resources.clone(),
        exclude_resources: exclude,
        selector: spec.label_selector.clone(),
        only: spec.only.clone(),
        transforms: transforms(ctx, &ns, spec).await?,
        storage_class_mapping: spec.storage_class_mapping.clone(),
        image_registry_mapping: spec.image_registry_mapping.clone(),
        // In place, objects go back to their backed-up state unless told otherwise.
        existing: match spec.existing {
            Some(ExistingObjects::Skip) => Some(ExistingPolicy::Skip),
            Some(ExistingObjects::Update) => Some(ExistingPolicy::Update),
            Some(ExistingObjects::Recreate) => Some(ExistingPolicy::Recreate),
            None if in_place => Some(ExistingPolicy::Update),
            None => None,
        },
        rollback: spec.rollback,
        clone_suffix: spec.clone.clone(),
        preserve_node_ports: false,
    };
    let cluster = Cluster::from_client(ctx.client.clone(), "in-cluster", &ns);
    let progress = coffer_repo::progress::none();
    let mut plan = plan(&source.repo, &snap, &cluster, &opts, &progress)
        .await
        .map_err(|e| match e {
            coffer_resources::Error::Invalid(m) | coffer_resources::Error::Plan(m) => {
                Error::Invalid(m)
            }
            other => Error::Failed(other.to_string()),
        })?;

    // Each PVC created with data in the backup: a VolumeBackup beside it, and its data
    // source naming that.
    let by_source: BTreeMap<String, &VolumeStatus> = m
        .volumes
        .iter()
        .filter(|v| v.snapshot_id.is_some())
        .map(|v| (format!("{}/{}", v.namespace, v.pvc), v))
        .collect();
    let label = restore_label(&ns, &r.name_any());
    let mut volumes = Vec::new();
    let mut volume_backups = Vec::new();
    for o in plan.objects.iter_mut() {
        if o.kind != "PersistentVolumeClaim" {
            continue;
        }
        let target_ns = o.namespace.clone().unwrap_or_default();
        let from = o
            .from
            .clone()
            .unwrap_or_else(|| format!("{target_ns}/{}", o.name));
        let Some(v) = by_source.get(&from) else {
            continue;
        };
        if !wanted(spec, v) {
            let mut s = pending_volume(&target_ns, &o.name, v);
            s.phase = Some(VolumeRestorePhase::Skipped);
            s.message = Some("excluded by spec.volumes: restored empty".into());
            volumes.push(s);
            continue;
        }
        if o.action != Action::Create {
            let mut s = pending_volume(&target_ns, &o.name, v);
            s.phase = Some(VolumeRestorePhase::Skipped);
            s.message = Some(format!(
                "the PVC exists (action {}): mode new fills only the PVCs it creates",
                o.action
            ));
            volumes.push(s);
            continue;
        }
        let vb_name = object_name(&[&r.name_any(), &o.name]);
        let vb = VolumeBackup {
            metadata: kube::api::ObjectMeta {
                name: Some(vb_name.clone()),
                namespace: Some(target_ns.clone()),
                labels: Some(
                    [
                        (RESTORE_LABEL.to_string(), label.clone()),
                        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: VolumeBackupSpec {
                backup: m.name.clone(),
                source_pvc: v.pvc.clone(),
                source_namespace: v.namespace.clone(),
                size: v.size.clone().unwrap_or_default(),
                volume_mode: v.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                storage_class_name: v.storage_class.clone(),
                access_modes: Vec::new(),
                labels: BTreeMap::new(),
                repository: source.repository.clone(),
                snapshot_id: v.snapshot_id.clone(),
                restore: Some(format!("{ns}/{}", r.name_any())),
            },
            status: None,
        };
        volume_backups.push(vb);
        let obj = &mut o.object;
        if let Some(s) = obj.get_mut("spec").and_then(|s| s.as_object_mut()) {
            s.remove("dataSource");
            s.remove("volumeName");
            s.insert(
                "dataSourceRef".into(),
                json!({"apiGroup": SOURCE_KIND.0, "kind": SOURCE_KIND.1, "name": vb_name}),
            );
        }
        obj["metadata"]["labels"][RESTORE_LABEL] = json!(label);
        obj["metadata"]["annotations"][RESTORED_BY] = json!(format!("{ns}/{}", r.name_any()));
        o.notes.push(format!(
            "filled by the volume populator from VolumeBackup {vb_name}"
        ));
        let mut s = pending_volume(&target_ns, &o.name, v);
        s.volume_backup = Some(vb_name);
        s.method = Some(RestoreMethod::Populator);
        volumes.push(s);
    }

    super::init::inject(spec, &mut plan);

    // Namespaces (and rollback deletions) first, so that the VolumeBackups can be made in
    // them before the PVCs that name them.
    let mut first = plan.clone();
    first.objects.retain(|o| o.kind == "Namespace");
    first.failures.clear();
    let mut rest = plan;
    rest.objects.retain(|o| o.kind != "Namespace");
    rest.deletions.clear();
    let (cluster, progress) = (&cluster, &progress);
    let run = |p| async move {
        apply(cluster, p, &ApplyOptions::default(), progress)
            .await
            .map_err(|e| Error::Failed(e.to_string()))
    };
    let mut report = run(&first).await?;
    for vb in &volume_backups {
        let target_ns = vb.metadata.namespace.clone().unwrap_or_default();
        create(
            &Api::<VolumeBackup>::namespaced(ctx.client.clone(), &target_ns),
            vb,
            &format!("VolumeBackup {target_ns}/{}", vb.name_any()),
        )
        .await?;
    }
    let second = run(&rest).await?;
    report.results.extend(second.results);
    report.warnings.extend(second.warnings);
    report.missing_dependencies = second.missing_dependencies;
    let mut counts = ObjectCounts::default();
    for res in &report.results {
        match res.result {
            Outcome::Created => counts.created += 1,
            Outcome::Updated | Outcome::Recreated => counts.updated += 1,
            Outcome::Unchanged | Outcome::Skipped | Outcome::Planned => counts.skipped += 1,
            Outcome::Deleted => counts.deleted += 1,
            Outcome::Failed => {
                counts.failed += 1;
                st.items.push(item(
                    ItemKind::Object,
                    &format!("{}/{}", res.kind, res.name),
                    res.namespace.as_deref(),
                    res.reason.clone().unwrap_or_else(|| "failed".into()),
                ));
            }
        }
    }
    // A PVC whose object failed gets no data.
    for v in volumes.iter_mut() {
        if report.results.iter().any(|res| {
            res.result == Outcome::Failed
                && res.kind == "PersistentVolumeClaim"
                && res.name == v.pvc
                && res.namespace.as_deref() == Some(v.namespace.as_str())
        }) {
            v.phase = Some(VolumeRestorePhase::Failed);
            v.message = Some("the PVC could not be created (see items)".into());
        }
    }
    st.warnings.extend(report.warnings.iter().cloned());
    st.warnings.extend(
        report
            .missing_dependencies
            .iter()
            .map(|d| format!("missing dependency: {d}")),
    );
    st.objects = Some(counts);
    if !in_place {
        st.volumes = volumes;
    }
    Ok(())
}
