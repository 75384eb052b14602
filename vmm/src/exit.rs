//! Why a VM stopped, and the one place that records it.
//!
//! Owns: [`ExitReason`], the process exit code for each, and [`ExitSignal`], the first-wins latch
//! vCPU threads and devices use to ask the VMM to stop; [`error_chain`], the one-line form of an
//! error that husk-vmm and husk print on the way out.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the guest stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (husk control page, `reboot: Power down`, or a KVM system event).
    Poweroff,
    /// The guest rebooted (i8042 reset); husk never restarts a guest.
    Reboot,
    /// The guest kernel panicked.
    Panic,
    /// A vCPU hit a triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault {
        /// Which vCPU.
        vcpu: u8,
        /// Its RIP, if it could be read.
        rip: Option<u64>,
    },
    /// KVM failed or reported an exit the VMM cannot handle.
    KvmError {
        /// Which vCPU.
        vcpu: u8,
        /// What happened.
        detail: String,
        /// RIP, if it could be read.
        rip: Option<u64>,
    },
    /// The guest showed no sign of life (no device access) within the timeout.
    NoSignOfLife {
        /// The timeout in milliseconds.
        timeout_ms: u64,
    },
    /// The VMM was asked to stop from outside (signal, API).
    Stopped,
}

impl ExitReason {
    /// The process exit code `husk-vmm` uses for this reason.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::Poweroff | ExitReason::Reboot | ExitReason::Stopped => 0,
            ExitReason::Panic => 3,
            ExitReason::TripleFault { .. } => 4,
            ExitReason::KvmError { .. } => 5,
            ExitReason::NoSignOfLife { .. } => 6,
        }
    }
}

/// The RIP of a freshly reset x86 vCPU (CS base 0xffff0000).
const RESET_VECTOR_RIP: u64 = 0xfff0;

fn fmt_rip(rip: &Option<u64>) -> String {
    rip.map(|r| format!("{r:#x}"))
        .unwrap_or_else(|| "unknown".into())
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Poweroff => write!(f, "guest powered off"),
            ExitReason::Reboot => write!(f, "guest rebooted (i8042 reset); the VM ends"),
            ExitReason::Panic => write!(f, "guest kernel panicked"),
            // On AMD, KVM re-initialises the vCPU after a shutdown intercept (the VMCB is
            // undefined then), so the RIP read afterwards is the reset vector, not the fault's.
            ExitReason::TripleFault {
                vcpu,
                rip: Some(RESET_VECTOR_RIP),
            } => write!(
                f,
                "vCPU {vcpu} triple-faulted (RIP unknown: it reads as the reset vector {RESET_VECTOR_RIP:#x}, as KVM leaves it after a shutdown on AMD)"
            ),
            ExitReason::TripleFault { vcpu, rip } => {
                write!(f, "vCPU {vcpu} triple-faulted at RIP {}", fmt_rip(rip))
            }
            ExitReason::KvmError { vcpu, detail, rip } => {
                write!(f, "vCPU {vcpu}: {detail} at RIP {}", fmt_rip(rip))
            }
            ExitReason::NoSignOfLife { timeout_ms } => write!(
                f,
                "guest showed no sign of life (no port or MMIO access) within {timeout_ms} ms"
            ),
            ExitReason::Stopped => write!(f, "stopped by the host"),
        }
    }
}

/// First-wins latch for the exit reason, plus an eventfd the event loop waits on.
#[derive(Debug, Clone)]
pub struct ExitSignal {
    inner: Arc<ExitInner>,
}

#[derive(Debug)]
struct ExitInner {
    set: AtomicBool,
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitSignal {
    /// A fresh, unset latch.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            inner: Arc::new(ExitInner {
                set: AtomicBool::new(false),
                reason: Mutex::new(None),
                evt: EventFd::new(EFD_NONBLOCK)?,
            }),
        })
    }

    /// Records `reason` unless one is already recorded, and wakes the event loop.
    pub fn request(&self, reason: ExitReason) {
        let mut slot = self.inner.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::debug!(%reason, "exit requested");
            *slot = Some(reason);
        }
        self.inner.set.store(true, Ordering::Release);
        drop(slot);
        // A full counter still wakes the loop; nothing to do on error.
        let _ = self.inner.evt.write(1);
    }

    /// Replaces a recorded [`ExitReason::Reboot`] with a more precise reason learned later
    /// (the console said the kernel panicked or powered down before resetting).
    pub fn refine_reboot(&self, reason: ExitReason) {
        let mut slot = self.inner.reason.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Some(ExitReason::Reboot)) {
            *slot = Some(reason);
        }
    }

    /// Whether any reason has been recorded (lock-free; vCPU threads poll it).
    pub fn is_set(&self) -> bool {
        self.inner.set.load(Ordering::Acquire)
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The eventfd written on every request.
    pub fn eventfd(&self) -> &EventFd {
        &self.inner.evt
    }
}

/// Set by [`stop_on_terminate_signals`]' handler; the VM's event loop polls a clone
/// (`VmConfig::stop`).
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_terminate(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // OnceLock::get is one atomic load: safe in a signal handler. STOP is set before the
    // handlers are installed.
    if let Some(stop) = STOP.get() {
        stop.store(true, Ordering::Relaxed);
    }
}

/// Makes SIGTERM, SIGINT and SIGHUP stop the VM: returns the flag their handler sets, for
/// `VmConfig::stop` (the husk-vmm binary and husk's jailed VMM process).
pub fn stop_on_terminate_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = STOP.get_or_init(Default::default).clone();
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        vmm_sys_util::signal::register_signal_handler(sig, on_terminate)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(stop)
}

/// An error and its causes on one line, `outer: inner: root`, skipping a cause whose text the
/// line already ends with (a wrapper that repeats its source's message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_causes_once() {
        let e = anyhow::anyhow!("root cause")
            .context("loading the kernel")
            .context("--kernel /x");
        assert_eq!(
            error_chain(e.as_ref()),
            "--kernel /x: loading the kernel: root cause"
        );
        let io = std::io::Error::other("disk full");
        let repeated = anyhow::Error::new(io).context("disk full");
        assert_eq!(error_chain(repeated.as_ref()), "disk full");
    }

    #[test]
    fn first_reason_wins_and_wakes() {
        let s = ExitSignal::new().unwrap();
        assert_eq!(s.reason(), None);
        assert!(!s.is_set());
        s.request(ExitReason::Reboot);
        assert!(s.is_set());
        s.request(ExitReason::Poweroff);
        assert_eq!(s.reason(), Some(ExitReason::Reboot));
        assert!(s.eventfd().read().unwrap() >= 1);
    }

    #[test]
    fn reboot_can_be_refined_but_nothing_else() {
        let s = ExitSignal::new().unwrap();
        s.request(ExitReason::Reboot);
        s.refine_reboot(ExitReason::Panic);
        assert_eq!(s.reason(), Some(ExitReason::Panic));
        s.refine_reboot(ExitReason::Poweroff);
        assert_eq!(s.reason(), Some(ExitReason::Panic));
    }

    #[test]
    fn exit_codes_are_distinct_for_failures() {
        let codes = [
            ExitReason::Panic.exit_code(),
            ExitReason::TripleFault { vcpu: 0, rip: None }.exit_code(),
            ExitReason::KvmError {
                vcpu: 0,
                detail: String::new(),
                rip: None,
            }
            .exit_code(),
            ExitReason::NoSignOfLife { timeout_ms: 1 }.exit_code(),
        ];
        let mut d = codes.to_vec();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), codes.len());
        assert_eq!(ExitReason::Poweroff.exit_code(), 0);
        assert!(ExitReason::TripleFault {
            vcpu: 1,
            rip: Some(0x1000)
        }
        .to_string()
        .contains("0x1000"));
        let amd = ExitReason::TripleFault {
            vcpu: 0,
            rip: Some(0xfff0),
        }
        .to_string();
        assert!(amd.contains("RIP unknown"), "{amd}");
    }
}
