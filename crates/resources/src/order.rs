//! Restore order: which objects go first so that each finds what it needs.
//!
//! CRDs (and wait until Established), Namespaces, cluster-scoped configuration,
//! ServiceAccounts, Secrets, ConfigMaps, quotas, RBAC, PVs and PVCs, Services, other
//! namespaced configuration, workloads, then what points at workloads (autoscalers,
//! Ingresses) and custom resources; inside one rank by namespace and name. Then owners
//! move before their dependents wherever an owner reference would otherwise point
//! forward. docs/restore.md documents this list.

use std::collections::{BTreeMap, BTreeSet};

/// The rank of a kind; lower restores first.
pub fn rank(group: &str, kind: &str, namespaced: bool) -> u32 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 10,
        ("storage.k8s.io", _)
        | ("scheduling.k8s.io", "PriorityClass")
        | ("node.k8s.io", "RuntimeClass")
        | ("networking.k8s.io", "IngressClass")
        | ("snapshot.storage.k8s.io", "VolumeSnapshotClass")
        | ("rbac.authorization.k8s.io", "ClusterRole") => 20,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => 25,
        ("", "ServiceAccount") => 30,
        ("", "Secret") => 40,
        ("", "ConfigMap") => 50,
        ("", "LimitRange" | "ResourceQuota") => 60,
        ("rbac.authorization.k8s.io", "Role") => 70,
        ("rbac.authorization.k8s.io", "RoleBinding") => 75,
        ("", "PersistentVolume") => 80,
        ("", "PersistentVolumeClaim") => 90,
        ("", "Service") => 100,
        ("networking.k8s.io", "NetworkPolicy") | ("policy", "PodDisruptionBudget") => 110,
        ("", "PodTemplate") => 115,
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("", "ReplicationController")
        | ("batch", "Job" | "CronJob") => 120,
        ("", "Pod") => 130,
        ("autoscaling", "HorizontalPodAutoscaler") | ("networking.k8s.io", "Ingress") => 140,
        (g, _) if crate::collect::is_builtin_group(g) => {
            if namespaced {
                145
            } else {
                20
            }
        }
        // Custom resources: after everything built in, so that what they refer to exists.
        _ => 150,
    }
}

/// An item to order: its rank, its sort key and the owner uids it points at.
pub struct Orderable<'a> {
    /// The kind's rank ([`rank`]).
    pub rank: u32,
    /// Sort key inside a rank: (namespace, kind, name).
    pub key: (String, String, String),
    /// The stored object's uid.
    pub uid: Option<&'a str>,
    /// The uids of its owners.
    pub owners: Vec<&'a str>,
}

/// Returns the indices of `items` in restore order: by rank and key, with every owner
/// (present in `items`) placed before its dependents. Cycles (which the API server would
/// not allow anyway) fall back to rank order.
pub fn restore_order(items: &[Orderable]) -> Vec<usize> {
    let mut base: Vec<usize> = (0..items.len()).collect();
    base.sort_by(|&a, &b| (items[a].rank, &items[a].key).cmp(&(items[b].rank, &items[b].key)));
    let by_uid: BTreeMap<&str, usize> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| it.uid.map(|u| (u, i)))
        .collect();
    let mut placed = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    fn place(
        i: usize,
        items: &[Orderable],
        by_uid: &BTreeMap<&str, usize>,
        placed: &mut BTreeSet<usize>,
        visiting: &mut BTreeSet<usize>,
        out: &mut Vec<usize>,
    ) {
        if placed.contains(&i) || !visiting.insert(i) {
            return;
        }
        for owner in &items[i].owners {
            if let Some(&o) = by_uid.get(owner) {
                place(o, items, by_uid, placed, visiting, out);
            }
        }
        placed.insert(i);
        out.push(i);
    }
    let mut visiting = BTreeSet::new();
    for i in base {
        place(i, items, &by_uid, &mut placed, &mut visiting, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(rank: u32, name: &str, uid: &'a str, owners: Vec<&'a str>) -> Orderable<'a> {
        Orderable {
            rank,
            key: (String::new(), String::new(), name.to_string()),
            uid: Some(uid),
            owners,
        }
    }

    #[test]
    fn ranks_then_owners_first() {
        // A ConfigMap (rank 50) owned by a custom resource (rank 150) must follow it.
        let items = vec![
            item(rank("", "ConfigMap", true), "cm", "u1", vec!["u3"]),
            item(rank("", "Namespace", false), "ns", "u2", vec![]),
            item(rank("example.com", "Widget", true), "w", "u3", vec![]),
            item(
                rank("apiextensions.k8s.io", "CustomResourceDefinition", false),
                "crd",
                "u4",
                vec![],
            ),
        ];
        assert_eq!(restore_order(&items), vec![3, 1, 2, 0]);
    }

    #[test]
    fn documented_sequence() {
        let seq = [
            ("apiextensions.k8s.io", "CustomResourceDefinition", false),
            ("", "Namespace", false),
            ("storage.k8s.io", "StorageClass", false),
            ("", "ServiceAccount", true),
            ("", "Secret", true),
            ("", "ConfigMap", true),
            ("", "PersistentVolume", false),
            ("", "PersistentVolumeClaim", true),
            ("", "Service", true),
            ("apps", "Deployment", true),
            ("example.com", "Widget", true),
        ];
        for w in seq.windows(2) {
            assert!(
                rank(w[0].0, w[0].1, w[0].2) < rank(w[1].0, w[1].1, w[1].2),
                "{:?} before {:?}",
                w[0],
                w[1]
            );
        }
    }
}
