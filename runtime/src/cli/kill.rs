//! `husk kill ID [SIGNAL]`: the supervisor signals the container's init in the guest (or,
//! with the hidden `--exec EXEC_ID`, one exec'd process).

use std::time::Duration;

use anyhow::bail;

use super::Ctx;
use crate::control::{self, Request};
use crate::state::Status;

/// runc kill's arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Signal every process of the container.
    #[arg(short, long)]
    pub all: bool,
    /// Signal one exec'd process instead of init: the id `exec --exec-id-file` wrote (the
    /// containerd shim's Kill of an exec).
    #[arg(long, value_name = "EXEC_ID", hide = true, conflicts_with = "all")]
    pub exec: Option<String>,
    /// Container id.
    pub id: String,
    /// Signal name (KILL, SIGKILL) or number; default SIGTERM.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

/// Parses a signal the way runc does: a number, or a name with or without "SIG".
pub fn parse_signal(s: &str) -> anyhow::Result<u32> {
    Ok(husk_agent::client::parse_signal(s)?)
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let signal = parse_signal(&a.signal)?;
    let _lock = ctx.root.lock(&a.id)?;
    let rec = ctx.root.read_record(&a.id)?;
    if ctx.root.status(&rec) == Status::Stopped {
        bail!("container not running");
    }
    let (sock, container) = rec.control(&ctx.root);
    control::call_in(
        &sock,
        container.as_deref(),
        &match a.exec {
            Some(exec_id) => Request::KillExec { exec_id, signal },
            None => Request::Kill { signal, all: a.all },
        },
        &[],
        Some(Duration::from_secs(30)),
    )?;
    Ok(0)
}
