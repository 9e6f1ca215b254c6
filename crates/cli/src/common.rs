//! What every repository command shares: where the repository is, how to unlock it,
//! and how long-running work shows progress.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use coffer_repo::{
    Location, OpenOptions, OpendalStorage, Progress, Repository, S3Options, Secret, Storage,
    StorageOptions, Unit,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Repository location and secret, shared by all repository commands.
#[derive(clap::Args, Clone, Debug)]
pub struct RepoOpts {
    /// Repository: a path, file://PATH or s3://BUCKET/PREFIX (AWS_* variables configure S3).
    #[arg(long, env = "COFFER_REPO", global = true, value_name = "LOCATION")]
    pub repo: Option<String>,
    /// Read the repository password from this file (else env COFFER_PASSWORD).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Unlock with a raw key read from this file instead of a password.
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl RepoOpts {
    pub fn location(&self) -> Result<Location> {
        let Some(repo) = &self.repo else {
            bail!("no repository given: pass --repo LOCATION or set COFFER_REPO");
        };
        parse_location(repo)
    }

    /// The storage of the repository given by --repo / COFFER_REPO.
    pub fn storage(&self) -> Result<Arc<dyn Storage>> {
        storage_at(&self.location()?)
    }

    pub fn secret(&self) -> Result<Secret> {
        secret_from(
            self.password_file.as_ref(),
            self.key_file.as_ref(),
            "COFFER_PASSWORD",
            "--password-file",
        )
    }

    /// Opens the repository, with errors that say what to fix.
    pub async fn open(&self) -> Result<Repository> {
        let storage = self.storage()?;
        let secret = self.secret()?;
        Ok(Repository::open(storage, &secret, &client_options()).await?)
    }
}

/// A location as the user gave it; a relative path is taken from the working directory.
pub fn parse_location(s: &str) -> Result<Location> {
    let cwd = std::env::current_dir().context("cannot resolve a relative repository path")?;
    Ok(Location::parse_relative_to(s, &cwd)?)
}

/// The storage at `location`, configured from the environment as the AWS tools are
/// (`AWS_ENDPOINT_URL[_S3]`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...; profiles and instance
/// credentials too).
pub fn storage_at(location: &Location) -> Result<Arc<dyn Storage>> {
    let options = StorageOptions {
        s3: S3Options::from_aws_variables(|k| std::env::var(k).ok()),
    };
    Ok(Arc::new(OpendalStorage::new(location, &options)?))
}

/// What the library records and where it caches, from the environment: the cache root
/// (`COFFER_CACHE_DIR`, else `$XDG_CACHE_HOME/coffer`, else `~/.cache/coffer`, else a
/// directory under the system temp dir), this machine's name and the user's.
pub fn client_options() -> OpenOptions {
    OpenOptions::new(cache_root(), hostname(), username())
}

fn cache_root() -> PathBuf {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(d) = var("COFFER_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Path::new(&d).join("coffer");
    }
    if let Some(h) = var("HOME").filter(|h| h != "/") {
        return Path::new(&h).join(".cache").join("coffer");
    }
    std::env::temp_dir().join("coffer-cache")
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer it is given.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..len])) {
        (0, Ok(name)) if !name.is_empty() => name.to_string(),
        _ => "unknown".to_string(),
    }
}

fn username() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

/// Reads a secret from a key file, a password file, or the given environment variable.
pub fn secret_from(
    password_file: Option<&PathBuf>,
    key_file: Option<&PathBuf>,
    env_var: &str,
    password_flag: &str,
) -> Result<Secret> {
    if let Some(path) = key_file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        return Ok(Secret::KeyFile(bytes));
    }
    if let Some(path) = password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?;
        let password = text.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("password file {} is empty", path.display());
        }
        return Ok(Secret::Password(password));
    }
    match std::env::var(env_var) {
        Ok(p) if !p.is_empty() => Ok(Secret::Password(p)),
        _ => bail!("no password given: set {env_var}, or pass {password_flag} FILE or a key file"),
    }
}

/// True when progress bars may be drawn (stderr is a terminal).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// The CLI's receiver of engine progress: one bar on a terminal (bytes with rate and ETA,
/// or a count of items), nothing otherwise; warnings are printed above the bar.
pub struct ProgressBars {
    bar: ProgressBar,
    label: String,
}

impl ProgressBars {
    /// A hidden bar until the engine's first stage begins.
    pub fn new(label: &str) -> Arc<ProgressBars> {
        let bar = ProgressBar::with_draw_target(Some(0), draw_target());
        bar.set_style(bytes_style());
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Arc::new(ProgressBars {
            bar,
            label: label.to_string(),
        })
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for ProgressBars {
    fn stage(&self, name: &str, unit: Unit, total: Option<u64>) {
        self.bar.set_style(match unit {
            Unit::Bytes => bytes_style(),
            Unit::Items => items_style(),
        });
        self.bar.set_length(total.unwrap_or(0));
        self.bar.set_position(0);
        self.bar.set_message(format!("{} ({name})", self.label));
    }
    fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn warn(&self, item: &str, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {item}: {message}"));
    }
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

fn items_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{elapsed_precise}] [{wide_bar}] {pos}/{len} ETA {eta}")
        .expect("valid template")
        .progress_chars("=> ")
}

fn draw_target() -> ProgressDrawTarget {
    if interactive() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Parses `K=V` tag arguments.
pub fn parse_tags(tags: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    let mut map = std::collections::BTreeMap::new();
    for t in tags {
        let Some((k, v)) = t.split_once('=') else {
            bail!("tag {t:?} is not K=V");
        };
        if k.is_empty() {
            bail!("tag {t:?} has an empty key");
        }
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}
