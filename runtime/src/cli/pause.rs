//! `husk pause` / `husk resume`: freeze or thaw the container's cgroup in the guest.

use std::time::Duration;

use super::Ctx;
use crate::control::{self, Request};

/// Container id.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// The verb; `pause` true to freeze.
pub fn run(ctx: &Ctx, a: Args, pause: bool) -> anyhow::Result<i32> {
    let _lock = ctx.root.lock(&a.id)?;
    let rec = ctx.root.read_record(&a.id)?;
    let (sock, container) = rec.control(&ctx.root);
    let req = if pause {
        Request::Pause
    } else {
        Request::Resume
    };
    control::call_in(
        &sock,
        container.as_deref(),
        &req,
        &[],
        Some(Duration::from_secs(30)),
    )?;
    Ok(0)
}
