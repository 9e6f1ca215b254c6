//! Child processes that never outlive the cluster: each runs in its own process group
//! (so the whole group can be signalled, grandchildren included) and gets SIGKILL from
//! the kernel when the thread that spawned it exits (PR_SET_PDEATHSIG), so even a test
//! process killed with SIGKILL leaves no control-plane process behind.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

/// Turns a libc return value into an error (for code between fork and exec).
pub(crate) fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets up the child between fork and exec: a new session/process group and the
/// parent-death signal, then `more` (namespaces, mounts, chroot: whatever the caller
/// needs). Every child of the cluster is started through here.
///
/// # Safety
/// `more` runs between fork and exec: it may make only async-signal-safe calls on data
/// prepared before the fork (no allocation, no locks).
pub(crate) unsafe fn isolate_with<F>(cmd: &mut Command, mut more: F)
where
    F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
{
    // SAFETY: setsid and prctl are async-signal-safe; `more` is by the caller's contract.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::setsid())?;
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            more()
        });
    }
}

/// [`isolate_with`] with nothing more to do.
pub(crate) fn isolate(cmd: &mut Command) {
    // SAFETY: nothing runs after the common set-up.
    unsafe { isolate_with(cmd, || Ok(())) }
}

/// A control-plane process with its output going to a log file.
pub struct Managed {
    pub name: String,
    child: Option<Child>,
    pid: i32,
}

impl Managed {
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Managed> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        isolate(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id().context("child pid")? as i32;
        Ok(Managed {
            name: name.to_string(),
            child: Some(child),
            pid,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Exited already? Returns the status text if so.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut()?.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    /// SIGTERM to the group, wait up to `grace`, then SIGKILL and reap.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill_group(self.pid, libc::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            kill_group(self.pid, libc::SIGKILL);
            let _ = child.wait().await;
        }
        kill_group(self.pid, libc::SIGKILL);
    }

    /// Synchronous kill for Drop: SIGKILL to the group and reap.
    pub fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(self.pid, libc::SIGKILL);
            let _ = child.start_kill();
            // Reap synchronously so no zombie is left; the process is already killed.
            let mut status = 0;
            // SAFETY: plain waitpid on our own child.
            unsafe {
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Signals a whole process group (ignores a group that is already gone).
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released). Another process can take it before
/// the child binds it: [`crate::controlplane::ControlPlane::start`] starts again then.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}
