//! Building and running a VM, in the boot order:
//!
//! 1. create the KVM VM (irqchip, PIT) and guest memory, register memory;
//! 2. create the buses and legacy devices (COM1 on an irqfd, i8042, control page);
//! 3. load the payload (kernel, initrd, cmdline, zero page, MP table, page tables, GDT);
//! 4. create and configure every vCPU, then start their threads;
//! 5. run the device event loop on this thread until a vCPU, a device or the host asks to stop;
//! 6. stop and join the vCPUs and report why the VM ended.
//!
//! Owns: the order above and the run loop. Knows nothing about containers.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::{self, BootLayout, LinuxBoot};
use crate::devices::bus::Bus;
use crate::devices::capped_log::CappedLog;
use crate::devices::control::{BootTimes, ControlPage};
use crate::devices::legacy::I8042;
use crate::devices::serial::{ConsoleState, ConsoleVerdict, ConsoleWatcher, Serial};
use crate::devices::virtio::attach::{attach as attach_virtio, VirtioConfig};
use crate::event_loop::{ConsoleInput, ExitWatcher};
use crate::exit::{ExitReason, ExitSignal};
use crate::layout::{
    CONTROL_PAGE_SIZE, CONTROL_PAGE_START, I8042_PORT_BASE, MAX_VCPUS, SERIAL_IRQ, SERIAL_PORT_BASE,
};
use crate::memory::{create_guest_memory, GuestMemoryMmap, MemoryBacking};
use crate::seccomp::Filters;
use crate::vstate::vcpu::{stop_all, StartGate, Vcpu, VcpuContext, VcpuHandle, STOP_DEADLINE};
use crate::vstate::vm::Vm;

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A configuration value is out of range.
    #[error("{field}: {message}")]
    Config {
        /// The field (CLI flag) at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// VM creation.
    #[error(transparent)]
    Vm(#[from] crate::vstate::vm::VmError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// Loading the payload.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] crate::vstate::vcpu::VcpuError),
    /// Device setup.
    #[error("device setup: {0}")]
    Device(String),
    /// Opening the serial output file.
    #[error("serial output {path}: {source}")]
    SerialFile {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(event_manager::Error),
    /// Confining the VMM (jail or seccomp) failed; the guest never ran.
    #[error("confining the VMM: {0}")]
    Confine(String),
}

/// What the guest runs.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A Linux kernel.
    Linux(LinuxBoot),
    /// Raw 64-bit code copied to `load_addr` and entered in long mode with the boot page tables;
    /// `start_all_vcpus` lets the APs run it too (each sees its own APIC id in CPUID). For tests.
    #[cfg(feature = "test-utils")]
    Flat {
        /// Machine code.
        code: Vec<u8>,
        /// Where it goes and where RIP starts.
        load_addr: u64,
        /// Whether the APs start at the entry instead of waiting for INIT/SIPI.
        start_all_vcpus: bool,
    },
}

/// Where COM1's output goes.
pub enum SerialOutput {
    /// The VMM's stdout.
    Stdout,
    /// A file (created or truncated, mode 0600) that keeps at most `cap_bytes` of the newest
    /// output ([`crate::devices::capped_log`]; 8 MiB is
    /// [`DEFAULT_CAP_BYTES`](crate::devices::capped_log::DEFAULT_CAP_BYTES)).
    File {
        /// The file.
        path: PathBuf,
        /// The most it keeps.
        cap_bytes: u64,
    },
    /// Any writer (tests capture output this way).
    Writer(Box<dyn Write + Send>),
    /// Nowhere.
    Discard,
}

/// Everything needed to run one VM.
pub struct VmConfig {
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPU count.
    pub vcpus: u8,
    /// What to boot.
    pub payload: Payload,
    /// COM1 output.
    pub serial: SerialOutput,
    /// Forward the VMM's stdin to COM1.
    pub serial_input: bool,
    /// Anonymous or memfd RAM.
    pub backing: MemoryBacking,
    /// Give up if the guest has not touched any device by then.
    pub sign_of_life_timeout: Duration,
    /// When the VMM started, for the start-up metric.
    pub vmm_start: Instant,
    /// Set from outside (a signal handler) to stop the VM.
    pub stop: Option<Arc<AtomicBool>>,
    /// virtio-mmio devices (disks, network cards, vsock, rng).
    pub devices: VirtioConfig,
    /// Confines the process once the VM is built (memory loaded, devices holding their fds,
    /// vCPUs configured) and before any vCPU runs, e.g. with [`crate::jail::enter`]. Called
    /// on the thread that runs the VM while it is the process's only VMM thread.
    pub confine: Option<Confine>,
    /// Seccomp filters: each vCPU thread installs its own before its first `KVM_RUN`, the
    /// thread running the VM installs its own before any vCPU runs.
    pub seccomp: Option<Filters>,
}

/// See [`VmConfig::confine`].
pub type Confine = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// How a VM ended, with the VMM's own measurements.
#[derive(Debug, Clone)]
pub struct VmReport {
    /// Why it ended.
    pub reason: ExitReason,
    /// VMM start → boot vCPU's first KVM_RUN.
    pub startup_ms: Option<f64>,
    /// Kernel entry → boot-complete marker.
    pub entry_to_marker_ms: Option<f64>,
    /// Resident memory of the VMM process outside guest RAM, in KiB, measured at the end.
    pub rss_outside_guest_kib: Option<u64>,
    /// Total time the VM ran.
    pub run_time: Duration,
}

impl VmReport {
    /// The report as one JSON object (for benchmark scripts).
    pub fn to_json(&self) -> String {
        let num = |v: Option<f64>| {
            v.map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "null".into())
        };
        format!(
            "{{\"exit\":\"{}\",\"exit_code\":{},\"vmm_startup_ms\":{},\"kernel_entry_to_marker_ms\":{},\"rss_outside_guest_kib\":{},\"run_time_ms\":{:.3}}}",
            self.reason.to_string().replace('\\', "\\\\").replace('"', "'"),
            self.reason.exit_code(),
            num(self.startup_ms),
            num(self.entry_to_marker_ms),
            self.rss_outside_guest_kib
                .map(|v| v.to_string())
                .unwrap_or_else(|| "null".into()),
            self.run_time.as_secs_f64() * 1e3
        )
    }
}

fn config_err(field: &'static str, message: impl Into<String>) -> BuildError {
    BuildError::Config {
        field,
        message: message.into(),
    }
}

fn validate(config: &VmConfig) -> Result<(), BuildError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(config_err(
            "vcpus",
            format!("{} is out of range 1..={MAX_VCPUS}", config.vcpus),
        ));
    }
    if config.memory_mib < 64 || config.memory_mib > (1 << 20) {
        return Err(config_err(
            "memory-mib",
            format!("{} is out of range 64..=1048576", config.memory_mib),
        ));
    }
    Ok(())
}

fn device_err(what: &str) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |e| BuildError::Device(format!("{what}: {e}"))
}

/// Builds the VM described by `config`, runs it to the end and reports.
pub fn run_vm(mut config: VmConfig) -> Result<VmReport, BuildError> {
    validate(&config)?;
    let mem_size = config.memory_mib << 20;
    let times = BootTimes::new(config.vmm_start);

    // 1. VM and memory.
    let vm = Vm::new()?;
    let mem = create_guest_memory(mem_size, config.backing)?;
    vm.register_memory(&mem)?;

    // 2. Buses and legacy devices.
    let exit = ExitSignal::new().map_err(device_err("exit eventfd"))?;
    let pio = Arc::new(Bus::new());
    let mmio = Arc::new(Bus::new());
    let console = ConsoleState::default();
    let serial_out = std::mem::replace(&mut config.serial, SerialOutput::Discard);
    let out: Box<dyn Write + Send> = match serial_out {
        // An unbuffered duplicate of fd 1: Stdout's line buffering would hold back prompts.
        SerialOutput::Stdout => Box::new(std::fs::File::from(
            std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(device_err("serial stdout"))?,
        )),
        SerialOutput::File { path, cap_bytes } => Box::new(
            std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|f| CappedLog::new(f, cap_bytes))
                .map_err(|source| BuildError::SerialFile { path, source })?,
        ),
        SerialOutput::Writer(w) => w,
        SerialOutput::Discard => Box::new(std::io::sink()),
    };
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(device_err("serial irqfd"))?;
    vm.register_irqfd(&serial_irq, SERIAL_IRQ)?;
    let serial = Arc::new(Mutex::new(Serial::new(
        serial_irq,
        ConsoleWatcher::new(out, console.clone(), Some(exit.clone())),
    )));
    let bus_err = |e: crate::devices::bus::BusError| BuildError::Device(e.to_string());
    pio.insert(serial.clone(), u64::from(SERIAL_PORT_BASE), 8)
        .map_err(bus_err)?;
    pio.insert(
        Arc::new(Mutex::new(I8042::new(exit.clone()))),
        u64::from(I8042_PORT_BASE),
        5,
    )
    .map_err(bus_err)?;
    mmio.insert(
        Arc::new(Mutex::new(ControlPage::new(times.clone(), exit.clone()))),
        CONTROL_PAGE_START,
        CONTROL_PAGE_SIZE,
    )
    .map_err(bus_err)?;
    let virtio = attach_virtio(
        &config.devices,
        &mem,
        &mmio,
        &mut |evt, addr, data| {
            vm.register_ioevent(evt, addr, data)
                .map_err(|e| e.to_string())
        },
        &mut |evt, gsi| vm.register_irqfd(evt, gsi).map_err(|e| e.to_string()),
    )
    .map_err(|e| BuildError::Device(e.to_string()))?;

    // 3. Payload (the kernel learns about virtio-mmio devices from its command line).
    let mut payload = config.payload.clone();
    match &mut payload {
        Payload::Linux(linux) => {
            for entry in &virtio.cmdline {
                linux.cmdline.push(' ');
                linux.cmdline.push_str(entry);
            }
        }
        #[cfg(feature = "test-utils")]
        Payload::Flat { .. } => {}
    }
    let (layout, runnable) = load_payload(&mem, &payload, mem_size, config.vcpus)?;

    // 4. vCPUs: configure all before starting any.
    let vcpus = (0..config.vcpus)
        .map(|i| Vcpu::new(&vm, i, config.vcpus, &layout, runnable))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(confine) = config.confine.take() {
        confine().map_err(BuildError::Confine)?;
    }
    let filters = config.seccomp.take();
    let gate = filters.as_ref().map(|_| Arc::new(StartGate::default()));
    let ctx = VcpuContext {
        pio: pio.clone(),
        mmio: mmio.clone(),
        exit: exit.clone(),
        times: times.clone(),
        filter: filters.as_ref().map(|f| Arc::new(f.vcpu.clone())),
        gate: gate.clone(),
    };
    let mut handles = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        match vcpu.start(ctx.clone()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                if let Some(g) = &gate {
                    g.release(false);
                }
                exit.request(ExitReason::Stopped);
                stop_vcpus(&mut handles);
                return Err(e.into());
            }
        }
    }
    if let (Some(f), Some(g)) = (&filters, &gate) {
        // The vCPU threads exist; from here this thread only runs the event loop and the
        // teardown, under its own list.
        if let Err(e) = crate::seccomp::install("vmm", &f.vmm) {
            g.release(false);
            exit.request(ExitReason::Stopped);
            stop_vcpus(&mut handles);
            return Err(BuildError::Confine(e.to_string()));
        }
        g.release(true);
    }
    let started = Instant::now();

    // 5. Event loop.
    let result = event_loop(
        &config,
        &exit,
        &serial,
        &pio,
        &mmio,
        started,
        virtio.subscribers,
    );
    if let Err(e) = &result {
        tracing::error!("{e}");
        exit.request(ExitReason::Stopped);
    }

    // 6. Stop, classify, measure.
    stop_vcpus(&mut handles);
    result?;
    match console.verdict() {
        ConsoleVerdict::Panic => exit.refine_reboot(ExitReason::Panic),
        ConsoleVerdict::PowerDown => exit.refine_reboot(ExitReason::Poweroff),
        ConsoleVerdict::None => {}
    }
    let reason = exit.reason().unwrap_or(ExitReason::Stopped);
    let report = VmReport {
        reason,
        startup_ms: times.startup_ms(),
        entry_to_marker_ms: times.entry_to_marker_ms(),
        // /proc is out of reach once confined (and opening files is not on the list).
        rss_outside_guest_kib: if filters.is_some() {
            None
        } else {
            rss_outside_guest_kib(&mem)
        },
        run_time: started.elapsed(),
    };
    drop(vm);
    Ok(report)
}

fn load_payload(
    mem: &GuestMemoryMmap,
    payload: &Payload,
    mem_size: u64,
    vcpus: u8,
) -> Result<(BootLayout, bool), BuildError> {
    match payload {
        Payload::Linux(linux) => Ok((boot::load_linux(mem, linux, mem_size, vcpus)?, false)),
        #[cfg(feature = "test-utils")]
        Payload::Flat {
            code,
            load_addr,
            start_all_vcpus,
        } => {
            use vm_memory::{Bytes, GuestAddress};
            mem.write_slice(code, GuestAddress(*load_addr))
                .map_err(|source| boot::BootError::Write {
                    what: "the flat payload",
                    source,
                })?;
            boot::write_mptable(mem, vcpus)?;
            let cr3 = boot::write_cpu_tables(mem)?;
            Ok((
                BootLayout {
                    entry: GuestAddress(*load_addr),
                    cr3,
                },
                *start_all_vcpus,
            ))
        }
    }
}

fn event_loop(
    config: &VmConfig,
    exit: &ExitSignal,
    serial: &Arc<Mutex<Serial>>,
    pio: &Bus,
    mmio: &Bus,
    started: Instant,
    devices: Vec<Box<dyn MutEventSubscriber + Send>>,
) -> Result<(), BuildError> {
    let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> =
        EventManager::new().map_err(BuildError::EventLoop)?;
    let exit_evt = exit
        .eventfd()
        .try_clone()
        .map_err(device_err("exit eventfd"))?;
    em.add_subscriber(Box::new(ExitWatcher::new(exit_evt)));
    for device in devices {
        em.add_subscriber(device);
    }
    if config.serial_input {
        em.add_subscriber(Box::new(ConsoleInput::new(
            std::io::stdin(),
            serial.clone(),
        )));
    }
    let mut alive = false;
    while !exit.is_set() {
        em.run_with_timeout(50).map_err(BuildError::EventLoop)?;
        if !alive {
            alive = pio.touched() || mmio.touched();
            if !alive && started.elapsed() > config.sign_of_life_timeout {
                exit.request(ExitReason::NoSignOfLife {
                    timeout_ms: config.sign_of_life_timeout.as_millis() as u64,
                });
            }
        }
        if config
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            exit.request(ExitReason::Stopped);
        }
    }
    Ok(())
}

/// Stops every vCPU thread, reporting (not waiting forever for) any that stays in `KVM_RUN`.
fn stop_vcpus(handles: &mut [VcpuHandle]) {
    let stuck = stop_all(handles, STOP_DEADLINE);
    if !stuck.is_empty() {
        tracing::error!(
            "vCPU(s) {stuck:?} still in KVM_RUN {} ms after being kicked; leaving them behind",
            STOP_DEADLINE.as_millis()
        );
    }
}

/// Sums `Rss:` of every mapping in /proc/self/smaps that is not guest RAM.
pub fn rss_outside_guest_kib(mem: &GuestMemoryMmap) -> Option<u64> {
    let guest: Vec<(u64, u64)> = mem
        .iter()
        .map(|r| (r.as_ptr() as u64, r.as_ptr() as u64 + r.len()))
        .collect();
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    Some(rss_excluding(&smaps, &guest))
}

/// Pure part of [`rss_outside_guest_kib`].
pub fn rss_excluding(smaps: &str, excluded: &[(u64, u64)]) -> u64 {
    let mut total = 0;
    let mut skip = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some((start, _)) = first.split_once('-') {
            if let Ok(start) = u64::from_str_radix(start, 16) {
                skip = excluded.iter().any(|(s, e)| start >= *s && start < *e);
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("Rss:") {
            if !skip {
                total += rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_skips_excluded_mappings() {
        let smaps = "\
1000-2000 rw-p 00000000 00:00 0
Rss:                  12 kB
7f00-8000 rw-p 00000000 00:00 0
Rss:                 400 kB
9000-a000 r-xp 00000000 00:00 0 /bin/x
Rss:                   8 kB
";
        assert_eq!(rss_excluding(smaps, &[(0x7f00, 0x8000)]), 20);
        assert_eq!(rss_excluding(smaps, &[]), 420);
    }

    #[test]
    fn report_json_is_one_object() {
        let r = VmReport {
            reason: ExitReason::Reboot,
            startup_ms: Some(1.5),
            entry_to_marker_ms: None,
            rss_outside_guest_kib: Some(900),
            run_time: Duration::from_millis(20),
        };
        let j = r.to_json();
        assert!(j.starts_with('{') && j.ends_with('}'));
        assert!(j.contains("\"vmm_startup_ms\":1.500"));
        assert!(j.contains("\"kernel_entry_to_marker_ms\":null"));
        assert!(j.contains("\"exit_code\":0"));
    }

    #[test]
    fn bad_config_names_the_field() {
        let cfg = |vcpus, memory_mib| VmConfig {
            memory_mib,
            vcpus,
            payload: Payload::Linux(LinuxBoot {
                kernel: "/nonexistent".into(),
                initrd: None,
                cmdline: String::new(),
            }),
            serial: SerialOutput::Discard,
            serial_input: false,
            backing: MemoryBacking::Anonymous,
            sign_of_life_timeout: Duration::from_secs(1),
            vmm_start: Instant::now(),
            stop: None,
            devices: VirtioConfig::default(),
            confine: None,
            seccomp: None,
        };
        let e = run_vm(cfg(0, 128)).unwrap_err();
        assert!(e.to_string().starts_with("vcpus:"), "{e}");
        let e = run_vm(cfg(1, 16)).unwrap_err();
        assert!(e.to_string().starts_with("memory-mib:"), "{e}");
    }
}
