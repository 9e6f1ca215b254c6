//! Reaching a cluster from the command line, shared by every command that talks to the
//! API server (`coffer resources ...`, `coffer backup ...`, `coffer restore ...`): the
//! `--kubeconfig` and `--context` flags, how they resolve (the way kubectl resolves them),
//! and the hints added to connection errors.
//!
//! Below that, what the commands on Coffer's own objects (Backups, Restores) share: a
//! [`Target`] (client, namespace and kind) with the requests and one-line errors they all
//! make, `--wait`'s following of an object to its end ([`Followed`]), durations, and the
//! plain-text building blocks of `get` tables and `describe` texts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use clap::ValueEnum;
use coffer_api::StatusItem;
use coffer_resources::names::{dns_label_problem, path_segment_problem};
use coffer_resources::{Cluster, ClusterAccess, KubeconfigSource};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `--kubeconfig` and `--context`.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// Where the cluster's settings come from: --kubeconfig, else the files KUBECONFIG
    /// lists, else ~/.kube/config when it exists, else the pod's service account.
    pub fn access(&self) -> ClusterAccess {
        let source = if let Some(path) = &self.kubeconfig {
            KubeconfigSource::Files(vec![path.clone()])
        } else if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            KubeconfigSource::Files(
                std::env::split_paths(&list)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect(),
            )
        } else {
            match std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config")) {
                Some(p) if p.exists() => KubeconfigSource::Files(vec![p]),
                _ => KubeconfigSource::InCluster,
            }
        };
        ClusterAccess {
            source,
            context: self.context.clone(),
        }
    }

    /// Connects, with errors that say what to check.
    pub async fn connect(&self) -> anyhow::Result<Cluster> {
        Cluster::connect(&self.access())
            .await
            .map_err(cluster_error)
    }
}

/// The library's error, with the CLI's hint where the user's flags are the likely cause.
pub fn cluster_error(e: coffer_resources::Error) -> anyhow::Error {
    match e {
        e @ coffer_resources::Error::Unreachable { .. } => {
            anyhow!("{e} (check --kubeconfig / KUBECONFIG and that the cluster is up)")
        }
        e @ coffer_resources::Error::Kubeconfig { .. } => {
            anyhow!("{e} (check --kubeconfig, KUBECONFIG and --context)")
        }
        e => e.into(),
    }
}

// ---- Coffer's objects ------------------------------------------------------------------

/// What to do when the API server does not know the coffer.dev resources.
pub const NO_CRDS: &str = "Coffer's CRDs are not installed: kubectl apply -k deploy/";

/// A namespaced coffer.dev object the commands read and write (Backup, Restore).
pub trait CofferObject:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The kind in lower case, as messages and commands name it (`backup`).
    fn word() -> String {
        Self::kind(&()).to_lowercase()
    }
}

impl<K> CofferObject for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A name given for an object of kind `K`, checked before anything is sent.
pub fn check_name<K: CofferObject>(name: &str) -> Result<()> {
    if let Some(why) = path_segment_problem(name) {
        bail!("{name:?} is not a valid {} name: {why}", K::word());
    }
    Ok(())
}

/// A connected client and the namespace a command works in, for objects of kind `K`.
pub struct Target<K> {
    pub client: Client,
    pub namespace: String,
    kind: PhantomData<fn() -> K>,
}

impl<K: CofferObject> Target<K> {
    /// Connects; `namespace` None: the context's.
    pub async fn connect(cluster: &ClusterArgs, namespace: Option<&str>) -> Result<Target<K>> {
        if let Some(ns) = namespace
            && let Some(why) = dns_label_problem(ns)
        {
            bail!("namespace {ns:?} is not a valid namespace name: {why}");
        }
        let cluster = cluster.connect().await?;
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| cluster.default_namespace().to_string());
        Ok(Target {
            client: cluster.client().clone(),
            namespace,
            kind: PhantomData,
        })
    }

    /// The objects of the namespace.
    pub fn api(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The object, or one line saying why not.
    pub async fn get(&self, name: &str) -> Result<K> {
        check_name::<K>(name)?;
        match self.api().get(name).await {
            Ok(o) => Ok(o),
            Err(e) => Err(self.error(e, Some(self.not_found(name))).await),
        }
    }

    /// Creates the object; one that exists already is an error saying what to do.
    pub async fn create(&self, obj: &K) -> Result<()> {
        match self.api().create(&PostParams::default(), obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let (word, name, ns) = (K::word(), obj.name_any(), &self.namespace);
                bail!(
                    "{word} {name} already exists in namespace {ns}: choose another name, or delete it first (coffer {word} delete {name} -n {ns})"
                )
            }
            Err(e) => Err(self.error(e, None).await),
        }
    }

    pub fn not_found(&self, name: &str) -> String {
        let (word, ns) = (K::word(), &self.namespace);
        format!("{word} {name} not found in namespace {ns} (coffer {word} get -n {ns} lists them)")
    }

    /// One line for an error of a request on a coffer.dev resource: the CRDs missing,
    /// `missing` for any other 404 (the server's message when None), else the server's
    /// message.
    pub async fn error(&self, e: kube::Error, missing: Option<String>) -> anyhow::Error {
        if let kube::Error::Api(status) = &e
            && status.code == 404
        {
            return match self.crds_installed().await {
                Ok(false) => anyhow!(NO_CRDS),
                _ => match missing {
                    Some(m) => anyhow!(m),
                    None => coffer_resources::Error::from(e).into(),
                },
            };
        }
        coffer_resources::Error::from(e).into()
    }

    /// Whether the API server serves `K`'s resource of coffer.dev.
    async fn crds_installed(&self) -> Result<bool, kube::Error> {
        let plural = K::plural(&());
        match self
            .client
            .list_api_group_resources(coffer_api::API_VERSION)
            .await
        {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What `get` shows: the named object, else those of the namespace (or of all with
    /// `all_namespaces`); sorted, without managedFields.
    pub async fn list_for_get(&self, name: Option<&str>, all_namespaces: bool) -> Result<Vec<K>> {
        let mut objs = match name {
            Some(name) => vec![self.get(name).await?],
            None => {
                let api: Api<K> = if all_namespaces {
                    Api::all(self.client.clone())
                } else {
                    self.api()
                };
                match api.list(&ListParams::default()).await {
                    Ok(list) => list.items,
                    Err(e) => return Err(self.error(e, None).await),
                }
            }
        };
        objs.sort_by_key(|x| (x.namespace(), x.name_any()));
        for o in &mut objs {
            o.meta_mut().managed_fields = None;
        }
        Ok(objs)
    }

    /// The object's Events (in its namespace), or why they cannot be listed.
    pub async fn events(&self, obj: &K) -> Result<Vec<CoreEvent>, String> {
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind={},involvedObject.name={}",
            K::kind(&()),
            obj.name_any()
        ));
        match api.list(&lp).await {
            Ok(list) => {
                let uid = obj.uid();
                Ok(list
                    .items
                    .into_iter()
                    .filter(|e| {
                        uid.is_none()
                            || e.involved_object.uid.is_none()
                            || e.involved_object.uid == uid
                    })
                    .collect())
            }
            Err(e) => Err(coffer_resources::Error::from(e).to_string()),
        }
    }

    /// Waits until the object with `uid` is gone (after a delete); prints that it is.
    pub async fn wait_gone(&self, name: &str, uid: &str, timeout: Duration) -> Result<()> {
        let word = K::word();
        let gone = tokio::time::timeout(
            timeout,
            kube::runtime::wait::await_condition(
                self.api(),
                name,
                kube::runtime::wait::conditions::is_deleted(uid),
            ),
        )
        .await;
        match gone {
            Ok(Ok(_)) => {
                println!("{word} {name} is gone");
                Ok(())
            }
            Ok(Err(e)) => bail!("waiting for {word} {name} to go: {e}"),
            Err(_) => bail!(
                "{word} {name} is still there after {} (--timeout): its finalizers wait for the operator (is coffer-operator running? kubectl -n coffer-system get pods)",
                format_duration(timeout.as_secs() as i64)
            ),
        }
    }
}

/// `-o` of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One row per object.
    Table,
    /// The objects as JSON (a List without NAME).
    Json,
    /// The objects as YAML (a List without NAME).
    Yaml,
}

/// Prints what `get` found: `table` of them (a note on stderr when there are none), or
/// JSON or YAML (one object when `single`, else a List).
pub fn print_objects<K: CofferObject>(
    objs: &[K],
    output: OutputFormat,
    single: bool,
    scope: Option<&str>,
    table: impl FnOnce(&[K]) -> String,
) -> Result<()> {
    match output {
        OutputFormat::Table => {
            if objs.is_empty() {
                let plural = K::plural(&());
                match scope {
                    None => eprintln!("no {plural} found"),
                    Some(ns) => eprintln!("no {plural} found in namespace {ns}"),
                }
                return Ok(());
            }
            print!("{}", table(objs));
        }
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&output_value(single, objs)?)?
        ),
        OutputFormat::Yaml => print!("{}", serde_yaml::to_string(&output_value(single, objs)?)?),
    }
    Ok(())
}

/// One object when a name was asked for, else a List as kubectl prints it.
pub fn output_value<T: Serialize>(single: bool, objs: &[T]) -> Result<serde_json::Value> {
    if single && let Some(o) = objs.first() {
        return Ok(serde_json::to_value(o)?);
    }
    Ok(serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": serde_json::to_value(objs)?,
    }))
}

/// Rows (the header first) in columns three spaces apart, kubectl's way.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---- following an object to its end -----------------------------------------------------

/// A coffer.dev object the operator takes through phases to an end, as `--wait` follows
/// it.
pub trait Followed: CofferObject {
    /// The phase's name; None before the operator set one.
    fn phase_name(&self) -> Option<String>;
    /// Whether the phase is final.
    fn is_final(&self) -> bool;
    /// Whether it ended well (the exit code 0 of `--wait`).
    fn is_completed(&self) -> bool;
    /// The status message.
    fn message(&self) -> Option<String>;
    /// `NAME: PHASE (STEP), ...`: the bar's message.
    fn progress_summary(&self) -> String;
    /// The progress line printed on each change when stderr is no terminal.
    fn progress_line(&self) -> String;
    /// Bytes done and total, when known.
    fn progress_bytes(&self) -> Option<(u64, u64)>;
}

/// Follows the object until its phase is final; progress on stderr.
pub async fn wait_for_end<K: Followed>(
    target: &Target<K>,
    name: &str,
    timeout: Duration,
) -> Result<K> {
    use kube::runtime::watcher::{self, Event};
    let word = K::word();
    let deadline = tokio::time::Instant::now() + timeout;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = Box::pin(watcher::watcher(target.api(), config));
    let mut view = ProgressView::new(name);
    let mut last: Option<K> = None;
    let mut seen_in_listing = false;
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(n)) => n,
            Ok(None) => bail!("the watch of {word} {name} ended unexpectedly"),
            Err(_) => {
                view.finish();
                let phase = last.as_ref().and_then(Followed::phase_name);
                let hint = match phase {
                    None => {
                        "; no operator has picked it up: is coffer-operator running (kubectl -n coffer-system get pods)?"
                            .to_string()
                    }
                    Some(_) => String::new(),
                };
                bail!(
                    "{word} {name} is still {} after {} (--timeout); it goes on in the cluster: coffer {word} describe {name} -n {}{hint}",
                    phase.unwrap_or_else(|| "New".into()),
                    format_duration(timeout.as_secs() as i64),
                    target.namespace
                );
            }
        };
        match next {
            Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => {
                seen_in_listing = true;
                view.update(&o);
                if o.is_final() {
                    view.finish();
                    return Ok(o);
                }
                last = Some(o);
            }
            Ok(Event::Delete(_)) => {
                view.finish();
                bail!("{word} {name} was deleted while waiting for it");
            }
            Ok(Event::Init) => seen_in_listing = false,
            Ok(Event::InitDone) => {
                if !seen_in_listing {
                    view.finish();
                    bail!(
                        "{word} {name} no longer exists in namespace {}",
                        target.namespace
                    );
                }
            }
            Err(e) => {
                let inner = match e {
                    watcher::Error::InitialListFailed(e)
                    | watcher::Error::WatchStartFailed(e)
                    | watcher::Error::WatchFailed(e) => Some(e),
                    _ => None,
                };
                match inner {
                    // Refusals do not heal by retrying.
                    Some(kube::Error::Api(s)) if matches!(s.code, 401 | 403 | 404) => {
                        view.finish();
                        return Err(target.error(kube::Error::Api(s), None).await);
                    }
                    // A broken connection: the watcher starts again (after a pause, so
                    // that a server that is down is not hammered).
                    other => {
                        let msg = match other {
                            Some(e) => coffer_resources::Error::from(e).to_string(),
                            None => "the watch failed".to_string(),
                        };
                        view.note(&format!("{msg}; watching again"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// The exit status of a waited-for object: an error naming the phase unless it
/// completed.
pub fn outcome<K: Followed>(o: &K) -> Result<()> {
    if o.is_completed() {
        return Ok(());
    }
    let message = o
        .message()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "see its items above".into());
    bail!(
        "{} {} ended {}: {message}",
        K::word(),
        o.name_any(),
        o.phase_name().unwrap_or_else(|| "without a phase".into())
    )
}

/// Progress of an object being waited for: a bar on a terminal, a line per change
/// otherwise.
struct ProgressView {
    bar: Option<indicatif::ProgressBar>,
    last_line: String,
}

/// The bar's looks before any bytes are known, and once they are. The message comes last
/// and is cut to the terminal's width, so that the bar stays on one line.
const WAITING_STYLE: &str = "{spinner} [{elapsed_precise}] {wide_msg}";
const BYTES_STYLE: &str =
    "{spinner} [{elapsed_precise}] {bytes}/{total_bytes} [{bar:20}] {wide_msg}";

fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

impl ProgressView {
    fn new(name: &str) -> ProgressView {
        let bar = crate::common::interactive().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(bar_style(WAITING_STYLE));
            bar.set_message(format!("{name}: waiting"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        ProgressView {
            bar,
            last_line: String::new(),
        }
    }

    fn update<K: Followed>(&mut self, o: &K) {
        if let Some(bar) = &self.bar {
            if let Some((done, total)) = o.progress_bytes().filter(|(_, t)| *t > 0) {
                bar.set_style(bar_style(BYTES_STYLE));
                bar.set_length(total);
                bar.set_position(done.min(total));
            }
            bar.set_message(o.progress_summary());
            return;
        }
        let line = o.progress_line();
        if line != self.last_line {
            eprintln!("{line}");
            self.last_line = line;
        }
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

// ---- durations and times -----------------------------------------------------------------

/// A duration as Go and Kubernetes write them, with days: `90s`, `30m`, `1h30m`, `720h`,
/// `30d`. A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. 30s, 10m, 1h30m, 720h or 30d".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let bad = || format!("{s:?} is not a duration; write e.g. 30s, 10m, 1h30m, 720h or 30d");
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
    }
    Ok(Duration::from_secs(total))
}

/// `--timeout`'s value.
pub fn parse_timeout(s: &str) -> Result<Duration> {
    parse_duration(s).map_err(|e| anyhow!("--timeout: {e}"))
}

/// A duration in seconds as people read it: `45s`, `2m3s`, `1h2m`, `3d4h`.
pub fn format_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts: Vec<(i64, &str)> = if d > 0 {
        vec![(d, "d"), (h, "h")]
    } else if h > 0 {
        vec![(h, "h"), (m, "m"), (sec, "s")]
    } else if m > 0 {
        vec![(m, "m"), (sec, "s")]
    } else {
        return format!("{sec}s");
    };
    let mut out = String::new();
    for (i, (v, unit)) in parts.iter().enumerate() {
        if i == 0 || *v > 0 {
            let _ = write!(out, "{v}{unit}");
        }
    }
    out
}

pub fn format_time(t: &Time) -> String {
    t.0.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn time_or_none(t: &Option<Time>) -> String {
    t.as_ref()
        .map(format_time)
        .unwrap_or_else(|| "<none>".into())
}

/// How long something took from `start` to `end`, or has been running until `now`
/// (None when it ended without an end time).
pub fn elapsed(
    start: Option<&Time>,
    end: Option<&Time>,
    ended: bool,
    now: Timestamp,
) -> Option<String> {
    let start = start?.0;
    let end = match end {
        Some(t) => t.0,
        None if ended => return None,
        None => now,
    };
    Some(format_duration(end.as_second() - start.as_second()))
}

/// The age of an object, as kubectl's AGE column shows it.
pub fn age<K: Resource>(o: &K, now: Timestamp) -> String {
    match &o.meta().creation_timestamp {
        Some(t) => format_duration(now.as_second() - t.0.as_second()),
        None => "-".into(),
    }
}

// ---- describe texts ----------------------------------------------------------------------

/// The name serde gives a value (`snapshotAndCopy`, `Completed`).
pub fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// Text in `Label:   value` lines, the values of one block in one column.
#[derive(Default)]
pub struct Doc {
    pub out: String,
}

impl Doc {
    /// `Label:` padded so that values start at column 22, `indent` spaces in.
    pub fn field(&mut self, indent: usize, label: &str, value: impl std::fmt::Display) {
        let label = format!("{label}:");
        let w = 22usize.saturating_sub(indent);
        let _ = writeln!(self.out, "{:indent$}{label:<w$}{value}", "");
    }

    pub fn line(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{text}");
    }

    pub fn blank(&mut self) {
        self.out.push('\n');
    }

    /// Name, namespace, labels, creation and deletion of an object.
    pub fn metadata<K: Resource>(&mut self, o: &K) {
        self.field(0, "Name", o.name_any());
        self.field(0, "Namespace", o.namespace().unwrap_or_default());
        self.field(0, "Labels", or_else(join_map(o.labels()), "<none>"));
        if let Some(t) = &o.meta().creation_timestamp {
            self.field(0, "Created", format_time(t));
        }
        if o.meta().deletion_timestamp.is_some() {
            self.field(
                0,
                "Deleting",
                "yes (the operator is cleaning up before the object goes)",
            );
        }
    }

    /// Every status item, `SEVERITY KIND namespace/name: reason`.
    pub fn items(&mut self, items: &[StatusItem]) {
        if items.is_empty() {
            self.line("Items: none failed or warned");
            return;
        }
        self.line(format_args!("Items ({}):", items.len()));
        for it in items {
            let who = match &it.namespace {
                Some(n) => format!("{n}/{}", it.name),
                None => it.name.clone(),
            };
            let (severity, kind) = (serde_name(&it.severity), serde_name(&it.kind));
            self.line(format_args!(
                "  {severity:<8} {kind:<9} {who}: {}",
                it.reason
            ));
        }
    }

    /// The object's events, oldest first, or why they could not be listed.
    pub fn events(&mut self, events: &Result<Vec<CoreEvent>, String>) {
        match events {
            Err(e) => self.line(format_args!("Events: cannot list them: {e}")),
            Ok(list) if list.is_empty() => self.line("Events: <none>"),
            Ok(list) => {
                self.line("Events:");
                let mut list: Vec<(Option<Timestamp>, &CoreEvent)> =
                    list.iter().map(|e| (event_time(e), e)).collect();
                list.sort_by_key(|(t, _)| *t);
                for (t, e) in list {
                    let when = t.map(|t| format_time(&Time(t)));
                    let count = match e.count {
                        Some(n) if n > 1 => format!(" (x{n})"),
                        _ => String::new(),
                    };
                    self.line(format_args!(
                        "  {}  {:<7} {}{count}: {}",
                        when.as_deref().unwrap_or("-"),
                        e.type_.as_deref().unwrap_or("-"),
                        e.reason.as_deref().unwrap_or("-"),
                        e.message.as_deref().unwrap_or("").trim()
                    ));
                }
            }
        }
    }
}

/// A list's text, or `empty` when it has nothing.
pub fn or_else(list: String, empty: &str) -> String {
    if list.is_empty() {
        empty.to_string()
    } else {
        list
    }
}

/// `k=v,k2=v2`.
pub fn join_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn event_time(e: &CoreEvent) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        let secs = |s: &str| parse_duration(s).unwrap().as_secs();
        assert_eq!(secs("90"), 90);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("30m"), 1800);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("720h"), 2_592_000);
        assert_eq!(secs("30d"), 2_592_000);
        assert_eq!(secs("1d2h3m4s"), 93_784);
        for bad in [
            "",
            "h",
            "1x",
            "1.5h",
            "-1h",
            "1h 2m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(-5), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(120), "2m");
        assert_eq!(format_duration(123), "2m3s");
        assert_eq!(format_duration(3600), "1h");
        assert_eq!(format_duration(3723), "1h2m3s");
        assert_eq!(format_duration(3603), "1h3s");
        assert_eq!(format_duration(93_784), "1d2h");
        assert_eq!(format_duration(86_400 * 3), "3d");
    }

    #[test]
    fn tables_align_their_columns() {
        let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let text = render_table(&[row(&["NAME", "PHASE"]), row(&["a-long-name", "-"])]);
        assert_eq!(text, "NAME          PHASE\na-long-name   -\n");
        assert_eq!(render_table(&[]), "");
    }
}
