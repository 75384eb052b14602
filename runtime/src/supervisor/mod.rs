//! The sandbox supervisor: `husk` re-executed by `create` (hidden verb `supervise`). It boots
//! the microVM in-process, has the agent create the container, tells `create` it is ready,
//! relays the container's stdio, serves `<root>/<id>/control.sock`, forwards the signals it
//! gets to the container's init, and when init exits records the status, powers the guest off
//! and exits with that status.
//!
//! Host files reach the guest through the sandbox's virtio-fs share: the supervisor enters a
//! mount namespace of its own first thing (while it is single-threaded), mounts the rootfs and
//! bind sources into `<state>/share` there, and starts virtiofsd on it before the VM, whose
//! VMM connects to virtiofsd as it builds the VM.
//!
//! A pod's later containers join the running sandbox through the control socket
//! (`add_container`, see `server`): the CLI has already attached their files to the share,
//! the supervisor maps their namespaces ([`podspec::pod_spec`]) and has the agent create them; they
//! live as long as the VM, which is the sandbox container's: when its init exits, the ones
//! still running are recorded stopped (255) and the VM goes down.
//!
//! Owns: the order of those steps. `vm` runs the VMM, `agent` talks ttrpc, `server` answers
//! control requests, `stdio` moves bytes, `oom` counts OOM kills, `share` mounts what the guest
//! sees of the host, `virtiofsd` serves it, `seccomp` is the allow-list every thread runs under
//! once set up.

pub mod agent;
pub mod network;
pub mod oom;
pub mod podspec;
pub mod seccomp;
pub mod server;
pub mod share;
pub mod stdio;
pub mod virtiofsd;
pub mod vm;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use self::agent::{AgentAddr, AgentClient};
use self::server::Shared;
use self::share::Share;
use self::virtiofsd::Virtiofsd;
use self::vm::{Vm, VmmFs};
use crate::bundle::Bundle;
use crate::config::HuskConfig;
use crate::rootfs::Rootfs;
use crate::sockpath::SockDir;
use crate::state::{write_atomic, Status};

/// Signals forwarded to the container's init (like `runc run`'s signal proxy).
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals `husk run` and the supervisor block (the supervisor forwards them).
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set
}

/// Exit status when the sandbox died without an init exit status.
const EXIT_SANDBOX_LOST: i32 = server::EXIT_SANDBOX_DOWN;

/// How the supervisor was started.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// `--root`.
    pub root: PathBuf,
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Where `create` waits for "ok" or an error.
    pub ready_socket: PathBuf,
    /// runc's `--preserve-fds`: this process's fds 3..3+N-1 are the container's extra fds.
    pub preserve_fds: u32,
}

/// A created container with everything that keeps it alive.
struct Sandbox {
    shared: Arc<Shared>,
    vm: Option<Vm>,
    init_exit: mpsc::Receiver<Result<i32, String>>,
    relay: stdio::Relay,
    /// The share's virtiofsd (stopped after the VM); the share's mounts go with the
    /// supervisor's mount namespace.
    virtiofsd: Option<Virtiofsd>,
    _share: Option<Share>,
    _sock_dir: SockDir,
}

/// `HUSK_DEV_AGENT`: a host-mode agent instead of a VM (development without KVM).
fn dev_agent() -> Option<String> {
    std::env::var("HUSK_DEV_AGENT")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Runs the supervisor to the end; the return value is the process's exit status.
pub fn run(args: SupervisorArgs) -> i32 {
    let dir = args.root.join(&args.id);
    // Before anything else: the caller's extra fds and stdio are held only as the
    // container's (the relay).
    let extra = stdio::adopt_extra_fds(args.preserve_fds);
    let caller_stdio = stdio::adopt_caller_stdio();
    let _ = forwarded_signals().thread_block();
    let mut ready = crate::sockpath::connect(&args.ready_socket).ok();
    let cfg = HuskConfig::load();
    init_log(
        &dir,
        cfg.as_ref().map(|c| c.log_level.as_str()).unwrap_or("info"),
    );
    let started = Instant::now();
    // Still single-threaded (checked): the namespace the share's mounts live and die in.
    let private_ns = match dev_agent() {
        Some(_) => Ok(()),
        None => share::enter_private_mount_namespace().map_err(|e| e.to_string()),
    };
    let result = extra
        .map_err(|e| e.to_string())
        .and_then(|extra| private_ns.map(|()| extra))
        .and_then(|extra| cfg.map(|cfg| (cfg, extra)).map_err(|e| e.to_string()))
        .and_then(|(cfg, extra)| setup(&args, &dir, cfg, caller_stdio, extra));
    let sandbox = match result {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("create failed: {e}");
            if let Some(r) = ready.as_mut() {
                let _ = writeln!(r, "error {e}");
            }
            return 1;
        }
    };
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "container created"
    );
    if let Some(mut r) = ready.take() {
        let _ = writeln!(r, "ok");
    }
    sandbox.run_to_exit()
}

fn init_log(dir: &Path, level: &str) {
    let Ok(file) = crate::perms::append_file(&dir.join("supervisor.log")) else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .finish()
        .with(husk_vmm::logging::LogThrottle::default())
        .try_init();
}

/// The guest path a block-device rootfs is mounted on.
fn guest_disk_rootfs(id: &str) -> String {
    format!("/run/husk/{id}/rootfs")
}

/// The sandbox's share with the container's files in it, and its virtiofsd.
fn share_container(
    args: &SupervisorArgs,
    dir: &Path,
    cfg: &HuskConfig,
    rootfs: &Rootfs,
    spec: &mut serde_json::Value,
) -> Result<(Share, Option<String>, Virtiofsd), String> {
    let bin = virtiofsd::find(cfg.virtiofsd.as_deref()).map_err(|e| e.to_string())?;
    let share = Share::create(dir).map_err(|e| e.to_string())?;
    let dir_rootfs = match rootfs {
        Rootfs::Dir(p) => Some(p.as_path()),
        Rootfs::Block { .. } => None,
    };
    let guest_root = share
        .add_container(&args.id, dir_rootfs, &args.bundle, spec)
        .map_err(|e| e.to_string())?;
    let log = crate::perms::append_file(&dir.join("supervisor.log"))
        .map_err(|e| format!("{}: {e}", dir.join("supervisor.log").display()))?;
    let fsd = Virtiofsd::spawn(&bin, share.dir(), dir, log).map_err(|e| e.to_string())?;
    Ok((share, guest_root, fsd))
}

fn setup(
    args: &SupervisorArgs,
    dir: &Path,
    cfg: HuskConfig,
    caller_stdio: [Option<File>; 3],
    extra: stdio::ExtraFds,
) -> Result<Sandbox, String> {
    let extra_dirs: Vec<stdio::Direction> = extra.iter().map(|(_, d, _)| *d).collect();
    let seccomp_mode = seccomp::Mode::from_env().map_err(|e| e.to_string())?;
    let bundle = Bundle::load(&args.bundle).map_err(|e| e.to_string())?;
    let cfg = cfg.for_container(&bundle.spec).map_err(|e| e.to_string())?;
    let id = args.id.as_str();
    // Holds the directory open for the socket paths that do not fit sun_path.
    let sock_dir = SockDir::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dev_agent = dev_agent();
    let mut wired_netns = None;

    let (vm, agent, shared_fs) = match &dev_agent {
        Some(addr) => {
            let path = addr.strip_prefix("unix:").unwrap_or(addr);
            let deadline = Instant::now() + Duration::from_secs(10);
            let (a, _) = AgentClient::wait_ready(&AgentAddr::Unix(path.into()), deadline, || None)
                .map_err(|e| e.to_string())?;
            (None, a, None)
        }
        None => {
            let mut spec: serde_json::Value =
                serde_json::from_str(&bundle.config_json).map_err(|e| e.to_string())?;
            let rootfs = Rootfs::inspect(&bundle.rootfs).map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let (share, guest_root, mut fsd) =
                share_container(args, dir, &cfg, &rootfs, &mut spec)?;
            let share_ms = t0.elapsed().as_millis() as u64;
            tracing::info!(ms = share_ms, "share mounted and virtiofsd started");
            let _ = write_atomic(
                &dir.join("timings.json"),
                format!("{{\"share_ms\":{share_ms}}}\n").as_bytes(),
            );
            let disk = match &rootfs {
                Rootfs::Block { path, .. } => Some(path.as_path()),
                Rootfs::Dir(_) => None,
            };
            // The VMM connects from its jail directory (`<state>/vm`, its cwd until it
            // confines itself): `../vfs.sock` fits sun_path whatever the state path.
            let fs = vec![VmmFs {
                socket: Path::new("..").join(virtiofsd::SOCKET),
                tag: share::TAG.into(),
            }];
            // The caller's network namespace, wired before the VMM (which gets the TAPs) and
            // before this process's seccomp filter (no setns or netlink after it).
            let (taps, guest_net) = match network::wire(&spec, id, dir)? {
                Some(w) => {
                    if let network::Mode::Caller(p) = network::mode(&spec) {
                        wired_netns = Some(p);
                    }
                    network::split(w)
                }
                None => Default::default(),
            };
            let uds = sock_dir.path(vm::VSOCK_SOCKET);
            let vm = Vm::start(&cfg, disk, fs, taps, dir).map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs(cfg.boot_timeout_s);
            let waited = AgentClient::wait_ready(&AgentAddr::HybridVsock(uds), deadline, || {
                vm.ended()
                    .map(|why| format!("the VM ended during boot: {why}"))
            });
            let (a, details) = match waited {
                Ok(x) => x,
                Err(e) => {
                    vm.shut_down(Duration::ZERO);
                    let vfsd = match fsd.exited() {
                        Some(s) => format!("; virtiofsd exited ({s}, see supervisor.log)"),
                        None => String::new(),
                    };
                    return Err(format!(
                        "{e} (guest console: {}){vfsd}",
                        dir.join("console.log").display()
                    ));
                }
            };
            tracing::info!(
                ms = t0.elapsed().as_millis() as u64,
                kernel = %details.kernel_release,
                "agent ready"
            );
            let place = Placement {
                rootfs: &rootfs,
                guest_root,
                net: &guest_net,
                extra: &extra_dirs,
            };
            create_in_guest(&a, id, &bundle, spec, place).inspect_err(|_| {
                let _ = a.destroy_sandbox();
            })?;
            (Some(vm), a, Some((share, fsd)))
        }
    };
    if dev_agent.is_some() {
        let mut spec: serde_json::Value =
            serde_json::from_str(&bundle.config_json).map_err(|e| e.to_string())?;
        spec["root"]["path"] = bundle.rootfs.to_string_lossy().into();
        agent
            .create_container(
                id,
                &spec.to_string(),
                Vec::new(),
                "",
                &bundle.dir,
                &extra_dirs,
            )
            .map_err(|e| e.to_string())?;
    }

    let shared = Arc::new(Shared::new(
        id.into(),
        args.root.clone(),
        agent.clone(),
        wired_netns,
    ));
    let routes = Arc::clone(&shared);
    oom::watch(&agent, move |cid| routes.oom_of(cid));
    // The container's stdio is what `create`'s caller gave this process (the slave of
    // `create`'s pty with a console socket), adopted at the start.
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let relay = stdio::Relay::start(&agent, id, "", caller_stdio, terminal, extra);
    let waiter = agent.another().map_err(|e| e.to_string())?;
    let (tx, init_exit) = mpsc::channel();
    let wid = id.to_string();
    std::thread::Builder::new()
        .name("init-wait".into())
        .spawn(move || {
            let _ = tx.send(waiter.wait(&wid, "").map_err(|e| e.to_string()));
        })
        .map_err(|e| e.to_string())?;

    let sock = dir.join("control.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = crate::sockpath::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    let srv = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("control-server".into())
        .spawn(move || server::serve(listener, srv))
        .map_err(|e| e.to_string())?;
    let sig_agent = agent.clone();
    let sig_id = id.to_string();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || forward_signals(&sig_agent, &sig_id))
        .map_err(|e| e.to_string())?;
    shared.set_status(Status::Created);
    // Setup is over: from here on the supervisor spawns no process and only talks.
    seccomp::install(seccomp_mode, vm.as_ref().map(Vm::pid)).map_err(|e| e.to_string())?;
    let (share, virtiofsd) = shared_fs.unzip();
    Ok(Sandbox {
        shared,
        vm,
        init_exit,
        relay,
        virtiofsd,
        _share: share,
        _sock_dir: sock_dir,
    })
}

/// Where the container's files and network come from.
struct Placement<'a> {
    rootfs: &'a Rootfs,
    /// The rootfs's guest path in the share (a directory rootfs).
    guest_root: Option<String>,
    net: &'a network::GuestNet,
    /// The directions of the container's extra fds (3, 4, ...).
    extra: &'a [stdio::Direction],
}

/// CreateSandbox with the share as the sandbox's storage (it outlives any one container: a
/// pod's later containers come through it too), then CreateContainer of `spec` (its bind
/// sources already rewritten to the share) with its rootfs in the share, or on the block
/// device as the container's storage. Either is writable: the agent creates missing mount
/// points in it, then applies `root.readonly` itself, as runc does.
fn create_in_guest(
    a: &AgentClient,
    id: &str,
    bundle: &Bundle,
    mut spec: serde_json::Value,
    place: Placement<'_>,
) -> Result<(), String> {
    let Placement {
        rootfs,
        guest_root,
        net,
        extra,
    } = place;
    use husk_agent::protocol::Storage;
    let hostname = bundle.spec.hostname().clone().unwrap_or_default();
    let share = Storage {
        driver: "virtio-fs".into(),
        source: share::TAG.into(),
        fstype: "virtiofs".into(),
        mount_point: share::GUEST_DIR.into(),
        ..Default::default()
    };
    a.create_sandbox(id, &hostname, vec![share])
        .map_err(|e| e.to_string())?;
    network::configure_guest(a, net)?;
    let (root, storages) = match (rootfs, guest_root) {
        (Rootfs::Block { fstype, .. }, _) => {
            let root = guest_disk_rootfs(id);
            let disk = Storage {
                driver: "virtio-blk".into(),
                source: vm::ROOTFS_SERIAL.into(),
                fstype: (*fstype).into(),
                mount_point: root.clone(),
                ..Default::default()
            };
            (root, vec![disk])
        }
        (Rootfs::Dir(_), Some(root)) => (root, Vec::new()),
        (Rootfs::Dir(p), None) => return Err(format!("rootfs {}: not in the share", p.display())),
    };
    spec["root"]["path"] = root.clone().into();
    network::map_spec(&mut spec);
    podspec::strip_runtime_hooks(&mut spec);
    a.create_container(id, &spec.to_string(), storages, &root, &bundle.dir, extra)
        .map_err(|e| e.to_string())
}

fn forward_signals(agent: &AgentClient, id: &str) {
    let set = forwarded_signals();
    while let Ok(sig) = set.wait() {
        tracing::info!(signal = ?sig, "forwarding to init");
        if let Err(e) = agent.signal(id, "", sig as u32, false) {
            tracing::warn!("forwarding {sig:?}: {e}");
        }
    }
}

impl Sandbox {
    fn run_to_exit(self) -> i32 {
        let status = loop {
            match self.init_exit.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(status)) => break status,
                Ok(Err(e)) => {
                    tracing::error!("waiting for init: {e}");
                    break EXIT_SANDBOX_LOST;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break EXIT_SANDBOX_LOST,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(why) = self.vm.as_ref().and_then(Vm::ended) {
                tracing::error!("the VM ended before the container's init: {why}");
                break EXIT_SANDBOX_LOST;
            }
        };
        tracing::info!(status, "init exited");
        let dir = self.shared.dir.clone();
        self.shared.own().record_exit(status);
        // The pod's other containers go down with the VM.
        let stopped = self.shared.sandbox_down();
        if !stopped.is_empty() {
            tracing::info!(containers = ?stopped, "stopped with the sandbox");
        }
        self.relay.finish(Duration::from_secs(2));
        if let Some(vm) = self.vm {
            if let Err(e) = self.shared.agent.destroy_sandbox() {
                tracing::debug!("DestroySandbox: {e}");
            }
            let why = vm.shut_down(Duration::from_secs(10));
            tracing::info!("VM ended: {}", why.unwrap_or_else(|| "?".into()));
            // It exits when the VMM disconnects.
            if let Some(fsd) = self.virtiofsd {
                fsd.stop(Duration::from_secs(5));
            }
        } else {
            // A host-mode agent outlives the sandbox: remove what it runs for it.
            for id in self
                .shared
                .pod_containers()
                .into_iter()
                .chain([self.shared.id.clone()])
            {
                if let Err(e) = self.shared.agent.remove_container(&id) {
                    tracing::warn!(container = %id, "RemoveContainer: {e}");
                }
            }
        }
        // Every `wait` caller has its answer before the process ends.
        self.shared.drain_waits(Duration::from_secs(2));
        for f in ["control.sock", vm::VSOCK_SOCKET, virtiofsd::SOCKET] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        status
    }
}
