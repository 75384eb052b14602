//! `husk ps`: the container's processes. The pids are the guest's (the processes live in the
//! microVM, so host `ps` cannot show them).

use std::time::Duration;

use super::list::Format;
use super::Ctx;
use crate::control::{self, Request};

/// runc ps's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Container id.
    pub id: String,
    /// ps(1) options: ignored (the processes are in the guest).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let rec = ctx.root.read_record(&a.id)?;
    let (sock, container) = rec.control(&ctx.root);
    let resp = control::call_in(
        &sock,
        container.as_deref(),
        &Request::Ps,
        &[],
        Some(Duration::from_secs(30)),
    )
    .map_err(|e| anyhow::anyhow!("container {} is not running: {e}", a.id))?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&resp.pids)?),
        Format::Table => {
            println!("PID");
            for p in resp.pids {
                println!("{p}");
            }
        }
    }
    Ok(0)
}
