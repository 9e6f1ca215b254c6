//! Names of the objects the operator makes, and the labels that tie them to their
//! Backup.

/// Label on every object a Backup made (its name).
pub const BACKUP_LABEL: &str = "coffer.dev/backup";
/// Label on data-mover pods.
pub const MOVER_LABEL: &str = "coffer.dev/mover";
/// Label on the VolumeSnapshot kept as the next changed-block base of a PVC (its name).
pub const CBT_BASE_LABEL: &str = "coffer.dev/cbt-base-of";
/// Annotation on a kept VolumeSnapshot: the repository snapshot made from it.
pub const REPO_SNAPSHOT_ANNOTATION: &str = "coffer.dev/repository-snapshot";
/// Label on objects the operator manages (for `kubectl get -l`).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "coffer");
/// The ServiceAccount and RoleBinding of data movers in each namespace.
pub const MOVER_SERVICE_ACCOUNT: &str = "coffer-mover";
/// The ClusterRole the movers' RoleBindings grant (installed from deploy/).
pub const MOVER_CLUSTER_ROLE: &str = "coffer-mover";
/// Finalizer of Backups (cleanup of temporary objects; forgetting with policy Delete).
pub const BACKUP_FINALIZER: &str = "coffer.dev/backup";

/// `parts` joined with `-`, cut to a valid object and label-value name (at most 63
/// characters): a longer name keeps its start and ends with a hash of the whole, so that
/// distinct inputs stay distinct.
pub fn object_name(parts: &[&str]) -> String {
    let full = parts.join("-").to_ascii_lowercase();
    if full.len() <= 63 {
        return full;
    }
    let hash = blake3::hash(full.as_bytes()).to_hex();
    let mut head: String = full.chars().take(63 - 9).collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{}", &hash[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_ones_hashed_distinctly() {
        assert_eq!(object_name(&["shop-1", "data"]), "shop-1-data");
        let a = object_name(&["b".repeat(40).as_str(), "x".repeat(40).as_str()]);
        let b = object_name(&["b".repeat(40).as_str(), "y".repeat(40).as_str()]);
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(!a.contains("--"));
    }
}
