//! husk-agent binary: `husk-agent [--listen ADDR] [--cgroup-root DIR]` serves the agent API;
//! `husk-agent init` is the container init stage the agent re-executes itself as.
//! As PID 1 (in the guest) it mounts the base filesystems and listens on vsock port 1024; any
//! other pid is "host mode" (tests): listen on a Unix socket, be a child subreaper.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;

use husk_agent::cgroup::{find_cgroup2_mount, CgroupRoot};
use husk_agent::container::Runtime;
use husk_agent::logbuf::LogBuffer;
use husk_agent::reaper::{self, ExitRegistry};
use husk_agent::rpc::{peer::HostOnly, AgentService};
use husk_agent::sandbox::{Sandbox, SandboxConfig};
use husk_agent::syscall::linux::LinuxSyscall;
use husk_agent::{pid1, protocol};

#[derive(Parser, Debug)]
#[command(name = "husk-agent", version, about = "husk guest agent")]
struct Args {
    /// Where to serve ttrpc: vsock://-1:1024 (guest default) or unix:/path (host mode).
    #[arg(long)]
    listen: Option<String>,
    /// cgroup2 directory containers' cgroups are created under (default: the cgroup2 mount).
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
}

fn ttrpc_addr(listen: &str) -> anyhow::Result<String> {
    if let Some(p) = listen
        .strip_prefix("unix://")
        .or_else(|| listen.strip_prefix("unix:"))
    {
        let _ = std::fs::remove_file(p);
        return Ok(format!("unix://{p}"));
    }
    if listen.starts_with("vsock://") {
        return Ok(listen.to_string());
    }
    bail!("--listen: {listen:?} is neither unix:/path nor vsock://cid:port")
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("init") {
        husk_agent::init::run();
    }
    let started = std::time::Instant::now();
    let is_pid1 = std::process::id() == 1;
    if is_pid1 {
        if let Err(e) = pid1::leave_initramfs() {
            eprintln!(
                "husk-agent: staying on the initramfs root (containers cannot pivot_root): {e}"
            );
        }
    }
    if let Err(e) = serve(is_pid1, started) {
        eprintln!("husk-agent: {e:#}");
        if is_pid1 {
            pid1::power_off();
        }
        std::process::exit(1);
    }
}

fn serve(is_pid1: bool, started: std::time::Instant) -> anyhow::Result<()> {
    // Before any thread exists, so every thread inherits the blocked mask.
    reaper::block_sigchld().context("blocking SIGCHLD")?;
    let args = Args::parse();
    if is_pid1 {
        pid1::mount_base(&LinuxSyscall).context("mounting base filesystems")?;
    }
    let logs = LogBuffer::new();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HUSK_AGENT_LOG")
                // ttrpc's own line per refused connection is not rate limited; rpc::peer's is.
                .unwrap_or_else(|_| "info,ttrpc::sync::server=error".into()),
        )
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();
    if is_pid1 {
        if let Err(e) = pid1::loopback_up() {
            tracing::warn!("loopback: {e}");
        }
    } else {
        reaper::become_subreaper().context("PR_SET_CHILD_SUBREAPER")?;
    }
    let registry = ExitRegistry::new();
    registry.start().context("starting the reaper")?;

    let cgroup_root = match args.cgroup_root {
        Some(p) => p,
        None => find_cgroup2_mount().context("no cgroup2 mount found; pass --cgroup-root")?,
    };
    let listen = match args.listen {
        Some(l) => l,
        None if is_pid1 => "vsock://-1:1024".into(),
        None => bail!(
            "--listen is required outside the guest (e.g. --listen unix:/run/husk-agent.sock)"
        ),
    };
    let rt = Runtime {
        cgroups: CgroupRoot::new(&cgroup_root),
        exe: CString::new("/proc/self/exe").expect("static"),
        registry,
    };
    let sandbox = Arc::new(Sandbox::new(
        rt,
        SandboxConfig {
            host_mode: !is_pid1,
            sys_block: "/sys/block".into(),
            storage_scratch: if is_pid1 {
                "/run/husk/storage".into()
            } else {
                std::env::temp_dir().join(format!("husk-agent-storage-{}", std::process::id()))
            },
        },
    ));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let tx = std::sync::Mutex::new(tx);
    let service = AgentService::new(
        Arc::clone(&sandbox),
        logs,
        Box::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        }),
    );
    let mut server = ttrpc::Server::new()
        .bind(&ttrpc_addr(&listen)?)
        .with_context(|| format!("listening on {listen}"))?
        // Only the host (vsock CID 2) gets past accept.
        .set_accept_hook(HostOnly::default())
        .register_service(protocol::create_agent_service(Arc::new(service)))
        .set_thread_count_min(1)
        .set_thread_count_default(4)
        .set_thread_count_max(64);
    server.start().context("starting the ttrpc server")?;
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    if is_pid1 {
        // First, so the VMM's kernel-entry -> marker time does not include console output.
        pid1::signal_boot_complete();
    }
    tracing::info!(
        listen = %listen,
        cgroup_root = %cgroup_root.display(),
        startup_ms = format!("{startup_ms:.1}"),
        "husk-agent listening"
    );
    let _ = rx.recv();
    tracing::info!("shutting down");
    sandbox.remove_all();
    sandbox.remove_storages();
    if is_pid1 {
        // Let the DestroySandbox reply reach the host before the VM goes away.
        std::thread::sleep(std::time::Duration::from_millis(200));
        tracing::info!(
            "powering off (control page {:#x})",
            pid1::CONTROL_PAGE + pid1::POWER_OFFSET as u64
        );
        pid1::power_off();
    }
    // Let the DestroySandbox reply go out before the process exits.
    std::thread::sleep(std::time::Duration::from_millis(50));
    Ok(())
}
