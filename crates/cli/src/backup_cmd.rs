//! `coffer backup ...`: application backups through their Backup objects, in the style of
//! the velero CLI. `create` writes a Backup (and with `--wait` follows it to its end),
//! `get` lists them, `describe` tells one in words, `delete` removes the object, `logs`
//! prints its data movers' logs.
//!
//! These commands only read and write Kubernetes objects (Backups, and they read
//! VolumeBackups, Events and the movers' pods); the operator running in the cluster does
//! the work. Text formatting is kept in pure functions so that it is tested without a
//! cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use coffer_api::{
    ApplicationSpec, Backup, BackupPhase, BackupSpec, ClusterResources, DeletionPolicy,
    RepositoryKind, RepositoryRef, Selection, VolumeBackup,
};
use coffer_resources::names::{dns_label_problem, path_segment_problem};
use coffer_resources::selector::Operator;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};

use crate::kube_access::{
    ClusterArgs, Doc, Followed, OutputFormat, elapsed, format_time, join_map, or_else, outcome,
    parse_duration, parse_timeout, print_objects, render_table, serde_name, time_or_none,
    wait_for_end,
};
use crate::repo_cmd::human_bytes;

/// The Backups of a namespace.
type Target = crate::kube_access::Target<Backup>;

/// The label the operator puts on every object it makes for a backup (VolumeBackups,
/// mover pods, temporary PVCs): the Backup's name.
pub const BACKUP_LABEL: &str = "coffer.dev/backup";

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Create a Backup of an Application (--application) or of namespaces and selectors
    /// given inline; with --wait, follow it to its end (exit non-zero unless Completed).
    Create(Box<CreateArgs>),
    /// List Backups, or show one, as a table, JSON or YAML.
    Get(GetArgs),
    /// Everything about one Backup in words: spec, phase, progress, items, hooks,
    /// volumes, its VolumeBackups and events.
    Describe(DescribeArgs),
    /// Delete a Backup object (its data stays in the repository or goes, as its
    /// deletionPolicy says; --forget makes it go).
    Delete(DeleteArgs),
    /// Print the logs of the Backup's data-mover pods (while the pods exist).
    Logs(LogsArgs),
}

/// How the cluster-scoped objects of an inline selection are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterResourcesArg {
    /// Those the selected objects need (CRDs, bound PVs, StorageClasses, ...).
    Auto,
    /// All cluster-scoped objects the selectors match.
    Include,
    /// None.
    Exclude,
}

impl From<ClusterResourcesArg> for ClusterResources {
    fn from(a: ClusterResourcesArg) -> Self {
        match a {
            ClusterResourcesArg::Auto => ClusterResources::Auto,
            ClusterResourcesArg::Include => ClusterResources::Include,
            ClusterResourcesArg::Exclude => ClusterResources::Exclude,
        }
    }
}

/// `--deletion-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum DeletionPolicyArg {
    /// Deleting the Backup keeps its data in the repository.
    Retain,
    /// Deleting the Backup forgets it in the repository too.
    Delete,
}

impl From<DeletionPolicyArg> for DeletionPolicy {
    fn from(a: DeletionPolicyArg) -> Self {
        match a {
            DeletionPolicyArg::Retain => DeletionPolicy::Retain,
            DeletionPolicyArg::Delete => DeletionPolicy::Delete,
        }
    }
}

/// The flags that select what an inline backup takes (without --application).
const SELECTION_FLAGS: [&str; 6] = [
    "include_namespaces",
    "selector",
    "or_selectors",
    "include_resources",
    "exclude_resources",
    "cluster_resources",
];

#[derive(Args)]
pub struct CreateArgs {
    /// The Backup's name.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The Backup's namespace (default: the context's). Without --application and
    /// --include-namespaces, also the namespaces backed up (repeatable: the Backup goes
    /// into the first; others than its own need --cluster-repository).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Vec<String>,
    /// Back up this Application (in the Backup's namespace).
    #[arg(long, value_name = "NAME", conflicts_with_all = SELECTION_FLAGS)]
    application: Option<String>,
    /// Back up these namespaces (comma-separated or repeated) while the Backup itself
    /// lives in -n's namespace.
    #[arg(long, value_delimiter = ',', value_name = "NS")]
    include_namespaces: Vec<String>,
    /// Only objects with these labels (kubectl syntax: app=web,tier!=cache,env in (a,b)).
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    selector: Option<String>,
    /// Objects matching this selector too (repeatable; Velero's orLabelSelectors).
    #[arg(long = "or-selector", value_name = "SELECTOR")]
    or_selectors: Vec<String>,
    /// Only these resources (kubectl names: deployments,configmaps,widgets.example.com).
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    include_resources: Vec<String>,
    /// Never these resources.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    exclude_resources: Vec<String>,
    /// Cluster-scoped objects (default auto: those the selected objects need).
    #[arg(long, value_enum)]
    cluster_resources: Option<ClusterResourcesArg>,
    /// The repository: a BackupRepository in the Backup's namespace.
    #[arg(long, default_value = "default", value_name = "NAME")]
    repository: String,
    /// --repository names a ClusterBackupRepository.
    #[arg(long)]
    cluster_repository: bool,
    /// How long the backup is kept (720h, 30d, 1h30m); default: until deleted.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// K=V recorded with the backup in the repository (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// What deleting the Backup object does to its data.
    #[arg(long, value_enum, default_value_t = DeletionPolicyArg::Retain)]
    deletion_policy: DeletionPolicyArg,
    /// Follow the backup to its end: progress on stderr, then its description; exit
    /// non-zero unless it Completed.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (the backup goes on after it).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    timeout: String,
}

#[derive(Args)]
pub struct GetArgs {
    /// One Backup (default: all of the namespace).
    #[arg(conflicts_with = "all_namespaces")]
    name: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The namespace (default: the context's).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    /// Backups of every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// The Backup.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The namespace (default: the context's).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// The Backup.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The namespace (default: the context's).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    /// Forget the backup in the repository too: sets deletionPolicy Delete first.
    #[arg(long)]
    forget: bool,
    /// Wait until the object is gone (the operator may hold it while it cleans up).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    timeout: String,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The Backup.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The namespace (default: the context's).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    /// Only the last N lines of each container.
    #[arg(long, value_name = "N")]
    tail: Option<i64>,
}

pub async fn run(cmd: BackupCommand) -> Result<()> {
    match cmd {
        BackupCommand::Create(a) => create(*a).await,
        BackupCommand::Get(a) => get(a).await,
        BackupCommand::Describe(a) => describe(a).await,
        BackupCommand::Delete(a) => delete(a).await,
        BackupCommand::Logs(a) => logs(a).await,
    }
}

fn check_name(name: &str) -> Result<()> {
    crate::kube_access::check_name::<Backup>(name)
}

// ---- create ----------------------------------------------------------------------------

async fn create(a: CreateArgs) -> Result<()> {
    check_name(&a.name)?;
    let spec = spec_from_flags(&a)?;
    let timeout = parse_timeout(&a.timeout)?;
    let target = Target::connect(&a.cluster, a.namespace.first().map(String::as_str)).await?;
    let ns = target.namespace.clone();
    let name = a.name.clone();
    let backup = Backup {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        spec,
        status: None,
    };
    target.create(&backup).await?;
    if !a.wait {
        println!("backup {name} created in namespace {ns}");
        println!("follow it with: coffer backup describe {name} -n {ns}");
        return Ok(());
    }
    eprintln!("backup {name} created in namespace {ns}; waiting for it to end");
    let done = wait_for_end(&target, &name, timeout).await?;
    let related = Related::fetch(&target, &done).await;
    print!("{}", describe_text(&done, &related, Timestamp::now()));
    outcome(&done)
}

/// The spec the flags of `create` ask for; flag errors say which flag is wrong.
fn spec_from_flags(a: &CreateArgs) -> Result<BackupSpec> {
    let (application, selection) = match &a.application {
        Some(app) => {
            if a.namespace.len() > 1 {
                bail!(
                    "--application takes one --namespace (where the Backup and its Application are); list more namespaces in the Application's spec.namespaces"
                );
            }
            if let Some(why) = path_segment_problem(app) {
                bail!("--application {app:?}: {why}");
            }
            (Some(app.clone()), None)
        }
        None => (None, Some(selection_from_flags(a)?)),
    };
    if let Some(ttl) = &a.ttl {
        let d = parse_duration(ttl).map_err(|e| anyhow!("--ttl: {e}"))?;
        if d.is_zero() {
            bail!("--ttl {ttl}: must be longer than 0 (omit it to keep the backup until deleted)");
        }
    }
    if a.repository.is_empty() {
        bail!("--repository: give a repository name");
    }
    Ok(BackupSpec {
        application,
        selection,
        repository: RepositoryRef {
            name: a.repository.clone(),
            kind: if a.cluster_repository {
                RepositoryKind::ClusterBackupRepository
            } else {
                RepositoryKind::BackupRepository
            },
        },
        ttl: a.ttl.clone(),
        labels: parse_labels(&a.labels)?,
        cancel: false,
        deletion_policy: a.deletion_policy.into(),
    })
}

/// The inline selection of a backup without --application.
fn selection_from_flags(a: &CreateArgs) -> Result<ApplicationSpec> {
    let listed = if a.include_namespaces.is_empty() {
        &a.namespace
    } else {
        if a.namespace.len() > 1 {
            bail!(
                "with --include-namespaces, give -n once: the namespace the Backup object lives in"
            );
        }
        &a.include_namespaces
    };
    let mut namespaces: Vec<String> = Vec::new();
    for ns in listed.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if let Some(why) = dns_label_problem(ns) {
            bail!("namespace {ns:?} is not a valid namespace name: {why}");
        }
        if !namespaces.iter().any(|n| n == ns) {
            namespaces.push(ns.to_string());
        }
    }
    let label_selector = a
        .selector
        .as_deref()
        .map(|s| k8s_selector(s, "--selector"))
        .transpose()?;
    let or_label_selectors = a
        .or_selectors
        .iter()
        .map(|s| k8s_selector(s, "--or-selector"))
        .collect::<Result<Vec<_>>>()?;
    let resources = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect()
    };
    Ok(ApplicationSpec {
        selection: Selection {
            namespaces,
            label_selector,
            or_label_selectors,
            included_resources: resources(&a.include_resources),
            excluded_resources: resources(&a.exclude_resources),
            objects: Vec::new(),
            cluster_resources: a.cluster_resources.map(Into::into).unwrap_or_default(),
        },
        ..Default::default()
    })
}

/// A selector in kubectl's string form as a Kubernetes LabelSelector object
/// (`matchLabels` for `k=v`, `matchExpressions` for the rest).
fn k8s_selector(s: &str, flag: &str) -> Result<LabelSelector> {
    let parsed = coffer_resources::selector::parse(s).map_err(|e| anyhow!("{flag} {s:?}: {e}"))?;
    let mut match_labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for r in parsed.requirements() {
        let (operator, values) = match r.operator {
            Operator::Equals if !match_labels.contains_key(&r.key) => {
                let value = r.values.first().cloned().unwrap_or_default();
                match_labels.insert(r.key.clone(), value);
                continue;
            }
            Operator::Equals | Operator::In => ("In", Some(r.values.clone())),
            Operator::NotEquals | Operator::NotIn => ("NotIn", Some(r.values.clone())),
            Operator::Exists => ("Exists", None),
            Operator::DoesNotExist => ("DoesNotExist", None),
            Operator::GreaterThan | Operator::LessThan => bail!(
                "{flag} {s:?}: `{r}` compares numbers, which a label selector object (matchLabels, matchExpressions) cannot express; use =, !=, in, notin, KEY or !KEY"
            ),
        };
        expressions.push(LabelSelectorRequirement {
            key: r.key.clone(),
            operator: operator.to_string(),
            values,
        });
    }
    Ok(LabelSelector {
        match_labels: (!match_labels.is_empty()).then_some(match_labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// `K=V` arguments of --label.
fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for l in labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?} is not K=V");
        };
        if k.is_empty() {
            bail!("--label {l:?} has an empty key");
        }
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

impl Followed for Backup {
    fn phase_name(&self) -> Option<String> {
        self.status.as_ref()?.phase.map(phase_name)
    }

    fn is_final(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(BackupPhase::is_final)
    }

    fn is_completed(&self) -> bool {
        self.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed)
    }

    fn message(&self) -> Option<String> {
        self.status.as_ref()?.message.clone()
    }

    fn progress_summary(&self) -> String {
        progress_summary(self)
    }

    fn progress_line(&self) -> String {
        progress_line(self)
    }

    fn progress_bytes(&self) -> Option<(u64, u64)> {
        let p = self.status.as_ref()?.progress.as_ref()?;
        Some((p.bytes_done, p.bytes_total))
    }
}

/// Name, phase (and step), objects and volumes.
fn progress_summary(b: &Backup) -> String {
    let status = b.status.clone().unwrap_or_default();
    let mut line = format!("{}: ", b.name_any());
    match status.phase {
        Some(p) => line.push_str(&phase_name(p)),
        None => line.push_str("New (waiting for the operator)"),
    }
    if let Some(step) = status.step.as_deref().filter(|s| !s.is_empty())
        && !status.phase.is_some_and(BackupPhase::is_final)
    {
        let _ = write!(line, " ({step})");
    }
    if let Some(p) = &status.progress {
        let _ = write!(
            line,
            ", {} objects, volumes {}/{}",
            p.objects, p.volumes_done, p.volumes_total
        );
    }
    line
}

/// One line of progress (without a terminal): the summary and the bytes.
fn progress_line(b: &Backup) -> String {
    let mut line = format!("backup {}", progress_summary(b));
    if let Some(p) = b.status.as_ref().and_then(|s| s.progress.as_ref()) {
        let _ = write!(
            line,
            ", {} of {}",
            human_bytes(p.bytes_done),
            human_bytes(p.bytes_total)
        );
    }
    line
}

// ---- get -----------------------------------------------------------------------------

async fn get(a: GetArgs) -> Result<()> {
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let backups = target
        .list_for_get(a.name.as_deref(), a.all_namespaces)
        .await?;
    let scope = (!a.all_namespaces).then_some(target.namespace.as_str());
    print_objects(&backups, a.output, a.name.is_some(), scope, |b| {
        table(b, a.all_namespaces, Timestamp::now())
    })
}

/// The table of `coffer backup get`.
fn table(backups: &[Backup], with_namespace: bool, now: Timestamp) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec![
        "NAME",
        "PHASE",
        "APPLICATION",
        "REPOSITORY",
        "STARTED",
        "DURATION",
        "SIZE",
        "ITEMS",
    ];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(String::from).collect());
    for b in backups {
        let status = b.status.clone().unwrap_or_default();
        let mut row = vec![
            b.name_any(),
            status.phase.map(phase_name).unwrap_or_else(|| "-".into()),
            application_text(&b.spec),
            repository_short(&b.spec.repository),
            status
                .start_time
                .as_ref()
                .map(format_time)
                .unwrap_or_else(|| "-".into()),
            backup_duration(b, now).unwrap_or_else(|| "-".into()),
            status.size.clone().unwrap_or_else(|| "-".into()),
            status.items.len().to_string(),
        ];
        if with_namespace {
            row.insert(0, b.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    render_table(&rows)
}

fn application_text(spec: &BackupSpec) -> String {
    match (&spec.application, &spec.selection) {
        (Some(app), _) => app.clone(),
        (None, Some(_)) => "(inline)".into(),
        (None, None) => "-".into(),
    }
}

fn repository_short(r: &RepositoryRef) -> String {
    match r.kind {
        RepositoryKind::BackupRepository => r.name.clone(),
        RepositoryKind::ClusterBackupRepository => format!("{} (cluster)", r.name),
    }
}

/// How long the backup took, or has been running.
fn backup_duration(b: &Backup, now: Timestamp) -> Option<String> {
    let status = b.status.as_ref()?;
    elapsed(
        status.start_time.as_ref(),
        status.completion_time.as_ref(),
        b.is_final(),
        now,
    )
}

fn phase_name(p: BackupPhase) -> String {
    serde_name(&p)
}

// ---- describe --------------------------------------------------------------------------

async fn describe(a: DescribeArgs) -> Result<()> {
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let b = target.get(&a.name).await?;
    let related = Related::fetch(&target, &b).await;
    print!("{}", describe_text(&b, &related, Timestamp::now()));
    Ok(())
}

/// Objects about a Backup that describe shows beside it; a failure to list them is
/// shown in their place.
struct Related {
    volume_backups: Result<Vec<VolumeBackup>, String>,
    events: Result<Vec<CoreEvent>, String>,
}

impl Related {
    /// The Backup's VolumeBackups (label `coffer.dev/backup=NAME` in its namespace and
    /// its volumes' namespaces) and its events.
    async fn fetch(target: &Target, b: &Backup) -> Related {
        let name = b.name_any();
        let mut volume_backups = Ok(Vec::new());
        for ns in related_namespaces(b, &target.namespace) {
            let api: Api<VolumeBackup> = Api::namespaced(target.client.clone(), &ns);
            let lp = ListParams::default().labels(&format!("{BACKUP_LABEL}={name}"));
            match api.list(&lp).await {
                Ok(list) => {
                    if let Ok(v) = &mut volume_backups {
                        v.extend(list.items);
                    }
                }
                Err(e) => {
                    volume_backups = Err(coffer_resources::Error::from(e).to_string());
                    break;
                }
            }
        }
        let events = target.events(b).await;
        Related {
            volume_backups,
            events,
        }
    }
}

/// The Backup's namespace, then the other namespaces its volumes are in.
fn related_namespaces(b: &Backup, own: &str) -> Vec<String> {
    let mut out = vec![own.to_string()];
    for v in b.status.iter().flat_map(|s| &s.volumes) {
        if !v.namespace.is_empty() && !out.contains(&v.namespace) {
            out.push(v.namespace.clone());
        }
    }
    out
}

/// `coffer backup describe`: the Backup in words.
fn describe_text(b: &Backup, related: &Related, now: Timestamp) -> String {
    let mut d = Doc::default();
    let status = b.status.clone().unwrap_or_default();
    let spec = &b.spec;
    let ns = b.namespace().unwrap_or_default();

    d.metadata(b);
    d.blank();

    // The spec.
    match (&spec.application, &spec.selection) {
        (Some(app), _) => d.field(0, "Application", format!("{app} (Application in {ns})")),
        (None, Some(sel)) => {
            d.field(0, "Application", "inline selection");
            selection_text(&mut d, sel, &ns);
        }
        (None, None) => d.field(
            0,
            "Application",
            "<none: the spec names no application or selection>",
        ),
    }
    let repo = &spec.repository;
    let repo_text = match repo.kind {
        RepositoryKind::BackupRepository => format!("{} (BackupRepository in {ns})", repo.name),
        RepositoryKind::ClusterBackupRepository => {
            format!("{} (ClusterBackupRepository)", repo.name)
        }
    };
    d.field(0, "Repository", repo_text);
    let ttl = match (&spec.ttl, &status.expiration) {
        (Some(ttl), Some(exp)) => format!("{ttl} (expires {})", format_time(exp)),
        (Some(ttl), None) => ttl.clone(),
        (None, _) => "<none> (kept until deleted)".into(),
    };
    d.field(0, "TTL", ttl);
    d.field(
        0,
        "Recorded labels",
        or_else(join_map(&spec.labels), "<none>"),
    );
    let policy = match spec.deletion_policy {
        DeletionPolicy::Retain => "Retain (deleting the Backup keeps its data in the repository)",
        DeletionPolicy::Delete => "Delete (deleting the Backup forgets it in the repository too)",
    };
    d.field(0, "Deletion policy", policy);
    if spec.cancel {
        d.field(0, "Cancel", "requested");
    }
    d.blank();

    // Where it is.
    let phase = status.phase.map(phase_name);
    d.field(
        0,
        "Phase",
        phase.unwrap_or_else(|| "<none> (the operator has not picked it up yet)".into()),
    );
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        d.field(0, "Message", m);
    }
    if let Some(step) = status.step.as_deref().filter(|s| !s.is_empty()) {
        d.field(0, "Step", step);
    }
    d.field(0, "Started", time_or_none(&status.start_time));
    d.field(0, "Completed", time_or_none(&status.completion_time));
    if let Some(took) = backup_duration(b, now) {
        match status.completion_time {
            Some(_) => d.field(0, "Duration", took),
            None => d.field(0, "Duration", format!("{took} so far")),
        }
    }
    if let Some(p) = &status.progress {
        let text = format!(
            "{} objects; volumes {} of {}; {} of {}",
            p.objects,
            p.volumes_done,
            p.volumes_total,
            human_bytes(p.bytes_done),
            human_bytes(p.bytes_total)
        );
        d.field(0, "Progress", text);
    }
    if let Some(size) = &status.size {
        d.field(0, "Size", format!("{size} added to the repository"));
    }
    let id = |v: &Option<String>| v.clone().unwrap_or_else(|| "<none>".into());
    d.field(0, "Resources snapshot", id(&status.resources_snapshot));
    d.field(0, "Manifest", id(&status.manifest));
    let hooks = status.hooks.clone().unwrap_or_default();
    let hooks = format!("{} attempted, {} failed", hooks.attempted, hooks.failed);
    d.field(0, "Hooks", hooks);
    d.blank();

    // What failed or needs attention.
    d.items(&status.items);
    d.blank();

    if status.volumes.is_empty() {
        d.line("Volumes: <none>");
    } else {
        d.line(format_args!("Volumes ({}):", status.volumes.len()));
        for v in &status.volumes {
            let pvc = match v.namespace.as_str() {
                "" => v.pvc.clone(),
                n => format!("{n}/{}", v.pvc),
            };
            d.line(format_args!("  {pvc} ({})", serde_name(&v.mode)));
            if let Some(vb) = &v.volume_backup {
                d.field(4, "VolumeBackup", vb);
            }
            if let Some(vs) = &v.volume_snapshot {
                d.field(4, "VolumeSnapshot", vs);
            }
            d.field(4, "Snapshot id", id(&v.snapshot_id));
            let bytes = format!(
                "{} total, {} read, {} new",
                human_bytes(v.bytes_total),
                human_bytes(v.bytes_read),
                human_bytes(v.bytes_new)
            );
            d.field(4, "Bytes", bytes);
            let read = match (&v.full_read_reason, v.changed_blocks) {
                (_, true) => "changed blocks only".to_string(),
                (Some(why), false) => format!("full read: {why}"),
                (None, false) => "full read".to_string(),
            };
            d.field(4, "Read", read);
        }
    }

    if !status.conditions.is_empty() {
        d.blank();
        d.line("Conditions:");
        for c in &status.conditions {
            let mut line = format!("  {}={}", c.type_, c.status);
            if !c.reason.is_empty() {
                let _ = write!(line, " ({})", c.reason);
            }
            if !c.message.is_empty() {
                let _ = write!(line, ": {}", c.message);
            }
            let _ = write!(line, " [since {}]", format_time(&c.last_transition_time));
            d.line(line);
        }
    }
    d.blank();

    let selector = format!("{BACKUP_LABEL}={}", b.name_any());
    match &related.volume_backups {
        Err(e) => d.line(format_args!("VolumeBackups: cannot list them: {e}")),
        Ok(list) if list.is_empty() => {
            d.line(format_args!("VolumeBackups: <none> (label {selector})"))
        }
        Ok(list) => {
            d.line(format_args!(
                "VolumeBackups ({}, label {selector}):",
                list.len()
            ));
            let mut list: Vec<&VolumeBackup> = list.iter().collect();
            list.sort_by_key(|v| (v.namespace(), v.name_any()));
            for vb in list {
                d.line(volume_backup_line(vb));
            }
        }
    }

    d.events(&related.events);
    d.out
}

/// One VolumeBackup in a line: phase, source, progress, mover, message.
fn volume_backup_line(vb: &VolumeBackup) -> String {
    let vs = vb.status.clone().unwrap_or_default();
    let phase = vs.phase.map(|p| serde_name(&p));
    let mut line = format!(
        "  {}: {}, pvc {}/{} ({}, {})",
        vb.name_any(),
        phase.as_deref().unwrap_or("<none>"),
        vb.spec.source_namespace,
        vb.spec.source_pvc,
        vb.spec.volume_mode,
        vb.spec.size
    );
    if vs.bytes_total > 0 || vs.bytes_done > 0 {
        let (done, total) = (human_bytes(vs.bytes_done), human_bytes(vs.bytes_total));
        let _ = write!(line, ", {done} of {total} done");
    }
    if let Some(pod) = &vs.mover_pod {
        let _ = write!(line, ", mover {pod}");
    }
    if let Some(m) = vs.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = write!(line, ": {m}");
    }
    line
}

/// The lines of an inline selection, indented under `Application:`.
fn selection_text(d: &mut Doc, sel: &ApplicationSpec, own: &str) {
    let s = &sel.selection;
    let namespaces = or_else(s.namespaces.join(", "), &format!("{own} (the Backup's)"));
    d.field(2, "Namespaces", namespaces);
    let selector = s.label_selector.as_ref().map(selector_text);
    d.field(
        2,
        "Label selector",
        selector.as_deref().unwrap_or("<none> (every object)"),
    );
    if !s.or_label_selectors.is_empty() {
        let list: Vec<String> = s.or_label_selectors.iter().map(selector_text).collect();
        d.field(2, "Or label selectors", list.join(" | "));
    }
    d.field(
        2,
        "Included resources",
        or_else(s.included_resources.join(", "), "* (all)"),
    );
    d.field(
        2,
        "Excluded resources",
        or_else(s.excluded_resources.join(", "), "<none>"),
    );
    if !s.objects.is_empty() {
        let list: Vec<String> = s
            .objects
            .iter()
            .map(|r| match &r.namespace {
                Some(n) => format!("{}/{} -n {n}", r.kind, r.name),
                None => format!("{}/{}", r.kind, r.name),
            })
            .collect();
        d.field(2, "Named objects", list.join(", "));
    }
    d.field(2, "Cluster resources", serde_name(&s.cluster_resources));
    if !sel.volumes.is_empty() {
        let list: Vec<String> = sel
            .volumes
            .iter()
            .map(|v| {
                let which = v.selector.as_ref().map(selector_text);
                let which = which.as_deref().unwrap_or("all PVCs");
                format!("{which}: {}", serde_name(&v.policy))
            })
            .collect();
        d.field(2, "Volume policies", list.join("; "));
    }
    if let Some(label) = &sel.consistency_group_label {
        d.field(2, "Consistency groups", format!("by label {label}"));
    }
    if !sel.hooks.is_empty() {
        let list: Vec<String> = sel
            .hooks
            .iter()
            .map(|h| format!("{} ({} pre, {} post)", h.name, h.pre.len(), h.post.len()))
            .collect();
        d.field(2, "Hooks", list.join(", "));
    }
}

/// A label selector object in kubectl's string form.
fn selector_text(sel: &LabelSelector) -> String {
    match coffer_resources::selector::LabelSelector::from_k8s_selector(sel) {
        Ok(s) if s.is_empty() => "<empty> (every object)".into(),
        Ok(s) => s.to_string(),
        Err(e) => format!("<invalid: {e}>"),
    }
}

// ---- delete ----------------------------------------------------------------------------

async fn delete(a: DeleteArgs) -> Result<()> {
    let timeout = parse_timeout(&a.timeout)?;
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let name = a.name.clone();
    let b = target.get(&name).await?;
    let api = target.api();
    let mut policy = b.spec.deletion_policy;
    if a.forget && policy != DeletionPolicy::Delete {
        let patch = serde_json::json!({"spec": {"deletionPolicy": "Delete"}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            return Err(target.error(e, Some(target.not_found(&name))).await);
        }
        policy = DeletionPolicy::Delete;
    }
    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        return Err(target.error(e, Some(target.not_found(&name))).await);
    }
    println!("{}", deleted_message(&name, policy));
    if a.wait {
        target
            .wait_gone(&name, &b.uid().unwrap_or_default(), timeout)
            .await?;
    }
    Ok(())
}

/// What `delete` says happened, by the deletion policy.
fn deleted_message(name: &str, policy: DeletionPolicy) -> String {
    match policy {
        DeletionPolicy::Retain => format!(
            "backup {name} deleted; its data stays in the repository (deletionPolicy Retain)"
        ),
        DeletionPolicy::Delete => format!(
            "backup {name} deleted; it is forgotten in the repository by the operator (deletionPolicy Delete)"
        ),
    }
}

// ---- logs ------------------------------------------------------------------------------

async fn logs(a: LogsArgs) -> Result<()> {
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let name = a.name.clone();
    let b = target.get(&name).await?;
    let mut pods: Vec<Pod> = Vec::new();
    for ns in related_namespaces(&b, &target.namespace) {
        let api: Api<Pod> = Api::namespaced(target.client.clone(), &ns);
        let lp = ListParams::default().labels(&format!("{BACKUP_LABEL}={name}"));
        match api.list(&lp).await {
            Ok(list) => pods.extend(list.items),
            Err(e) => {
                bail!(
                    "cannot list the mover pods in namespace {ns}: {}",
                    coffer_resources::Error::from(e)
                )
            }
        }
    }
    if pods.is_empty() {
        eprintln!(
            "no mover pods of backup {name} are left; movers' logs are kept only while their pods exist"
        );
        return Ok(());
    }
    pods.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    });
    for pod in &pods {
        let pod_ns = pod.namespace().unwrap_or_else(|| target.namespace.clone());
        if pod_ns == target.namespace {
            println!("== pod {} ==", pod.name_any());
        } else {
            println!("== pod {} (namespace {pod_ns}) ==", pod.name_any());
        }
        let api: Api<Pod> = Api::namespaced(target.client.clone(), &pod_ns);
        let containers: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| c.name.clone())
            .collect();
        for c in &containers {
            if containers.len() > 1 {
                println!("-- container {c} --");
            }
            let lp = LogParams {
                container: Some(c.clone()),
                tail_lines: a.tail,
                ..Default::default()
            };
            match api.logs(&pod.name_any(), &lp).await {
                Ok(text) => {
                    print!("{text}");
                    if !text.is_empty() && !text.ends_with('\n') {
                        println!();
                    }
                }
                Err(e) => println!("(no logs: {})", coffer_resources::Error::from(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_access::output_value;
    use clap::Parser;
    use coffer_api::{
        BackupProgress, BackupStatus, HookCounts, ItemKind, Severity, StatusItem,
        VolumeBackupPhase, VolumeBackupSpec, VolumeBackupStatus, VolumePolicyKind, VolumeStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: BackupCommand,
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        let mut all = vec!["coffer", "create"];
        all.extend_from_slice(args);
        match TestCli::try_parse_from(all).unwrap().command {
            BackupCommand::Create(a) => *a,
            _ => unreachable!(),
        }
    }

    fn spec(args: &[&str]) -> Result<BackupSpec> {
        spec_from_flags(&create_args(args))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn create_with_an_application() {
        let s = spec(&["shop-1", "--application", "shop", "-n", "shop"]).unwrap();
        assert_eq!(s.application.as_deref(), Some("shop"));
        assert!(s.selection.is_none());
        assert_eq!(s.repository.name, "default");
        assert_eq!(s.repository.kind, RepositoryKind::BackupRepository);
        assert_eq!(s.deletion_policy, DeletionPolicy::Retain);
        assert!(s.ttl.is_none() && s.labels.is_empty() && !s.cancel);
    }

    #[test]
    fn create_with_every_spec_flag() {
        let s = spec(&[
            "b",
            "--application",
            "shop",
            "--repository",
            "main",
            "--cluster-repository",
            "--ttl",
            "720h",
            "--label",
            "reason=upgrade",
            "--label",
            "ticket=OPS-1",
            "--deletion-policy",
            "Delete",
        ])
        .unwrap();
        assert_eq!(s.repository.name, "main");
        assert_eq!(s.repository.kind, RepositoryKind::ClusterBackupRepository);
        assert_eq!(s.ttl.as_deref(), Some("720h"));
        assert_eq!(s.labels.len(), 2);
        assert_eq!(s.labels["reason"], "upgrade");
        assert_eq!(s.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn inline_selection_from_flags() {
        let s = spec(&[
            "b",
            "-n",
            "shop",
            "--namespace",
            "shop-db",
            "-n",
            "shop",
            "--selector",
            "app=shop,tier!=cache,env in (prod,stage),!legacy,owner",
            "--or-selector",
            "team=payments",
            "--include-resources",
            "deployments,configmaps",
            "--include-resources",
            "widgets.example.com",
            "--exclude-resources",
            "secrets",
            "--cluster-resources",
            "include",
        ])
        .unwrap();
        assert!(s.application.is_none());
        let app = s.selection.unwrap();
        let sel = &app.selection;
        assert_eq!(
            sel.namespaces,
            ["shop", "shop-db"],
            "in order, deduplicated"
        );
        let ls = sel.label_selector.as_ref().unwrap();
        assert_eq!(
            ls.match_labels.as_ref().unwrap(),
            &BTreeMap::from([("app".to_string(), "shop".to_string())])
        );
        let exprs: Vec<(String, String, Option<Vec<String>>)> = ls
            .match_expressions
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.operator, e.values))
            .collect();
        let v = |l: &[&str]| Some(l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            exprs,
            vec![
                ("tier".into(), "NotIn".into(), v(&["cache"])),
                ("env".into(), "In".into(), v(&["prod", "stage"])),
                ("legacy".into(), "DoesNotExist".into(), None),
                ("owner".into(), "Exists".into(), None),
            ]
        );
        assert_eq!(sel.or_label_selectors.len(), 1);
        assert_eq!(
            sel.included_resources,
            ["deployments", "configmaps", "widgets.example.com"]
        );
        assert_eq!(sel.excluded_resources, ["secrets"]);
        assert_eq!(sel.cluster_resources, ClusterResources::Include);
        // The selector object reads back to the same requirements.
        assert_eq!(
            selector_text(ls),
            "app=shop,tier notin (cache),env in (prod,stage),!legacy,owner"
        );
    }

    #[test]
    fn inline_selection_defaults_to_the_backups_namespace() {
        let app = spec(&["b"]).unwrap().selection.unwrap();
        assert_eq!(app, ApplicationSpec::default());
        let app = spec(&["b", "-n", "ops", "--include-namespaces", "a,b"])
            .unwrap()
            .selection
            .unwrap();
        assert_eq!(app.selection.namespaces, ["a", "b"]);
    }

    #[test]
    fn a_key_given_twice_with_equals_becomes_an_expression() {
        let ls = k8s_selector("a=1,a=2", "--selector").unwrap();
        assert_eq!(ls.match_labels.unwrap().len(), 1);
        let e = &ls.match_expressions.unwrap()[0];
        assert_eq!((e.key.as_str(), e.operator.as_str()), ("a", "In"));
        assert_eq!(e.values.as_deref(), Some(&["2".to_string()][..]));
        let empty = k8s_selector("", "--selector").unwrap();
        assert_eq!(empty, LabelSelector::default());
    }

    #[test]
    fn flag_mistakes_are_one_clear_error() {
        let err = |args: &[&str]| spec(args).unwrap_err().to_string();
        assert!(err(&["b", "-l", "size>3"]).contains("compares numbers"));
        assert!(err(&["b", "-l", "app in (a"]).starts_with("--selector \"app in (a\""));
        assert!(
            err(&["b", "--ttl", "forever"]).starts_with("--ttl: \"forever\" is not a duration")
        );
        assert!(err(&["b", "--ttl", "0s"]).contains("longer than 0"));
        assert!(err(&["b", "--label", "novalue"]).contains("is not K=V"));
        assert!(err(&["b", "-n", "Bad_NS"]).contains("not a valid namespace name"));
        assert!(
            err(&["b", "--application", "a", "-n", "x", "-n", "y"]).contains("one --namespace")
        );
        assert!(
            err(&["b", "-n", "x", "-n", "y", "--include-namespaces", "z"]).contains("give -n once")
        );
        // clap refuses an application together with inline selection flags.
        for flag in [
            ["--selector", "a=b"],
            ["--include-resources", "pods"],
            ["--include-namespaces", "x"],
            ["--cluster-resources", "auto"],
        ] {
            let mut args = vec!["coffer", "create", "b", "--application", "a"];
            args.extend_from_slice(&flag);
            assert!(TestCli::try_parse_from(args).is_err(), "{flag:?}");
        }
        assert!(
            TestCli::try_parse_from(["coffer", "create", "b", "--deletion-policy", "Keep"])
                .is_err()
        );
        assert!(TestCli::try_parse_from(["coffer", "get", "x", "-A"]).is_err());
    }

    fn backup(name: &str, ns: &str) -> Backup {
        let mut b = Backup::new(
            name,
            BackupSpec {
                application: Some("shop".into()),
                repository: RepositoryRef {
                    name: "main".into(),
                    kind: RepositoryKind::BackupRepository,
                },
                ..Default::default()
            },
        );
        b.metadata.namespace = Some(ns.into());
        b
    }

    /// A backup that went through every step, with a failed hook and a full read.
    fn finished() -> Backup {
        let mut b = backup("shop-1", "shop");
        b.metadata.creation_timestamp = Some(Time(ts("2024-05-01T09:59:58Z")));
        b.spec.ttl = Some("720h".into());
        b.spec.labels = BTreeMap::from([("reason".into(), "upgrade".into())]);
        b.status = Some(BackupStatus {
            phase: Some(BackupPhase::PartiallyFailed),
            message: Some("1 hook failed".into()),
            step: Some("done".into()),
            start_time: Some(Time(ts("2024-05-01T10:00:00Z"))),
            completion_time: Some(Time(ts("2024-05-01T10:02:03Z"))),
            expiration: Some(Time(ts("2024-05-31T10:00:00Z"))),
            progress: Some(BackupProgress {
                objects: 42,
                volumes_done: 2,
                volumes_total: 2,
                bytes_done: 256 << 20,
                bytes_total: 256 << 20,
            }),
            items: vec![
                StatusItem {
                    kind: ItemKind::Hook,
                    severity: Severity::Error,
                    name: "freeze".into(),
                    namespace: Some("shop".into()),
                    reason: "pod db-0 container db: `sync` exited 1".into(),
                },
                StatusItem {
                    kind: ItemKind::Object,
                    severity: Severity::Warning,
                    name: "configmaps/huge".into(),
                    namespace: None,
                    reason: "skipped".into(),
                },
            ],
            hooks: Some(HookCounts {
                attempted: 3,
                failed: 1,
            }),
            volumes: vec![
                VolumeStatus {
                    pvc: "data".into(),
                    namespace: "shop".into(),
                    mode: VolumePolicyKind::SnapshotAndCopy,
                    volume_backup: Some("shop-1-data".into()),
                    snapshot_id: Some("bbbb2222".into()),
                    bytes_total: 256 << 20,
                    bytes_read: 3 << 20,
                    bytes_new: 1 << 20,
                    changed_blocks: true,
                    ..Default::default()
                },
                VolumeStatus {
                    pvc: "logs".into(),
                    namespace: "shop".into(),
                    mode: VolumePolicyKind::SnapshotAndCopy,
                    volume_backup: Some("shop-1-logs".into()),
                    snapshot_id: None,
                    bytes_total: 1024,
                    bytes_read: 1024,
                    full_read_reason: Some("the base snapshot is gone".into()),
                    ..Default::default()
                },
            ],
            manifest: Some("cccc3333".into()),
            resources_snapshot: Some("aaaa1111".into()),
            size: Some("1.0 MiB".into()),
            // Conditions below; fields the API adds later stay empty.
            ..Default::default()
        });
        if let Some(s) = b.status.as_mut() {
            s.conditions = vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Done".into(),
                message: "".into(),
                last_transition_time: Time(ts("2024-05-01T10:02:03Z")),
                observed_generation: None,
            }];
        }
        b
    }

    #[test]
    fn table_of_backups() {
        let now = ts("2024-05-01T11:00:00Z");
        let mut running = backup("shop-2", "shop");
        running.spec.application = None;
        running.spec.selection = Some(ApplicationSpec::default());
        running.spec.repository.kind = RepositoryKind::ClusterBackupRepository;
        running.status = Some(BackupStatus {
            phase: Some(BackupPhase::InProgress),
            start_time: Some(Time(ts("2024-05-01T10:59:15Z"))),
            ..Default::default()
        });
        let new = backup("x", "other");
        let text = table(&[finished(), running.clone(), new.clone()], false, now);
        let expected = "\
NAME     PHASE             APPLICATION   REPOSITORY       STARTED                   DURATION   SIZE      ITEMS
shop-1   PartiallyFailed   shop          main             2024-05-01 10:00:00 UTC   2m3s       1.0 MiB   2
shop-2   InProgress        (inline)      main (cluster)   2024-05-01 10:59:15 UTC   45s        -         0
x        -                 shop          main             -                         -          -         0
";
        assert_eq!(text, expected);
        let text = table(&[new], true, now);
        assert!(text.starts_with("NAMESPACE   NAME   PHASE"), "{text}");
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("other       x      -")
        );
    }

    #[test]
    fn describe_tells_everything() {
        let b = finished();
        let vb = {
            let mut v = VolumeBackup::new(
                "shop-1-data",
                VolumeBackupSpec {
                    backup: "shop-1".into(),
                    source_pvc: "data".into(),
                    source_namespace: "shop".into(),
                    size: "256Mi".into(),
                    volume_mode: "Block".into(),
                    ..Default::default()
                },
            );
            v.metadata.namespace = Some("shop".into());
            v.status = Some(VolumeBackupStatus {
                phase: Some(VolumeBackupPhase::Completed),
                message: Some("read 3 MiB of changed blocks".into()),
                mover_pod: Some("shop-1-data-mover".into()),
                bytes_total: 256 << 20,
                bytes_done: 256 << 20,
                ..Default::default()
            });
            v
        };
        let event = CoreEvent {
            type_: Some("Warning".into()),
            reason: Some("HookFailed".into()),
            message: Some("freeze failed in db-0\n".into()),
            count: Some(2),
            last_timestamp: Some(Time(ts("2024-05-01T10:00:30Z"))),
            ..Default::default()
        };
        let related = Related {
            volume_backups: Ok(vec![vb]),
            events: Ok(vec![event]),
        };
        let text = describe_text(&b, &related, ts("2024-05-01T11:00:00Z"));
        let expected = "\
Name:                 shop-1
Namespace:            shop
Labels:               <none>
Created:              2024-05-01 09:59:58 UTC

Application:          shop (Application in shop)
Repository:           main (BackupRepository in shop)
TTL:                  720h (expires 2024-05-31 10:00:00 UTC)
Recorded labels:      reason=upgrade
Deletion policy:      Retain (deleting the Backup keeps its data in the repository)

Phase:                PartiallyFailed
Message:              1 hook failed
Step:                 done
Started:              2024-05-01 10:00:00 UTC
Completed:            2024-05-01 10:02:03 UTC
Duration:             2m3s
Progress:             42 objects; volumes 2 of 2; 256.0 MiB of 256.0 MiB
Size:                 1.0 MiB added to the repository
Resources snapshot:   aaaa1111
Manifest:             cccc3333
Hooks:                3 attempted, 1 failed

Items (2):
  Error    Hook      shop/freeze: pod db-0 container db: `sync` exited 1
  Warning  Object    configmaps/huge: skipped

Volumes (2):
  shop/data (snapshotAndCopy)
    VolumeBackup:     shop-1-data
    Snapshot id:      bbbb2222
    Bytes:            256.0 MiB total, 3.0 MiB read, 1.0 MiB new
    Read:             changed blocks only
  shop/logs (snapshotAndCopy)
    VolumeBackup:     shop-1-logs
    Snapshot id:      <none>
    Bytes:            1.0 KiB total, 1.0 KiB read, 0 B new
    Read:             full read: the base snapshot is gone

Conditions:
  Ready=True (Done) [since 2024-05-01 10:02:03 UTC]

VolumeBackups (1, label coffer.dev/backup=shop-1):
  shop-1-data: Completed, pvc shop/data (Block, 256Mi), 256.0 MiB of 256.0 MiB done, mover shop-1-data-mover: read 3 MiB of changed blocks
Events:
  2024-05-01 10:00:30 UTC  Warning HookFailed (x2): freeze failed in db-0
";
        assert_eq!(text, expected);
    }

    #[test]
    fn describe_of_a_new_inline_backup() {
        let mut b = backup("b", "ops");
        b.spec.application = None;
        b.spec.deletion_policy = DeletionPolicy::Delete;
        b.spec.cancel = true;
        b.spec.selection = Some(
            spec(&[
                "b",
                "--include-namespaces",
                "shop",
                "-l",
                "app=shop",
                "--exclude-resources",
                "secrets",
            ])
            .unwrap()
            .selection
            .unwrap(),
        );
        let related = Related {
            volume_backups: Err("Kubernetes API: forbidden".into()),
            events: Ok(Vec::new()),
        };
        let text = describe_text(&b, &related, ts("2024-05-01T11:00:00Z"));
        for want in [
            "Application:          inline selection\n",
            "  Namespaces:         shop\n",
            "  Label selector:     app=shop\n",
            "  Included resources: * (all)\n",
            "  Excluded resources: secrets\n",
            "  Cluster resources:  auto\n",
            "TTL:                  <none> (kept until deleted)\n",
            "Deletion policy:      Delete (deleting the Backup forgets it in the repository too)\n",
            "Cancel:               requested\n",
            "Phase:                <none> (the operator has not picked it up yet)\n",
            "Started:              <none>\n",
            "Hooks:                0 attempted, 0 failed\n",
            "Items: none failed or warned\n",
            "Volumes: <none>\n",
            "VolumeBackups: cannot list them: Kubernetes API: forbidden\n",
            "Events: <none>\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("Duration:"), "{text}");
    }

    #[test]
    fn progress_lines_and_outcomes() {
        let mut b = backup("shop-1", "shop");
        assert_eq!(
            progress_line(&b),
            "backup shop-1: New (waiting for the operator)"
        );
        b.status = Some(BackupStatus {
            phase: Some(BackupPhase::InProgress),
            step: Some("data".into()),
            progress: Some(BackupProgress {
                objects: 12,
                volumes_done: 1,
                volumes_total: 2,
                bytes_done: 10 << 20,
                bytes_total: 256 << 20,
            }),
            ..Default::default()
        });
        assert_eq!(
            progress_line(&b),
            "backup shop-1: InProgress (data), 12 objects, volumes 1/2, 10.0 MiB of 256.0 MiB"
        );
        assert_eq!(
            outcome(&finished()).unwrap_err().to_string(),
            "backup shop-1 ended PartiallyFailed: 1 hook failed"
        );
        let mut ok = finished();
        ok.status.as_mut().unwrap().phase = Some(BackupPhase::Completed);
        assert!(outcome(&ok).is_ok());
        let mut failed = finished();
        let s = failed.status.as_mut().unwrap();
        s.phase = Some(BackupPhase::FailedValidation);
        s.message = None;
        assert_eq!(
            outcome(&failed).unwrap_err().to_string(),
            "backup shop-1 ended FailedValidation: see its items above"
        );
    }

    #[test]
    fn delete_says_what_happens_to_the_data() {
        assert_eq!(
            deleted_message("x", DeletionPolicy::Retain),
            "backup x deleted; its data stays in the repository (deletionPolicy Retain)"
        );
        assert_eq!(
            deleted_message("x", DeletionPolicy::Delete),
            "backup x deleted; it is forgotten in the repository by the operator (deletionPolicy Delete)"
        );
    }

    #[test]
    fn json_output_is_one_object_or_a_list() {
        let one = output_value(true, &[finished()]).unwrap();
        assert_eq!(one["kind"], "Backup");
        assert_eq!(one["apiVersion"], "coffer.dev/v1alpha1");
        let list = output_value(false, &[finished(), backup("b", "shop")]).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        assert_eq!(
            output_value::<Backup>(false, &[]).unwrap()["items"],
            serde_json::json!([])
        );
    }

    #[test]
    fn related_namespaces_include_the_volumes() {
        let mut b = finished();
        b.status.as_mut().unwrap().volumes[1].namespace = "db".into();
        assert_eq!(related_namespaces(&b, "shop"), ["shop", "db"]);
    }
}
