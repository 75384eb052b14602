//! `husk create`: validate the bundle, make the state directory, start the supervisor and
//! wait until it reports the container created (or why not; then nothing is left behind).
//! With `process.terminal` and `--console-socket`, it opens a host pty, gives the slave to
//! the supervisor as the container's stdio and sends the master to the socket once the
//! container is created (runc sends it at the same point).
//!
//! Before the supervisor starts, `create` makes the host cgroup `linux.cgroupsPath` names
//! (`hostcg.rs`), which the supervisor joins before it runs any code. Once the guest created
//! the container, `create` runs the `prestart` and `createRuntime` hooks on the host
//! (`hooks.rs`); a failing one kills the sandbox, runs the `poststop` hooks and removes
//! everything (state, cgroup), and `create` fails with the hook's error.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};

use super::Ctx;
use crate::bundle::Bundle;
use crate::config::HuskConfig;
use crate::hooks::{self, HookState, Kind};
use crate::hostcg;
use crate::perms;
use crate::state::{process_start_time, write_atomic_mode, Record, Status};
use crate::timefmt;
use crate::tty::Pty;

/// runc create's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the supervisor's pid here.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to (process.terminal).
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (the guest always uses pivot_root).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this process's fds 3..3+N-1 to the container at the same numbers (runc's): their
    /// bytes are relayed into the VM (see docs/runtime.md).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Create the container in the running VM of this (sandbox) container instead of a VM of
    /// its own: a pod's later container (see docs/pods.md).
    #[arg(long, value_name = "SANDBOX_ID")]
    pub sandbox: Option<String>,
    /// Container id.
    pub id: String,
}

/// Removes a half-made container (its host cgroup, then its directory) unless disarmed. The
/// supervisor is gone by then (killed and waited for); its VMM child follows it at once.
struct Cleanup<'a> {
    ctx: &'a Ctx,
    id: &'a str,
    cgroups: Vec<PathBuf>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = hostcg::remove(&self.cgroups, CGROUP_PATIENCE) {
                self.ctx.log.warn(&e.to_string());
            }
            if let Err(e) = super::delete::remove_state(self.ctx, self.id) {
                self.ctx.log.warn(&e.to_string());
            }
        }
    }
}

/// How long removing a host cgroup waits for the sandbox's processes to be gone.
pub const CGROUP_PATIENCE: Duration = Duration::from_secs(5);

/// Most extra fds (`--preserve-fds`): what one control message carries beside stdio.
pub const MAX_PRESERVE_FDS: u32 = crate::control::MAX_FDS as u32 - 3;

/// The caller's fds 3..3+N-1 (`--preserve-fds N`), checked. Dropped once the supervisor has
/// its copies (inherited, or sent with a control request): its relay then holds the only
/// ones, so a reader sees EOF when the container closes one, not when this process exits
/// (as with stdio).
#[derive(Debug)]
pub struct Preserved(Vec<OwnedFd>);

impl Preserved {
    /// The fds' numbers (3, 4, ...), to inherit or send.
    pub fn raw(&self) -> Vec<RawFd> {
        self.0.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// No extra fds.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks runc's `--preserve-fds N`: the caller's fds 3..3+N-1 must be open (inherited: an
/// fd of husk's own is close-on-exec) and each a byte stream the supervisor can relay into
/// the guest; returns them.
pub fn check_preserve_fds(n: u32) -> anyhow::Result<Preserved> {
    if n > MAX_PRESERVE_FDS {
        bail!("--preserve-fds {n}: at most {MAX_PRESERVE_FDS} extra fds");
    }
    crate::supervisor::stdio::check_preserved(n)?;
    Ok(Preserved(
        (3..3 + n as RawFd)
            // SAFETY: each was checked open and inherited: no value of this process owns it.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect(),
    ))
}

/// `create` proper; returns the supervisor (a child of this process). `detach`: the caller
/// does not stay to relay a terminal (`create`, `run -d`).
pub fn create(ctx: &Ctx, a: &CreateArgs, detach: bool) -> anyhow::Result<Child> {
    let preserved = check_preserve_fds(a.preserve_fds)?;
    let bundle = Bundle::load(&a.bundle)?;
    // The VM's size (for the host cgroup's limit), checked before anything is made.
    let cfg = HuskConfig::load()?.for_container(&bundle.spec)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    match (terminal, &a.console_socket) {
        (true, None) if detach => bail!(
            "cannot allocate tty if husk will detach without setting console socket (process.terminal is true)"
        ),
        (false, Some(_)) => bail!(
            "cannot use console socket if husk will not detach or allocate tty (process.terminal is false)"
        ),
        _ => {}
    }
    let pty = match (terminal, &a.console_socket) {
        (true, Some(_)) => Some(Pty::open().context("opening a pty")?),
        _ => None,
    };
    let (dir, _lock) = ctx.root.create_dir(&a.id)?;
    let mut cleanup = Cleanup {
        ctx,
        id: &a.id,
        cgroups: Vec::new(),
        armed: true,
    };
    let limits = hostcg::Limits::from_spec(&bundle.spec, cfg.memory_mib, cfg.host_overhead_mib);
    let (mut rec, hooks, cgroup) =
        start_record(ctx, &a.id, &bundle, None, &limits, &mut cleanup.cgroups)?;

    let ready_path = dir.join("ready.sock");
    let listener =
        crate::sockpath::bind(&ready_path).with_context(|| format!("{}", ready_path.display()))?;
    listener.set_nonblocking(true)?;
    let exe = std::env::current_exe().context("finding the husk binary")?;
    ctx.log
        .debug(&format!("starting the supervisor for {}", a.id));
    let mut cmd = Command::new(exe);
    if let Some(p) = &pty {
        let slave = || p.slave.try_clone().map(Stdio::from);
        cmd.stdin(slave()?).stdout(slave()?).stderr(slave()?);
    }
    if let Some(cg) = &cgroup {
        let fds = cg.procs_fds();
        // SAFETY: the closure only calls write(2) on descriptors opened above (join_self is
        // async-signal-safe and allocates nothing).
        unsafe {
            cmd.pre_exec(move || hostcg::join_self(&fds));
        }
    }
    let mut child = cmd
        .args(&ctx.global_args)
        .arg("supervise")
        .arg("--id")
        .arg(&a.id)
        .arg("--bundle")
        .arg(&bundle.dir)
        .arg("--ready-socket")
        .arg(&ready_path)
        .arg("--preserve-fds")
        .arg(a.preserve_fds.to_string())
        .spawn()
        .context("starting the supervisor (and placing it in linux.cgroupsPath's cgroup)")?;
    drop(cgroup);
    // The supervisor inherited the extra fds.
    drop(preserved);

    let mut answer = wait_ready(&listener, &mut child);
    let _ = std::fs::remove_file(&ready_path);
    if let (Ok(()), Some(p), Some(path)) = (&answer, &pty, &a.console_socket) {
        answer = p.send_master(path).map_err(Into::into);
    }
    drop(pty);
    if let Err(e) = answer {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    rec.pid = child.id() as i32;
    rec.pid_start = process_start_time(rec.pid).unwrap_or(0);
    run_create_hooks(ctx, &hooks, &rec, || {
        let _ = child.kill();
        let _ = child.wait();
    })?;
    ctx.root.write_record(&rec)?;
    if let Some(p) = &a.pid_file {
        write_pid_file(p, rec.pid, ctx.caller_umask)?;
    }
    cleanup.armed = false;
    Ok(child)
}

/// What every create (of a sandbox or a pod container) makes first: the state record (pid 0
/// until the process exists), the spec's hooks saved beside it, and the host cgroup of
/// `linux.cgroupsPath` with `limits` (its directories also go to `cgroups`, so that a failed
/// create removes them); the cgroup's warnings are logged.
pub fn start_record(
    ctx: &Ctx,
    id: &str,
    bundle: &Bundle,
    sandbox: Option<String>,
    limits: &hostcg::Limits,
    cgroups: &mut Vec<PathBuf>,
) -> anyhow::Result<(Record, oci_spec::runtime::Hooks, Option<hostcg::HostCgroup>)> {
    let dir = ctx.root.container_dir(id);
    let rec = Record {
        id: id.to_string(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: timefmt::rfc3339_nanos(SystemTime::now()),
        annotations: bundle.annotations(),
        sandbox,
    };
    ctx.root.write_record(&rec)?;
    let hooks = bundle.spec.hooks().clone().unwrap_or_default();
    if hooks::any(&hooks) {
        hooks::save(&dir, &hooks)?;
    }
    let cgroups_path = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = match hostcg::create(&cgroups_path, limits)? {
        Some((cg, warnings)) => {
            *cgroups = cg.dirs.clone();
            hostcg::save(&dir, &cg)?;
            for w in warnings {
                ctx.log.warn(&w);
            }
            Some(cg)
        }
        None => None,
    };
    Ok((rec, hooks, cgroup))
}

/// The runtime-namespace hooks of create (prestart, createRuntime), on the host, with the
/// container created in the guest and not started (runc runs them at the same point, before
/// pivot_root). If one fails, `destroy` destroys the container and the spec's lifecycle goes
/// on to poststop (whose failures are warnings); the hook's error is returned.
pub fn run_create_hooks(
    ctx: &Ctx,
    hooks: &oci_spec::runtime::Hooks,
    rec: &Record,
    destroy: impl FnOnce(),
) -> anyhow::Result<()> {
    let state = HookState::of(rec, Status::Creating);
    let ran = hooks::run(Kind::Prestart, hooks, &state)
        .and_then(|()| hooks::run(Kind::CreateRuntime, hooks, &state));
    if let Err(e) = ran {
        destroy();
        for w in hooks::run_all(Kind::Poststop, hooks, &HookState::of(rec, Status::Stopped)) {
            ctx.log.warn(&w.to_string());
        }
        return Err(e.into());
    }
    Ok(())
}

/// Writes a pid file atomically (runc's format: the number, no newline), through a temporary
/// file of a random name created `O_EXCL` beside it: a symlink planted at any name is never
/// followed. Its mode is runc's (0666 less the caller's umask).
pub fn write_pid_file(path: &Path, pid: i32, caller_umask: u32) -> anyhow::Result<()> {
    write_atomic_mode(
        path,
        pid.to_string().as_bytes(),
        perms::caller_mode(caller_umask),
    )
    .map_err(|e| anyhow!("--pid-file: {e}"))
}

fn wait_ready(listener: &UnixListener, child: &mut Child) -> anyhow::Result<()> {
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)?;
                let mut line = String::new();
                BufReader::new(conn).read_line(&mut line)?;
                let line = line.trim_end();
                if line == "ok" {
                    return Ok(());
                }
                if let Some(e) = line.strip_prefix("error ") {
                    bail!("{e}");
                }
                bail!("the supervisor exited before creating the container");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            bail!("the supervisor exited ({status}) before creating the container");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The verb.
pub fn run(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<i32> {
    if let Some(sandbox) = &a.sandbox {
        super::pod::create(ctx, &a, sandbox)?;
        return Ok(0);
    }
    create(ctx, &a, true)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserve_fds_needs_open_inherited_fds_and_has_a_bound() {
        assert!(check_preserve_fds(0).unwrap().is_empty());
        let e = check_preserve_fds(MAX_PRESERVE_FDS + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 250"), "{e}");
    }

    #[test]
    fn pid_file_never_follows_a_planted_symlink() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, "untouched").unwrap();
        // The temporary name older husk used, planted by someone who can write the directory.
        let pid = t.path().join("pid");
        std::os::unix::fs::symlink(&target, t.path().join("pid.tmp")).unwrap();
        write_pid_file(&pid, 42, 0o022).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&pid).unwrap(), "42");
        assert_eq!(crate::perms::tests::mode(&pid), 0o644, "runc's mode");
        assert!(std::fs::symlink_metadata(t.path().join("pid.tmp"))
            .unwrap()
            .is_symlink());
        // A symlink at the pid file's own name is replaced, not written through.
        let pid2 = t.path().join("pid2");
        std::os::unix::fs::symlink(&target, &pid2).unwrap();
        write_pid_file(&pid2, 43, 0o077).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&pid2).unwrap(), "43");
        assert_eq!(crate::perms::tests::mode(&pid2), 0o600);
    }
}
