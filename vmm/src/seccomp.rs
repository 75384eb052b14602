//! Per-thread seccomp allow-lists for the VMM (Firecracker's model): every vCPU thread and the
//! device event-loop thread install their own filter before the guest runs its first
//! instruction, so a bug in device emulation or in the KVM exit handling can only make the
//! syscalls listed here. Anything else kills the whole process with SIGSYS
//! (`SECCOMP_RET_KILL_PROCESS`), which the supervisor reports as "killed by seccomp".
//!
//! The lists were measured, not guessed: each VMM thread of a real guest (boot, virtio-blk,
//! vsock streams, rng, console, power-off) ran with [`Violation::Log`], and every syscall the
//! kernel logged (`audit: type=1326`) was either added here with the reason or removed from
//! the code. `docs/security.md` lists them per thread.
//!
//! Owns: the lists and the compiled programs. Installing is [`install`] (the calling thread
//! only: a filter is per thread, and each thread of the VMM installs its own).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused a rule (a bug in the lists below).
    #[error("building the {thread} seccomp filter: {source}")]
    Build {
        /// Which thread's filter.
        thread: &'static str,
        /// seccompiler's error.
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter.
    #[error("installing the {thread} seccomp filter: {source}")]
    Install {
        /// Which thread's filter.
        thread: &'static str,
        /// seccompiler's error.
        source: seccompiler::Error,
    },
}

/// What a syscall outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Kill the process with SIGSYS (production).
    Kill,
    /// Allow it and have the kernel log it (`audit: type=1326 ... syscall=N`): for measuring
    /// what a new device needs.
    Log,
}

impl std::str::FromStr for Violation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill" => Ok(Violation::Kill),
            "log" => Ok(Violation::Log),
            other => Err(format!("'{other}': expected kill or log")),
        }
    }
}

/// The compiled filters, one per kind of VMM thread.
#[derive(Debug, Clone)]
pub struct Filters {
    /// For each vCPU thread.
    pub vcpu: BpfProgram,
    /// For the thread that runs the device event loop (and owns the VM's teardown).
    pub vmm: BpfProgram,
}

impl Filters {
    /// Compiles both filters.
    pub fn new(violation: Violation) -> Result<Filters, SeccompError> {
        Ok(Filters {
            vcpu: compile("vcpu", vcpu_rules(), violation)?,
            vmm: compile("vmm", vmm_rules(), violation)?,
        })
    }
}

/// Installs `program` on the calling thread (and sets `no_new_privs`, which a filter needs).
pub fn install(thread: &'static str, program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(|source| SeccompError::Install { thread, source })
}

/// Syscalls every VMM thread makes: memory (the allocator), futexes (locks, channels, joins),
/// signals (the vCPU kick, SIGTERM's handler returning), logging (write), time and exit.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    libc::SYS_getrandom,
    // std checks an fd is open before closing it (F_GETFD, debug builds); F_SETFL/F_GETFL
    // for non-blocking fds
    libc::SYS_fcntl,
];

/// A vCPU thread: `KVM_RUN` and the other KVM vCPU ioctls (only KVM's ioctl type, 0xAE),
/// eventfd writes (irqfds, the exit event) and device reads/writes done on the exit path.
fn vcpu_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|&s| (s, Vec::new())).collect();
    rules.insert(libc::SYS_ioctl, vec![ioctl_type(KVM_IOCTL_TYPE)]);
    // Block requests are processed on the event loop, but MMIO register writes (queue
    // notifications without ioeventfd, config space) run on the vCPU thread.
    // The console log (written on the vCPU thread that writes the UART) is a CappedLog:
    // positioned writes, and truncation when it passes its cap.
    for s in [
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_ftruncate,
        libc::SYS_lseek,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
    ] {
        rules.insert(s, Vec::new());
    }
    rules
}

/// The event-loop thread: epoll, the devices' I/O (disk reads/writes and flushes, vsock Unix
/// sockets, TAP), the console log, stopping vCPUs (tgkill) and joining them, tearing down.
fn vmm_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|&s| (s, Vec::new())).collect();
    for s in [
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_lseek,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_ftruncate,
        libc::SYS_fallocate,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_dup,
        libc::SYS_eventfd2,
        // vsock: the host-side listener (accept), guest-initiated connections (connect to
        // `<uds>_P` inside the jail), stream I/O
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_shutdown,
        libc::SYS_getsockopt,
        libc::SYS_unlink,
        libc::SYS_tgkill,
    ] {
        rules.insert(s, Vec::new());
    }
    // Only Unix sockets (guest-initiated vsock connections).
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)])],
    );
    // KVM (irqfd/ioeventfd are set up before the filter; kept for reset paths), TUN/TTY type
    // 'T' (FIONBIO, TUNSETOFFLOAD) and FIOCLEX.
    rules.insert(
        libc::SYS_ioctl,
        vec![ioctl_type(KVM_IOCTL_TYPE), ioctl_type(TTY_IOCTL_TYPE)],
    );
    rules
}

/// KVM's ioctl type byte (`KVMIO`).
const KVM_IOCTL_TYPE: u64 = 0xAE;
/// The tty/socket/TUN ioctl type byte ('T'): FIONBIO, FIOCLEX, TCGETS, TIOCGWINSZ, TUNSET*.
pub const TTY_IOCTL_TYPE: u64 = 0x54;

// The rule builders below are shared with the supervisor's list (husk's runtime).

/// A condition on the low 32 bits of syscall argument `arg` (0..=5).
pub fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    // Only fails for an argument index above 5, which no caller passes.
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .expect("seccomp condition on argument 0..=5")
}

/// A rule that matches when all `conditions` hold (never empty: an unconditional syscall is
/// an empty rule list in the map).
pub fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    // Only fails for an empty condition list, which no caller passes.
    SeccompRule::new(conditions).expect("non-empty seccomp rule")
}

/// `ioctl(fd, req, ...)` whose request has type byte `ty` (bits 8..16).
pub fn ioctl_type(ty: u64) -> SeccompRule {
    rule(vec![cond(1, SeccompCmpOp::MaskedEq(0xff00), ty << 8)])
}

fn compile(
    thread: &'static str,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    violation: Violation,
) -> Result<BpfProgram, SeccompError> {
    let mismatch = match violation {
        Violation::Kill => SeccompAction::KillProcess,
        Violation::Log => SeccompAction::Log,
    };
    let arch = TargetArch::x86_64;
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|source| SeccompError::Build { thread, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_in_both_modes() {
        for v in [Violation::Kill, Violation::Log] {
            let f = Filters::new(v).unwrap();
            assert!(!f.vcpu.is_empty());
            assert!(f.vmm.len() > f.vcpu.len());
        }
    }

    #[test]
    fn violation_parses() {
        assert_eq!("kill".parse::<Violation>().unwrap(), Violation::Kill);
        assert_eq!("log".parse::<Violation>().unwrap(), Violation::Log);
        assert!("allow".parse::<Violation>().is_err());
    }

    /// In a forked child (a filter cannot be removed): the vCPU filter allows what a vCPU
    /// does and kills the process on a syscall outside it (here `openat`).
    #[test]
    fn vcpu_filter_kills_on_a_syscall_outside_the_list() {
        let filters = Filters::new(Violation::Kill).unwrap();
        // SAFETY: the child only makes raw syscalls and _exit (no allocation, no locks).
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: installs a valid program on this thread; PR_SET_NO_NEW_PRIVS first.
                unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    let prog = libc::sock_fprog {
                        len: filters.vcpu.len() as u16,
                        filter: filters.vcpu.as_ptr() as *mut libc::sock_filter,
                    };
                    if libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER,
                        &prog as *const _ as libc::c_ulong,
                    ) != 0
                    {
                        libc::_exit(2);
                    }
                    // allowed: getpid
                    libc::syscall(libc::SYS_getpid);
                    // not allowed: openat
                    libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/".as_ptr(), 0);
                    libc::_exit(0);
                }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(
                    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
                    "child status {status:#x}: expected death by SIGSYS"
                );
            }
            _ => panic!("fork failed"),
        }
    }
}
