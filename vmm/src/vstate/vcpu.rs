//! vCPUs: configuration for the 64-bit entry, and one thread each running `KVM_RUN`.
//!
//! A vCPU thread is a small state machine: `Created → Running → Exited`. It leaves `Running`
//! when its guest asks the VM to stop (reset, power off, triple fault), when KVM fails, or when
//! the VMM sets the shared [`ExitSignal`] and kicks it with [`VCPU_KICK_SIGNAL`], which makes
//! `KVM_RUN` return `EINTR`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::{
    kvm_mp_state, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE,
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::VcpuExit;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::{cpuid, regs};
use crate::boot::BootLayout;
use crate::devices::bus::Bus;
use crate::devices::control::BootTimes;
use crate::exit::{ExitReason, ExitSignal};
use crate::vstate::vm::{Vm, VmVcpuFd};

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM ioctl failed.
    #[error("vCPU {index}: {what}: {source}")]
    Kvm {
        /// Which vCPU.
        index: u8,
        /// The operation.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// KVM took fewer MSRs than given.
    #[error("vCPU {index}: KVM_SET_MSRS set {set} of {wanted} boot MSRs")]
    Msrs {
        /// Which vCPU.
        index: u8,
        /// How many were set.
        set: usize,
        /// How many were given.
        wanted: usize,
    },
    /// The thread could not be spawned.
    #[error("vCPU {index}: cannot start its thread: {source}")]
    Thread {
        /// Which vCPU.
        index: u8,
        /// The error.
        source: std::io::Error,
    },
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

/// Run state of a vCPU thread, readable from other threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Configured, thread not yet in `KVM_RUN`.
    Created = 0,
    /// In the run loop.
    Running = 1,
    /// The thread has left the run loop.
    Exited = 2,
}

/// The real-time signal that interrupts `KVM_RUN`.
#[allow(non_snake_case)]
pub fn VCPU_KICK_SIGNAL() -> i32 {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result =
            register_signal_handler(VCPU_KICK_SIGNAL(), kick_handler).map_err(VcpuError::Signal);
    });
    result
}

/// A configured vCPU, not yet running.
pub struct Vcpu {
    index: u8,
    fd: VmVcpuFd,
}

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuContext {
    /// Port I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Stop latch.
    pub exit: ExitSignal,
    /// Boot clock (the BSP stamps kernel entry).
    pub times: Arc<BootTimes>,
    /// The seccomp filter each vCPU thread installs before its first `KVM_RUN`.
    pub filter: Option<Arc<seccompiler::BpfProgram>>,
    /// Crossed by every vCPU thread (filter installed) and the VMM thread (its own filter
    /// installed) before any vCPU runs: the guest's first instruction runs confined.
    pub gate: Option<Arc<StartGate>>,
}

/// Holds vCPU threads between "filter installed" and their first `KVM_RUN` until the VMM
/// thread has confined itself too, or tells them to give up (the VMM thread failed).
#[derive(Debug, Default)]
pub struct StartGate {
    open: std::sync::Mutex<Option<bool>>,
    cv: std::sync::Condvar,
}

impl StartGate {
    /// Lets every waiting (and later) vCPU run (`true`) or give up (`false`).
    pub fn release(&self, run: bool) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
        self.cv.notify_all();
    }

    /// Waits for [`StartGate::release`]; true means run.
    pub fn wait(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(run) = *open {
                return run;
            }
            open = self.cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Vcpu {
    /// Creates vCPU `index` of `count` and sets it up for the 64-bit entry described by `boot`.
    /// `runnable` makes an AP start at the entry too instead of waiting for INIT/SIPI (used by
    /// flat test payloads; Linux starts its APs itself).
    pub fn new(
        vm: &Vm,
        index: u8,
        count: u8,
        boot: &BootLayout,
        runnable: bool,
    ) -> Result<Self, VcpuError> {
        let kvm_err = |what| {
            move |source| VcpuError::Kvm {
                index,
                what,
                source,
            }
        };
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;

        let cpuid: CpuId = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut entries = cpuid.as_slice().to_vec();
        cpuid::ensure_topology_leaves(&mut entries);
        cpuid::adjust(&mut entries, index, count, vm.has_tsc_deadline());
        let cpuid = CpuId::from_entries(&entries).expect("CPUID list fits KVM_MAX_CPUID_ENTRIES");
        fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;

        let entries = regs::boot_msrs();
        let msrs = Msrs::from_entries(&entries).expect("boot MSR list fits a kvm_msrs");
        let set = fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if set != entries.len() {
            return Err(VcpuError::Msrs {
                index,
                set,
                wanted: entries.len(),
            });
        }

        fd.set_regs(&regs::boot_regs(boot.entry.0))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        let sregs = fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        fd.set_sregs(&regs::long_mode_sregs(sregs, boot.cr3))
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        fd.set_fpu(&regs::boot_fpu())
            .map_err(kvm_err("KVM_SET_FPU"))?;
        let lapic = fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        fd.set_lapic(&regs::configure_lint(lapic))
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        if runnable && index != 0 {
            fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        }
        Ok(Self { index, fd })
    }

    /// Starts the vCPU thread.
    pub fn start(self, ctx: VcpuContext) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let index = self.index;
        let state = Arc::new(AtomicU8::new(VcpuState::Created as u8));
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || self.run(ctx, thread_state))
            .map_err(|source| VcpuError::Thread { index, source })?;
        Ok(VcpuHandle {
            index,
            thread: Some(thread),
            state,
        })
    }

    fn rip(&self) -> Option<u64> {
        self.fd.get_regs().ok().map(|r| r.rip)
    }

    fn run(mut self, ctx: VcpuContext, state: Arc<AtomicU8>) {
        let confined = match &ctx.filter {
            Some(filter) => crate::seccomp::install("vcpu", filter),
            None => Ok(()),
        };
        let go = ctx.gate.as_ref().is_none_or(|g| g.wait());
        if !go {
            state.store(VcpuState::Exited as u8, Ordering::Release);
            return;
        }
        if let Err(e) = confined {
            ctx.exit.request(ExitReason::KvmError {
                vcpu: self.index,
                detail: e.to_string(),
                rip: None,
            });
            state.store(VcpuState::Exited as u8, Ordering::Release);
            return;
        }
        state.store(VcpuState::Running as u8, Ordering::Release);
        if self.index == 0 {
            let _ = ctx.times.kernel_entry.set(Instant::now());
        }
        while !ctx.exit.is_set() {
            match self.run_once(&ctx) {
                Step::Continue => {}
                Step::Stop(reason) => {
                    ctx.exit.request(reason);
                    break;
                }
            }
        }
        state.store(VcpuState::Exited as u8, Ordering::Release);
    }

    fn run_once(&mut self, ctx: &VcpuContext) -> Step {
        let index = self.index;
        let outcome = match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoOut(port, data) => {
                    ctx.pio.write(u64::from(port), data);
                    Ok(None)
                }
                VcpuExit::IoIn(port, data) => {
                    ctx.pio.read(u64::from(port), data);
                    Ok(None)
                }
                VcpuExit::MmioRead(addr, data) => {
                    ctx.mmio.read(addr, data);
                    Ok(None)
                }
                VcpuExit::MmioWrite(addr, data) => {
                    ctx.mmio.write(addr, data);
                    Ok(None)
                }
                VcpuExit::Intr | VcpuExit::IrqWindowOpen => Ok(None),
                VcpuExit::Hlt => Ok(Some(Fault::Other("guest halted with no in-kernel wake source (KVM_EXIT_HLT)".into()))),
                VcpuExit::Shutdown => Ok(Some(Fault::Triple)),
                VcpuExit::SystemEvent(kind, _) => Ok(Some(match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => Fault::Exit(ExitReason::Poweroff),
                    KVM_SYSTEM_EVENT_RESET => Fault::Exit(ExitReason::Reboot),
                    KVM_SYSTEM_EVENT_CRASH => Fault::Exit(ExitReason::Panic),
                    other => Fault::Other(format!("unknown KVM system event {other}")),
                })),
                VcpuExit::FailEntry(reason, cpu) => Ok(Some(Fault::Other(format!(
                    "KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason:#x} on host CPU {cpu})"
                )))),
                VcpuExit::InternalError => Ok(Some(Fault::Other(
                    "KVM_EXIT_INTERNAL_ERROR (KVM could not emulate an instruction)".into(),
                ))),
                VcpuExit::Exception => Ok(Some(Fault::Other("KVM_EXIT_EXCEPTION".into()))),
                VcpuExit::Unsupported(code) => {
                    Ok(Some(Fault::Other(format!("unhandled KVM exit reason {code}"))))
                }
                other => Ok(Some(Fault::Other(format!("unhandled KVM exit {other:?}")))),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(None) => Step::Continue,
            Ok(Some(Fault::Exit(reason))) => Step::Stop(reason),
            Ok(Some(Fault::Triple)) => Step::Stop(ExitReason::TripleFault {
                vcpu: index,
                rip: self.rip(),
            }),
            Ok(Some(Fault::Other(detail))) => Step::Stop(ExitReason::KvmError {
                vcpu: index,
                detail,
                rip: self.rip(),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                Step::Continue
            }
            Err(e) => Step::Stop(ExitReason::KvmError {
                vcpu: index,
                detail: format!("KVM_RUN failed: {e}"),
                rip: self.rip(),
            }),
        }
    }
}

enum Fault {
    Exit(ExitReason),
    Triple,
    Other(String),
}

enum Step {
    Continue,
    Stop(ExitReason),
}

/// A running vCPU thread.
pub struct VcpuHandle {
    index: u8,
    thread: Option<JoinHandle<()>>,
    state: Arc<AtomicU8>,
}

impl VcpuHandle {
    /// The vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Its current run state.
    pub fn state(&self) -> VcpuState {
        match self.state.load(Ordering::Acquire) {
            0 => VcpuState::Created,
            1 => VcpuState::Running,
            _ => VcpuState::Exited,
        }
    }

    /// Interrupts `KVM_RUN` so the thread notices the exit signal.
    pub fn kick(&self) {
        if let Some(t) = &self.thread {
            if self.state() != VcpuState::Exited {
                let _ = t.kill(VCPU_KICK_SIGNAL());
            }
        }
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the thread.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("vCPU {} thread panicked", self.index);
            }
        }
    }
}

/// How long [`stop_all`] kicks vCPU threads before it gives up on those still in `KVM_RUN`.
pub const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// Sets nothing itself: the caller has already recorded the exit reason. Kicks every vCPU until
/// all threads have left `KVM_RUN` (re-kicking covers a signal that lands just before a thread
/// re-enters it), then joins them. A thread still running after `deadline` is left behind, not
/// waited for forever: its index is returned, and the caller reports it (the process ends
/// soon after, which ends the thread). A VMM that cannot stop must still exit.
pub fn stop_all(handles: &mut [VcpuHandle], deadline: std::time::Duration) -> Vec<u8> {
    let start = std::time::Instant::now();
    loop {
        let mut pending = false;
        for h in handles.iter() {
            if !h.is_finished() {
                h.kick();
                pending = true;
            }
        }
        if !pending || start.elapsed() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut stuck = Vec::new();
    for h in handles.iter_mut() {
        if h.is_finished() {
            h.join();
        } else {
            stuck.push(h.index);
        }
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    fn handle(index: u8, body: impl FnOnce() + Send + 'static) -> VcpuHandle {
        install_kick_handler().unwrap();
        VcpuHandle {
            index,
            thread: Some(std::thread::spawn(body)),
            state: Arc::new(AtomicU8::new(VcpuState::Running as u8)),
        }
    }

    #[test]
    fn stop_all_joins_threads_that_finish() {
        let mut handles = vec![handle(0, || {}), handle(1, || {})];
        assert!(stop_all(&mut handles, Duration::from_secs(5)).is_empty());
        assert!(handles.iter().all(|h| h.thread.is_none()), "joined");
    }

    #[test]
    fn stop_all_gives_up_on_a_thread_that_never_leaves() {
        // A thread that ignores kicks stands for a vCPU stuck in KVM_RUN: stop_all must return
        // after its deadline and name it, not spin forever (a hung husk-vmm ignores SIGTERM).
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let mut handles = vec![
            handle(0, || {}),
            handle(1, move || {
                while !r.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }),
        ];
        let t0 = Instant::now();
        assert_eq!(stop_all(&mut handles, Duration::from_millis(200)), vec![1]);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(handles[0].thread.is_none(), "the finished one is joined");
        release.store(true, Ordering::Relaxed);
        handles[1].join();
    }
}
