//! The hidden `supervise` verb: the sandbox supervisor (see `crate::supervisor`).

use std::path::PathBuf;

use super::Ctx;
use crate::supervisor::{self, SupervisorArgs};

/// Set by `create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    #[arg(long)]
    pub id: String,
    /// Bundle directory.
    #[arg(long)]
    pub bundle: PathBuf,
    /// `create`'s readiness socket.
    #[arg(long)]
    pub ready_socket: PathBuf,
    /// runc's `--preserve-fds`: fds 3..3+N-1 are the container's; taken first thing.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

/// Runs until the container's init exits; returns its status.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    Ok(supervisor::run(SupervisorArgs {
        root: ctx.root.path().to_path_buf(),
        id: a.id,
        bundle: a.bundle,
        ready_socket: a.ready_socket,
        preserve_fds: a.preserve_fds,
    }))
}
