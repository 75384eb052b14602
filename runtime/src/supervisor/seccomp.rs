//! The supervisor's seccomp allow-list. Once the sandbox is set up (the VMM child spawned, the
//! agent's container created, the control socket bound, the relay and server threads
//! started), the supervisor only talks: to the agent over Unix sockets, to `husk` callers over
//! control.sock, to its stdio, to its state files and log, and to its one child (the VMM),
//! which it waits for and signals. [`install`] then puts a filter on every thread of the
//! process at once (`SECCOMP_FILTER_FLAG_TSYNC`; threads started later inherit it) that allows
//! exactly that. Anything else kills the whole supervisor with SIGSYS
//! (`SECCOMP_RET_KILL_PROCESS`), which the kernel logs as `audit: type=1326 ... syscall=N`, and
//! the VMM goes with it (its parent-death signal).
//!
//! The list was measured, not guessed: the end-to-end suites that drive the supervisor the
//! most (tests/e2e/runc-cli.sh, podman.sh, host-wall.sh) ran with
//! `HUSK_SUPERVISOR_SECCOMP=log` and every syscall the kernel logged was added here with its
//! reason. `docs/security.md` ("The supervisor's seccomp list") has the list and the why.
//!
//! Cheap restrictions on arguments: sockets are Unix only; ioctls are tty-type ('T': window
//! sizes, FIONBIO/FIOCLEX); no executable mappings; `kill` reaches only the VMM child and
//! `tgkill` only this process's threads; `clone` must make a thread (`CLONE_THREAD`), and
//! `clone3`, whose flags live in memory a filter cannot read, fails with ENOSYS (glibc then
//! falls back to `clone`), so the supervisor cannot fork. No execve, ptrace, mount, bpf,
//! module, kexec or keyring calls.
//!
//! Owns: the list, the compiled programs and installing them. The caller decides when.

use std::collections::BTreeMap;

use husk_vmm::seccomp::{cond, ioctl_type, rule, TTY_IOCTL_TYPE};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpOp, SeccompFilter, SeccompRule, TargetArch,
};

/// `HUSK_SUPERVISOR_SECCOMP`: kill (default), log (allow and have the kernel log what is
/// outside the list, to measure what a change needs) or off.
pub const ENV: &str = "HUSK_SUPERVISOR_SECCOMP";

/// Errors choosing, building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A bad `HUSK_SUPERVISOR_SECCOMP`.
    #[error("{ENV}={0}: expected kill, log or off")]
    Mode(String),
    /// seccompiler refused a rule (a bug in the list below).
    #[error("building the supervisor's seccomp filter: {0}")]
    Build(seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("installing the supervisor's seccomp filter: {0}")]
    Install(seccompiler::Error),
}

/// What a syscall outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Kill the process with SIGSYS (the default).
    Kill,
    /// Allow it; the kernel logs it (`audit: type=1326`).
    Log,
    /// No filter.
    Off,
}

impl Mode {
    /// The mode `HUSK_SUPERVISOR_SECCOMP` asks for (kill when unset or empty).
    pub fn from_env() -> Result<Mode, SeccompError> {
        match std::env::var(ENV) {
            Ok(v) if !v.is_empty() => v.parse(),
            _ => Ok(Mode::Kill),
        }
    }

    /// As the variable spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kill => "kill",
            Mode::Log => "log",
            Mode::Off => "off",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = SeccompError;
    fn from_str(s: &str) -> Result<Mode, SeccompError> {
        match s {
            "kill" => Ok(Mode::Kill),
            "log" => Ok(Mode::Log),
            "off" => Ok(Mode::Off),
            other => Err(SeccompError::Mode(other.into())),
        }
    }
}

/// The two programs: `no_clone3` (clone3 fails with ENOSYS, all else allowed) and `allow`
/// (the list). The kernel runs both and takes the stricter answer.
#[derive(Debug, Clone)]
pub struct Filters {
    /// Makes `clone3` fail with ENOSYS, so thread creation goes through `clone`, whose flags
    /// the list can check.
    pub no_clone3: BpfProgram,
    /// The allow-list.
    pub allow: BpfProgram,
}

impl Filters {
    /// Compiles both programs; `vmm` is the VMM child's pid (the one process `kill` may
    /// reach), if there is one.
    pub fn new(violation: Mode, vmm: Option<libc::pid_t>) -> Result<Filters, SeccompError> {
        let mismatch = match violation {
            Mode::Log => SeccompAction::Log,
            Mode::Kill | Mode::Off => SeccompAction::KillProcess,
        };
        let no_clone3: BTreeMap<i64, Vec<SeccompRule>> =
            [(libc::SYS_clone3, Vec::new())].into_iter().collect();
        Ok(Filters {
            no_clone3: compile(
                no_clone3,
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
            )?,
            allow: compile(
                rules(std::process::id() as libc::pid_t, vmm),
                mismatch,
                SeccompAction::Allow,
            )?,
        })
    }
}

/// Installs the filter in `mode` on every thread of this process (TSYNC) and says so in the
/// log. `vmm`: the VMM child's pid. Call it once the supervisor will start no more processes.
pub fn install(mode: Mode, vmm: Option<libc::pid_t>) -> Result<(), SeccompError> {
    if mode == Mode::Off {
        tracing::warn!("supervisor seccomp filter off ({ENV}=off)");
        return Ok(());
    }
    let filters = Filters::new(mode, vmm)?;
    // The first filter allows the prctl(PR_SET_NO_NEW_PRIVS) and seccomp calls that
    // installing the second makes; the second allows neither.
    seccompiler::apply_filter_all_threads(&filters.no_clone3).map_err(SeccompError::Install)?;
    seccompiler::apply_filter_all_threads(&filters.allow).map_err(SeccompError::Install)?;
    tracing::info!(
        mode = mode.as_str(),
        instructions = filters.allow.len(),
        "supervisor seccomp filter installed on all threads"
    );
    Ok(())
}

/// Syscalls allowed whatever their arguments, by what needs them.
const ALLOWED: &[(&str, &[i64])] = &[
    (
        // the allocator, thread stacks (glibc's madvise when a stack is freed)
        "memory",
        &[
            libc::SYS_brk,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_madvise,
        ],
    ),
    (
        // new threads (std::thread: clone below, then these in the child), locks, channels,
        // condvars, joins; std's stack-overflow guard (sigaltstack); pthread_getattr_np
        // (sched_getaffinity)
        "threads",
        &[
            libc::SYS_futex,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_sigaltstack,
            libc::SYS_sched_getaffinity,
            libc::SYS_sched_yield,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ],
    ),
    (
        // the signal thread's sigwait, masks around clone, handlers returning, restarts
        "signals",
        &[
            libc::SYS_rt_sigtimedwait,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_restart_syscall,
        ],
    ),
    (
        // timeouts, sleeps and log timestamps (the vDSO falls back to the syscalls where the
        // clock source has no vDSO reader)
        "time",
        &[
            libc::SYS_clock_gettime,
            libc::SYS_gettimeofday,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
        ],
    ),
    (
        // state files written atomically (status, exit_status: a 0600 temporary, fchmod,
        // write, fsync, rename, the directory's fsync), supervisor.log, control.sock and the
        // vsock socket unlinked at the end, metadata (std's statx with fstat fallbacks),
        // duplicated stdio fds, std's fd checks and non-blocking toggles (fcntl)
        "files",
        &[
            libc::SYS_openat,
            libc::SYS_close,
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_lseek,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_fchmod,
            libc::SYS_rename,
            libc::SYS_renameat,
            libc::SYS_renameat2,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_fcntl,
            libc::SYS_dup,
            libc::SYS_dup3,
            libc::SYS_getrandom,
        ],
    ),
    (
        // control.sock (accept4, recvmsg with SCM_RIGHTS for exec's stdio, sendmsg), agent
        // connections (connect on the hybrid vsock socket, its handshake's read timeout,
        // ttrpc's send/recv and poll on the stream and its wake-up socketpair, shutdown)
        "sockets",
        &[
            libc::SYS_connect,
            libc::SYS_accept4,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_shutdown,
            libc::SYS_setsockopt,
            libc::SYS_getsockopt,
            libc::SYS_poll,
            libc::SYS_ppoll,
        ],
    ),
    (
        // the vmm-wait thread reaping the VMM child
        "child",
        &[libc::SYS_wait4, libc::SYS_waitid],
    ),
];

/// `PR_SET_NAME`: std names each new thread.
const PR_SET_NAME: u64 = libc::PR_SET_NAME as u64;

/// The list: [`ALLOWED`] plus the calls allowed only with certain arguments. `me` is this
/// process's pid, `vmm` the VMM child's.
fn rules(me: libc::pid_t, vmm: Option<libc::pid_t>) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .flat_map(|(_, calls)| calls.iter())
        .map(|&s| (s, Vec::new()))
        .collect();
    let unix = || rule(vec![cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)]);
    // Unix sockets only: agent connections and ttrpc's wake-up pair.
    rules.insert(libc::SYS_socket, vec![unix()]);
    rules.insert(libc::SYS_socketpair, vec![unix()]);
    // Threads, never processes: clone must share the thread group.
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )])],
    );
    // clone3 gets ENOSYS from the other filter before this one is asked; listed so that the
    // list alone does not kill a caller that would fall back.
    rules.insert(libc::SYS_clone3, Vec::new());
    // No executable memory.
    let no_exec = || {
        rule(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )])
    };
    rules.insert(libc::SYS_mmap, vec![no_exec()]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()]);
    // Thread names.
    rules.insert(
        libc::SYS_prctl,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, PR_SET_NAME)])],
    );
    // The window size of a terminal exec (TIOCGWINSZ), FIONBIO, FIOCLEX, isatty's TCGETS.
    rules.insert(libc::SYS_ioctl, vec![ioctl_type(TTY_IOCTL_TYPE)]);
    // Signals to this process's own threads only (abort's SIGABRT).
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, me as u64)])],
    );
    // SIGTERM/SIGKILL to the VMM child only (shutting the VM down).
    if let Some(pid) = vmm {
        rules.insert(
            libc::SYS_kill,
            vec![rule(vec![cond(0, SeccompCmpOp::Eq, pid as u64)])],
        );
    }
    rules
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
        .and_then(BpfProgram::try_from)
        .map_err(SeccompError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_in_both_modes() {
        for m in [Mode::Kill, Mode::Log] {
            for vmm in [None, Some(1234)] {
                let f = Filters::new(m, vmm).unwrap();
                assert!(!f.no_clone3.is_empty());
                assert!(f.allow.len() > f.no_clone3.len());
            }
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("kill".parse::<Mode>().unwrap(), Mode::Kill);
        assert_eq!("log".parse::<Mode>().unwrap(), Mode::Log);
        assert_eq!("off".parse::<Mode>().unwrap(), Mode::Off);
        let e = "allow".parse::<Mode>().unwrap_err().to_string();
        assert!(e.contains(ENV) && e.contains("allow"), "{e}");
    }

    #[test]
    fn nothing_dangerous_is_listed() {
        let r = rules(1, Some(2));
        for s in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_setns,
            libc::SYS_unshare,
            libc::SYS_bpf,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_kexec_load,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_personality,
            libc::SYS_process_vm_writev,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_seccomp,
        ] {
            assert!(!r.contains_key(&s), "syscall {s} is listed");
        }
    }

    /// Runs `body` in a forked child that has installed the filters in kill mode on all its
    /// threads; the child's wait status.
    fn in_filtered_child(body: fn()) -> i32 {
        let filters = Filters::new(Mode::Kill, None).unwrap();
        // SAFETY: the child only installs the filters (prctl and seccomp syscalls on memory
        // allocated before the fork), runs `body` (raw syscalls) and _exits.
        match unsafe { libc::fork() } {
            0 => {
                // After fork the child has one thread, so TSYNC syncs nothing else.
                let ok = seccompiler::apply_filter_all_threads(&filters.no_clone3).is_ok()
                    && seccompiler::apply_filter_all_threads(&filters.allow).is_ok();
                if !ok {
                    // SAFETY: ends the child without running the parent's atexit handlers.
                    unsafe { libc::_exit(2) };
                }
                body();
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waiting for our own child; status lives across the call.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                status
            }
            _ => panic!("fork failed"),
        }
    }

    fn killed_by_sigsys(status: i32) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    }

    #[test]
    fn allowed_calls_work_under_the_filter() {
        let status = in_filtered_child(|| {
            // SAFETY: raw syscalls with valid arguments; each result is checked.
            unsafe {
                let mut sv = [0; 2];
                if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) != 0
                    || libc::write(sv[0], b"x".as_ptr().cast(), 1) != 1
                    || libc::syscall(libc::SYS_getpid) <= 0
                    || libc::syscall(libc::SYS_clone3, 0usize, 0usize) != -1
                    || *libc::__errno_location() != libc::ENOSYS
                {
                    libc::_exit(3);
                }
            }
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}: expected exit 0"
        );
    }

    #[test]
    fn execve_kills_with_sigsys() {
        let status = in_filtered_child(|| {
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: a NUL-terminated path and argv; it must not return (SIGSYS).
            unsafe {
                libc::syscall(
                    libc::SYS_execve,
                    c"/bin/true".as_ptr(),
                    argv.as_ptr(),
                    std::ptr::null::<*const libc::c_char>(),
                )
            };
        });
        assert!(killed_by_sigsys(status), "child status {status:#x}");
    }

    #[test]
    fn mount_fork_and_inet_sockets_kill_with_sigsys() {
        let bodies: [fn(); 3] = [
            || {
                // SAFETY: raw syscall with NUL-terminated strings; must not return.
                unsafe {
                    libc::syscall(
                        libc::SYS_mount,
                        c"none".as_ptr(),
                        c"/".as_ptr(),
                        c"tmpfs".as_ptr(),
                        0usize,
                        0usize,
                    )
                };
            },
            || {
                // A fork: clone without CLONE_THREAD.
                // SAFETY: raw syscall; must not return.
                unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as usize, 0usize) };
            },
            || {
                // SAFETY: raw syscall; must not return.
                unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) };
            },
        ];
        for body in bodies {
            let status = in_filtered_child(body);
            assert!(killed_by_sigsys(status), "child status {status:#x}");
        }
    }
}
