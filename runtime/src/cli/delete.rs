//! `husk delete [--force] ID`: remove a stopped (or created) container; with --force, kill a
//! running one first. A supervisor that was killed leaves a stopped container, which this
//! cleans up like any other; a supervisor that is still alive (its status file may say
//! stopped while its guest ignores the teardown) is killed, identified by the pid and start
//! time `create` recorded, and waited for, before the state goes. Then the host cgroup is
//! removed and the `poststop` hooks run (on the host; failures are warnings).
//!
//! A pod container (`create --sandbox`) is removed through its sandbox (`pod::delete`). A
//! sandbox's delete (with `--force` while it runs) stops its VM whatever pod containers it
//! still has; their records stay, stopped (their stand-ins exit with 255), for their own
//! `delete`, which then only removes what is left on the host.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::Ctx;
use crate::control::{self, Request};
use crate::hooks::{self, HookState, Kind};
use crate::hostcg;
use crate::state::{process_alive, Record, StateError, Status};

/// runc delete's arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kill the container if it is running.
    #[arg(short, long)]
    pub force: bool,
    /// Container id.
    pub id: String,
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let _lock = match ctx.root.lock(&a.id) {
        Ok(l) => l,
        Err(StateError::NotFound) => {
            // A create that died before writing state.json may have left the directory.
            if crate::state::Root::check_id(&a.id).is_ok() {
                let _ = remove_state(ctx, &a.id);
            }
            if a.force {
                return Ok(0);
            }
            return Err(StateError::NotFound.into());
        }
        Err(e) => return Err(e.into()),
    };
    let rec = ctx.root.read_record(&a.id)?;
    if let Some(sandbox) = &rec.sandbox {
        super::pod::delete(ctx, &rec, sandbox, a.force)?;
        return Ok(0);
    }
    let status = ctx.root.status(&rec);
    match status {
        Status::Stopped => {}
        Status::Created | Status::Creating => stop(ctx, &a.id, rec.pid, rec.pid_start),
        Status::Running | Status::Paused if a.force => stop(ctx, &a.id, rec.pid, rec.pid_start),
        s => bail!(
            "cannot delete container {} that is not stopped: {}",
            a.id,
            s.as_str()
        ),
    }
    // Whatever the status file says: a supervisor that still lives (a guest that never
    // answers its teardown, or one that is still powering off) goes before its state does.
    end_process(
        ctx,
        "supervisor",
        &a.id,
        rec.pid,
        rec.pid_start,
        TEARDOWN_GRACE,
    )?;
    remove_container(ctx, &rec)?;
    Ok(0)
}

/// Removes a container's state with what it left outside: the TAPs and tc filters in the
/// caller's network namespace (the namespace is the caller's and stays; a failure is logged,
/// not fatal), then the virtio-fs share's stubs, never descending through a mount (a share
/// still mounted fails the delete), then the state directory.
pub fn remove_state(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let dir = ctx.root.container_dir(id);
    if let Err(e) = crate::supervisor::network::teardown_recorded(&dir) {
        ctx.log.warn(&format!("{id}: network teardown: {e}"));
    }
    crate::supervisor::share::remove(&dir)?;
    ctx.root.remove(id)?;
    Ok(())
}

/// Removes a container whose supervisor is gone: its host cgroup (a cgroup that will not go
/// fails the delete and keeps the state, so it can be retried), its state, then runs its
/// `poststop` hooks (failures are warnings).
pub fn remove_container(ctx: &Ctx, rec: &Record) -> anyhow::Result<()> {
    let dir = ctx.root.container_dir(&rec.id);
    let saved_hooks = hooks::load(&dir).unwrap_or_else(|e| {
        ctx.log.warn(&e.to_string());
        None
    });
    hostcg::remove(&hostcg::load(&dir), super::create::CGROUP_PATIENCE)
        .map_err(|e| anyhow::anyhow!("{e}; the container's state is kept"))?;
    remove_state(ctx, &rec.id)?;
    if let Some(h) = saved_hooks {
        for w in hooks::run_all(Kind::Poststop, &h, &HookState::of(rec, Status::Stopped)) {
            ctx.log.warn(&w.to_string());
        }
    }
    Ok(())
}

/// How long a supervisor that recorded `stopped` may take to power its guest off by itself.
const TEARDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a SIGKILLed supervisor may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// SIGKILLs the container through its supervisor and waits for the supervisor to exit.
fn stop(ctx: &Ctx, id: &str, pid: i32, start: u64) {
    let sock = ctx.root.container_dir(id).join("control.sock");
    let _ = control::call(
        &sock,
        &Request::Kill {
            signal: libc::SIGKILL as u32,
            all: true,
        },
        &[],
        Some(Duration::from_secs(10)),
    );
    if !wait_gone(pid, start, Duration::from_secs(15)) {
        ctx.log.warn(&format!(
            "supervisor {pid} of {id} did not exit; killing it"
        ));
    }
}

/// Ends the process recorded at create (the supervisor, or a pod container's stand-in; pid
/// and start time, so a recycled pid is never signalled): `grace`, then SIGKILL, then waits
/// until it is gone. Fails, keeping the state, if it outlives even that.
pub fn end_process(
    ctx: &Ctx,
    what: &str,
    id: &str,
    pid: i32,
    start: u64,
    grace: Duration,
) -> anyhow::Result<()> {
    if wait_gone(pid, start, grace) {
        return Ok(());
    }
    ctx.log.debug(&format!("killing {what} {pid} of {id}"));
    // Checked just before the signal; a pid reused within this window would need the
    // supervisor to exit and the kernel to wrap its pid space in between.
    if process_alive(pid, start) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if !wait_gone(pid, start, KILL_WAIT) {
        bail!("{what} {pid} of container {id} did not exit after SIGKILL; its state is kept");
    }
    Ok(())
}

/// Waits up to `limit` for the process to be gone (exited, a zombie or another process).
fn wait_gone(pid: i32, start: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while process_alive(pid, start) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    use super::*;
    use crate::logger::{LogFormat, Logger};
    use crate::state::{process_start_time, write_atomic, Record, Root};

    fn ctx(root: &std::path::Path) -> Ctx {
        Ctx {
            root: Root::new(root.to_path_buf()),
            log: Logger::new(None, LogFormat::Text, false),
            global_args: Vec::new(),
            caller_umask: 0o022,
        }
    }

    /// A container whose "supervisor" is `sleep 1000`, recorded with `start` (its real start
    /// time unless a test pretends the pid was recycled) and status `stopped`.
    fn stand_in(ctx: &Ctx, id: &str, start_offset: u64) -> (Child, i32, u64) {
        let (dir, _lock) = ctx.root.create_dir(id).unwrap();
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = child.id() as i32;
        let start = process_start_time(pid).unwrap();
        let rec = Record {
            id: id.into(),
            pid,
            pid_start: start + start_offset,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: String::new(),
            annotations: HashMap::new(),
            sandbox: None,
        };
        ctx.root.write_record(&rec).unwrap();
        write_atomic(&dir.join("status"), b"stopped").unwrap();
        assert_eq!(ctx.root.status(&rec), Status::Stopped);
        (child, pid, start)
    }

    #[test]
    fn delete_kills_a_live_supervisor_whatever_the_status_file_says() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let (mut child, pid, start) = stand_in(&ctx, "c", 0);
        assert!(process_alive(pid, start));
        run(
            &ctx,
            Args {
                force: false,
                id: "c".into(),
            },
        )
        .unwrap();
        assert!(!process_alive(pid, start));
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(!ctx.root.container_dir("c").exists());
    }

    /// A pod container of sandbox "sb" whose stand-in is `child`, with `status` recorded.
    fn pod_container(ctx: &Ctx, id: &str, child: &Child, status: &[u8]) {
        let (dir, _lock) = ctx.root.create_dir(id).unwrap();
        let pid = child.id() as i32;
        let rec = Record {
            id: id.into(),
            pid,
            pid_start: process_start_time(pid).unwrap_or(1),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: String::new(),
            annotations: HashMap::new(),
            sandbox: Some("sb".into()),
        };
        ctx.root.write_record(&rec).unwrap();
        write_atomic(&dir.join("status"), status).unwrap();
    }

    #[test]
    fn a_pod_containers_delete_after_its_sandbox_removes_what_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        // The sandbox's directory outlived its supervisor (stopped, not yet deleted): the
        // pod container's stubs are still in its share.
        let share = ctx.root.container_dir("sb").join("share");
        std::fs::create_dir_all(share.join("c2/mounts/0")).unwrap();
        std::fs::create_dir_all(share.join("c2/rootfs")).unwrap();
        std::fs::create_dir_all(share.join("sb/rootfs")).unwrap();
        let mut standin = Command::new("true").spawn().unwrap();
        pod_container(&ctx, "c2", &standin, b"running");
        standin.wait().unwrap();
        let rec = ctx.root.read_record("c2").unwrap();
        assert_eq!(
            ctx.root.status(&rec),
            Status::Stopped,
            "the stand-in is gone"
        );
        run(
            &ctx,
            Args {
                force: false,
                id: "c2".into(),
            },
        )
        .unwrap();
        assert!(!ctx.root.container_dir("c2").exists());
        assert!(!share.join("c2").exists(), "its stubs");
        assert!(
            share.join("sb/rootfs").exists(),
            "the sandbox's own are its delete's"
        );
    }

    #[test]
    fn a_running_pod_container_is_deleted_only_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let mut standin = Command::new("sleep").arg("1000").spawn().unwrap();
        pod_container(&ctx, "c2", &standin, b"running");
        let e = run(
            &ctx,
            Args {
                force: false,
                id: "c2".into(),
            },
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "cannot delete container c2 that is not stopped: running");
        assert!(ctx.root.container_dir("c2").join("state.json").exists());
        // With --force and no sandbox to ask, the stand-in is ended (after its grace) and
        // everything goes.
        run(
            &ctx,
            Args {
                force: true,
                id: "c2".into(),
            },
        )
        .unwrap();
        let status = standin.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(!ctx.root.container_dir("c2").exists());
    }

    #[test]
    fn delete_never_kills_a_recycled_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        // The recorded start time is not this process's: the pid was reused.
        let (mut child, pid, start) = stand_in(&ctx, "c", 1);
        run(
            &ctx,
            Args {
                force: false,
                id: "c".into(),
            },
        )
        .unwrap();
        assert!(process_alive(pid, start), "an unrelated process was killed");
        assert!(child.try_wait().unwrap().is_none());
        assert!(!ctx.root.container_dir("c").exists());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
