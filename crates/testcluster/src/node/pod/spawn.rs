//! Starting container processes: the shared container root, each container as a host
//! process in its own mount and UTS namespaces chrooted into it with its volumes
//! bind-mounted, and exec into a running container.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, anyhow};
use tokio::process::{Child, Command};

use super::launch::{Launch, Mount};
use crate::node::Node;
use crate::process::{check, isolate_with};

/// One host top-level entry mirrored into the shared container root.
#[derive(Clone, Debug)]
pub struct RootEntry {
    pub(super) name: String,
    pub(super) is_dir: bool,
}

/// Creates the shared container root: a mount point (or symlink) for each top-level
/// entry of the host's `/`. Each container bind-mounts the host entries onto these in
/// its own mount namespace and chroots into it, so that volume mount points at new
/// top-level paths (`/data`) never appear on the host.
pub fn prepare_rootfs(rootfs: &Path) -> Result<Vec<RootEntry>> {
    std::fs::create_dir_all(rootfs)?;
    let mut entries = Vec::new();
    for e in std::fs::read_dir("/")? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let ft = e.file_type()?;
        let target = rootfs.join(&name);
        if ft.is_symlink() {
            let link = std::fs::read_link(e.path())?;
            if std::fs::symlink_metadata(&target).is_err() {
                std::os::unix::fs::symlink(link, &target)?;
            }
        } else if ft.is_dir() {
            std::fs::create_dir_all(&target)?;
            entries.push(RootEntry { name, is_dir: true });
        } else if ft.is_file() {
            if !target.exists() {
                std::fs::File::create(&target)?;
            }
            entries.push(RootEntry {
                name,
                is_dir: false,
            });
        }
    }
    Ok(entries)
}

pub(super) fn cstr(p: impl AsRef<std::ffi::OsStr>) -> Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| anyhow!("path contains a NUL byte"))
}

/// All prefixes of an absolute path: "/a/b" -> ["/a", "/a/b"].
pub(super) fn prefixes(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        out.push(cur.clone());
    }
    out
}

pub(super) struct PMount {
    pub(super) src: CString,
    pub(super) dirs: Vec<CString>,
    pub(super) dst: CString,
    pub(super) file: bool,
    pub(super) ro: bool,
}

pub(super) fn spawn_container(node: &Node, launch: &Launch, log: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let rootfs = cstr(&node.rootfs)?;
    let mut root_binds = Vec::new();
    for e in node
        .rootfs_entries
        .get()
        .map(|v| v.as_slice())
        .unwrap_or(&[])
    {
        let _ = e.is_dir;
        root_binds.push((
            cstr(format!("/{}", e.name))?,
            cstr(node.rootfs.join(&e.name))?,
        ));
    }
    let mut mounts = Vec::new();
    let mut sorted: Vec<&Mount> = launch.mounts.iter().collect();
    sorted.sort_by_key(|m| m.dst.matches('/').count());
    for m in sorted {
        let mut dirs = prefixes(&m.dst);
        if m.file {
            dirs.pop();
        }
        mounts.push(PMount {
            src: cstr(&m.src)?,
            dirs: dirs.iter().map(cstr).collect::<Result<_>>()?,
            dst: cstr(&m.dst)?,
            file: m.file,
            ro: m.read_only,
        });
    }
    let workdir_dirs: Vec<CString> = prefixes(&launch.workdir)
        .iter()
        .map(cstr)
        .collect::<Result<_>>()?;
    let workdir = cstr(&launch.workdir)?;
    let slash = cstr("/")?;
    let hostname = cstr(&launch.hostname)?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe libc calls on data prepared before the fork.
    unsafe {
        isolate_with(&mut cmd, move || {
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::sethostname(
                hostname.as_ptr(),
                hostname.as_bytes().len(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst) in &root_binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            check(libc::chroot(rootfs.as_ptr()))?;
            check(libc::chdir(slash.as_ptr()))?;
            for m in &mounts {
                for d in &m.dirs {
                    libc::mkdir(d.as_ptr(), 0o755);
                }
                if m.file {
                    let fd = libc::open(
                        m.dst.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                check(libc::mount(
                    m.src.as_ptr(),
                    m.dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if m.ro {
                    check(libc::mount(
                        std::ptr::null(),
                        m.dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            for d in &workdir_dirs {
                libc::mkdir(d.as_ptr(), 0o755);
            }
            check(libc::chdir(workdir.as_ptr()))?;
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", launch.program))
}

/// Starts a process inside a running container (for exec): same mount namespace, root,
/// environment and working directory.
pub(crate) fn spawn_exec(
    pid: i32,
    env: &[(String, String)],
    workdir: &str,
    command: &[String],
    stdin: bool,
) -> Result<Child> {
    let (program, args) = command.split_first().context("exec needs a command")?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .context("container's mount namespace")?;
    let root = std::fs::File::open(format!("/proc/{pid}/root")).context("container's root")?;
    let uts =
        std::fs::File::open(format!("/proc/{pid}/ns/uts")).context("container's UTS namespace")?;
    let utsfd = uts.as_raw_fd();
    use std::os::fd::AsRawFd;
    let (nsfd, rootfd) = (ns.as_raw_fd(), root.as_raw_fd());
    let dot = cstr(".")?;
    let wd = cstr(workdir)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        isolate_with(&mut cmd, move || {
            check(libc::setns(nsfd, libc::CLONE_NEWNS))?;
            check(libc::setns(utsfd, libc::CLONE_NEWUTS))?;
            check(libc::fchdir(rootfd))?;
            check(libc::chroot(dot.as_ptr()))?;
            if libc::chdir(wd.as_ptr()) < 0 {
                libc::chdir(c"/".as_ptr());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("exec {program}"))?;
    drop((ns, root, uts));
    Ok(child)
}
