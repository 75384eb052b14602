//! The sandbox's microVM, run by a jailed child process (Firecracker's jailer split): the
//! supervisor stays unconfined for its duties (control socket, state, logs, agent RPCs, stdio
//! relays), and the device emulation and vCPUs live in `husk vmm`, a child that builds the VM
//! (opening the kernel, initramfs, rootfs disk, console log and vsock listener, and connecting
//! to virtiofsd, with guest RAM in a memfd that virtiofsd maps), then confines
//! itself before the guest's first instruction: new namespaces, the jail directory
//! `<state>/vm/` (holding only the vsock socket) as its read-only root, no capabilities,
//! no_new_privs, and per-thread seccomp allow-lists (husk_vmm::jail, husk_vmm::seccomp).
//! docs/security.md has the threat model and the lists.
//!
//! The child dies with the supervisor (PR_SET_PDEATHSIG), reports how the VM ended as one
//! JSON line on its stdout, and logs into the supervisor's log (its stderr).
//!
//! Owns: the job description the child gets, spawning and watching it, and the child's side
//! ([`run_child`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use husk_vmm::boot::LinuxBoot;
use husk_vmm::builder::{run_vm, Confine, Payload, SerialOutput, VmConfig};
use husk_vmm::devices::capped_log::{CappedLog, DEFAULT_CAP_BYTES};
use husk_vmm::devices::virtio::attach::VirtioConfig;
use husk_vmm::devices::virtio::config::{
    parse_mac, DiskConfig, FsConfig, NetBackend, NetConfig, VsockConfig,
};
use husk_vmm::memory::MemoryBacking;
use husk_vmm::seccomp::{Filters, Violation};
use serde::{Deserialize, Serialize};

use crate::config::HuskConfig;

/// Kernel command line for sandboxes.
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check quiet";

/// Serial of the rootfs disk (what the agent looks for).
pub const ROOTFS_SERIAL: &str = "husk-rootfs";

/// The jail directory, relative to the container's state directory.
pub const JAIL_DIR: &str = "vm";
/// The hybrid-vsock socket, relative to the container's state directory (inside the jail).
pub const VSOCK_SOCKET: &str = "vm/vsock.sock";
/// The same socket as the jailed VMM names it (its cwd, then its root, is the jail).
const VSOCK_IN_JAIL: &str = "vsock.sock";

/// Guest context id.
const GUEST_CID: u32 = 3;

/// `HUSK_VMM_SECCOMP`: kill (default), log (allow and have the kernel log violations, to
/// measure what a change needs) or off.
const SECCOMP_ENV: &str = "HUSK_VMM_SECCOMP";
/// `HUSK_VMM_JAIL=off` leaves the VMM unjailed (to measure the jail's cost; never in use).
const JAIL_ENV: &str = "HUSK_VMM_JAIL";

/// Errors starting the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Kernel or initramfs not configured or missing.
    #[error("{what}: {message}")]
    Missing {
        /// `kernel` or `initrd`.
        what: &'static str,
        /// How to fix it.
        message: String,
    },
    /// This host cannot boot a stock kernel.
    #[error("{0}")]
    Host(String),
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// Creating the jail directory, spawning or talking to the VMM process.
    #[error("starting the VMM process: {0}")]
    Spawn(std::io::Error),
}

/// What the supervisor hands `husk vmm` on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmJob {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Agent initramfs.
    pub initrd: PathBuf,
    /// Kernel command line (the devices' entries are appended by the VMM).
    pub cmdline: String,
    /// Guest RAM.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// The rootfs block device, if any.
    pub disk: Option<PathBuf>,
    /// virtio-fs devices (guest RAM is then a memfd, which their backends map).
    #[serde(default)]
    pub fs: Vec<VmmFs>,
    /// virtio-net devices, one per wired interface of the caller's network namespace.
    #[serde(default)]
    pub nets: Vec<VmmNet>,
    /// The console log file.
    pub console_log: PathBuf,
    /// Cap of the console log in bytes (the newest output is kept).
    pub console_cap_bytes: u64,
    /// The jail directory (becomes the VMM's root; holds the vsock socket).
    pub jail: PathBuf,
    /// Whether to confine the VMM to `jail` (namespaces, pivot_root, no capabilities).
    pub confine: bool,
    /// kill, log or off.
    pub seccomp: String,
    /// Seconds the guest has to touch a device.
    pub boot_timeout_s: u64,
}

/// One virtio-fs device of a [`VmmJob`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmFs {
    /// The backend's vhost-user socket as the VMM reaches it before its jail: a relative
    /// path is taken from the jail directory (its cwd), so `../vfs.sock` is a socket in
    /// the state directory, whatever that directory's length.
    pub socket: PathBuf,
    /// The mount tag.
    pub tag: String,
}

/// One virtio-net device of a [`VmmJob`]: a TAP the supervisor opened in the caller's
/// network namespace (`crate::net`), inherited by the child under the same fd number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmNet {
    /// The TAP fd in the child.
    pub fd: i32,
    /// The guest NIC's MAC (the host interface's).
    pub mac: String,
}

/// How the VM ended, as the child reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VmmReport {
    reason: String,
}

/// A running VM (its VMM process).
pub struct Vm {
    pid: libc::pid_t,
    done: Mutex<mpsc::Receiver<String>>,
    thread: Option<JoinHandle<()>>,
    ended: Mutex<Option<String>>,
}

fn require(what: &'static str, p: &Option<PathBuf>, env: &str) -> Result<PathBuf, VmError> {
    match p {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => Err(VmError::Missing {
            what,
            message: format!("{} does not exist", p.display()),
        }),
        None => Err(VmError::Missing {
            what,
            message: format!("none found; set {what} in /etc/husk/config.toml or {env}"),
        }),
    }
}

impl Vm {
    /// Boots the guest of the container whose state directory is `dir`: kernel + agent
    /// initramfs, `disk` as virtio-blk with the rootfs serial, the `fs` devices, a virtio-net
    /// device per TAP in `nets` (fd and MAC; the fds go to the VMM, whose copy is then the only
    /// one: the TAPs end with it), vsock on `dir/`[`VSOCK_SOCKET`], console into
    /// `dir/console.log`.
    pub fn start(
        cfg: &HuskConfig,
        disk: Option<&Path>,
        fs: Vec<VmmFs>,
        nets: Vec<(OwnedFd, String)>,
        dir: &Path,
    ) -> Result<Vm, VmError> {
        let kernel = require("kernel", &cfg.kernel, "HUSK_KERNEL")?;
        let initrd = require("initrd", &cfg.initrd, "HUSK_INITRD")?;
        let host = husk_vmm::host::detect();
        if !host.can_boot_stock_kernel() {
            return Err(VmError::Host(host.describe()));
        }
        let seccomp = std::env::var(SECCOMP_ENV).unwrap_or_else(|_| "kill".into());
        if !matches!(seccomp.as_str(), "kill" | "log" | "off") {
            return Err(VmError::Config(format!(
                "{SECCOMP_ENV}={seccomp}: expected kill, log or off"
            )));
        }
        let confine = match std::env::var(JAIL_ENV).as_deref() {
            Err(_) | Ok("on") => true,
            Ok("off") => false,
            Ok(other) => {
                return Err(VmError::Config(format!(
                    "{JAIL_ENV}={other}: expected on or off"
                )))
            }
        };
        let jail = dir.join(JAIL_DIR);
        match std::fs::DirBuilder::new().mode(0o700).create(&jail) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(VmError::Spawn(e))
            }
            _ => {}
        }
        let job = VmmJob {
            kernel,
            initrd,
            cmdline: CMDLINE.into(),
            memory_mib: cfg.memory_mib,
            vcpus: cfg.vcpus,
            disk: disk.map(Path::to_path_buf),
            fs,
            nets: nets
                .iter()
                .map(|(fd, mac)| VmmNet {
                    fd: fd.as_raw_fd(),
                    mac: mac.clone(),
                })
                .collect(),
            console_log: dir.join("console.log"),
            console_cap_bytes: DEFAULT_CAP_BYTES,
            jail,
            confine,
            seccomp,
            boot_timeout_s: cfg.boot_timeout_s,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("supervisor.log"))
            .map_err(VmError::Spawn)?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("vmm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let inherit: Vec<RawFd> = nets.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
        // SAFETY: prctl and fcntl are async-signal-safe; the closure only reads `inherit`,
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // The VMM goes with the supervisor, whatever kills it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The TAPs cross the exec under their numbers (they are O_CLOEXEC here).
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // The child has its copies (or failed): the supervisor keeps none.
        drop(nets);
        let mut child = spawned.map_err(VmError::Spawn)?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let json = serde_json::to_vec(&job).map_err(|e| VmError::Config(e.to_string()))?;
        if let Err(e) = stdin.write_all(&json) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VmError::Spawn(e));
        }
        drop(stdin);
        let pid = child.id() as libc::pid_t;
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vmm-wait".into())
            .spawn(move || {
                let _ = tx.send(watch(child));
            })
            .map_err(VmError::Spawn)?;
        Ok(Vm {
            pid,
            done: Mutex::new(done),
            thread: Some(thread),
            ended: Mutex::new(None),
        })
    }

    /// The VMM process's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Why the VM ended, if it has.
    pub fn ended(&self) -> Option<String> {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_none() {
            let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(why) = done.try_recv() {
                *ended = Some(why);
            }
        }
        ended.clone()
    }

    /// Waits up to `grace` for the guest to end by itself, then stops the VMM (SIGTERM, and
    /// SIGKILL 5 s later); reaps it.
    pub fn shut_down(mut self, grace: Duration) -> Option<String> {
        let wait_until = |deadline: Instant| {
            while self.ended().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_until(Instant::now() + grace);
        if self.ended().is_none() {
            // SAFETY: kill takes no pointers; the pid is our unreaped child (the watcher has
            // not sent its status, so it has not been waited for).
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            wait_until(Instant::now() + Duration::from_secs(5));
        }
        if self.ended().is_none() {
            tracing::warn!(
                pid = self.pid,
                "the VMM ignored SIGTERM for 5 s; killing it"
            );
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ended()
    }
}

/// Reads the child's report line, reaps it, and says how the VM ended.
fn watch(mut child: Child) -> String {
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let status = child.wait();
    let report = serde_json::from_str::<VmmReport>(line.trim()).ok();
    match (report, status) {
        (Some(r), _) => r.reason,
        (None, Ok(s)) => describe_status(s),
        (None, Err(e)) => format!("the VMM process could not be waited for: {e}"),
    }
}

/// How a VMM process that sent no report ended.
fn describe_status(s: std::process::ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (_, Some(libc::SIGSYS)) => "the VMM was killed by seccomp (SIGSYS: a syscall outside \
             its allow-list; rerun with HUSK_VMM_SECCOMP=log and read the kernel log, see \
             docs/security.md)"
            .into(),
        (_, Some(sig)) => format!("the VMM was killed by signal {sig}"),
        (Some(code), _) => format!("the VMM exited with status {code} (see supervisor.log)"),
        (None, None) => "the VMM ended".into(),
    }
}

/// The child's side (`husk vmm`): reads the job from stdin, builds and confines the VM, runs
/// it, writes the report line to stdout. Returns the process's exit status.
pub fn run_child() -> Result<i32, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading the job: {e}"))?;
    let job: VmmJob =
        serde_json::from_slice(&input).map_err(|e| format!("parsing the job: {e}"))?;
    let violation = match job.seccomp.as_str() {
        "off" => None,
        v => Some(v.parse::<Violation>()?),
    };
    let filters = violation
        .map(Filters::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let stop = husk_vmm::exit::stop_on_terminate_signals()
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    // The supervisor blocks the signals it forwards, and exec keeps the mask.
    super::forwarded_signals()
        .thread_unblock()
        .map_err(|e| format!("unblocking signals: {e}"))?;
    let console = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(&job.console_log)
        .map_err(|e| format!("{}: {e}", job.console_log.display()))?;
    let console = CappedLog::new(console, job.console_cap_bytes)
        .map_err(|e| format!("{}: {e}", job.console_log.display()))?;
    // Relative names resolve in the jail before and after the pivot (cwd, then root).
    std::env::set_current_dir(&job.jail)
        .map_err(|e| format!("jail {}: {e}", job.jail.display()))?;
    let jail = job.jail.clone();
    let confine: Option<Confine> = job.confine.then(|| {
        Box::new(move || {
            husk_vmm::jail::enter(&jail)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }) as Confine
    });
    let config = VmConfig {
        memory_mib: job.memory_mib,
        vcpus: job.vcpus,
        payload: Payload::Linux(LinuxBoot {
            kernel: job.kernel,
            initrd: Some(job.initrd),
            cmdline: job.cmdline,
        }),
        serial: SerialOutput::Writer(Box::new(console)),
        serial_input: false,
        // virtiofsd maps guest RAM, which only a memfd lets it do.
        backing: if job.fs.is_empty() {
            MemoryBacking::Anonymous
        } else {
            MemoryBacking::Memfd
        },
        sign_of_life_timeout: Duration::from_secs(job.boot_timeout_s),
        vmm_start: Instant::now(),
        stop: Some(stop),
        devices: VirtioConfig {
            disks: job
                .disk
                .map(|p| DiskConfig {
                    path: p,
                    read_only: false,
                    serial: Some(ROOTFS_SERIAL.into()),
                })
                .into_iter()
                .collect(),
            nets: job
                .nets
                .iter()
                .map(|n| {
                    Ok(NetConfig {
                        backend: NetBackend::Fd(n.fd),
                        mac: Some(
                            parse_mac(&n.mac)
                                .ok_or_else(|| format!("nets: {:?} is not a MAC address", n.mac))?,
                        ),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?,
            vsock: Some(VsockConfig {
                cid: GUEST_CID,
                uds: VSOCK_IN_JAIL.into(),
            }),
            rng: true,
            fs: job
                .fs
                .into_iter()
                .map(|f| FsConfig {
                    socket: f.socket,
                    tag: f.tag,
                })
                .collect(),
        },
        confine,
        seccomp: filters,
    };
    let reason = match run_vm(config) {
        Ok(report) => report.reason.to_string(),
        Err(e) => husk_vmm::exit::error_chain(&e),
    };
    let line = serde_json::to_string(&VmmReport { reason }).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seccomp_kill_is_named_as_such() {
        let s = std::process::ExitStatus::from_raw(libc::SIGSYS);
        assert!(describe_status(s).contains("killed by seccomp"));
        let s = std::process::ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(describe_status(s), "the VMM was killed by signal 9");
        let s = std::process::ExitStatus::from_raw(3 << 8);
        assert!(describe_status(s).contains("status 3"));
    }

    #[test]
    fn the_job_round_trips() {
        let job = VmmJob {
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: CMDLINE.into(),
            memory_mib: 256,
            vcpus: 1,
            disk: None,
            fs: vec![VmmFs {
                socket: "../s".into(),
                tag: "t".into(),
            }],
            nets: vec![VmmNet {
                fd: 5,
                mac: "02:00:00:00:00:01".into(),
            }],
            console_log: "/c".into(),
            console_cap_bytes: 1,
            jail: "/j".into(),
            confine: true,
            seccomp: "kill".into(),
            boot_timeout_s: 1,
        };
        let back: VmmJob = serde_json::from_slice(&serde_json::to_vec(&job).unwrap()).unwrap();
        assert_eq!(back.jail, job.jail);
        assert_eq!(back.seccomp, "kill");
        assert_eq!(back.fs[0].tag, "t");
    }
}
