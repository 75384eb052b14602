//! husk: the runc-compatible CLI over KVM microVMs.
//!
//! Layout: `cli` (one module per verb) over `state` (the root directory, status, locks),
//! `bundle` (config.json checks), `control` (the supervisor's socket protocol), `rootfs`
//! (packing the rootfs into a disk image), `sockpath` (socket paths of any length), `config` (/etc/husk/config.toml) and `supervisor`
//! (the per-sandbox process that holds the VM). `anyhow` only here and in the verbs.

mod bundle;
mod cli;
mod config;
mod control;
mod hooks;
mod hostcg;
mod logger;
mod net;
mod perms;
mod rootfs;
mod sockpath;
mod state;
mod supervisor;
mod timefmt;
mod tty;

use clap::Parser;

fn main() {
    // Before anything is created: what husk makes is private whatever the caller's umask.
    let caller_umask = perms::restrict_umask();
    let args = cli::Cli::parse();
    let ctx = cli::Ctx::new(&args, caller_umask);
    if args.systemd_cgroup && !matches!(args.cmd, cli::Cmd::Supervise(_)) {
        ctx.log
            .warn("--systemd-cgroup is ignored: husk's cgroups live inside the guest");
    }
    let code = match cli::dispatch(&ctx, args.cmd) {
        Ok(code) => code,
        Err(e) => {
            ctx.log.error(&husk_vmm::exit::error_chain(e.as_ref()));
            1
        }
    };
    std::process::exit(code);
}
