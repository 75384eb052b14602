//! `husk state`: runc's state JSON.

use super::Ctx;

/// runc state's arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let state = ctx.root.state(&a.id)?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(0)
}
