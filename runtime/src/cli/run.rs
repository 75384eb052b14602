//! `husk run`: create + start (then the poststart hooks); without --detach, wait, remove the
//! stopped container (unless --keep, as runc; then the poststop hooks) and exit with the
//! container's status.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use super::create::{self, create};
use super::Ctx;
use crate::control::{self, Request};
use crate::state::StateError;

/// runc run's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Return once started instead of waiting for the container.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the stopped container (without --detach) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// The create flags.
    #[command(flatten)]
    pub create: create::CreateArgs,
}

fn wants_terminal(a: &create::CreateArgs) -> bool {
    crate::bundle::Bundle::load(&a.bundle)
        .ok()
        .and_then(|b| b.spec.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    // Terminal signals reach the supervisor too (same process group), which forwards them to
    // the container; this process only waits.
    if !a.detach {
        let _ = crate::supervisor::forwarded_signals().thread_block();
    }
    if let Some(s) = &a.create.sandbox {
        anyhow::bail!(
            "--sandbox {s}: husk run makes a sandbox of its own; use create --sandbox and start"
        );
    }
    let mut child = create(ctx, &a.create, a.detach)?;
    // A foreground terminal on the caller's own tty: raw while the container runs, as runc.
    let terminal = !a.detach && a.create.console_socket.is_none() && wants_terminal(&a.create);
    let _raw = terminal.then(crate::tty::RawGuard::stdin);
    let sock = ctx.root.container_dir(&a.create.id).join("control.sock");
    if let Err(e) = control::call(&sock, &Request::Start, &[], Some(Duration::from_secs(60))) {
        let _ = control::call(
            &sock,
            &Request::Kill {
                signal: libc::SIGKILL as u32,
                all: true,
            },
            &[],
            Some(Duration::from_secs(10)),
        );
        let _ = child.wait();
        if let Ok(rec) = ctx.root.read_record(&a.create.id) {
            if let Err(e) = super::delete::remove_container(ctx, &rec) {
                ctx.log
                    .warn(&format!("removing container {}: {e}", a.create.id));
            }
        }
        return Err(e.into());
    }
    if let Ok(rec) = ctx.root.read_record(&a.create.id) {
        super::start::poststart(ctx, &rec);
    }
    if a.detach {
        return Ok(0);
    }
    let status = child.wait()?;
    if !a.keep {
        remove_stopped(ctx, &a.create.id);
    }
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255))
}

/// Deletes the container after its supervisor exited, as `runc run` does (host cgroup,
/// state, then the poststop hooks); a failure is a warning, since the container's exit status
/// is what the caller waits for.
fn remove_stopped(ctx: &Ctx, id: &str) {
    let removed = ctx.root.lock(id).map(|_lock| {
        ctx.root
            .read_record(id)
            .map(|rec| super::delete::remove_container(ctx, &rec))
    });
    match removed {
        Ok(Ok(Ok(()))) | Err(StateError::NotFound) | Ok(Err(StateError::NotFound)) => {}
        Ok(Ok(Err(e))) => ctx.log.warn(&format!("removing container {id}: {e}")),
        Err(e) | Ok(Err(e)) => ctx.log.warn(&format!("removing container {id}: {e}")),
    }
}
