//! `husk delete [--force] ID`: remove a stopped (or created) container; with --force, kill a
//! running one first. A supervisor that was killed leaves a stopped container, which this
//! cleans up like any other.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::Ctx;
use crate::control::{self, Request};
use crate::state::{process_alive, StateError, Status};

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
                let _ = ctx.root.remove(&a.id);
            }
            if a.force {
                return Ok(0);
            }
            return Err(StateError::NotFound.into());
        }
        Err(e) => return Err(e.into()),
    };
    let rec = ctx.root.read_record(&a.id)?;
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
    ctx.root.remove(&a.id)?;
    Ok(0)
}

/// SIGKILLs the container through its supervisor and waits for the supervisor to exit; kills
/// the supervisor itself if it does not.
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while pid > 0 && process_alive(pid, start) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pid > 0 && process_alive(pid, start) {
        ctx.log.warn(&format!(
            "supervisor {pid} of {id} did not exit; killing it"
        ));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
