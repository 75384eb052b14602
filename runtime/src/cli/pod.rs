//! Pods: a container created in a running sandbox's VM (`husk create --sandbox SANDBOX ID`),
//! and its removal (`husk delete ID`). See docs/pods.md.
//!
//! Create: the bundle is validated as `create` does; `<root>/<ID>` gets a record naming the
//! sandbox. The container's files reach the guest through the sandbox's virtio-fs share: a
//! child of this process (`husk pod-share`, single-threaded, as `setns` into a mount
//! namespace needs) takes detached copies of the rootfs and of every bind source in the
//! caller's mount namespace, enters the sandbox supervisor's namespace and attaches them at
//! `<share>/<ID>/...` (`supervisor::share::attach_in_namespace`, the layout and rules of the
//! sandbox's own container). Then the supervisor is asked to `AddContainer` with the spec's
//! sources rewritten to guest paths and the container's stdio (this process's, or a pty's
//! slave whose master goes to `--console-socket`). The container's host pid is a stand-in
//! (`husk exec-wait`, as a detached exec's) holding a `Wait` for the container on the
//! sandbox's control socket: it exits with the container's status, 255 when the sandbox goes
//! first. It is placed in `linux.cgroupsPath`'s host cgroup when the spec names one.
//!
//! Delete: the supervisor removes the container in the guest (`RemoveContainer`, killing it
//! with `--force`), the stand-in is gone, a `husk pod-share` child unmounts its share entries
//! in the supervisor's namespace (`MNT_DETACH`), the stubs go with `rmdir`/`unlink`, then the
//! host cgroup and the state. With the sandbox gone, only what is left is removed.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use super::create::{
    check_preserve_fds, run_create_hooks, start_record, write_pid_file, CreateArgs, CGROUP_PATIENCE,
};
use super::Ctx;
use crate::bundle::Bundle;
use crate::control::{self, Envelope, Request};
use crate::hostcg;
use crate::state::{process_alive, process_start_time, Record, Root, StateError, Status};
use crate::supervisor::share::{self, Attach, SHARE_DIR};
use crate::tty::Pty;

/// How long the supervisor may take to create a pod container in its guest.
const ADD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stand-in may take to exit once its container is removed.
const STANDIN_GRACE: Duration = Duration::from_secs(5);

/// What the `husk pod-share` child does, read as JSON from its stdin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ShareOp {
    /// `share::attach_in_namespace`.
    Attach {
        /// The sandbox's supervisor.
        pid: i32,
        /// `<root>/<sandbox>/share`, absolute.
        share_dir: PathBuf,
        /// The container's entries.
        attaches: Vec<Attach>,
    },
    /// `share::detach_in_namespace`.
    Detach {
        /// The sandbox's supervisor.
        pid: i32,
        /// `<root>/<sandbox>/share`, absolute.
        share_dir: PathBuf,
        /// The container.
        id: String,
    },
}

/// The hidden `pod-share` verb: one [`ShareOp`] from stdin, in this fresh (single-threaded)
/// process. An error is printed on stdout for the parent, with status 1.
pub fn share_verb() -> anyhow::Result<i32> {
    let op: ShareOp = serde_json::from_reader(std::io::stdin().lock())
        .context("pod-share: reading the request from stdin")?;
    let done = match op {
        ShareOp::Attach {
            pid,
            share_dir,
            attaches,
        } => share::attach_in_namespace(pid, &share_dir, &attaches).map(drop),
        ShareOp::Detach { pid, share_dir, id } => {
            share::detach_in_namespace(pid, &share_dir, &id).map(drop)
        }
    };
    match done {
        Ok(()) => Ok(0),
        Err(e) => {
            print!("{e}");
            Ok(1)
        }
    }
}

/// Runs `op` in a `husk pod-share` child.
fn share_child(op: &ShareOp) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the husk binary")?;
    let mut child = Command::new(exe)
        .arg("pod-share")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting husk pod-share")?;
    let body = serde_json::to_vec(op)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body).context("husk pod-share: stdin")?;
    }
    let out = child.wait_with_output().context("husk pod-share")?;
    if out.status.success() {
        return Ok(());
    }
    let mut msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if msg.is_empty() {
        msg = format!(
            "husk pod-share {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Err(anyhow!(msg))
}

/// The sandbox's share directory, absolute (the `pod-share` child `setns`es, which moves
/// its working directory).
fn share_dir(ctx: &Ctx, sandbox: &str) -> anyhow::Result<PathBuf> {
    let dir = ctx.root.container_dir(sandbox).join(SHARE_DIR);
    std::path::absolute(&dir).with_context(|| format!("{}", dir.display()))
}

/// The sandbox `--sandbox` names, checked: it exists, is a sandbox (not a pod container),
/// its VM runs, and it has a virtio-fs share.
fn check_sandbox(ctx: &Ctx, sandbox: &str, id: &str) -> anyhow::Result<Record> {
    Root::check_id(sandbox).map_err(|e| anyhow!("--sandbox: {e}"))?;
    if sandbox == id {
        bail!("--sandbox {sandbox}: a container cannot be its own sandbox");
    }
    let sb = match ctx.root.read_record(sandbox) {
        Ok(r) => r,
        Err(StateError::NotFound) => bail!("--sandbox {sandbox}: no such sandbox container"),
        Err(e) => return Err(anyhow!("--sandbox {sandbox}: {e}")),
    };
    if let Some(s) = &sb.sandbox {
        bail!("--sandbox {sandbox}: a container of sandbox {s}, not a sandbox (name {s})");
    }
    match ctx.root.status(&sb) {
        Status::Created | Status::Running | Status::Paused => {}
        s => bail!(
            "--sandbox {sandbox}: the sandbox is {}, not running",
            s.as_str()
        ),
    }
    if !ctx.root.container_dir(sandbox).join(SHARE_DIR).is_dir() {
        bail!(
            "--sandbox {sandbox}: the sandbox has no virtio-fs share (is it a HUSK_DEV_AGENT one?)"
        );
    }
    Ok(sb)
}

/// Undoes a half-made pod container unless disarmed: the guest's container, the stand-in,
/// the share entries, the host cgroup, the state.
struct Cleanup<'a> {
    ctx: &'a Ctx,
    id: &'a str,
    sandbox: &'a Record,
    share_dir: PathBuf,
    attached: bool,
    added: bool,
    standin: Option<Child>,
    cgroups: Vec<PathBuf>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.undo();
    }
}

impl Cleanup<'_> {
    /// Removes what the create made so far (once: it disarms itself).
    fn undo(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let warn = |e: &dyn std::fmt::Display| self.ctx.log.warn(&format!("{}: {e}", self.id));
        if self.added {
            let (sock, _) = self.sandbox.control(&self.ctx.root);
            if let Err(e) = control::call_in(
                &sock,
                Some(self.id),
                &Request::RemoveContainer { force: true },
                &[],
                Some(Duration::from_secs(30)),
            ) {
                warn(&e);
            }
        }
        if let Some(mut c) = self.standin.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.attached {
            if let Err(e) = share_child(&ShareOp::Detach {
                pid: self.sandbox.pid,
                share_dir: self.share_dir.clone(),
                id: self.id.into(),
            }) {
                warn(&e);
            }
        }
        if let Err(e) = share::remove_container_stubs(&self.share_dir, self.id) {
            warn(&e);
        }
        if let Err(e) = hostcg::remove(&self.cgroups, CGROUP_PATIENCE) {
            warn(&e);
        }
        if let Err(e) = super::delete::remove_state(self.ctx, self.id) {
            warn(&e);
        }
    }
}

/// `husk create --sandbox SANDBOX`: see the module docs.
pub fn create(ctx: &Ctx, a: &CreateArgs, sandbox: &str) -> anyhow::Result<()> {
    let preserved = check_preserve_fds(a.preserve_fds)?;
    let bundle = Bundle::load(&a.bundle)?;
    Root::check_id(&a.id)?;
    // The sandbox stays as it is (no delete, kill or start of it) while this one is added.
    let _sandbox_lock = match ctx.root.lock(sandbox) {
        Err(StateError::NotFound) => bail!("--sandbox {sandbox}: no such sandbox container"),
        other => other.map_err(|e| anyhow!("--sandbox {sandbox}: {e}"))?,
    };
    let sb = check_sandbox(ctx, sandbox, &a.id)?;
    if !bundle.rootfs.is_dir() {
        bail!(
            "root.path {}: a pod container's rootfs must be a directory (it reaches the guest \
             through the sandbox's virtio-fs share)",
            bundle.rootfs.display()
        );
    }
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    match (terminal, &a.console_socket) {
        (true, None) => bail!(
            "cannot allocate tty if husk will detach without setting console socket (process.terminal is true)"
        ),
        (false, Some(_)) => bail!(
            "cannot use console socket if husk will not detach or allocate tty (process.terminal is false)"
        ),
        _ => {}
    }
    let pty = if terminal {
        Some(Pty::open().context("opening a pty")?)
    } else {
        None
    };
    let mut spec: serde_json::Value =
        serde_json::from_str(&bundle.config_json).context("config.json")?;
    let share_dir = share_dir(ctx, sandbox)?;

    let (_dir, _lock) = ctx.root.create_dir(&a.id)?;
    let mut cleanup = Cleanup {
        ctx,
        id: &a.id,
        sandbox: &sb,
        share_dir: share_dir.clone(),
        attached: false,
        added: false,
        standin: None,
        cgroups: Vec::new(),
        armed: true,
    };
    // The stand-in's host cgroup: placement only (the container's limits apply in the guest).
    let (mut rec, hooks, cgroup) = start_record(
        ctx,
        &a.id,
        &bundle,
        Some(sandbox.to_string()),
        &hostcg::Limits::default(),
        &mut cleanup.cgroups,
    )?;

    // The files: stubs from this side, mounts from the supervisor's namespace.
    let (guest_root, attaches) = share::plan(&a.id, Some(&bundle.rootfs), &bundle.dir, &mut spec)?;
    let guest_root = guest_root.expect("a directory rootfs is planned");
    share::make_stubs(|rel| share_dir.join(rel), &a.id, &attaches)?;
    cleanup.attached = true;
    share_child(&ShareOp::Attach {
        pid: sb.pid,
        share_dir: share_dir.clone(),
        attaches,
    })?;

    let mut stdio: Vec<RawFd> = match &pty {
        Some(p) => vec![p.slave.as_raw_fd(); 3],
        None => vec![
            std::io::stdin().as_raw_fd(),
            std::io::stdout().as_raw_fd(),
            std::io::stderr().as_raw_fd(),
        ],
    };
    // The extra fds go after stdio (the supervisor relays them as the container's 3, ...).
    stdio.extend(preserved.raw());
    let (sock, _) = sb.control(&ctx.root);
    let add = Request::AddContainer {
        id: a.id.clone(),
        spec_json: spec.to_string(),
        guest_root,
        bundle: bundle.dir.clone(),
    };
    let added = control::call_in(&sock, None, &add, &stdio, Some(ADD_TIMEOUT));
    // The supervisor has its copies of the extra fds.
    drop(preserved);
    match added {
        Ok(_) => cleanup.added = true,
        // The supervisor answered: it made nothing (or removed it again).
        Err(e @ control::ControlError::Refused(_)) => return Err(e.into()),
        // No answer: the container may exist in the guest.
        Err(e) => {
            cleanup.added = true;
            return Err(e.into());
        }
    }
    if let (Some(p), Some(path)) = (&pty, &a.console_socket) {
        p.send_master(path)
            .with_context(|| format!("--console-socket {}", path.display()))?;
    }
    drop(pty);

    let standin = spawn_standin(ctx, &sock, &a.id, cgroup.as_ref())?;
    drop(cgroup);
    rec.pid = standin.id() as i32;
    rec.pid_start = process_start_time(rec.pid).unwrap_or(0);
    cleanup.standin = Some(standin);
    run_create_hooks(ctx, &hooks, &rec, || cleanup.undo())?;
    ctx.root.write_record(&rec)?;
    if let Some(p) = &a.pid_file {
        write_pid_file(p, rec.pid, ctx.caller_umask)?;
    }
    cleanup.armed = false;
    // The stand-in outlives this process (the caller's subreaper inherits it).
    cleanup.standin.take();
    Ok(())
}

/// Starts the container's host stand-in: `husk exec-wait` holding a `Wait` for `id` on the
/// sandbox's control socket, in the container's host cgroup when there is one.
fn spawn_standin(
    ctx: &Ctx,
    sock: &Path,
    id: &str,
    cgroup: Option<&hostcg::HostCgroup>,
) -> anyhow::Result<Child> {
    let conn = crate::sockpath::connect(sock).with_context(|| format!("{}", sock.display()))?;
    control::send(&conn, &Envelope::new(Some(id), Request::Wait), &[])?;
    let exe = std::env::current_exe().context("finding the husk binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(&ctx.global_args)
        .arg("exec-wait")
        .stdin(Stdio::from(OwnedFd::from(conn)))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(cg) = cgroup {
        let fds = cg.procs_fds();
        // SAFETY: the closure only calls write(2) on descriptors opened before the fork
        // (join_self is async-signal-safe and allocates nothing).
        unsafe {
            cmd.pre_exec(move || hostcg::join_self(&fds));
        }
    }
    cmd.spawn()
        .context("starting the container's stand-in (and placing it in linux.cgroupsPath's cgroup)")
}

/// `husk delete [--force] ID` of a pod container (the caller holds its lock).
pub fn delete(ctx: &Ctx, rec: &Record, sandbox: &str, force: bool) -> anyhow::Result<()> {
    let id = rec.id.as_str();
    let status = ctx.root.status(rec);
    if matches!(status, Status::Running | Status::Paused) && !force {
        bail!(
            "cannot delete container {id} that is not stopped: {}",
            status.as_str()
        );
    }
    let share_dir = share_dir(ctx, sandbox)?;
    let live_sandbox = ctx
        .root
        .read_record(sandbox)
        .ok()
        .filter(|s| process_alive(s.pid, s.pid_start));
    if let Some(sb) = &live_sandbox {
        let (sock, _) = sb.control(&ctx.root);
        // Created, stopped, or (with --force) running: the guest's container goes.
        if let Err(e) = control::call_in(
            &sock,
            Some(id),
            &Request::RemoveContainer { force: true },
            &[],
            Some(Duration::from_secs(30)),
        ) {
            ctx.log
                .warn(&format!("{id}: removing it in sandbox {sandbox}: {e}"));
        }
    }
    super::delete::end_process(ctx, "stand-in", id, rec.pid, rec.pid_start, STANDIN_GRACE)?;
    if let Some(sb) = &live_sandbox {
        share_child(&ShareOp::Detach {
            pid: sb.pid,
            share_dir: share_dir.clone(),
            id: id.into(),
        })
        .map_err(|e| anyhow!("{id}: unmounting its files in sandbox {sandbox}: {e}"))?;
    }
    share::remove_container_stubs(&share_dir, id)?;
    super::delete::remove_container(ctx, rec)
}
