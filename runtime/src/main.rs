//! husk: the runc-compatible CLI over KVM microVMs (the library is `husk`, src/lib.rs).

use clap::Parser;
use husk::{cli, perms};

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
