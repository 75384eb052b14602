//! The command line: runc's global flags and one module per verb. Each verb returns the exit
//! status husk should exit with; errors go back to `main`, which prints them as runc does.

pub mod check;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod pod;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod supervise;
pub mod unsupported;
pub mod update;
pub mod vmm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logger::{LogFormat, Logger};
use crate::state::Root;

/// husk: an OCI runtime with runc's command line that runs each container in a KVM microVM.
#[derive(Debug, Parser)]
#[command(name = "husk", version, about, long_about = None)]
pub struct Cli {
    /// Root directory for container state.
    #[arg(long, global = true, value_name = "DIR", default_value = "/run/husk")]
    pub root: PathBuf,
    /// Log file (errors and, with --debug, debug lines), as podman passes it.
    #[arg(long, global = true, value_name = "PATH")]
    pub log: Option<PathBuf>,
    /// Format of --log.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility and ignored: cgroups live inside the guest.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility; rootless sandboxes are not supported.
    #[arg(long, global = true, value_name = "true|false|auto")]
    pub rootless: Option<String>,
    /// The verb.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// runc's verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a new specification file (config.json).
    Spec(spec::Args),
    /// Create a container: boot its sandbox and wait for `start`.
    Create(create::CreateArgs),
    /// Start a created container's process.
    Start(start::Args),
    /// Print a container's state as JSON.
    State(state::Args),
    /// Send a signal to a container's init (default SIGTERM).
    Kill(kill::Args),
    /// Delete a container and everything it left.
    Delete(delete::Args),
    /// Create and start a container; wait for it unless --detach.
    Run(run::Args),
    /// List containers.
    List(list::Args),
    /// Run a process in a container.
    Exec(exec::Args),
    /// List a container's processes.
    Ps(ps::Args),
    /// Print resource usage (--stats once, else every --interval) as runc's JSON events.
    Events(events::Args),
    /// Change a container's resources (runc's flags, or -r with linux.resources JSON).
    Update(update::Args),
    /// Print what husk supports, as runc's features JSON.
    Features(features::Args),
    /// Freeze a container's processes.
    Pause(pause::Args),
    /// Thaw a paused container.
    Resume(pause::Args),
    /// What this host has and lacks for husk, with fixes.
    Check(check::Args),
    /// Not supported (microVM sandboxes cannot be checkpointed yet).
    Checkpoint(unsupported::Args),
    /// Not supported (microVM sandboxes cannot be checkpointed yet).
    Restore(unsupported::Args),
    /// Internal: the sandbox supervisor `create` starts.
    #[command(hide = true)]
    Supervise(supervise::Args),
    /// Internal: a detached exec's host stand-in (see `exec`).
    #[command(hide = true)]
    ExecWait,
    /// Internal: attaches (detaches) a pod container's files in its sandbox's mount namespace.
    #[command(hide = true)]
    PodShare,
    /// Internal: the sandbox's jailed VMM process the supervisor starts.
    #[command(hide = true)]
    Vmm,
}

/// What every verb gets.
pub struct Ctx {
    /// The state root.
    pub root: Root,
    /// Messages.
    pub log: Logger,
    /// Global flags to hand to the supervisor.
    pub global_args: Vec<std::ffi::OsString>,
    /// The umask husk was started with (its own is `perms::UMASK`).
    pub caller_umask: u32,
}

impl Ctx {
    /// From the parsed global flags and the caller's umask.
    pub fn new(cli: &Cli, caller_umask: u32) -> Ctx {
        let mut global_args: Vec<std::ffi::OsString> =
            vec!["--root".into(), cli.root.clone().into()];
        if let Some(l) = &cli.log {
            global_args.push("--log".into());
            global_args.push(l.clone().into());
        }
        global_args.push("--log-format".into());
        global_args.push(match cli.log_format {
            LogFormat::Json => "json".into(),
            LogFormat::Text => "text".into(),
        });
        if cli.debug {
            global_args.push("--debug".into());
        }
        Ctx {
            root: Root::new(cli.root.clone()),
            log: Logger::new(cli.log.clone(), cli.log_format, cli.debug),
            global_args,
            caller_umask,
        }
    }
}

/// Runs the verb; the exit status on success.
pub fn dispatch(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<i32> {
    match cmd {
        Cmd::Spec(a) => spec::run(ctx, a),
        Cmd::Create(a) => create::run(ctx, a),
        Cmd::Start(a) => start::run(ctx, a),
        Cmd::State(a) => state::run(ctx, a),
        Cmd::Kill(a) => kill::run(ctx, a),
        Cmd::Delete(a) => delete::run(ctx, a),
        Cmd::Run(a) => run::run(ctx, a),
        Cmd::List(a) => list::run(ctx, a),
        Cmd::Exec(a) => exec::run(ctx, a),
        Cmd::Ps(a) => ps::run(ctx, a),
        Cmd::Events(a) => events::run(ctx, a),
        Cmd::Update(a) => update::run(ctx, a),
        Cmd::Features(a) => features::run(ctx, a),
        Cmd::Pause(a) => pause::run(ctx, a, true),
        Cmd::Resume(a) => pause::run(ctx, a, false),
        Cmd::Check(a) => check::run(ctx, a),
        Cmd::Checkpoint(a) => unsupported::run("checkpoint", a),
        Cmd::Restore(a) => unsupported::run("restore", a),
        Cmd::Supervise(a) => supervise::run(ctx, a),
        Cmd::ExecWait => exec::wait_standin(),
        Cmd::PodShare => pod::share_verb(),
        Cmd::Vmm => vmm::run(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn runc_style_invocations_parse() {
        use clap::Parser;
        for argv in [
            &[
                "husk",
                "--root",
                "/r",
                "--log",
                "/l",
                "--log-format",
                "json",
                "--systemd-cgroup",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "c",
            ][..],
            &["husk", "run", "-d", "-b", "/b", "c"],
            &[
                "husk",
                "exec",
                "-e",
                "A=1",
                "--cwd",
                "/",
                "c",
                "sh",
                "-c",
                "echo -n x",
            ],
            &["husk", "kill", "c", "KILL"],
            &["husk", "delete", "--force", "c"],
            &["husk", "list", "--format", "json"],
            &["husk", "ps", "--format", "json", "c"],
            &["husk", "events", "--stats", "c"],
            &["husk", "events", "--interval", "500ms", "c"],
            &[
                "husk",
                "update",
                "--memory",
                "64m",
                "--pids-limit",
                "10",
                "c",
            ],
            &["husk", "update", "-r", "-", "c"],
            &["husk", "features"],
            &[
                "husk",
                "create",
                "--sandbox",
                "pause",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "c2",
            ],
        ] {
            super::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
    }
}
