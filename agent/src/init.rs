//! The container init stage: runs as a fresh `husk-agent init` process, cloned by the agent
//! into the container's new namespaces and cgroup. It joins namespaces given by path, sets up
//! the filesystem (running the createContainer hooks before pivot_root), hostname, sysctls,
//! rlimits, user, capabilities, then reports `ready` and waits for `start`; it runs the
//! startContainer hooks and execs the container process. Single-threaded by construction
//! (hooks are forked and waited for, never threads); never returns.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use oci_spec::runtime::{PosixRlimitType, Process};

use crate::caps::{self, CapMasks, Identity};
use crate::hooks::Kind;
use crate::mounts;
use crate::namespaces;
use crate::stage::{StageConfig, SYNC_FD};
use crate::syscall::console;
use crate::syscall::linux::LinuxSyscall;
use crate::syscall::Syscall;
use crate::user;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("reading stage config: {0}")]
    Config(String),
    #[error("linux.namespaces: {0}")]
    Namespaces(crate::syscall::SyscallError),
    #[error(transparent)]
    Mounts(#[from] mounts::MountError),
    #[error(transparent)]
    Caps(#[from] caps::CapsError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: impl ToString) -> InitError {
    InitError::Field {
        field,
        reason: reason.to_string(),
    }
}

/// The container's own devpts multiplexer (its /dev/pts is mounted `newinstance`), seen from
/// the stage once it pivoted or joined the container's mount namespace.
const CONTAINER_PTMX: &str = "/dev/pts/ptmx";

/// `process.consoleSize`, 24x80 when unset.
fn console_size(p: &Process) -> (u16, u16) {
    p.console_size()
        .map(|b| (b.height() as u16, b.width() as u16))
        .unwrap_or((24, 80))
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Entry point of `husk-agent init`. Reports failures on the sync socket and exits.
pub fn run() -> ! {
    // The sync socket follows the process's extra fds (3..); `launch` names it.
    let sync_fd = std::env::args()
        .nth(2)
        .and_then(|a| a.parse::<i32>().ok())
        .filter(|fd| *fd >= SYNC_FD)
        .unwrap_or(SYNC_FD);
    // SAFETY: the agent set this fd up as the sync socket before exec; we own it now.
    let sync = unsafe { UnixStream::from_raw_fd(sync_fd) };
    let mut writer = match sync.try_clone() {
        Ok(w) => w,
        Err(_) => std::process::exit(125),
    };
    let mut reader = BufReader::new(sync);
    match stage(&mut reader, &mut writer) {
        Ok(never) => match never {},
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            let _ = writeln!(writer, "error {msg}");
            std::process::exit(125);
        }
    }
}

enum Never {}

fn stage(reader: &mut BufReader<UnixStream>, writer: &mut UnixStream) -> Result<Never, InitError> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| InitError::Config(e.to_string()))?;
    let mut cfg: StageConfig =
        serde_json::from_str(&line).map_err(|e| InitError::Config(e.to_string()))?;
    mark_fds_cloexec(reader.get_ref().as_raw_fd());
    let sys = LinuxSyscall;

    namespaces::apply_joins(&sys, &cfg.ns).map_err(InitError::Namespaces)?;
    if cfg.ns.join_pid {
        let pid = fork_into_pid_ns(writer)?;
        if let Some(h) = cfg.hooks.as_mut() {
            h.state.pid = pid;
        }
    }
    if let Some(h) = &cfg.hostname {
        sys.sethostname(h).map_err(|e| field("hostname", e))?;
    }
    // createContainer hooks: mounts in place, before pivot_root, chrooted into the rootfs so
    // their paths resolve there (without a mount namespace: in the guest's filesystem).
    let hooks = cfg.hooks.as_ref();
    if let Some(plan) = &cfg.rootfs {
        mounts::prepare_rootfs(&sys, plan)?;
        if let Some(h) = hooks {
            h.run(Kind::CreateContainer, Some(&plan.rootfs))?;
        }
        mounts::enter_rootfs(&sys, plan)?;
    } else if let Some(h) = hooks {
        h.run(Kind::CreateContainer, None)?;
    }
    create_cwd(cfg.process.cwd())?;
    let filter = cfg
        .seccomp
        .as_ref()
        .map(crate::seccomp::compile)
        .transpose()?;
    let nnp = cfg.process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it before dropping
    // privileges (as runc does), leaving no_new_privs off; otherwise as late as possible,
    // right before exec.
    let early = if nnp { None } else { filter.as_ref() };
    let exec = prepare_process(&sys, &cfg.process, &cfg.root_for_users, early, writer)?;

    writer
        .write_all(b"ready\n")
        .map_err(|e| InitError::Config(e.to_string()))?;
    line.clear();
    reader
        .read_line(&mut line)
        .map_err(|e| InitError::Config(e.to_string()))?;
    if line.trim() != "start" {
        // The agent went away or cancelled: never run the process.
        std::process::exit(125);
    }
    reset_signals();
    // startContainer hooks: after pivot_root, with the process' credentials and cwd, right
    // before the exec (runc's order).
    if let Some(h) = hooks {
        h.run(Kind::StartContainer, None)?;
    }
    if let (true, Some(f)) = (nnp, &filter) {
        f.install()?;
    }
    let err = nix::unistd::execve(&exec.path, &exec.argv, &exec.env).unwrap_err();
    Err(field(
        "process.args",
        format!("exec {}: {err}", exec.path.to_string_lossy()),
    ))
}

/// Creates a missing `process.cwd` as runc does (mkdir -p, 0755), after the spec's mounts and
/// pivot_root: the stage is in the container's root, so the image's symlinks resolve inside it
/// and a cwd below a mount's destination is made inside that mount (a tmpfs at /work and a cwd
/// of /work/a gives /work/a on the tmpfs). Without a mount namespace it is the guest's path.
fn create_cwd(cwd: &Path) -> Result<(), InitError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(cwd)
        .map_err(|e| field("process.cwd", format!("{}: {e}", cwd.display())))
}

/// Every inherited fd from the sync socket up closes at exec (the agent's sockets must never
/// reach the container); below it are stdio and the process's extra fds (3..sync), which
/// it keeps.
fn mark_fds_cloexec(sync_fd: RawFd) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            sync_fd as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Enters the joined pid namespace: fork, report the child's pid (as the agent sees it, since
/// the agent's pid namespace is an ancestor), and let the parent exit; the agent, a
/// subreaper, inherits the child. Returns that pid in the child (for the hooks' state).
fn fork_into_pid_ns(writer: &mut UnixStream) -> Result<i32, InitError> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| field("linux.namespaces", e))?;
    // SAFETY: this process is single-threaded (a fresh exec), so fork is safe.
    match unsafe { nix::unistd::fork() }.map_err(|e| field("linux.namespaces", e))? {
        nix::unistd::ForkResult::Parent { child } => {
            let _ = writeln!(writer, "pid {child}");
            let _ = nix::unistd::write(wr, &child.as_raw().to_le_bytes());
            let _ = nix::unistd::close(wr);
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::close(wr);
            let mut b = [0u8; 4];
            // Wait until the parent has reported our pid; it sends it, then closes the pipe.
            let mut got = 0;
            while got < b.len() {
                match nix::unistd::read(rd, &mut b[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            let _ = nix::unistd::close(rd);
            Ok(if got == b.len() {
                i32::from_le_bytes(b)
            } else {
                0
            })
        }
    }
}

/// What execve needs, resolved before `ready` so bad args fail at create (as runc does).
struct Exec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

fn cstring(field_name: &'static str, s: &str) -> Result<CString, InitError> {
    CString::new(s).map_err(|_| field(field_name, format!("{s:?} contains a NUL byte")))
}

fn prepare_process(
    sys: &dyn Syscall,
    p: &Process,
    users_root: &Path,
    seccomp_early: Option<&crate::seccomp::Filter>,
    sync: &mut UnixStream,
) -> Result<Exec, InitError> {
    for rl in p.rlimits().iter().flatten() {
        let res = rlimit_resource(rl.typ());
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit reads one rlimit struct that lives across the call.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(field(
                "process.rlimits",
                format!("{}: {}", rl.typ(), nix::errno::Errno::last()),
            ));
        }
    }
    if let Some(adj) = p.oom_score_adj() {
        sys.write_file(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
            .map_err(|e| field("process.oomScoreAdj", e))?;
    }
    let u = p.user();
    let mut env: Vec<String> = p.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user::home_for_uid(users_root, u.uid())));
    }
    let args = p.args().clone().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| field("process.args", "must not be empty"))?;
    sys.chdir(p.cwd()).map_err(|e| field("process.cwd", e))?;
    let path = find_executable(arg0, &env).ok_or_else(|| {
        field(
            "process.args",
            format!("{arg0:?}: executable file not found in $PATH"),
        )
    })?;

    // Session and controlling terminal. With process.terminal the pty comes from the
    // container's own devpts, as runc's does (so `tty` names the container's /dev/pts/N): the
    // slave becomes stdio and the controlling terminal, the master goes to the agent.
    if p.terminal().unwrap_or(false) {
        let (rows, cols) = console_size(p);
        let c = console::open_console(Path::new(CONTAINER_PTMX), rows, cols)
            .map_err(|e| field("process.terminal", e))?;
        console::take_as_controlling_terminal(&c.slave)
            .map_err(|e| field("process.terminal", e))?;
        console::send_with_fd(sync.as_fd(), b"console\n", c.master.as_fd())
            .map_err(|e| field("process.terminal", e))?;
    } else {
        let _ = nix::unistd::setsid();
    }

    let masks = match p.capabilities() {
        Some(c) => CapMasks::from_spec(c)?,
        None => CapMasks::default(),
    };
    if let Some(f) = seccomp_early {
        f.install()?;
    }
    let id = Identity {
        uid: u.uid(),
        gid: u.gid(),
        additional_gids: u.additional_gids().clone().unwrap_or_default(),
    };
    for w in caps::drop_privileges(sys, &masks, &id, caps::last_cap())? {
        warn(sync, &w);
    }
    if let Some(mask) = u.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if p.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(field("process.noNewPrivileges", nix::errno::Errno::last()));
        }
    }
    Ok(Exec {
        path: cstring("process.args", &path)?,
        argv: args
            .iter()
            .map(|a| cstring("process.args", a))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstring("process.env", e))
            .collect::<Result<_, _>>()?,
    })
}

/// Passes a warning to the agent, which logs it (`warn <message>` on the sync socket).
fn warn(writer: &mut UnixStream, msg: &str) {
    let _ = writeln!(writer, "warn {}", msg.replace('\n', " "));
}

fn find_executable(arg0: &str, env: &[String]) -> Option<String> {
    let is_exec = |p: &Path| {
        nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
            && std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
    };
    if arg0.contains('/') {
        return is_exec(Path::new(arg0)).then(|| arg0.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .find(|p| is_exec(p))
        .map(|p| p.to_string_lossy().into_owned())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// The container process starts with default dispositions and nothing blocked (Rust's
/// runtime ignores SIGPIPE, and ignored signals survive exec).
fn reset_signals() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    for s in Signal::iterator() {
        if s != Signal::SIGKILL && s != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no handler code.
            let _ = unsafe { signal(s, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
