//! Retention: which snapshots a policy keeps, as a plan ([`ForgetPlan`]) that can be
//! shown (`forget --dry-run`) and then applied (removing the others' manifests).
//!
//! The policy works like restic's: snapshots are grouped by (hostname, kind, source);
//! within a group, newest first, `keep_last` keeps the N newest and each calendar rule
//! (hourly, daily, weekly, monthly, yearly) keeps the newest snapshot of each of the N
//! most recent periods that have one. Forgetting only deletes manifests; the data goes
//! with the next prune.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::progress::{Progress, Unit};
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SnapshotKind, snapshot_path};

/// How many snapshots of each period to keep; `None` rules do not apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// The N newest.
    pub keep_last: Option<u32>,
    /// The newest of each of the N most recent hours.
    pub keep_hourly: Option<u32>,
    /// The newest of each of the N most recent days.
    pub keep_daily: Option<u32>,
    /// The newest of each of the N most recent ISO weeks.
    pub keep_weekly: Option<u32>,
    /// The newest of each of the N most recent months.
    pub keep_monthly: Option<u32>,
    /// The newest of each of the N most recent years.
    pub keep_yearly: Option<u32>,
}

impl RetentionPolicy {
    /// True when no rule is set (the policy would keep nothing).
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Whether a rule keeps it.
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

/// What to forget: snapshots named by id prefix (or "latest"), and the snapshots a
/// retention policy does not keep among those that carry every tag in `tags`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ForgetRequest {
    /// Snapshot id prefixes to forget whatever the policy says.
    pub ids: Vec<String>,
    /// The retention policy (empty: only `ids` are forgotten).
    pub policy: RetentionPolicy,
    /// The policy applies only to snapshots with all these tags.
    pub tags: BTreeMap<String, String>,
}

/// A snapshot as a plan shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// What it holds.
    pub kind: SnapshotKind,
    /// What was backed up.
    pub source: String,
    /// Who wrote it.
    pub hostname: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Until when the repository's immutability period protects it, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable_until: Option<DateTime<Utc>>,
}

/// Which snapshots a forget removes and which the policy keeps, before anything is
/// deleted. Serialisable: `forget --dry-run --json` prints it, and an operator can store
/// it for approval before [`Repository::apply_forget`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetPlan {
    /// When the plan was made.
    pub created: DateTime<Utc>,
    /// Snapshots to forget, oldest first.
    pub forget: Vec<PlannedSnapshot>,
    /// The policy's decisions for the snapshots it keeps (empty without a policy).
    pub keep: Vec<Decision>,
}

impl ForgetPlan {
    /// The snapshots the immutability period protects: applying refuses while any is
    /// listed.
    pub fn immutable(&self) -> impl Iterator<Item = &PlannedSnapshot> {
        self.forget.iter().filter(|s| s.immutable_until.is_some())
    }
}

/// What applying a forget plan did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ForgetReport {
    /// Manifests removed (or already gone).
    pub forgotten: Vec<SnapshotId>,
}

/// When the immutability period of `days` ends for a snapshot taken at `time` (the end
/// of time when the sum overflows: a date read from storage may be anything).
fn immutable_until(time: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    time.checked_add_signed(chrono::Duration::days(days as i64))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// True when `tags` holds every pair of `filter`.
pub fn tags_match(tags: &BTreeMap<String, String>, filter: &BTreeMap<String, String>) -> bool {
    filter.iter().all(|(k, v)| tags.get(k) == Some(v))
}

impl Repository {
    /// Plans a forget: resolves the ids, applies the policy. Nothing is deleted.
    pub async fn plan_forget(&self, request: &ForgetRequest) -> Result<ForgetPlan> {
        let all = self.list_snapshots().await?;
        let mut forget: Vec<SnapshotId> = Vec::new();
        for id in &request.ids {
            forget.push(self.find_snapshot(id).await?.id);
        }
        let mut keep = Vec::new();
        if !request.policy.is_empty() {
            let selected: Vec<Snapshot> = all
                .iter()
                .filter(|s| tags_match(&s.tags, &request.tags))
                .cloned()
                .collect();
            let decisions = apply_policy(&selected, &request.policy);
            forget.extend(decisions.iter().filter(|d| !d.keep).map(|d| d.id));
            keep = decisions.into_iter().filter(|d| d.keep).collect();
            keep.retain(|d| !forget.contains(&d.id));
        }
        let snaps: Vec<&Snapshot> = all.iter().filter(|s| forget.contains(&s.id)).collect();
        Ok(self.plan_for(&snaps, keep))
    }

    fn plan_for(&self, snaps: &[&Snapshot], keep: Vec<Decision>) -> ForgetPlan {
        let days = self.config().immutable_days;
        let now = Utc::now();
        let mut forget: Vec<PlannedSnapshot> = snaps
            .iter()
            .map(|s| {
                let until = immutable_until(s.time, days);
                PlannedSnapshot {
                    id: s.id,
                    time: s.time,
                    kind: s.kind.clone(),
                    source: s.source.clone(),
                    hostname: s.hostname.clone(),
                    tags: s.tags.clone(),
                    immutable_until: (days > 0 && until > now).then_some(until),
                }
            })
            .collect();
        forget.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        forget.dedup_by_key(|s| s.id);
        ForgetPlan {
            created: now,
            forget,
            keep,
        }
    }

    /// Applies a forget plan: removes its snapshots' manifests, refusing (before
    /// removing anything) when the immutability period protects any of them. Reports a
    /// "forgetting" stage to `progress`.
    pub async fn apply_forget(
        &self,
        plan: &ForgetPlan,
        progress: &dyn Progress,
    ) -> Result<ForgetReport> {
        // The period is checked again now, not taken from the plan.
        let days = self.config().immutable_days;
        if days > 0 {
            let now = Utc::now();
            if let Some(s) = plan
                .forget
                .iter()
                .find(|s| immutable_until(s.time, days) > now)
            {
                return Err(Error::Immutable {
                    snapshot: s.id.short(),
                    days,
                    until: immutable_until(s.time, days)
                        .format("%Y-%m-%d %H:%M")
                        .to_string(),
                });
            }
        }
        progress.stage("forgetting", Unit::Items, Some(plan.forget.len() as u64));
        let mut report = ForgetReport::default();
        for s in &plan.forget {
            self.storage().delete(&snapshot_path(&s.id)).await?;
            report.forgotten.push(s.id);
            progress.advance(1);
        }
        Ok(report)
    }

    /// Forgets the given snapshots (a plan of exactly these, applied at once).
    pub async fn forget_snapshots(&self, snaps: &[&Snapshot]) -> Result<ForgetReport> {
        let plan = self.plan_for(snaps, Vec::new());
        self.apply_forget(&plan, &crate::progress::NoProgress).await
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

    #[test]
    fn tags_filter() {
        let tags: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert!(tags_match(&tags, &BTreeMap::new()));
        assert!(tags_match(&tags, &[("a".into(), "1".into())].into()));
        assert!(!tags_match(&tags, &[("a".into(), "2".into())].into()));
    }
}
