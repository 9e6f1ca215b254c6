//! Repository commands: init, snapshots, keys, stats, and maintenance (forget, prune,
//! check, copy).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use coffer_repo::{Compression, Encryption, InitOptions, KdfParams, Repository};
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
    let repo = Repository::init(&location, &secret, init).await?;
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

/// True when `tags` holds every pair of `filter`.
pub fn tags_match(tags: &BTreeMap<String, String>, filter: &BTreeMap<String, String>) -> bool {
    filter.iter().all(|(k, v)| tags.get(k) == Some(v))
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
