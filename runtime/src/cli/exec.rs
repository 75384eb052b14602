//! `husk exec`: run a process in a created or running container. The process is the
//! container's own `process` with runc's overrides (args, --env, --cwd, --user, --tty), or
//! `--process FILE`; this process's stdio fds go to the supervisor, which relays them, and
//! husk exits with the process's status.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

use super::Ctx;
use crate::bundle::check_process;
use crate::control::{self, Request};
use crate::state::Status;

/// runc exec's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unix socket for the pty master (with --tty).
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Extra environment, NAME=VALUE; repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// uid[:gid].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Extra gids; repeatable.
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// A process.json instead of the command line.
    #[arg(short, long, value_name = "PATH")]
    pub process: Option<PathBuf>,
    /// Return once started.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the supervisor's pid here.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Accepted for runc compatibility.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn process_json(ctx: &Ctx, a: &Args) -> anyhow::Result<String> {
    let mut p: Value = match &a.process {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--process {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("--process {}", path.display()))?
        }
        None => {
            if a.command.is_empty() {
                bail!("exec: a command is required (or --process)");
            }
            let rec = ctx.root.read_record(&a.id)?;
            let spec: Value = serde_json::from_str(
                &std::fs::read_to_string(rec.bundle.join("config.json"))
                    .context("reading the container's config.json")?,
            )?;
            let mut p = spec.get("process").cloned().unwrap_or(Value::Null);
            p["args"] = a.command.clone().into();
            p
        }
    };
    if !a.env.is_empty() {
        let mut env: Vec<Value> = p["env"].as_array().cloned().unwrap_or_default();
        env.extend(a.env.iter().map(|e| Value::from(e.as_str())));
        p["env"] = env.into();
    }
    if let Some(cwd) = &a.cwd {
        p["cwd"] = cwd.as_str().into();
    }
    if let Some(user) = &a.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let uid: u32 = uid.parse().context("--user: uid must be a number")?;
        let gid: u32 = gid.parse().context("--user: gid must be a number")?;
        p["user"] = serde_json::json!({"uid": uid, "gid": gid});
    }
    if !a.additional_gids.is_empty() {
        p["user"]["additionalGids"] = a.additional_gids.clone().into();
    }
    if p.get("cwd").is_none() {
        p["cwd"] = "/".into();
    }
    p["terminal"] = a.tty.into();
    check_process(&p, "process")?;
    Ok(p.to_string())
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    if a.tty || a.console_socket.is_some() {
        bail!("exec --tty: terminals are not supported by husk yet");
    }
    let rec = ctx.root.read_record(&a.id)?;
    match ctx.root.status(&rec) {
        Status::Created | Status::Running => {}
        Status::Paused => bail!("cannot exec in a paused container"),
        _ => bail!("cannot exec in a stopped container"),
    }
    let process_json = process_json(ctx, &a)?;
    if let Some(p) = &a.pid_file {
        super::create::write_pid_file(p, rec.pid)?;
    }
    let sock = ctx.root.container_dir(&a.id).join("control.sock");
    let fds = [
        std::io::stdin().as_raw_fd(),
        std::io::stdout().as_raw_fd(),
        std::io::stderr().as_raw_fd(),
    ];
    let resp = control::call(
        &sock,
        &Request::Exec {
            process_json,
            detach: a.detach,
        },
        &fds,
        None,
    )?;
    Ok(resp.status.unwrap_or(0))
}
