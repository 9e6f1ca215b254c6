//! Retention: which snapshots a policy keeps, and removing the others' manifests.
//!
//! The policy works like restic's: snapshots are grouped by (hostname, kind, source);
//! within a group, newest first, `keep_last` keeps the N newest and each calendar rule
//! (hourly, daily, weekly, monthly, yearly) keeps the newest snapshot of each of the N
//! most recent periods that have one. Forgetting only deletes manifests; the data goes
//! with the next prune.

use std::collections::BTreeMap;

use chrono::{Datelike, Timelike, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SnapshotKind, snapshot_path};

#[derive(Clone, Copy, Debug, Default)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
    }
}

/// The decision for one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    pub keep: bool,
    /// The rules that keep it (empty when forgotten).
    pub reasons: Vec<String>,
}

/// Applies `policy` to `snaps` (any order); returns one decision per snapshot.
pub fn apply_policy(snaps: &[Snapshot], policy: &RetentionPolicy) -> Vec<Decision> {
    let mut groups: BTreeMap<(String, SnapshotKind, String), Vec<&Snapshot>> = BTreeMap::new();
    for s in snaps {
        groups
            .entry((s.hostname.clone(), s.kind.clone(), s.source.clone()))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        group.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        type Bucket = fn(&Snapshot) -> i64;
        let rules: [(&str, Option<u32>, Bucket); 6] = [
            ("last", policy.keep_last, |s| {
                s.time.timestamp_nanos_opt().unwrap_or(0)
            }),
            ("hourly", policy.keep_hourly, |s| {
                let t = s.time;
                (t.year() as i64 * 10000 + t.ordinal() as i64) * 100 + t.hour() as i64
            }),
            ("daily", policy.keep_daily, |s| {
                s.time.year() as i64 * 1000 + s.time.ordinal() as i64
            }),
            ("weekly", policy.keep_weekly, |s| {
                let w = s.time.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }),
            ("monthly", policy.keep_monthly, |s| {
                s.time.year() as i64 * 100 + s.time.month() as i64
            }),
            ("yearly", policy.keep_yearly, |s| s.time.year() as i64),
        ];
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); group.len()];
        for (name, limit, bucket) in rules {
            let Some(limit) = limit else { continue };
            let mut kept = 0;
            let mut last_bucket = None;
            for (i, s) in group.iter().enumerate() {
                if kept >= limit {
                    break;
                }
                let b = bucket(s);
                if last_bucket != Some(b) {
                    reasons[i].push(name.to_string());
                    last_bucket = Some(b);
                    kept += 1;
                }
            }
        }
        for (s, r) in group.iter().zip(reasons) {
            out.push(Decision {
                id: s.id,
                keep: !r.is_empty(),
                reasons: r,
            });
        }
    }
    out
}

impl Repository {
    /// Deletes snapshot manifests, refusing those still under the immutability period.
    pub async fn forget_snapshots(&self, snaps: &[&Snapshot]) -> Result<()> {
        let days = self.config().immutable_days;
        if days > 0 {
            let limit = Utc::now() - chrono::Duration::days(days as i64);
            if let Some(s) = snaps.iter().find(|s| s.time > limit) {
                return Err(Error::Refused(format!(
                    "snapshot {} is younger than the repository's {days}-day immutability period; it cannot be forgotten before {}",
                    s.id.short(),
                    (s.time + chrono::Duration::days(days as i64)).format("%Y-%m-%d %H:%M")
                )));
            }
        }
        for s in snaps {
            self.backend().delete(&snapshot_path(&s.id)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use chrono::TimeZone;

    fn snap(day: u32, hour: u32) -> Snapshot {
        Snapshot {
            id: Id::random(),
            time: Utc.with_ymd_and_hms(2026, 1, day, hour, 0, 0).unwrap(),
            kind: "block".into(),
            source: "/dev/x".into(),
            hostname: "h".into(),
            tags: Default::default(),
            parent: None,
            root: vec![],
            refs: vec![],
            summary: serde_json::Value::Null,
            original: None,
        }
    }

    #[test]
    fn daily_and_last() {
        // Two snapshots a day for 10 days.
        let snaps: Vec<Snapshot> = (1..=10).flat_map(|d| [snap(d, 1), snap(d, 13)]).collect();
        let policy = RetentionPolicy {
            keep_last: Some(2),
            keep_daily: Some(5),
            ..Default::default()
        };
        let d = apply_policy(&snaps, &policy);
        let kept: Vec<&Snapshot> = snaps
            .iter()
            .filter(|s| d.iter().find(|x| x.id == s.id).unwrap().keep)
            .collect();
        // last 2 (day 10 both) + newest of days 10,9,8,7,6 => 6 snapshots.
        assert_eq!(kept.len(), 6);
        assert!(kept.iter().all(|s| s.time.day() >= 6));
        let none = apply_policy(
            &snaps,
            &RetentionPolicy {
                keep_last: Some(0),
                ..Default::default()
            },
        );
        assert!(none.iter().all(|d| !d.keep));
    }
}
