//! `husk start`: the supervisor starts the created container's process.

use std::time::Duration;

use super::Ctx;
use crate::control::{self, Request};
use crate::state::Status;

/// runc start's arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let _lock = ctx.root.lock(&a.id)?;
    let rec = ctx.root.read_record(&a.id)?;
    match ctx.root.status(&rec) {
        Status::Stopped => anyhow::bail!("cannot start a container that has stopped"),
        Status::Running | Status::Paused => {
            anyhow::bail!("cannot start an already running container")
        }
        Status::Creating | Status::Created => {}
    }
    let sock = ctx.root.container_dir(&a.id).join("control.sock");
    control::call(&sock, &Request::Start, &[], Some(Duration::from_secs(60)))?;
    Ok(0)
}
