//! Repository commands: init, snapshots, keys, stats, and maintenance (forget, prune,
//! check, copy).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use coffer_repo::forget::tags_match;
use coffer_repo::{
    CheckOptions, Compression, Encryption, ForgetRequest, InitOptions, KdfParams, PruneOptions,
    Repository, RetentionPolicy, Secret,
};
use serde_json::json;

use crate::common::{self, RepoOpts};

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create a new repository.
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// AEAD for every stored object.
    #[arg(long, default_value = "aes-256-gcm", value_parser = ["aes-256-gcm", "chacha20-poly1305"])]
    pub encryption: String,
    /// zstd, zstd:LEVEL (-7..22) or none.
    #[arg(long, default_value = "zstd")]
    pub compression: String,
    /// Block size for block volumes (power of two, >= 4096).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub block_size: u32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 32)]
    pub pack_size_mib: u32,
    /// Refuse deletion (forget, prune) of objects younger than this many days.
    #[arg(long, default_value_t = 0)]
    pub immutable_days: u32,
    /// Argon2id memory in KiB for the password slot (default 65536).
    #[arg(long, default_value_t = KdfParams::default().m_cost_kib, hide = true)]
    pub kdf_memory_kib: u32,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(opts: &RepoOpts, cmd: RepoCommand) -> Result<()> {
    match cmd {
        RepoCommand::Init(a) => init(opts, a).await,
    }
}

async fn init(opts: &RepoOpts, a: InitArgs) -> Result<()> {
    let location = opts.location()?;
    let storage = common::storage_at(&location)?;
    let secret = opts.secret()?;
    let encryption: Encryption = a.encryption.parse()?;
    let compression: Compression = a.compression.parse()?;
    if a.pack_size_mib == 0 || a.pack_size_mib > 1024 {
        bail!("--pack-size-mib must be between 1 and 1024");
    }
    let init = InitOptions {
        encryption,
        compression,
        block_size: a.block_size,
        pack_size: a.pack_size_mib * 1024 * 1024,
        immutable_days: a.immutable_days,
        kdf: KdfParams {
            m_cost_kib: a.kdf_memory_kib.max(64),
            ..KdfParams::default()
        },
        ..InitOptions::default()
    };
    let repo = Repository::init(storage, &secret, init, &common::client_options()).await?;
    let c = repo.config();
    if a.json {
        common::print_json(&json!({
            "id": c.id, "location": location.to_string(), "encryption": c.encryption.to_string(),
            "compression": c.compression, "block_size": c.block_size, "pack_size": c.pack_size,
            "key_id": repo.key_id(),
        }))?;
    } else {
        println!(
            "created repository {} at {} ({}, {}, block size {})",
            c.id.short(),
            location,
            c.encryption,
            c.compression,
            c.block_size
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct SnapshotsArgs {
    /// Only snapshots with this tag (K=V); repeatable, all must match.
    #[arg(long = "tag", value_name = "K=V")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn snapshots(opts: &RepoOpts, a: SnapshotsArgs) -> Result<()> {
    let repo = opts.open().await?;
    let filter = common::parse_tags(&a.tags)?;
    let snaps: Vec<_> = repo
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|s| tags_match(&s.tags, &filter))
        .collect();
    if a.json {
        let out: Vec<_> = snaps
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "short_id": s.id.short(),
                    "time": s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "kind": s.kind, "source": s.source, "hostname": s.hostname,
                    "tags": s.tags, "parent": s.parent, "summary": s.summary,
                })
            })
            .collect();
        return common::print_json(&out);
    }
    println!(
        "{:<10} {:<20} {:<6} {:<40} tags",
        "id", "time", "kind", "source"
    );
    for s in &snaps {
        let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<10} {:<20} {:<6} {:<40} {}",
            s.id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.kind,
            s.source,
            tags.join(",")
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(())
}

#[derive(Args)]
pub struct ForgetArgs {
    /// Snapshots to forget (id prefixes), in addition to any policy.
    pub ids: Vec<String>,
    #[arg(long)]
    pub keep_last: Option<u32>,
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    #[arg(long)]
    pub keep_daily: Option<u32>,
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Apply the policy only to snapshots with this tag (K=V); repeatable.
    #[arg(long = "tag", value_name = "K=V")]
    pub tags: Vec<String>,
    /// Show what would be forgotten without forgetting it.
    #[arg(long)]
    pub dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    pub prune: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn forget(opts: &RepoOpts, a: ForgetArgs) -> Result<()> {
    let repo = opts.open().await?;
    let policy = RetentionPolicy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
    };
    if a.ids.is_empty() && policy.is_empty() {
        bail!("nothing to forget: give snapshot ids or a --keep-* policy");
    }
    let request = ForgetRequest {
        ids: a.ids.clone(),
        policy,
        tags: common::parse_tags(&a.tags)?,
    };
    let plan = repo.plan_forget(&request).await?;
    if !a.dry_run {
        let bar = common::ProgressBars::new("forgetting");
        let applied = repo.apply_forget(&plan, &*bar).await;
        bar.finish();
        applied?;
    }
    if a.json {
        let forgotten: Vec<_> = plan.forget.iter().map(|s| s.id).collect();
        common::print_json(&json!({
            "forgotten": forgotten, "kept": plan.keep, "dry_run": a.dry_run, "plan": plan,
        }))?;
    } else {
        for d in &plan.keep {
            println!("keep   {} ({})", d.id.short(), d.reasons.join(", "));
        }
        for s in &plan.forget {
            let refused = match s.immutable_until {
                Some(t) if a.dry_run => {
                    format!(" (immutable until {}: refused)", t.format("%Y-%m-%d %H:%M"))
                }
                _ => String::new(),
            };
            println!(
                "{} {} {} {}{refused}",
                if a.dry_run { "would forget" } else { "forget" },
                s.id.short(),
                s.time.format("%Y-%m-%d %H:%M:%S"),
                s.source,
            );
        }
        println!(
            "{} snapshot(s) {}",
            plan.forget.len(),
            if a.dry_run {
                "would be forgotten"
            } else {
                "forgotten"
            }
        );
    }
    if a.prune && !a.dry_run {
        prune_repo(
            &repo,
            PruneArgs {
                dry_run: false,
                max_unused_percent: 10,
                json: a.json,
            },
        )
        .await?;
    }
    Ok(())
}

#[derive(Args)]
pub struct PruneArgs {
    /// Show what would be removed without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack packs with more than this percentage of unused data.
    #[arg(long, default_value_t = 10)]
    pub max_unused_percent: u32,
    #[arg(long)]
    pub json: bool,
}

pub async fn prune(opts: &RepoOpts, a: PruneArgs) -> Result<()> {
    let repo = opts.open().await?;
    prune_repo(&repo, a).await
}

async fn prune_repo(repo: &Repository, a: PruneArgs) -> Result<()> {
    let bar = common::ProgressBars::new("pruning");
    let report = repo
        .prune(
            PruneOptions {
                dry_run: a.dry_run,
                max_unused_percent: a.max_unused_percent,
            },
            &*bar,
        )
        .await;
    bar.finish();
    let report = report?;
    if a.json {
        return common::print_json(&report);
    }
    if let Some(plan) = report.plan.as_ref().filter(|_| a.dry_run) {
        for p in &plan.delete {
            println!(
                "would delete  pack {} ({}, unused)",
                p.id.short(),
                human_bytes(p.size)
            );
        }
        for p in &plan.repack {
            println!(
                "would repack  pack {} ({}, {} used)",
                p.id.short(),
                human_bytes(p.size),
                human_bytes(p.used_bytes)
            );
        }
        for p in &plan.orphans {
            println!(
                "would delete  pack {} ({}, not indexed; only if no backup runs)",
                p.id.short(),
                human_bytes(p.size)
            );
        }
        println!(
            "would remove {} unused and repack {} partly used of {} packs ({} unused chunks); {} leftover packs; {} packs wait for running backups; {} kept by the immutability period",
            report.packs_unused,
            report.packs_repacked,
            report.packs_total,
            report.chunks_unused,
            plan.orphans.len(),
            plan.scheduled.len(),
            plan.immutable.len()
        );
        return Ok(());
    }
    println!(
        "deleted {} packs ({}), {} unindexed leftovers; repacked {} packs ({}); {} snapshots keep {} chunks",
        report.packs_deleted,
        human_bytes(report.bytes_deleted),
        report.orphan_packs_deleted,
        report.packs_repacked,
        human_bytes(report.bytes_repacked),
        report.snapshots,
        report.chunks_used
    );
    if report.packs_deferred > 0 {
        println!(
            "{} packs scheduled for deletion are kept while {} backup(s) run; the next prune removes them",
            report.packs_deferred, report.live_sessions
        );
    }
    if report.packs_immutable > 0 {
        println!(
            "{} packs kept by the immutability period",
            report.packs_immutable
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct CheckArgs {
    /// Read and verify every stored byte.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify a random fraction (0..1, or a percentage like 10%) of the packs.
    #[arg(long, value_name = "FRACTION")]
    pub read_data_subset: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn check(opts: &RepoOpts, a: CheckArgs) -> Result<()> {
    let repo = opts.open().await?;
    let read_data = if a.read_data {
        Some(1.0)
    } else if let Some(f) = &a.read_data_subset {
        let v = match f.strip_suffix('%') {
            Some(p) => p.parse::<f64>().map(|x| x / 100.0),
            None => f.parse::<f64>(),
        }
        .ok()
        .filter(|v| (0.0..=1.0).contains(v) && *v > 0.0)
        .with_context(|| {
            format!("--read-data-subset {f:?}: give a fraction in (0, 1] or a percentage like 10%")
        })?;
        Some(v)
    } else {
        None
    };
    let bar = common::ProgressBars::new("checking");
    let report = repo
        .check(
            CheckOptions {
                read_data,
                // Block maps and file trees, checked as a restore would read them.
                metadata: coffer_volume::metadata_checks(),
            },
            &*bar,
        )
        .await?;
    bar.finish();
    if a.json {
        common::print_json(&report)?;
    } else {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        println!(
            "checked {} snapshots, {} index files, {} packs, {} chunks; read {} packs ({})",
            report.snapshots,
            report.index_files,
            report.packs,
            report.chunks,
            report.packs_read,
            human_bytes(report.bytes_read)
        );
    }
    if !report.ok() {
        bail!(
            "check found {} error(s); damaged packs: {}; affected snapshots: {}",
            report.errors.len(),
            report.damaged_packs.len(),
            report
                .affected_snapshots
                .iter()
                .map(|s| s.short())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !a.json {
        println!("no errors found");
    }
    Ok(())
}

#[derive(Args)]
pub struct CopyArgs {
    /// Target repository (created as a copy target if it does not exist).
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
    /// Target password file (else env COFFER_TO_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<std::path::PathBuf>,
    /// Target raw key file.
    #[arg(long, value_name = "FILE")]
    pub to_key_file: Option<std::path::PathBuf>,
    /// Snapshots to copy (id prefixes); all when none given.
    pub ids: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn copy(opts: &RepoOpts, a: CopyArgs) -> Result<()> {
    let repo = opts.open().await?;
    let to = common::storage_at(&common::parse_location(&a.to)?)?;
    let client = common::client_options();
    let secret: Secret = common::secret_from(
        a.to_password_file.as_ref(),
        a.to_key_file.as_ref(),
        "COFFER_TO_PASSWORD",
        "--to-password-file",
    )?;
    let target = match Repository::open(to.clone(), &secret, &client).await {
        Ok(t) => t,
        Err(coffer_repo::Error::NotARepository(_)) => {
            repo.init_copy_target(to, &secret, InitOptions::default(), &client)
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    let mut ids = Vec::new();
    for id in &a.ids {
        ids.push(repo.find_snapshot(id).await?.id);
    }
    let bar = common::ProgressBars::new("copying");
    let report = repo.copy_to(&target, &ids, &*bar).await;
    bar.finish();
    let report = report?;
    if a.json {
        return common::print_json(&report);
    }
    println!(
        "copied {} snapshot(s) ({} chunks, {} stored), {} already present",
        report.copied.len(),
        report.chunks_copied,
        human_bytes(report.bytes_stored),
        report.skipped.len()
    );
    Ok(())
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// List key slots.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a key slot: a new password (env COFFER_NEW_PASSWORD or --new-password-file) or raw key file.
    Add {
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<std::path::PathBuf>,
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a key slot (not the one in use, not the last).
    Remove { id: String },
}

pub async fn key(opts: &RepoOpts, cmd: KeyCommand) -> Result<()> {
    let repo = opts.open().await?;
    match cmd {
        KeyCommand::List { json } => {
            let keys = repo.list_keys().await?;
            // Slots that parse but failed when this command tried them (e.g. they open
            // and hold no keys) are problems too.
            let failed: BTreeMap<&str, &str> = repo
                .key_slot_problems()
                .iter()
                .map(|p| (p.id.as_str(), p.problem.as_str()))
                .collect();
            let problem_of = |e: &coffer_repo::KeyEntry| {
                e.problem
                    .clone()
                    .or_else(|| failed.get(e.id.as_str()).map(|p| p.to_string()))
            };
            if json {
                let out: Vec<_> = keys
                    .iter()
                    .map(|e| match (&e.slot, problem_of(e)) {
                        (Some(k), None) => json!({"id": e.id, "kind": k.kind, "created": k.created.to_rfc3339(),
                               "hostname": k.hostname, "username": k.username, "current": e.id == repo.key_id()}),
                        (_, problem) => json!({"id": e.id, "kind": e.slot.as_ref().map(|k| k.kind),
                               "current": false, "problem": problem}),
                    })
                    .collect();
                return common::print_json(&out);
            }
            for e in &keys {
                match (&e.slot, problem_of(e)) {
                    (Some(k), None) => println!(
                        "{} {:<9} {} {}@{}{}",
                        e.short_id(),
                        format!("{:?}", k.kind).to_lowercase(),
                        k.created.format("%Y-%m-%d %H:%M:%S"),
                        k.username,
                        k.hostname,
                        if e.id == repo.key_id() {
                            " (current)"
                        } else {
                            ""
                        }
                    ),
                    (_, problem) => eprintln!(
                        "warning: key slot {:?} is unusable and skipped: {} (remove it with `coffer key remove {}`)",
                        e.short_id(),
                        problem.unwrap_or_default(),
                        e.short_id()
                    ),
                }
            }
        }
        KeyCommand::Add {
            new_password_file,
            new_key_file,
            json,
        } => {
            let secret = common::secret_from(
                new_password_file.as_ref(),
                new_key_file.as_ref(),
                "COFFER_NEW_PASSWORD",
                "--new-password-file",
            )?;
            let id = repo.add_key(&secret, KdfParams::default()).await?;
            if json {
                common::print_json(&json!({"id": id}))?;
            } else {
                println!("added key slot {}", coffer_repo::keys::short(&id));
            }
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id).await?;
            println!("removed key slot {}", coffer_repo::keys::short(&removed));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct StatsArgs {
    #[arg(long)]
    pub json: bool,
}

pub async fn stats(opts: &RepoOpts, a: StatsArgs) -> Result<()> {
    let repo = opts.open().await?;
    let s = repo.stats().await?;
    if a.json {
        return common::print_json(&s);
    }
    println!("snapshots:        {}", s.snapshots);
    println!(
        "packs:            {} ({})",
        s.packs,
        human_bytes(s.pack_bytes)
    );
    println!("chunks:           {}", s.chunks);
    println!("unique data:      {}", human_bytes(s.unique_bytes));
    println!("stored:           {}", human_bytes(s.stored_bytes));
    println!("logical (total):  {}", human_bytes(s.logical_bytes));
    println!("dedup ratio:      {:.2}x", s.dedup_ratio);
    println!("compression:      {:.2}x", s.compression_ratio);
    Ok(())
}

pub use coffer_repo::human_bytes;
