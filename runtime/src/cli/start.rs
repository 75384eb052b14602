//! `husk start`: the supervisor starts the created container's process (a pod container's is
//! its sandbox's supervisor); then the `poststart`
//! hooks run here, on the host (a failing one is a warning, as the spec says).

use std::time::Duration;

use super::Ctx;
use crate::control::{self, Request};
use crate::hooks::{self, HookState, Kind};
use crate::state::{Record, Status};

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
    let (sock, container) = rec.control(&ctx.root);
    control::call_in(
        &sock,
        container.as_deref(),
        &Request::Start,
        &[],
        Some(Duration::from_secs(60)),
    )?;
    poststart(ctx, &rec);
    Ok(0)
}

/// Runs the saved `poststart` hooks of a container that just started; failures are warnings.
pub fn poststart(ctx: &Ctx, rec: &Record) {
    let dir = ctx.root.container_dir(&rec.id);
    match hooks::load(&dir) {
        Ok(Some(h)) => {
            for w in hooks::run_all(Kind::Poststart, &h, &HookState::of(rec, Status::Running)) {
                ctx.log.warn(&w.to_string());
            }
        }
        Ok(None) => {}
        Err(e) => ctx.log.warn(&e.to_string()),
    }
}
