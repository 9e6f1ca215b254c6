//! `coffer restore ...`: application restores through their Restore objects, in the style
//! of the velero CLI. `create` writes a Restore (of a Backup, or of a manifest in a
//! repository for disaster recovery; with `--wait` it follows it to its end), `get` lists
//! them, `describe` tells one in words, `delete` removes the object, `cancel` asks the
//! operator to stop one.
//!
//! These commands only read and write Kubernetes objects (Restores, and their Events);
//! the operator running in the cluster does the work. Text formatting is kept in pure
//! functions so that it is tested without a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use coffer_api::{
    ExistingObjects, RepositoryKind, RepositoryRef, Restore, RestoreMode, RestorePhase,
    RestoreSpec, TransformsRef, VolumeFilter, VolumeRestorePhase, VolumeRestoreStatus,
};
use coffer_resources::names::{dns_label_problem, path_segment_problem};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};

use crate::kube_access::{
    ClusterArgs, Doc, Followed, OutputFormat, age, check_name, elapsed, format_duration, join_map,
    or_else, outcome, parse_timeout, print_objects, render_table, serde_name, time_or_none,
    wait_for_end,
};
use crate::repo_cmd::human_bytes;

/// The Restores of a namespace.
type Target = crate::kube_access::Target<Restore>;

#[derive(Subcommand)]
pub enum RestoreCommand {
    /// Create a Restore of a Backup (--from-backup) or of a backup manifest in a repository
    /// (--from-manifest with --repository); with --wait, follow it to its end (exit
    /// non-zero unless Completed).
    Create(Box<CreateArgs>),
    /// List Restores, or show one, as a table, JSON or YAML.
    Get(GetArgs),
    /// Everything about one Restore in words: spec, phase, objects, volumes, items,
    /// warnings and events.
    Describe(DescribeArgs),
    /// Delete a Restore object (the operator first removes the PVCs it made that are
    /// not filled yet; restored objects stay).
    Delete(DeleteArgs),
    /// Stop a running Restore (sets spec.cancel; the operator removes its temporary
    /// objects and ends it Canceled).
    Cancel(CancelArgs),
}

/// `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Objects created in a target that does not hold the application; PVCs filled by
    /// Coffer's volume populator.
    New,
    /// Into the running application: workloads scaled down, PVCs overwritten.
    InPlace,
}

impl From<ModeArg> for RestoreMode {
    fn from(a: ModeArg) -> Self {
        match a {
            ModeArg::New => RestoreMode::New,
            ModeArg::InPlace => RestoreMode::InPlace,
        }
    }
}

/// `--existing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExistingArg {
    /// Leave an existing object as it is and report it.
    Skip,
    /// Replace it with the backed-up state.
    Update,
    /// Delete it and create it again.
    Recreate,
}

impl From<ExistingArg> for ExistingObjects {
    fn from(a: ExistingArg) -> Self {
        match a {
            ExistingArg::Skip => ExistingObjects::Skip,
            ExistingArg::Update => ExistingObjects::Update,
            ExistingArg::Recreate => ExistingObjects::Recreate,
        }
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// The Restore's name.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The Restore's namespace (default: the context's); the Backup and the repository
    /// are looked up there.
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    /// Restore this Backup (in the Restore's namespace).
    #[arg(long, value_name = "BACKUP")]
    from_backup: Option<String>,
    /// Or restore this backup manifest (an id or unique prefix, as `coffer snapshots`
    /// lists it) from --repository: disaster recovery with no Backup object.
    #[arg(long, value_name = "ID")]
    from_manifest: Option<String>,
    /// With --from-manifest: the BackupRepository (in the Restore's namespace) holding it.
    #[arg(long, value_name = "NAME")]
    repository: Option<String>,
    /// --repository names a ClusterBackupRepository.
    #[arg(long)]
    cluster_repository: bool,
    /// new (default: into a target without the application) or in-place.
    #[arg(long, value_enum, value_name = "MODE")]
    mode: Option<ModeArg>,
    /// Restore namespace OLD into NEW (repeatable).
    #[arg(long, value_name = "OLD=NEW")]
    namespace_mapping: Vec<String>,
    /// Only these resources (kubectl names, comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    include_resources: Vec<String>,
    /// Never these resources.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    exclude_resources: Vec<String>,
    /// Only this object (KIND/NAME or KIND/NAMESPACE/NAME; repeatable).
    #[arg(long, value_name = "KIND/NAME")]
    only: Vec<String>,
    /// Only stored objects with these labels (kubectl syntax: app=web,tier!=db).
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    selector: Option<String>,
    /// What to do with objects that exist already (default skip; update with --rollback).
    #[arg(long, value_enum)]
    existing: Option<ExistingArg>,
    /// Also delete the objects in scope that did not exist at backup time.
    #[arg(long)]
    rollback: bool,
    /// Restore beside the original: every namespaced object renamed NAME-SUFFIX.
    #[arg(long, value_name = "SUFFIX")]
    clone: Option<String>,
    /// A ConfigMap (in the Restore's namespace) of resource-modifier rules.
    #[arg(long, value_name = "NAME")]
    transforms_config_map: Option<String>,
    /// StorageClass OLD becomes NEW (repeatable).
    #[arg(long, value_name = "OLD=NEW")]
    storage_class_mapping: Vec<String>,
    /// Image registry prefix OLD becomes NEW (repeatable).
    #[arg(long, value_name = "OLD=NEW")]
    image_registry_mapping: Vec<String>,
    /// Only this PVC gets its data back (NAME or NAMESPACE/NAME as backed up;
    /// repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "PVC")]
    include_volume: Vec<String>,
    /// This PVC is restored empty (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "PVC")]
    exclude_volume: Vec<String>,
    /// Print the Restore as YAML and create nothing (nothing is sent to the cluster).
    #[arg(long, conflicts_with = "wait")]
    dry_run: bool,
    /// Follow the restore to its end: progress on stderr, then its description; exit
    /// non-zero unless it Completed.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (the restore goes on after it).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    timeout: String,
}

#[derive(Args)]
pub struct GetArgs {
    /// One Restore (default: all of the namespace).
    #[arg(conflicts_with = "all_namespaces")]
    name: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The namespace (default: the context's).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    /// Restores of every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

/// The arguments of commands on one Restore: `describe`, `cancel`.
#[derive(Args)]
pub struct OneArgs {
    /// The Restore.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The namespace (default: the context's).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
}

pub type DescribeArgs = OneArgs;
pub type CancelArgs = OneArgs;

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    restore: OneArgs,
    /// Wait until the object is gone (the operator holds it while it cleans up).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    timeout: String,
}

pub async fn run(cmd: RestoreCommand) -> Result<()> {
    match cmd {
        RestoreCommand::Create(a) => create(*a).await,
        RestoreCommand::Get(a) => get(a).await,
        RestoreCommand::Describe(a) => describe(a).await,
        RestoreCommand::Delete(a) => delete(a).await,
        RestoreCommand::Cancel(a) => cancel(a).await,
    }
}

// ---- create ----------------------------------------------------------------------------

async fn create(a: CreateArgs) -> Result<()> {
    let restore = restore_from_flags(&a)?;
    if a.dry_run {
        print!(
            "{}",
            serde_yaml::to_string(&restore).context("writing the Restore as YAML")?
        );
        return Ok(());
    }
    let timeout = parse_timeout(&a.timeout)?;
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let (name, ns) = (a.name.clone(), target.namespace.clone());
    let mut restore = restore;
    restore.metadata.namespace = Some(ns.clone());
    target.create(&restore).await?;
    if !a.wait {
        println!("restore {name} created in namespace {ns}");
        println!("follow it with: coffer restore describe {name} -n {ns}");
        return Ok(());
    }
    eprintln!("restore {name} created in namespace {ns}; waiting for it to end");
    let done = wait_for_end(&target, &name, timeout).await?;
    let events = target.events(&done).await;
    print!("{}", describe_text(&done, &events, Timestamp::now()));
    outcome(&done)
}

/// The Restore the flags of `create` ask for (its namespace only when -n gives it); flag
/// errors say which flag is wrong.
fn restore_from_flags(a: &CreateArgs) -> Result<Restore> {
    check_name::<Restore>(&a.name)?;
    if let Some(ns) = &a.namespace
        && let Some(why) = dns_label_problem(ns)
    {
        bail!("namespace {ns:?} is not a valid namespace name: {why}");
    }
    let mut r = Restore::new(&a.name, spec_from_flags(a)?);
    r.metadata.namespace = a.namespace.clone();
    Ok(r)
}

/// The spec the flags of `create` ask for.
fn spec_from_flags(a: &CreateArgs) -> Result<RestoreSpec> {
    let (backup, repository, manifest) = source_from_flags(a)?;
    if let Some(s) = &a.selector {
        coffer_resources::selector::parse(s)
            .map_err(|e| anyhow::anyhow!("--selector {s:?}: {e}"))?;
    }
    for o in &a.only {
        let parts: Vec<&str> = o.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.trim().is_empty()) {
            bail!("--only {o:?} is not KIND/NAME or KIND/NAMESPACE/NAME");
        }
    }
    if let Some(suffix) = &a.clone
        && let Some(why) = dns_label_problem(suffix)
    {
        bail!("--clone {suffix:?}: {why}");
    }
    if let Some(cm) = &a.transforms_config_map
        && let Some(why) = path_segment_problem(cm)
    {
        bail!("--transforms-config-map {cm:?}: {why}");
    }
    Ok(RestoreSpec {
        backup,
        repository,
        manifest,
        mode: a.mode.map(Into::into).unwrap_or_default(),
        namespace_mapping: parse_mapping("--namespace-mapping", &a.namespace_mapping, |n| {
            dns_label_problem(n).map(|why| format!("{n:?} is not a valid namespace name: {why}"))
        })?,
        include_resources: clean_list(&a.include_resources),
        exclude_resources: clean_list(&a.exclude_resources),
        only: a.only.iter().map(|o| o.trim().to_string()).collect(),
        label_selector: a.selector.clone().filter(|s| !s.trim().is_empty()),
        existing: a.existing.map(Into::into),
        rollback: a.rollback,
        clone: a.clone.clone(),
        transforms: a
            .transforms_config_map
            .clone()
            .map(|config_map| TransformsRef { config_map }),
        storage_class_mapping: parse_mapping(
            "--storage-class-mapping",
            &a.storage_class_mapping,
            |n| path_segment_problem(n).map(|why| format!("{n:?}: {why}")),
        )?,
        image_registry_mapping: parse_mapping(
            "--image-registry-mapping",
            &a.image_registry_mapping,
            |n| {
                n.contains(char::is_whitespace)
                    .then(|| format!("{n:?} contains white space"))
            },
        )?,
        volumes: volume_filter(a)?,
        hooks: Vec::new(),
        cancel: false,
    })
}

/// What is restored: `(backup, repository, manifest)`.
type Source = (Option<String>, Option<RepositoryRef>, Option<String>);

fn source_from_flags(a: &CreateArgs) -> Result<Source> {
    match (&a.from_backup, &a.from_manifest) {
        (Some(_), Some(_)) => bail!(
            "--from-backup and --from-manifest are alternatives: restore a Backup object, or a manifest from a repository"
        ),
        (None, None) => bail!(
            "name what to restore: --from-backup BACKUP (a Backup in the namespace), or --from-manifest ID --repository R"
        ),
        (Some(b), None) => {
            if let Some(why) = path_segment_problem(b) {
                bail!("--from-backup {b:?}: {why}");
            }
            if a.repository.is_some() || a.cluster_repository {
                bail!(
                    "--repository and --cluster-repository go with --from-manifest: a Backup names its repository itself"
                );
            }
            Ok((Some(b.clone()), None, None))
        }
        (None, Some(id)) => {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!(
                    "--from-manifest {id:?} is not a manifest id (letters and digits, as `coffer snapshots --kind backup` lists them)"
                );
            }
            let Some(repo) = &a.repository else {
                bail!(
                    "--from-manifest needs --repository: the BackupRepository (or with --cluster-repository the ClusterBackupRepository) holding the manifest"
                );
            };
            if let Some(why) = path_segment_problem(repo) {
                bail!("--repository {repo:?}: {why}");
            }
            let kind = if a.cluster_repository {
                RepositoryKind::ClusterBackupRepository
            } else {
                RepositoryKind::BackupRepository
            };
            let repository = RepositoryRef {
                name: repo.clone(),
                kind,
            };
            Ok((None, Some(repository), Some(id.clone())))
        }
    }
}

/// `OLD=NEW` arguments of a mapping flag; `problem` checks each name.
fn parse_mapping(
    flag: &str,
    values: &[String],
    problem: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for v in values {
        let Some((old, new)) = v.split_once('=') else {
            bail!("{flag} {v:?} is not OLD=NEW");
        };
        let (old, new) = (old.trim(), new.trim());
        if old.is_empty() || new.is_empty() {
            bail!("{flag} {v:?} is not OLD=NEW (both sides are needed)");
        }
        if let Some(why) = problem(old).or_else(|| problem(new)) {
            bail!("{flag} {v:?}: {why}");
        }
        if let Some(before) = map.insert(old.to_string(), new.to_string())
            && before != new
        {
            bail!("{flag} maps {old} twice: to {before} and to {new}");
        }
    }
    Ok(map)
}

/// A list flag's values without blanks.
fn clean_list(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

/// `--include-volume` and `--exclude-volume` as spec.volumes.
fn volume_filter(a: &CreateArgs) -> Result<Option<VolumeFilter>> {
    let (include, exclude) = (clean_list(&a.include_volume), clean_list(&a.exclude_volume));
    for (flag, pvc) in include
        .iter()
        .map(|p| ("--include-volume", p))
        .chain(exclude.iter().map(|p| ("--exclude-volume", p)))
    {
        let parts: Vec<&str> = pvc.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| path_segment_problem(p).is_some()) {
            bail!("{flag} {pvc:?} is not a PVC name or NAMESPACE/NAME");
        }
    }
    if let Some(both) = include.iter().find(|p| exclude.contains(p)) {
        bail!("PVC {both} is given to both --include-volume and --exclude-volume");
    }
    if include.is_empty() && exclude.is_empty() {
        return Ok(None);
    }
    Ok(Some(VolumeFilter { include, exclude }))
}

// ---- following a restore -----------------------------------------------------------------

impl Followed for Restore {
    fn phase_name(&self) -> Option<String> {
        self.status.as_ref()?.phase.map(|p| serde_name(&p))
    }

    fn is_final(&self) -> bool {
        phase(self).is_some_and(RestorePhase::is_final)
    }

    fn is_completed(&self) -> bool {
        phase(self) == Some(RestorePhase::Completed)
    }

    fn message(&self) -> Option<String> {
        let s = self.status.as_ref()?;
        s.message.clone().or_else(|| s.failure.clone())
    }

    /// `NAME: PHASE (STEP), objects ..., volumes D/T`.
    fn progress_summary(&self) -> String {
        let status = self.status.clone().unwrap_or_default();
        let mut line = format!("{}: ", self.name_any());
        match self.phase_name() {
            Some(p) => line.push_str(&p),
            None => line.push_str("New (waiting for the operator)"),
        }
        if let Some(step) = status.step.as_deref().filter(|s| !s.is_empty())
            && !self.is_final()
        {
            let _ = write!(line, " ({step})");
        }
        if let Some(o) = &status.objects {
            let _ = write!(
                line,
                ", objects {} created, {} updated, {} skipped, {} failed",
                o.created, o.updated, o.skipped, o.failed
            );
        }
        if !status.volumes.is_empty() {
            let (done, total) = volumes_done(&status.volumes);
            let _ = write!(line, ", volumes {done}/{total}");
        }
        line
    }

    /// The summary, the bytes written, and the volumes being written.
    fn progress_line(&self) -> String {
        let mut line = format!("restore {}", self.progress_summary());
        if let Some((done, total)) = self.progress_bytes() {
            let _ = write!(line, ", {} of {}", human_bytes(done), human_bytes(total));
        }
        let writing: Vec<String> = self
            .status
            .iter()
            .flat_map(|s| &s.volumes)
            .filter(|v| v.phase == Some(VolumeRestorePhase::InProgress))
            .map(volume_name)
            .collect();
        if !writing.is_empty() {
            let _ = write!(line, "; writing {}", writing.join(", "));
        }
        line
    }

    fn progress_bytes(&self) -> Option<(u64, u64)> {
        let volumes = &self.status.as_ref()?.volumes;
        if volumes.is_empty() {
            return None;
        }
        let done = volumes.iter().map(|v| v.bytes_written).sum();
        let total = volumes.iter().map(|v| v.bytes_total).sum();
        Some((done, total))
    }
}

fn phase(r: &Restore) -> Option<RestorePhase> {
    r.status.as_ref()?.phase
}

/// Volumes Completed, and volumes listed.
fn volumes_done(volumes: &[VolumeRestoreStatus]) -> (usize, usize) {
    let done = volumes
        .iter()
        .filter(|v| v.phase == Some(VolumeRestorePhase::Completed))
        .count();
    (done, volumes.len())
}

/// `namespace/pvc`.
fn volume_name(v: &VolumeRestoreStatus) -> String {
    match v.namespace.as_str() {
        "" => v.pvc.clone(),
        n => format!("{n}/{}", v.pvc),
    }
}

// ---- get -------------------------------------------------------------------------------

async fn get(a: GetArgs) -> Result<()> {
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let restores = target
        .list_for_get(a.name.as_deref(), a.all_namespaces)
        .await?;
    let scope = (!a.all_namespaces).then_some(target.namespace.as_str());
    print_objects(&restores, a.output, a.name.is_some(), scope, |r| {
        table(r, a.all_namespaces, Timestamp::now())
    })
}

/// The table of `coffer restore get`.
fn table(restores: &[Restore], with_namespace: bool, now: Timestamp) -> String {
    let mut header = vec!["NAME", "PHASE", "BACKUP", "MODE", "VOLUMES", "AGE"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let mut rows: Vec<Vec<String>> = vec![header.into_iter().map(String::from).collect()];
    for r in restores {
        let volumes = r
            .status
            .as_ref()
            .map(|s| s.volumes.as_slice())
            .unwrap_or(&[]);
        let (done, total) = volumes_done(volumes);
        let mut row = vec![
            r.name_any(),
            r.phase_name().unwrap_or_else(|| "-".into()),
            source_short(&r.spec),
            serde_name(&r.spec.mode),
            format!("{done}/{total}"),
            age(r, now),
        ];
        if with_namespace {
            row.insert(0, r.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    render_table(&rows)
}

/// The Backup's name, or `manifest:` and the manifest id's first 8 characters.
fn source_short(spec: &RestoreSpec) -> String {
    match (&spec.backup, &spec.manifest) {
        (Some(b), _) => b.clone(),
        (None, Some(m)) => format!("manifest:{}", m.chars().take(8).collect::<String>()),
        (None, None) => "-".into(),
    }
}

// ---- describe --------------------------------------------------------------------------

async fn describe(a: DescribeArgs) -> Result<()> {
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let r = target.get(&a.name).await?;
    let events = target.events(&r).await;
    print!("{}", describe_text(&r, &events, Timestamp::now()));
    Ok(())
}

/// `coffer restore describe`: the Restore in words.
fn describe_text(r: &Restore, events: &Result<Vec<CoreEvent>, String>, now: Timestamp) -> String {
    let mut d = Doc::default();
    let status = r.status.clone().unwrap_or_default();
    let ns = r.namespace().unwrap_or_default();
    d.metadata(r);
    d.blank();
    spec_text(&mut d, &r.spec, &ns);
    d.blank();

    // Where it is.
    d.field(
        0,
        "Phase",
        r.phase_name()
            .unwrap_or_else(|| "<none> (the operator has not picked it up yet)".into()),
    );
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        d.field(0, "Message", m);
    }
    if let Some(f) = status.failure.as_deref().filter(|f| !f.is_empty())
        && status.message.as_deref() != Some(f)
    {
        d.field(0, "Failure", f);
    }
    if let Some(step) = status.step.as_deref().filter(|s| !s.is_empty()) {
        d.field(0, "Step", step);
    }
    d.field(0, "Started", time_or_none(&status.start_time));
    d.field(0, "Completed", time_or_none(&status.completion_time));
    let took = elapsed(
        status.start_time.as_ref(),
        status.completion_time.as_ref(),
        r.is_final(),
        now,
    );
    if let Some(took) = took {
        match status.completion_time {
            Some(_) => d.field(0, "Duration", took),
            None => d.field(0, "Duration", format!("{took} so far")),
        }
    }
    let id = |v: &Option<String>| v.clone().unwrap_or_else(|| "<none>".into());
    d.field(0, "Manifest", id(&status.manifest));
    d.field(0, "Resources snapshot", id(&status.resources_snapshot));
    d.field(
        0,
        "Target namespaces",
        or_else(status.target_namespaces.join(", "), "<none yet>"),
    );
    let objects = match &status.objects {
        Some(o) => format!(
            "{} created, {} updated, {} skipped, {} deleted, {} failed",
            o.created, o.updated, o.skipped, o.deleted, o.failed
        ),
        None => "<none yet>".into(),
    };
    d.field(0, "Objects", objects);
    if !status.scaled.is_empty() {
        let list: Vec<String> = status
            .scaled
            .iter()
            .map(|w| {
                format!(
                    "{} {}/{} ({} replicas)",
                    w.kind, w.namespace, w.name, w.replicas
                )
            })
            .collect();
        d.field(0, "Scaled down", list.join(", "));
    }
    if let Some(h) = &status.hooks {
        d.field(
            0,
            "Hooks",
            format!("{} attempted, {} failed", h.attempted, h.failed),
        );
    }
    if let Some(size) = &status.size {
        d.field(0, "Size", format!("{size} written"));
    }
    d.blank();

    d.items(&status.items);
    d.blank();

    if status.volumes.is_empty() {
        d.line("Volumes: <none>");
    } else {
        let (done, total) = volumes_done(&status.volumes);
        d.line(format_args!("Volumes ({done} of {total} completed):"));
        for v in &status.volumes {
            volume_text(&mut d, v);
        }
    }
    d.blank();

    if status.warnings.is_empty() {
        d.line("Warnings: <none>");
    } else {
        d.line(format_args!("Warnings ({}):", status.warnings.len()));
        for w in &status.warnings {
            d.line(format_args!("  {w}"));
        }
    }
    d.events(events);
    d.out
}

/// The spec's lines: what is restored, where and how.
fn spec_text(d: &mut Doc, spec: &RestoreSpec, ns: &str) {
    match (&spec.backup, &spec.repository, &spec.manifest) {
        (Some(b), _, _) => d.field(0, "Backup", format!("{b} (Backup in {ns})")),
        (None, repo, manifest) => {
            d.field(0, "Manifest", manifest.as_deref().unwrap_or("<none>"));
            let repo = match repo {
                Some(r) if r.kind == RepositoryKind::ClusterBackupRepository => {
                    format!("{} (ClusterBackupRepository)", r.name)
                }
                Some(r) => format!("{} (BackupRepository in {ns})", r.name),
                None => "<none>".into(),
            };
            d.field(0, "Repository", repo);
        }
    }
    let mode = match spec.mode {
        RestoreMode::New => "new (objects created, PVCs filled by the volume populator)",
        RestoreMode::InPlace => "inPlace (into the running application)",
    };
    d.field(0, "Mode", mode);
    d.field(
        0,
        "Namespace mapping",
        or_else(join_map(&spec.namespace_mapping), "<none>"),
    );
    d.field(
        0,
        "Included resources",
        or_else(spec.include_resources.join(", "), "* (all)"),
    );
    d.field(
        0,
        "Excluded resources",
        or_else(spec.exclude_resources.join(", "), "<none>"),
    );
    if !spec.only.is_empty() {
        d.field(0, "Only", spec.only.join(", "));
    }
    d.field(
        0,
        "Label selector",
        spec.label_selector
            .as_deref()
            .unwrap_or("<none> (every object)"),
    );
    let existing = match spec.existing {
        Some(e) => serde_name(&e),
        None if spec.rollback => "update (the default with rollback)".into(),
        None => "skip (the default)".into(),
    };
    d.field(0, "Existing objects", existing);
    if spec.rollback {
        d.field(
            0,
            "Rollback",
            "yes (objects in scope that did not exist at backup time are deleted)",
        );
    }
    if let Some(suffix) = &spec.clone {
        d.field(0, "Clone", format!("objects renamed NAME-{suffix}"));
    }
    if let Some(t) = &spec.transforms {
        d.field(
            0,
            "Transforms",
            format!("ConfigMap {} in {ns}", t.config_map),
        );
    }
    if !spec.storage_class_mapping.is_empty() {
        d.field(0, "Storage classes", join_map(&spec.storage_class_mapping));
    }
    if !spec.image_registry_mapping.is_empty() {
        d.field(
            0,
            "Image registries",
            join_map(&spec.image_registry_mapping),
        );
    }
    if let Some(v) = &spec.volumes {
        d.field(
            0,
            "Volume data",
            format!(
                "only {}; never {}",
                or_else(v.include.join(", "), "all"),
                or_else(v.exclude.join(", "), "<none>")
            ),
        );
    }
    if !spec.hooks.is_empty() {
        let list: Vec<String> = spec
            .hooks
            .iter()
            .map(|h| format!("{} ({} post)", h.name, h.post.len()))
            .collect();
        d.field(0, "Hooks", list.join(", "));
    }
    if spec.cancel {
        d.field(0, "Cancel", "requested");
    }
}

/// One volume's lines.
fn volume_text(d: &mut Doc, v: &VolumeRestoreStatus) {
    let mut head = format!("  {}", volume_name(v));
    if !v.source.is_empty() {
        let _ = write!(head, " (from {})", v.source);
    }
    d.line(head);
    let phase = v.phase.map(|p| serde_name(&p));
    d.field(4, "Phase", phase.as_deref().unwrap_or("<none>"));
    let method = v.method.map(|m| serde_name(&m));
    d.field(4, "Method", method.as_deref().unwrap_or("<none>"));
    if let Some(vb) = &v.volume_backup {
        d.field(4, "VolumeBackup", vb);
    }
    if let Some(id) = &v.snapshot_id {
        d.field(4, "Snapshot id", id);
    }
    let bytes = format!(
        "{} of {} written",
        human_bytes(v.bytes_written),
        human_bytes(v.bytes_total)
    );
    d.field(4, "Bytes", bytes);
    if let Some(secs) = v.duration_seconds {
        d.field(4, "Duration", format_duration(secs.round() as i64));
    }
    if let Some(m) = v.message.as_deref().filter(|m| !m.is_empty()) {
        d.field(4, "Message", m);
    }
}

// ---- delete, cancel ----------------------------------------------------------------------

async fn delete(a: DeleteArgs) -> Result<()> {
    let timeout = parse_timeout(&a.timeout)?;
    let OneArgs {
        name,
        cluster,
        namespace,
    } = &a.restore;
    let target = Target::connect(cluster, namespace.as_deref()).await?;
    let r = target.get(name).await?;
    if let Err(e) = target.api().delete(name, &DeleteParams::default()).await {
        return Err(target.error(e, Some(target.not_found(name))).await);
    }
    println!("{}", deleted_message(&r));
    if a.wait {
        target
            .wait_gone(name, &r.uid().unwrap_or_default(), timeout)
            .await?;
    }
    Ok(())
}

/// What `delete` says happens.
fn deleted_message(r: &Restore) -> String {
    let name = r.name_any();
    if r.is_final() {
        format!("restore {name} deleted; what it restored stays")
    } else {
        format!(
            "restore {name} deleted; the operator stops it and removes the PVCs it made that are not filled yet (objects already restored stay)"
        )
    }
}

async fn cancel(a: CancelArgs) -> Result<()> {
    let target = Target::connect(&a.cluster, a.namespace.as_deref()).await?;
    let name = &a.name;
    let r = target.get(name).await?;
    if r.is_final() {
        println!(
            "restore {name} already ended {}: nothing to cancel",
            r.phase_name().unwrap_or_default()
        );
        return Ok(());
    }
    let patch = serde_json::json!({"spec": {"cancel": true}});
    if let Err(e) = target
        .api()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        return Err(target.error(e, Some(target.not_found(name))).await);
    }
    println!(
        "restore {name}: cancel requested; the operator removes its unfinished PVCs and VolumeBackups and ends it Canceled (coffer restore get {name} -n {})",
        target.namespace
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_access::output_value;
    use clap::Parser;
    use coffer_api::StatusItem;
    use coffer_api::{HookCounts, ItemKind, ObjectCounts, RestoreMethod, RestoreStatus, Severity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: RestoreCommand,
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        let mut all = vec!["coffer", "create"];
        all.extend_from_slice(args);
        match TestCli::try_parse_from(all).unwrap().command {
            RestoreCommand::Create(a) => *a,
            _ => unreachable!(),
        }
    }

    fn spec(args: &[&str]) -> Result<RestoreSpec> {
        spec_from_flags(&create_args(args))
    }

    fn err(args: &[&str]) -> String {
        restore_from_flags(&create_args(args))
            .unwrap_err()
            .to_string()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn create_from_a_backup() {
        let s = spec(&["r", "--from-backup", "shop-1"]).unwrap();
        assert_eq!(
            s,
            RestoreSpec {
                backup: Some("shop-1".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn create_from_a_manifest() {
        let s = spec(&["r", "--from-manifest", "cccc3333", "--repository", "main"]).unwrap();
        assert_eq!(s.backup, None);
        assert_eq!(s.manifest.as_deref(), Some("cccc3333"));
        assert_eq!(
            s.repository,
            Some(RepositoryRef {
                name: "main".into(),
                kind: RepositoryKind::BackupRepository
            })
        );
        let s = spec(&[
            "r",
            "--from-manifest",
            "cccc",
            "--repository",
            "main",
            "--cluster-repository",
        ])
        .unwrap();
        let kind = s.repository.unwrap().kind;
        assert_eq!(kind, RepositoryKind::ClusterBackupRepository);
    }

    #[test]
    fn create_with_every_spec_flag() {
        let s = spec(&[
            "r",
            "--from-backup",
            "shop-1",
            "--mode",
            "in-place",
            "--namespace-mapping",
            "shop=shop-copy",
            "--namespace-mapping",
            "db=db-copy",
            "--include-resources",
            "deployments,configmaps",
            "--include-resources",
            "persistentvolumeclaims",
            "--exclude-resources",
            "secrets",
            "--only",
            "deployment/web",
            "--only",
            "configmap/shop/settings",
            "--selector",
            "app=shop,tier!=cache",
            "--existing",
            "recreate",
            "--rollback",
            "--clone",
            "copy",
            "--transforms-config-map",
            "rules",
            "--storage-class-mapping",
            "fast=standard",
            "--image-registry-mapping",
            "docker.io=mirror.local:5000",
            "--include-volume",
            "data,shop/logs",
            "--exclude-volume",
            "cache",
        ])
        .unwrap();
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(s.mode, RestoreMode::InPlace);
        assert_eq!(
            s.namespace_mapping,
            map(&[("shop", "shop-copy"), ("db", "db-copy")])
        );
        assert_eq!(
            s.include_resources,
            ["deployments", "configmaps", "persistentvolumeclaims"]
        );
        assert_eq!(s.exclude_resources, ["secrets"]);
        assert_eq!(s.only, ["deployment/web", "configmap/shop/settings"]);
        assert_eq!(s.label_selector.as_deref(), Some("app=shop,tier!=cache"));
        assert_eq!(s.existing, Some(ExistingObjects::Recreate));
        assert!(s.rollback);
        assert_eq!(s.clone.as_deref(), Some("copy"));
        assert_eq!(s.transforms.unwrap().config_map, "rules");
        assert_eq!(s.storage_class_mapping, map(&[("fast", "standard")]));
        assert_eq!(
            s.image_registry_mapping,
            map(&[("docker.io", "mirror.local:5000")])
        );
        let v = s.volumes.unwrap();
        assert_eq!(v.include, ["data", "shop/logs"]);
        assert_eq!(v.exclude, ["cache"]);
        assert!(!s.cancel && s.hooks.is_empty());
    }

    #[test]
    fn the_spec_serialises_as_the_crd_names_it() {
        let mut args = create_args(&[
            "r",
            "-n",
            "shop",
            "--from-backup",
            "b",
            "--mode",
            "in-place",
            "--existing",
            "update",
            "--exclude-volume",
            "cache",
        ]);
        args.dry_run = true;
        let r = restore_from_flags(&args).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["apiVersion"], "coffer.dev/v1alpha1");
        assert_eq!(v["kind"], "Restore");
        assert_eq!(v["metadata"]["name"], "r");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(v["spec"]["mode"], "inPlace");
        assert_eq!(v["spec"]["existing"], "update");
        assert_eq!(v["spec"]["volumes"]["exclude"][0], "cache");
        // What --dry-run prints.
        let yaml = serde_yaml::to_string(&r).unwrap();
        assert!(
            yaml.starts_with("apiVersion: coffer.dev/v1alpha1\nkind: Restore\n"),
            "{yaml}"
        );
        assert!(yaml.contains("  backup: b\n"), "{yaml}");
        assert!(!yaml.contains("status"), "{yaml}");
        // Without -n the object names no namespace (nothing is looked up for a dry run).
        let r = restore_from_flags(&create_args(&["r", "--from-backup", "b"])).unwrap();
        assert_eq!(r.metadata.namespace, None);
        assert_eq!(serde_json::to_value(&r).unwrap()["spec"]["mode"], "new");
    }

    #[test]
    fn flag_mistakes_are_one_clear_error() {
        assert!(err(&["r"]).starts_with("name what to restore"));
        assert!(
            err(&[
                "r",
                "--from-backup",
                "b",
                "--from-manifest",
                "m",
                "--repository",
                "x"
            ])
            .contains("are alternatives")
        );
        assert!(err(&["r", "--from-manifest", "abcd"]).contains("needs --repository"));
        assert!(
            err(&["r", "--from-backup", "b", "--repository", "x"])
                .contains("go with --from-manifest")
        );
        assert!(
            err(&["r", "--from-manifest", "ab cd", "--repository", "x"])
                .contains("not a manifest id")
        );
        let b = |extra: &[&str]| {
            let mut args = vec!["r", "--from-backup", "b"];
            args.extend_from_slice(extra);
            err(&args)
        };
        assert_eq!(
            b(&["--namespace-mapping", "shop"]),
            "--namespace-mapping \"shop\" is not OLD=NEW"
        );
        assert!(b(&["--namespace-mapping", "shop="]).contains("both sides"));
        assert!(b(&["--namespace-mapping", "shop=Bad_NS"]).contains("not a valid namespace name"));
        assert!(
            b(&["--namespace-mapping", "a=b", "--namespace-mapping", "a=c"])
                .contains("maps a twice")
        );
        assert!(b(&["--storage-class-mapping", "=x"]).contains("is not OLD=NEW"));
        assert!(b(&["--image-registry-mapping", "a b=c"]).contains("white space"));
        assert!(b(&["--only", "web"]).contains("is not KIND/NAME"));
        assert!(b(&["--only", "a/b/c/d"]).contains("is not KIND/NAME"));
        assert!(b(&["--selector", "app in (a"]).starts_with("--selector \"app in (a\""));
        assert!(b(&["--clone", "Copy!"]).starts_with("--clone"));
        assert!(b(&["--include-volume", "a/b/c"]).contains("not a PVC name"));
        assert!(
            b(&["--include-volume", "data", "--exclude-volume", "data"])
                .contains("both --include-volume and --exclude-volume")
        );
        assert!(b(&["-n", "Bad_NS"]).contains("not a valid namespace name"));
        assert!(err(&["bad/name", "--from-backup", "b"]).contains("not a valid restore name"));
        // clap refuses what it can see alone.
        for args in [
            vec![
                "coffer",
                "create",
                "r",
                "--from-backup",
                "b",
                "--mode",
                "inplace",
            ],
            vec![
                "coffer",
                "create",
                "r",
                "--from-backup",
                "b",
                "--existing",
                "keep",
            ],
            vec![
                "coffer",
                "create",
                "r",
                "--from-backup",
                "b",
                "--dry-run",
                "--wait",
            ],
            vec!["coffer", "get", "x", "-A"],
        ] {
            assert!(TestCli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }

    fn restore(name: &str, ns: &str) -> Restore {
        let mut r = Restore::new(
            name,
            RestoreSpec {
                backup: Some("shop-1".into()),
                ..Default::default()
            },
        );
        r.metadata.namespace = Some(ns.into());
        r.metadata.creation_timestamp = Some(Time(ts("2024-05-01T10:00:00Z")));
        r
    }

    fn volume(pvc: &str, phase: VolumeRestorePhase, written: u64) -> VolumeRestoreStatus {
        VolumeRestoreStatus {
            pvc: pvc.into(),
            namespace: "shop-copy".into(),
            source: format!("shop/{pvc}"),
            volume_backup: Some(format!("r1-{pvc}")),
            snapshot_id: Some("bbbb2222".into()),
            method: Some(RestoreMethod::Populator),
            phase: Some(phase),
            bytes_total: 256 << 20,
            bytes_written: written,
            ..Default::default()
        }
    }

    /// A restore that went through every step, with a failed volume.
    fn finished() -> Restore {
        let mut r = restore("r1", "shop");
        r.spec.namespace_mapping = BTreeMap::from([("shop".into(), "shop-copy".into())]);
        let mut failed = volume("logs", VolumeRestorePhase::Failed, 0);
        failed.message = Some("mover pod evicted".into());
        failed.method = None;
        failed.snapshot_id = None;
        let mut data = volume("data", VolumeRestorePhase::Completed, 256 << 20);
        data.duration_seconds = Some(62.4);
        r.status = Some(RestoreStatus {
            phase: Some(RestorePhase::PartiallyFailed),
            message: Some("1 volume failed".into()),
            start_time: Some(Time(ts("2024-05-01T10:00:01Z"))),
            completion_time: Some(Time(ts("2024-05-01T10:03:04Z"))),
            manifest: Some("cccc3333dddd".into()),
            resources_snapshot: Some("aaaa1111".into()),
            target_namespaces: vec!["shop-copy".into()],
            objects: Some(ObjectCounts {
                created: 12,
                updated: 0,
                skipped: 3,
                deleted: 0,
                failed: 0,
            }),
            volumes: vec![data, failed],
            items: vec![StatusItem {
                kind: ItemKind::Volume,
                severity: Severity::Error,
                name: "logs".into(),
                namespace: Some("shop-copy".into()),
                reason: "mover pod evicted".into(),
            }],
            hooks: Some(HookCounts {
                attempted: 0,
                failed: 0,
            }),
            warnings: vec!["StorageClass fast is not in this cluster".into()],
            size: Some("256.0 MiB".into()),
            ..Default::default()
        });
        r
    }

    #[test]
    fn table_of_restores() {
        let now = ts("2024-05-01T11:00:00Z");
        let mut dr = restore("dr", "shop");
        dr.spec.backup = None;
        dr.spec.manifest = Some("0123456789abcdef".into());
        dr.spec.mode = RestoreMode::InPlace;
        dr.metadata.creation_timestamp = Some(Time(ts("2024-05-01T10:59:15Z")));
        dr.status = Some(RestoreStatus {
            phase: Some(RestorePhase::InProgress),
            ..Default::default()
        });
        let text = table(&[finished(), dr], false, now);
        let expected = "\
NAME   PHASE             BACKUP              MODE      VOLUMES   AGE
r1     PartiallyFailed   shop-1              new       1/2       1h
dr     InProgress        manifest:01234567   inPlace   0/0       45s
";
        assert_eq!(text, expected);
        let mut new = restore("x", "other");
        new.metadata.creation_timestamp = None;
        let text = table(&[new], true, now);
        assert_eq!(
            text,
            "NAMESPACE   NAME   PHASE   BACKUP   MODE   VOLUMES   AGE\nother       x      -       shop-1   new    0/0       -\n"
        );
    }

    #[test]
    fn describe_tells_everything() {
        let event = CoreEvent {
            type_: Some("Warning".into()),
            reason: Some("VolumeFailed".into()),
            message: Some("logs: mover pod evicted\n".into()),
            last_timestamp: Some(Time(ts("2024-05-01T10:02:00Z"))),
            ..Default::default()
        };
        let text = describe_text(&finished(), &Ok(vec![event]), ts("2024-05-01T11:00:00Z"));
        let expected = "\
Name:                 r1
Namespace:            shop
Labels:               <none>
Created:              2024-05-01 10:00:00 UTC

Backup:               shop-1 (Backup in shop)
Mode:                 new (objects created, PVCs filled by the volume populator)
Namespace mapping:    shop=shop-copy
Included resources:   * (all)
Excluded resources:   <none>
Label selector:       <none> (every object)
Existing objects:     skip (the default)

Phase:                PartiallyFailed
Message:              1 volume failed
Started:              2024-05-01 10:00:01 UTC
Completed:            2024-05-01 10:03:04 UTC
Duration:             3m3s
Manifest:             cccc3333dddd
Resources snapshot:   aaaa1111
Target namespaces:    shop-copy
Objects:              12 created, 0 updated, 3 skipped, 0 deleted, 0 failed
Hooks:                0 attempted, 0 failed
Size:                 256.0 MiB written

Items (1):
  Error    Volume    shop-copy/logs: mover pod evicted

Volumes (1 of 2 completed):
  shop-copy/data (from shop/data)
    Phase:            Completed
    Method:           populator
    VolumeBackup:     r1-data
    Snapshot id:      bbbb2222
    Bytes:            256.0 MiB of 256.0 MiB written
    Duration:         1m2s
  shop-copy/logs (from shop/logs)
    Phase:            Failed
    Method:           <none>
    VolumeBackup:     r1-logs
    Bytes:            0 B of 256.0 MiB written
    Message:          mover pod evicted

Warnings (1):
  StorageClass fast is not in this cluster
Events:
  2024-05-01 10:02:00 UTC  Warning VolumeFailed: logs: mover pod evicted
";
        assert_eq!(text, expected);
    }

    #[test]
    fn describe_of_a_new_disaster_recovery() {
        let mut args = create_args(&[
            "dr",
            "--from-manifest",
            "cccc",
            "--repository",
            "main",
            "--cluster-repository",
            "--rollback",
            "--only",
            "deployment/web",
            "-l",
            "app=shop",
            "--clone",
            "copy",
            "--transforms-config-map",
            "rules",
            "--storage-class-mapping",
            "fast=standard",
            "--image-registry-mapping",
            "docker.io=mirror",
            "--exclude-volume",
            "cache",
        ]);
        args.namespace = Some("ops".into());
        let mut r = restore_from_flags(&args).unwrap();
        r.spec.cancel = true;
        r.status = Some(RestoreStatus {
            scaled: vec![coffer_api::ScaledWorkload {
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "web".into(),
                replicas: 3,
            }],
            ..Default::default()
        });
        let text = describe_text(&r, &Err("forbidden".into()), ts("2024-05-01T11:00:00Z"));
        for want in [
            "Manifest:             cccc\n",
            "Repository:           main (ClusterBackupRepository)\n",
            "Only:                 deployment/web\n",
            "Label selector:       app=shop\n",
            "Existing objects:     update (the default with rollback)\n",
            "Rollback:             yes (objects in scope that did not exist at backup time are deleted)\n",
            "Clone:                objects renamed NAME-copy\n",
            "Transforms:           ConfigMap rules in ops\n",
            "Storage classes:      fast=standard\n",
            "Image registries:     docker.io=mirror\n",
            "Volume data:          only all; never cache\n",
            "Cancel:               requested\n",
            "Phase:                <none> (the operator has not picked it up yet)\n",
            "Objects:              <none yet>\n",
            "Scaled down:          Deployment shop/web (3 replicas)\n",
            "Target namespaces:    <none yet>\n",
            "Items: none failed or warned\n",
            "Volumes: <none>\n",
            "Warnings: <none>\n",
            "Events: cannot list them: forbidden\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("Duration:"), "{text}");
    }

    #[test]
    fn progress_lines_and_outcomes() {
        let mut r = restore("r1", "shop");
        assert_eq!(
            r.progress_line(),
            "restore r1: New (waiting for the operator)"
        );
        r.status = Some(RestoreStatus {
            phase: Some(RestorePhase::InProgress),
            step: Some("Volumes".into()),
            objects: Some(ObjectCounts {
                created: 12,
                ..Default::default()
            }),
            volumes: vec![
                volume("data", VolumeRestorePhase::Completed, 256 << 20),
                volume("logs", VolumeRestorePhase::InProgress, 10 << 20),
            ],
            ..Default::default()
        });
        assert_eq!(
            r.progress_line(),
            "restore r1: InProgress (Volumes), objects 12 created, 0 updated, 0 skipped, 0 failed, volumes 1/2, 266.0 MiB of 512.0 MiB; writing shop-copy/logs"
        );
        assert_eq!(r.progress_bytes(), Some((266 << 20, 512 << 20)));
        assert_eq!(
            outcome(&finished()).unwrap_err().to_string(),
            "restore r1 ended PartiallyFailed: 1 volume failed"
        );
        let mut ok = finished();
        ok.status.as_mut().unwrap().phase = Some(RestorePhase::Completed);
        assert!(outcome(&ok).is_ok());
        let mut failed = finished();
        let s = failed.status.as_mut().unwrap();
        s.phase = Some(RestorePhase::Failed);
        s.message = None;
        s.failure = Some("Backup shop/shop-1 does not exist".into());
        assert_eq!(
            outcome(&failed).unwrap_err().to_string(),
            "restore r1 ended Failed: Backup shop/shop-1 does not exist"
        );
    }

    #[test]
    fn delete_says_what_happens() {
        assert_eq!(
            deleted_message(&finished()),
            "restore r1 deleted; what it restored stays"
        );
        assert!(deleted_message(&restore("r", "shop")).contains("removes the PVCs it made"));
    }

    #[test]
    fn json_output_is_one_object_or_a_list() {
        let one = output_value(true, &[finished()]).unwrap();
        assert_eq!(one["kind"], "Restore");
        assert_eq!(one["spec"]["backup"], "shop-1");
        let list = output_value(false, &[finished(), restore("b", "shop")]).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
    }
}
