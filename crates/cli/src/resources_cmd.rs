//! `coffer resources ...`: back up, list, show and restore Kubernetes objects, and apply
//! restore plans saved earlier.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use coffer_repo::progress::SharedProgress;
use coffer_resources::restore::{self, ExistingPolicy, RestorePlan, RestoreReport};
use coffer_resources::transform::TransformSet;
use coffer_resources::{
    ApplyOptions, Catalog, ClusterResources, RestoreOptions, Selection, collect,
};

use crate::common::{ProgressBars, RepoOpts, parse_tags, print_json};
use crate::kube_access::{ClusterArgs, cluster_error};

#[derive(Subcommand)]
pub enum ResourcesCommand {
    /// Collect Kubernetes objects and store them as a resources snapshot.
    Backup(BackupArgs),
    /// List the objects of a resources snapshot.
    List(ListArgs),
    /// Print one stored object as YAML.
    Show(ShowArgs),
    /// Restore objects into a cluster (with --dry-run: print the plan, validated by the
    /// server's dry run; --plan-out saves it for apply-plan).
    Restore(RestoreArgs),
    /// Apply a restore plan saved with `restore --dry-run --plan-out FILE`.
    ApplyPlan(ApplyPlanArgs),
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
    /// Also write the plan (JSON) to FILE, for `coffer resources apply-plan FILE`.
    #[arg(long, value_name = "FILE")]
    plan_out: Option<PathBuf>,
    /// Seconds to wait for CRDs to become Established and deleted objects to go.
    #[arg(long, default_value_t = 60)]
    wait_timeout: u64,
    /// Requests in flight at once while objects of one step are created.
    #[arg(long, default_value_t = 24)]
    concurrency: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ApplyPlanArgs {
    /// The plan file written by `restore --dry-run --plan-out FILE`.
    plan: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Validate the plan with the server's dry run; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds to wait for CRDs to become Established and deleted objects to go.
    #[arg(long, default_value_t = 60)]
    wait_timeout: u64,
    /// Requests in flight at once while objects of one step are created.
    #[arg(long, default_value_t = 24)]
    concurrency: usize,
    #[arg(long)]
    json: bool,
}

pub async fn run(repo: &RepoOpts, cmd: ResourcesCommand) -> Result<()> {
    match cmd {
        ResourcesCommand::Backup(a) => backup(repo, a).await,
        ResourcesCommand::List(a) => list(repo, a).await,
        ResourcesCommand::Show(a) => show(repo, a).await,
        ResourcesCommand::Restore(a) => restore_cmd(repo, a).await,
        ResourcesCommand::ApplyPlan(a) => apply_plan(a).await,
        ResourcesCommand::Import(a) => import(repo, a).await,
    }
}

async fn import(repo_opts: &RepoOpts, a: ImportArgs) -> Result<()> {
    let tags = parse_tags(&a.tags)?;
    let repo = repo_opts.open().await?;
    let bars = ProgressBars::new("importing objects");
    let progress: SharedProgress = bars.clone();
    let summary =
        coffer_resources::import::import(&repo, &a.paths, &a.origin, tags, &progress).await;
    bars.finish();
    let summary = summary?;
    if a.json {
        return print_json(&summary);
    }
    print_backup_summary(&summary);
    Ok(())
}

async fn backup(repo_opts: &RepoOpts, a: BackupArgs) -> Result<()> {
    let tags = parse_tags(&a.tags)?;
    let cluster_resources: ClusterResources = a.cluster_resources.parse()?;
    let cluster = a.cluster.connect().await?;
    let namespaces = if a.namespace.is_empty() && !a.all_namespaces {
        vec![cluster.default_namespace().to_string()]
    } else {
        a.namespace.clone()
    };
    let repo = repo_opts.open().await?;
    let bars = ProgressBars::new("backing up objects");
    let progress: SharedProgress = bars.clone();
    let summary = collect::backup(
        &repo,
        &cluster,
        &Selection {
            namespaces,
            all_namespaces: a.all_namespaces,
            selector: a.selector,
            include_resources: a.include_resources,
            exclude_resources: a.exclude_resources,
            cluster_resources,
            ..Default::default()
        },
        tags,
        &progress,
    )
    .await;
    bars.finish();
    let summary = summary.map_err(cluster_error)?;
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
        preserve_node_ports: a.preserve_node_ports,
    };
    let apply_opts = ApplyOptions {
        dry_run: a.dry_run,
        wait_timeout: Duration::from_secs(a.wait_timeout),
        concurrency: a.concurrency.max(1),
    };
    let repo = repo_opts.open().await?;
    let snap = repo.find_snapshot(&a.id).await?;
    let cluster = a.cluster.connect().await?;
    let bars = ProgressBars::new("restoring objects");
    let progress: SharedProgress = bars.clone();
    let plan = restore::plan(&repo, &snap, &cluster, &opts, &progress).await;
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            bars.finish();
            return Err(cluster_error(e));
        }
    };
    if let Some(path) = &a.plan_out {
        let text = serde_json::to_vec_pretty(&plan)?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the plan to {}", path.display()))?;
    }
    let report = restore::apply(&cluster, &plan, &apply_opts, &progress).await;
    bars.finish();
    let report = report.map_err(cluster_error)?;
    print_report(&report, Some(&plan), a.json)
}

async fn apply_plan(a: ApplyPlanArgs) -> Result<()> {
    let text = std::fs::read(&a.plan)
        .with_context(|| format!("cannot read the plan {}", a.plan.display()))?;
    let plan: RestorePlan = serde_json::from_slice(&text).map_err(|e| {
        anyhow!(
            "{} is not a restore plan ({e}); write one with `coffer resources restore ID --dry-run --plan-out FILE`",
            a.plan.display()
        )
    })?;
    let apply_opts = ApplyOptions {
        dry_run: a.dry_run,
        wait_timeout: Duration::from_secs(a.wait_timeout),
        concurrency: a.concurrency.max(1),
    };
    let cluster = a.cluster.connect().await?;
    let bars = ProgressBars::new("restoring objects");
    let progress: SharedProgress = bars.clone();
    let report = restore::apply(&cluster, &plan, &apply_opts, &progress).await;
    bars.finish();
    let report = report.map_err(cluster_error)?;
    print_report(&report, a.dry_run.then_some(&plan), a.json)
}

/// Prints a restore's report (with the plan in a dry run), then fails when an object did.
fn print_report(report: &RestoreReport, plan: Option<&RestorePlan>, json: bool) -> Result<()> {
    if json {
        let mut out = serde_json::to_value(report)?;
        // The plan itself is part of a dry run's output (what it validated).
        if let (Some(plan), Some(map)) = (plan.filter(|_| report.dry_run), out.as_object_mut()) {
            map.insert("plan".into(), serde_json::to_value(plan)?);
        }
        print_json(&out)?;
    } else {
        if report.dry_run {
            println!("plan (dry run, validated by the API server; nothing changed):");
        }
        let steps: BTreeMap<(String, Option<String>, String), u32> = plan
            .map(|p| {
                p.objects
                    .iter()
                    .map(|o| {
                        (
                            (o.kind.clone(), o.namespace.clone(), o.name.clone()),
                            o.step,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<4} {:<4} {:<9} {:<10} {:<48} WHY",
            "#", "STEP", "ACTION", "RESULT", "OBJECT"
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
            let step = steps
                .get(&(r.kind.clone(), r.namespace.clone(), r.name.clone()))
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into());
            let mut why = r.reason.clone().unwrap_or_default();
            if !r.notes.is_empty() {
                if !why.is_empty() {
                    why.push_str("; ");
                }
                why.push_str(&r.notes.join("; "));
            }
            println!(
                "{:<4} {:<4} {:<9} {:<10} {:<48} {}",
                i + 1,
                step,
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
    for u in &report.undecided_references {
        eprintln!("left as it was (check it): {u}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !report.success {
        let failed: Vec<String> = report
            .failed()
            .map(|r| {
                format!(
                    "{}: {}",
                    r.display(),
                    r.reason.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        bail!("{} object(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}
