//! `coffer resources ...`: back up, list, show and restore Kubernetes objects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use coffer_resources::restore::ExistingPolicy;
use coffer_resources::transform::TransformSet;
use coffer_resources::{Catalog, ClusterResources, RestoreOptions, Selection, collect, restore};

use crate::common::{RepoOpts, parse_tags, print_json, spinner};

#[derive(Subcommand)]
pub enum ResourcesCommand {
    /// Collect Kubernetes objects and store them as a resources snapshot.
    Backup(BackupArgs),
    /// List the objects of a resources snapshot.
    List(ListArgs),
    /// Print one stored object as YAML.
    Show(ShowArgs),
    /// Restore objects into a cluster.
    Restore(RestoreArgs),
    /// Store objects from YAML/JSON files or directories (kubectl output, manifests, an
    /// unpacked Velero backup) as a resources snapshot.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// Files or directories (walked for *.yaml, *.yml, *.json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Where the objects came from (recorded as the snapshot's source cluster).
    #[arg(long, default_value = "imported")]
    origin: String,
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    context: Option<String>,
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Namespace to back up (repeatable; default: the context's namespace).
    #[arg(long, short = 'n')]
    namespace: Vec<String>,
    /// Every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Label selector (kubectl syntax: app=web,tier!=cache).
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Only these resources (kubectl names, comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    include_resources: Vec<String>,
    /// Never these resources.
    #[arg(long, value_delimiter = ',')]
    exclude_resources: Vec<String>,
    /// Cluster-scoped objects: auto (what the selection needs), include (all), exclude.
    #[arg(long, default_value = "auto")]
    cluster_resources: String,
    /// Tag K=V (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Snapshot id (or prefix, or "latest").
    id: String,
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Kind (or resource name as kubectl accepts it).
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    id: String,
    /// KIND/NAME, e.g. deployment/web.
    object: String,
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Print JSON instead of YAML.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    id: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only objects from these source namespaces (repeatable).
    #[arg(long, short = 'n')]
    namespace: Vec<String>,
    /// OLD=NEW: restore namespace OLD as NEW (repeatable).
    #[arg(long)]
    namespace_mapping: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    include_resources: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    exclude_resources: Vec<String>,
    /// Label selector over the stored objects.
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Restore only KIND/NAME (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Transform rules file (native or Velero resource-modifier format; repeatable).
    #[arg(long)]
    transform: Vec<PathBuf>,
    /// OLD=NEW storage class (repeatable).
    #[arg(long)]
    storage_class_mapping: Vec<String>,
    /// OLD=NEW image registry prefix (repeatable).
    #[arg(long)]
    image_registry_mapping: Vec<String>,
    /// Objects that exist: skip (default), update (to the backed-up state) or recreate.
    #[arg(long)]
    existing: Option<String>,
    /// Also delete objects in scope that did not exist at backup time (implies
    /// --existing update unless given).
    #[arg(long)]
    rollback: bool,
    /// Rename every restored object NAME-SUFFIX so the clone runs beside the original.
    #[arg(long, value_name = "SUFFIX")]
    clone: Option<String>,
    /// Keep Service nodePorts.
    #[arg(long)]
    preserve_node_ports: bool,
    /// Print the plan, validated by the server's dry run; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds to wait for CRDs to become Established and deleted objects to go.
    #[arg(long, default_value_t = 60)]
    wait_timeout: u64,
    #[arg(long)]
    json: bool,
}

pub async fn run(repo: &RepoOpts, cmd: ResourcesCommand) -> Result<()> {
    match cmd {
        ResourcesCommand::Backup(a) => backup(repo, a).await,
        ResourcesCommand::List(a) => list(repo, a).await,
        ResourcesCommand::Show(a) => show(repo, a).await,
        ResourcesCommand::Restore(a) => restore_cmd(repo, a).await,
        ResourcesCommand::Import(a) => import(repo, a).await,
    }
}

async fn import(repo_opts: &RepoOpts, a: ImportArgs) -> Result<()> {
    let tags = parse_tags(&a.tags)?;
    let repo = repo_opts.open().await?;
    let summary = coffer_resources::import::import(&repo, &a.paths, &a.origin, tags).await?;
    if a.json {
        return print_json(&summary);
    }
    print_backup_summary(&summary);
    Ok(())
}

async fn backup(repo_opts: &RepoOpts, a: BackupArgs) -> Result<()> {
    let tags = parse_tags(&a.tags)?;
    let cluster_resources: ClusterResources = a.cluster_resources.parse()?;
    let (client, config) = collect::client_from_kubeconfig(
        a.cluster.kubeconfig.as_deref(),
        a.cluster.context.as_deref(),
    )
    .await?;
    let namespaces = if a.namespace.is_empty() && !a.all_namespaces {
        vec![config.default_namespace.clone()]
    } else {
        a.namespace.clone()
    };
    let repo = repo_opts.open().await?;
    let bar = spinner("collecting objects");
    let summary = collect::backup(
        &repo,
        &client,
        &config,
        &Selection {
            namespaces,
            all_namespaces: a.all_namespaces,
            selector: a.selector,
            include_resources: a.include_resources,
            exclude_resources: a.exclude_resources,
            cluster_resources,
        },
        tags,
    )
    .await?;
    bar.finish_and_clear();
    if a.json {
        return print_json(&summary);
    }
    print_backup_summary(&summary);
    Ok(())
}

fn print_backup_summary(summary: &coffer_resources::BackupSummary) {
    println!(
        "snapshot {} saved: {} objects from {} in {:.1}s",
        &summary.snapshot_id[..8],
        summary.objects,
        if summary.namespaces.is_empty() {
            "cluster scope".to_string()
        } else {
            format!("namespaces {}", summary.namespaces.join(", "))
        },
        summary.duration_s
    );
    for (t, n) in &summary.types {
        println!("  {n:>6}  {t}");
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
}

async fn list(repo_opts: &RepoOpts, a: ListArgs) -> Result<()> {
    let repo = repo_opts.open().await?;
    let snap = repo.find_snapshot(&a.id).await?;
    let catalog = Catalog::load(&repo, &snap).await?;
    let entries: Vec<&coffer_resources::Entry> = catalog
        .entries
        .iter()
        .filter(|e| {
            a.namespace
                .as_deref()
                .is_none_or(|ns| e.namespace.as_deref() == Some(ns))
        })
        .filter(|e| {
            a.kind
                .as_deref()
                .is_none_or(|k| catalog.entry_answers_to(e, k))
        })
        .collect();
    if a.json {
        let out: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "apiVersion": e.api_version,
                    "kind": e.kind,
                    "namespace": e.namespace,
                    "name": e.name,
                    "size": e.size,
                })
            })
            .collect();
        return print_json(&out);
    }
    println!(
        "{:<20} {:<32} {:<24} NAME",
        "NAMESPACE", "APIVERSION", "KIND"
    );
    for e in entries {
        println!(
            "{:<20} {:<32} {:<24} {}",
            e.namespace.as_deref().unwrap_or("-"),
            e.api_version,
            e.kind,
            e.name
        );
    }
    Ok(())
}

async fn show(repo_opts: &RepoOpts, a: ShowArgs) -> Result<()> {
    let repo = repo_opts.open().await?;
    let snap = repo.find_snapshot(&a.id).await?;
    let catalog = Catalog::load(&repo, &snap).await?;
    let found = catalog.find(&a.object, a.namespace.as_deref())?;
    let entry = match found.as_slice() {
        [] => bail!(
            "no {} in snapshot {}{} (see `coffer resources list {}`)",
            a.object,
            snap.id.short(),
            a.namespace
                .as_deref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default(),
            snap.id.short()
        ),
        [one] => *one,
        many => bail!(
            "{} matches {} objects ({}); add --namespace",
            a.object,
            many.len(),
            many.iter()
                .map(|e| e.display())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let obj = Catalog::read_object(&repo, entry).await?;
    if a.json {
        return print_json(&obj);
    }
    print!("{}", serde_yaml::to_string(&obj)?);
    Ok(())
}

fn parse_mapping(list: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for m in list {
        let Some((a, b)) = m.split_once('=') else {
            bail!("--{flag} {m:?} is not OLD=NEW");
        };
        if a.is_empty() || b.is_empty() {
            bail!("--{flag} {m:?} has an empty side");
        }
        out.insert(a.to_string(), b.to_string());
    }
    Ok(out)
}

async fn restore_cmd(repo_opts: &RepoOpts, a: RestoreArgs) -> Result<()> {
    let mut transforms = TransformSet::default();
    for f in &a.transform {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read transform file {}", f.display()))?;
        transforms.extend(TransformSet::from_yaml(&text, &f.display().to_string())?);
    }
    let existing: Option<ExistingPolicy> = a.existing.as_deref().map(str::parse).transpose()?;
    let opts = RestoreOptions {
        namespaces: a.namespace,
        namespace_mapping: parse_mapping(&a.namespace_mapping, "namespace-mapping")?,
        include_resources: a.include_resources,
        exclude_resources: a.exclude_resources,
        selector: a.selector,
        only: a.only,
        transforms,
        storage_class_mapping: parse_mapping(&a.storage_class_mapping, "storage-class-mapping")?,
        image_registry_mapping: parse_mapping(&a.image_registry_mapping, "image-registry-mapping")?,
        existing,
        rollback: a.rollback,
        clone_suffix: a.clone,
        dry_run: a.dry_run,
        preserve_node_ports: a.preserve_node_ports,
        wait_timeout: Duration::from_secs(a.wait_timeout),
    };
    let repo = repo_opts.open().await?;
    let snap = repo.find_snapshot(&a.id).await?;
    let (client, _config) = collect::client_from_kubeconfig(
        a.cluster.kubeconfig.as_deref(),
        a.cluster.context.as_deref(),
    )
    .await?;
    let bar = spinner("restoring objects");
    let report = restore::restore(&repo, &snap, &client, &opts).await?;
    bar.finish_and_clear();
    if a.json {
        print_json(&report)?;
    } else {
        if report.dry_run {
            println!("plan (dry run, validated by the API server; nothing changed):");
        }
        println!(
            "{:<4} {:<9} {:<10} {:<48} WHY",
            "#", "ACTION", "RESULT", "OBJECT"
        );
        for (i, r) in report.results.iter().enumerate() {
            let object = format!(
                "{}/{}{}",
                r.kind,
                r.name,
                r.namespace
                    .as_deref()
                    .map(|n| format!(" -n {n}"))
                    .unwrap_or_default()
            );
            let mut why = r.reason.clone().unwrap_or_default();
            if !r.notes.is_empty() {
                if !why.is_empty() {
                    why.push_str("; ");
                }
                why.push_str(&r.notes.join("; "));
            }
            println!(
                "{:<4} {:<9} {:<10} {:<48} {}",
                i + 1,
                r.action,
                r.result,
                object,
                why
            );
        }
        let counts: Vec<String> = report
            .summary
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!("{}", counts.join(", "));
    }
    for m in &report.missing_dependencies {
        eprintln!("missing dependency: {m}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !report.success {
        let failed: Vec<String> = report
            .results
            .iter()
            .filter(|r| r.result == "failed")
            .map(|r| {
                format!(
                    "{}/{}: {}",
                    r.kind,
                    r.name,
                    r.reason.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        bail!("{} object(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}
