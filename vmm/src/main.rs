//! `husk-vmm`: boot a Linux guest (or any 64-bit kernel) in a KVM microVM from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use husk_vmm::boot::LinuxBoot;
use husk_vmm::builder::{run_vm, Payload, SerialOutput, VmConfig};
use husk_vmm::devices::virtio::attach::VirtioConfig;
use husk_vmm::devices::virtio::config::{DiskConfig, FsConfig, NetConfig, VsockConfig};
use husk_vmm::host::{self, HostKvm};
use husk_vmm::memory::MemoryBacking;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use vmm_sys_util::terminal::Terminal;

/// Kernel command line used when --cmdline is not given.
const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check quiet";

/// Exit code when the host cannot run the guest at all.
const EXIT_HOST_UNSUITABLE: u8 = 7;
/// Exit code for configuration and start-up errors.
const EXIT_ERROR: u8 = 1;

/// Boot a Linux kernel in a KVM microVM and run it until it powers off, reboots or fails.
///
/// The guest gets the given memory and vCPUs, a serial console (COM1, ttyS0) on stdout, an
/// i8042 whose reset ends the VM, and the husk control page at 0xd0000000 (write the byte 123
/// there to mark boot complete; `devmem 0xd0000000 8 123` from busybox).
///
/// Exit status: 0 guest powered off or rebooted; 1 bad arguments or set-up error; 3 guest
/// panic; 4 triple fault; 5 KVM error; 6 no sign of life within --boot-timeout; 7 this host
/// cannot boot a stock kernel (no KVM, or PVM).
#[derive(Debug, Parser)]
#[command(name = "husk-vmm", version, about, long_about)]
struct Args {
    /// Uncompressed ELF vmlinux or bzImage to boot.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,

    /// Initramfs (cpio, optionally compressed) to load.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,

    /// Kernel command line; replaces the default.
    #[arg(long, value_name = "STRING", default_value = DEFAULT_CMDLINE)]
    cmdline: String,

    /// Words appended to the kernel command line (e.g. "init=/bin/sh").
    #[arg(long, value_name = "STRING")]
    append: Option<String>,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    memory_mib: u64,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    vcpus: u8,

    /// Where the guest's serial console goes: "stdout", "none" or a file path.
    #[arg(long, value_name = "stdout|none|PATH", default_value = "stdout")]
    serial: String,

    /// When --serial is a file: the most it keeps, in MiB (the newest output).
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    serial_cap_mib: u64,

    /// Forward stdin to the guest's serial console (raw mode when stdin is a terminal).
    #[arg(long)]
    serial_input: bool,

    /// Back guest RAM with a memfd instead of anonymous memory.
    #[arg(long)]
    memfd: bool,

    /// Seconds to wait for the guest's first device access before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    boot_timeout: u64,

    /// Write a JSON summary (exit reason, VMM start-up ms, kernel entry to boot marker ms,
    /// VMM RSS outside guest memory) to this file.
    #[arg(long, value_name = "PATH")]
    report_json: Option<PathBuf>,

    /// Try to boot even on a PVM host, where a stock kernel is known not to boot.
    #[arg(long)]
    allow_pvm: bool,

    /// A virtio-blk disk from a raw image or block device; repeatable (vda, vdb, ... in order).
    /// `serial` is what the guest reads from /sys/block/vdX/serial.
    #[arg(long = "disk", value_name = "path=P[,ro=on][,serial=S]")]
    disks: Vec<DiskConfig>,

    /// A virtio-vsock device with guest CID N. Host side: connect to PATH and send
    /// "CONNECT <port>\n" to reach a guest port; guest connections to port P go to PATH_P.
    #[arg(long, value_name = "cid=N,uds=PATH")]
    vsock: Option<VsockConfig>,

    /// A virtio-net card on a TAP interface (opened by name, or an inherited fd); repeatable.
    #[arg(long = "net", value_name = "tap=NAME[,mac=M]|fd=N[,mac=M]")]
    nets: Vec<NetConfig>,

    /// A virtio-rng device fed from the host's /dev/urandom.
    #[arg(long)]
    rng: bool,

    /// A virtio-fs device served by a vhost-user backend (virtiofsd) listening on PATH,
    /// connected at start-up; the guest mounts it with `mount -t virtiofs TAG DIR`.
    /// Repeatable. Needs --memfd (virtiofsd maps guest RAM).
    #[arg(long = "fs", value_name = "socket=PATH,tag=TAG")]
    fs: Vec<FsConfig>,

    /// Confine the VMM once the VM is built and before the guest runs: new mount, network,
    /// IPC and UTS namespaces, DIR (read-only) as its whole filesystem, no capabilities,
    /// no_new_privs (root only). The process starts in DIR, so give `--vsock uds=NAME` relative
    /// to it for guest-initiated connections (NAME_P) to keep working.
    #[arg(long, value_name = "DIR")]
    jail: Option<PathBuf>,

    /// Per-thread seccomp allow-lists (vCPU threads, the event-loop thread): "kill" (a syscall
    /// outside the list kills the VMM with SIGSYS), "log" (allowed, logged by the kernel as
    /// `audit: type=1326`), "off".
    #[arg(long, value_name = "kill|log|off", default_value = "off")]
    seccomp: String,

    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    log_level: String,
}

fn main() -> ExitCode {
    let vmm_start = Instant::now();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .finish()
        .with(husk_vmm::logging::LogThrottle::default())
        .init();

    let host = host::detect();
    match &host {
        HostKvm::Pvm if args.allow_pvm => {
            eprintln!("husk-vmm: warning: {}", host.describe());
        }
        h if !h.can_boot_stock_kernel() => {
            eprintln!("husk-vmm: {}", h.describe());
            return ExitCode::from(EXIT_HOST_UNSUITABLE);
        }
        h => tracing::info!("host: {}", h.describe()),
    }

    match run(args, vmm_start) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "husk-vmm: error: {}",
                husk_vmm::exit::error_chain(e.as_ref())
            );
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(args: Args, vmm_start: Instant) -> anyhow::Result<ExitCode> {
    let stop = husk_vmm::exit::stop_on_terminate_signals().context("installing signal handlers")?;
    if !args.fs.is_empty() && !args.memfd {
        anyhow::bail!(
            "--fs needs --memfd: virtiofsd must map guest RAM, which only a memfd allows"
        );
    }
    let seccomp = match args.seccomp.as_str() {
        "off" => None,
        v => Some(
            husk_vmm::seccomp::Filters::new(
                v.parse()
                    .map_err(|e| anyhow::anyhow!("--seccomp {e} or off"))?,
            )
            .context("--seccomp")?,
        ),
    };
    // Opened now: a jailed VMM can no longer reach the path.
    let report_file = match &args.report_json {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("--report-json {}", path.display()))?,
        ),
        None => None,
    };
    let confine: Option<husk_vmm::builder::Confine> = match &args.jail {
        Some(dir) => {
            std::env::set_current_dir(dir).with_context(|| format!("--jail {}", dir.display()))?;
            let dir = dir.clone();
            Some(Box::new(move || {
                husk_vmm::jail::enter(&dir)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }))
        }
        None => None,
    };
    let serial = match args.serial.as_str() {
        "stdout" => SerialOutput::Stdout,
        "none" => SerialOutput::Discard,
        path => SerialOutput::File {
            path: path.into(),
            cap_bytes: args.serial_cap_mib << 20,
        },
    };
    let mut cmdline = args.cmdline.clone();
    if let Some(extra) = &args.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let stdin = std::io::stdin();
    let raw_tty = args.serial_input && stdin.lock().set_raw_mode().is_ok();
    let config = VmConfig {
        memory_mib: args.memory_mib,
        vcpus: args.vcpus,
        payload: Payload::Linux(LinuxBoot {
            kernel: args.kernel,
            initrd: args.initrd,
            cmdline,
        }),
        serial,
        serial_input: args.serial_input,
        backing: if args.memfd {
            MemoryBacking::Memfd
        } else {
            MemoryBacking::Anonymous
        },
        sign_of_life_timeout: Duration::from_secs(args.boot_timeout),
        vmm_start,
        stop: Some(stop),
        devices: VirtioConfig {
            disks: args.disks,
            nets: args.nets,
            vsock: args.vsock,
            rng: args.rng,
            fs: args.fs,
        },
        confine,
        seccomp,
    };
    let report = run_vm(config);
    if raw_tty {
        let _ = stdin.lock().set_canon_mode();
    }
    let report = report?;
    eprintln!("husk-vmm: {}", report.reason);
    if let Some(ms) = report.entry_to_marker_ms {
        eprintln!(
            "husk-vmm: boot complete {ms:.1} ms after kernel entry (VMM start-up {:.1} ms)",
            report.startup_ms.unwrap_or(f64::NAN)
        );
    }
    if let (Some(mut file), Some(path)) = (report_file, &args.report_json) {
        use std::io::Write;
        file.write_all((report.to_json() + "\n").as_bytes())
            .with_context(|| format!("--report-json {}", path.display()))?;
    }
    Ok(ExitCode::from(report.reason.exit_code() as u8))
}
