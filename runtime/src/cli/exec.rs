//! `husk exec`: run a process in a created or running container. The process is the
//! container's own `process` with runc's overrides (args, --env, --cwd, --user, --tty), or
//! `--process FILE`; this process's stdio fds (or, with a terminal and `--console-socket`,
//! the slave of a new pty whose master goes to the socket) go to the supervisor, which relays
//! them, and husk exits with the process's status.
//!
//! `--pid-file`: the exec'd process lives in the guest, so there is no host pid to write.
//! husk writes the pid of a host stand-in that exits with the process's status, which is
//! what a caller that waits for that pid (conmon) needs: without `--detach`, this `husk exec`;
//! with `--detach`, a child (`husk exec-wait`) that holds the supervisor connection until the
//! process exits, left to the caller's subreaper when `husk exec` returns.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde_json::Value;

use super::Ctx;
use crate::bundle::check_process;
use crate::control;
use crate::state::Status;
use crate::tty::{Pty, RawGuard};

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
    /// Add a capability to the process's bounding, effective and permitted sets (and ambient
    /// when the process has an inheritable set), as runc's --cap; repeatable.
    #[arg(short = 'c', long = "cap", value_name = "CAP")]
    pub caps: Vec<String>,
    /// Extra gids; repeatable.
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// A process.json instead of the command line.
    #[arg(short, long, value_name = "PATH")]
    pub process: Option<PathBuf>,
    /// Return once started.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the pid of the process's host stand-in here (see the module docs).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Write the exec's id in the sandbox here (for `kill --exec`; the containerd shim's use).
    #[arg(long, value_name = "PATH", hide = true)]
    pub exec_id_file: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass this process's fds 3..3+N-1 to the process at the same numbers (runc's): their
    /// bytes are relayed into the VM (see docs/runtime.md).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The process JSON and whether it wants a terminal.
fn process_json(ctx: &Ctx, a: &Args) -> anyhow::Result<(String, bool)> {
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
    add_caps(&mut p, &a.caps);
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
    // --tty overrides the container's process; a --process file keeps its own terminal.
    let terminal = a.tty || (a.process.is_some() && p["terminal"].as_bool().unwrap_or(false));
    p["terminal"] = terminal.into();
    check_process(&p, "process")?;
    Ok((p.to_string(), terminal))
}

/// runc exec's --cap: each capability joins the bounding, effective and permitted sets, and
/// the ambient set only when the process has an inheritable set (the kernel raises an ambient
/// capability only if it is inheritable too). Later `--env` entries need no such merge: the
/// agent keeps the last value of a variable given twice, as runc does.
fn add_caps(p: &mut Value, caps: &[String]) {
    if caps.is_empty() {
        return;
    }
    if !p["capabilities"].is_object() {
        p["capabilities"] = serde_json::json!({});
    }
    let c = &mut p["capabilities"];
    let mut sets = vec!["bounding", "effective", "permitted"];
    if c["inheritable"].is_array() {
        sets.push("ambient");
    }
    for set in sets {
        let mut list = c[set].as_array().cloned().unwrap_or_default();
        for cap in caps {
            if !list.iter().any(|v| v == cap.as_str()) {
                list.push(cap.as_str().into());
            }
        }
        c[set] = list.into();
    }
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let rec = ctx.root.read_record(&a.id)?;
    match ctx.root.status(&rec) {
        Status::Created | Status::Running => {}
        Status::Paused => bail!("cannot exec in a paused container"),
        _ => bail!("cannot exec in a stopped container"),
    }
    let preserved = super::create::check_preserve_fds(a.preserve_fds)?;
    let (process_json, terminal) = process_json(ctx, &a)?;
    match (terminal, &a.console_socket) {
        (true, None) if a.detach => {
            bail!("cannot allocate tty if husk will detach without setting console socket")
        }
        (false, Some(_)) => {
            bail!("cannot use console socket if husk will not detach or allocate tty")
        }
        _ => {}
    }
    let pty = match &a.console_socket {
        Some(_) => Some(Pty::open().context("opening a pty")?),
        None => None,
    };
    let mut fds = match &pty {
        Some(p) => vec![p.slave.as_raw_fd(); 3],
        None => vec![
            std::io::stdin().as_raw_fd(),
            std::io::stdout().as_raw_fd(),
            std::io::stderr().as_raw_fd(),
        ],
    };
    // The extra fds go after stdio (the supervisor relays them as the process's 3, 4, ...).
    fds.extend(preserved.raw());
    // A foreground terminal on the caller's own tty: raw, as runc makes it.
    let _raw = (terminal && pty.is_none()).then(RawGuard::stdin);
    let (sock, container) = rec.control(&ctx.root);
    let (conn, exec_id) = control::start_exec_in(&sock, container.as_deref(), process_json, &fds)?;
    // The supervisor has its copies of the extra fds.
    drop(preserved);
    if let Some(f) = &a.exec_id_file {
        let id = exec_id.unwrap_or_default();
        crate::state::write_atomic(f, id.as_bytes())
            .with_context(|| format!("--exec-id-file {}", f.display()))?;
    }
    if let (Some(p), Some(path)) = (pty, &a.console_socket) {
        p.send_master(path)?;
    }
    if a.detach {
        let exe = std::env::current_exe().context("finding the husk binary")?;
        let standin = Command::new(exe)
            .args(&ctx.global_args)
            .arg("exec-wait")
            .stdin(Stdio::from(OwnedFd::from(conn)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the exec stand-in")?;
        if let Some(p) = &a.pid_file {
            super::create::write_pid_file(p, standin.id() as i32, ctx.caller_umask)?;
        }
        return Ok(0);
    }
    if let Some(p) = &a.pid_file {
        super::create::write_pid_file(p, std::process::id() as i32, ctx.caller_umask)?;
    }
    Ok(control::answer(&conn)?.status.unwrap_or(255))
}

/// The hidden `exec-wait` verb: the detached exec's stand-in. Its stdin is the supervisor
/// connection; it exits with the process's status (255 if the answer never comes).
pub fn wait_standin() -> anyhow::Result<i32> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let conn = std::os::unix::net::UnixStream::from(fd);
    Ok(control::answer(&conn)
        .ok()
        .and_then(|r| r.status)
        .unwrap_or(255))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_joins_bounding_effective_permitted_and_ambient_only_with_inheritable() {
        let mut p = serde_json::json!({"args": ["sh"], "capabilities": {
            "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]
        }});
        add_caps(&mut p, &["CAP_NET_ADMIN".into(), "CAP_KILL".into()]);
        let c = &p["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(
                c[set],
                serde_json::json!(["CAP_KILL", "CAP_NET_ADMIN"]),
                "{set}"
            );
        }
        assert!(c.get("ambient").is_none(), "{c}");

        let mut p = serde_json::json!({"args": ["sh"], "capabilities": {"inheritable": []}});
        add_caps(&mut p, &["CAP_SYS_ADMIN".into()]);
        assert_eq!(
            p["capabilities"]["ambient"],
            serde_json::json!(["CAP_SYS_ADMIN"])
        );
        assert_eq!(p["capabilities"]["inheritable"], serde_json::json!([]));

        let mut p = serde_json::json!({"args": ["sh"]});
        add_caps(&mut p, &["CAP_NET_RAW".into()]);
        assert_eq!(
            p["capabilities"]["bounding"],
            serde_json::json!(["CAP_NET_RAW"])
        );
        let mut p = serde_json::json!({"args": ["sh"]});
        add_caps(&mut p, &[]);
        assert!(p.get("capabilities").is_none());
    }

    #[test]
    fn cap_flag_parses_like_runcs() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: Args,
        }
        let cli = Cli::try_parse_from([
            "exec",
            "--cap",
            "CAP_NET_ADMIN",
            "-c",
            "CAP_KILL",
            "id",
            "sh",
        ])
        .unwrap();
        assert_eq!(cli.a.caps, ["CAP_NET_ADMIN", "CAP_KILL"]);
        assert_eq!(cli.a.command, ["sh"]);
    }
}
