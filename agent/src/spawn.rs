//! Starting a container's init stage from the (multi-threaded) agent: a raw clone(2) into the
//! new namespaces that only dup2s fds and execs `/proc/self/exe init`, then the agent side of
//! the sync protocol (see `stage`). Everything the child touches is prepared before clone so
//! the child runs only async-signal-safe calls.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::reaper::ExitRegistry;
use crate::stage::{sync_fd_for, StageConfig};
use crate::syscall::console::recv_with_fds;
use crate::syscall::CloneFlags;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("clone: {0}")]
    Clone(nix::errno::Errno),
    #[error("setting up the init stage: {0}")]
    Setup(String),
    /// The stage reported a failure; the message names the spec field.
    #[error("{0}")]
    Stage(String),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// uid_map / gid_map contents for a new user namespace.
#[derive(Debug, Clone, Default)]
pub struct IdMaps {
    pub uid_map: String,
    pub gid_map: String,
}

/// A stage that reported `ready` and waits for `start`.
pub struct ReadyStage {
    /// The pid of the process that will exec the container process (agent's view).
    pub pid: i32,
    /// What the stage warned about while setting up (`warn` lines), for the caller to log.
    pub warnings: Vec<String>,
    /// The pty master of a terminal process (allocated by the stage from the container's
    /// devpts); taken by the caller.
    pub console: Option<OwnedFd>,
    reader: SyncReader,
    writer: UnixStream,
}

/// Reads the stage's lines with recvmsg, keeping the fds passed with them (read(2), and so a
/// BufReader, would close them unseen).
struct SyncReader {
    sock: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl SyncReader {
    fn new(sock: UnixStream) -> SyncReader {
        SyncReader {
            sock,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// The next line without its newline; None at EOF (a partial last line is dropped).
    fn read_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            let mut chunk = [0u8; 4096];
            let (n, fds) = recv_with_fds(self.sock.as_fd(), &mut chunk)?;
            self.fds.extend(fds);
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl ReadyStage {
    /// Lets the stage exec. Returns once the exec happened (socket closed) or failed.
    pub fn start(mut self) -> Result<(), SpawnError> {
        self.writer
            .write_all(b"start\n")
            .map_err(|e| SpawnError::Setup(e.to_string()))?;
        match self.reader.read_line() {
            Ok(None) => Ok(()),
            Ok(Some(line)) => Err(SpawnError::Stage(
                line.trim().trim_start_matches("error ").to_string(),
            )),
            Err(e) => Err(SpawnError::Setup(e.to_string())),
        }
    }

    /// Kills a stage that will never be started.
    pub fn abort(self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

/// Clones the stage with `cfg.ns.clone_flags`, places it in `cgroup`, hands it `cfg`, and
/// waits for `ready`. `stdio` fds are given to the stage as 0, 1, 2, `extra` (runc's
/// preserved fds) as 3, 4, ... and the sync socket comes right after them (its number is the
/// stage's third argument; see `stage::sync_fd_for`).
pub fn launch(
    exe: &CString,
    cfg: &StageConfig,
    stdio: [RawFd; 3],
    extra: &[RawFd],
    cgroup: &Cgroup,
    idmaps: Option<&IdMaps>,
    registry: &ExitRegistry,
) -> Result<ReadyStage, SpawnError> {
    let (agent_end, stage_end) =
        UnixStream::pair().map_err(|e| SpawnError::Setup(e.to_string()))?;
    let argv0 = CString::new("husk-agent").expect("static");
    let argv1 = CString::new("init").expect("static");
    let argv2 = CString::new(sync_fd_for(extra.len()).to_string()).expect("digits");
    let argv = [
        argv0.as_ptr(),
        argv1.as_ptr(),
        argv2.as_ptr(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null::<libc::c_char>()];
    let mut srcs = stdio.to_vec();
    srcs.extend_from_slice(extra);
    srcs.push(stage_end.as_raw_fd());
    // The child's scratch space, allocated here: the child must not allocate.
    let mut tmp = vec![0 as RawFd; srcs.len()];
    let flags = cfg.ns.clone_flags() & !CloneFlags::CLONE_NEWCGROUP;
    let new_user = flags.contains(CloneFlags::CLONE_NEWUSER);

    // SAFETY: a fork-like clone (no CLONE_VM, no new stack). The child only calls
    // async-signal-safe functions (fcntl, dup2, read, sigprocmask, signal, execve, _exit) on
    // data prepared above, then execs or exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: see above; this is the child and it never returns.
        unsafe { child_exec(exe, &argv, &envp, &srcs, &mut tmp, new_user) }
    }
    if pid < 0 {
        return Err(SpawnError::Clone(nix::errno::Errno::last()));
    }
    let pid = pid as i32;
    drop(stage_end);
    let fail = |e: SpawnError| {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        e
    };
    if let Some(m) = idmaps {
        std::fs::write(format!("/proc/{pid}/uid_map"), &m.uid_map)
            .and_then(|_| std::fs::write(format!("/proc/{pid}/gid_map"), &m.gid_map))
            .map_err(|e| fail(SpawnError::Stage(format!("linux.uidMappings: {e}"))))?;
    }
    cgroup.add(pid).map_err(|e| fail(e.into()))?;
    // The hooks' state carries the init's pid as the agent sees it (a stage that forks into
    // a joined pid namespace replaces it with its child's).
    let json = if cfg.hooks.is_some() {
        let mut cfg = cfg.clone();
        if let Some(h) = cfg.hooks.as_mut() {
            h.state.pid = pid;
        }
        serde_json::to_string(&cfg)
    } else {
        serde_json::to_string(cfg)
    }
    .map_err(|e| fail(SpawnError::Setup(e.to_string())))?;
    let mut writer = agent_end
        .try_clone()
        .map_err(|e| fail(SpawnError::Setup(e.to_string())))?;
    writer
        .write_all(b"G")
        .and_then(|_| writer.write_all(json.as_bytes()))
        .and_then(|_| writer.write_all(b"\n"))
        .map_err(|e| fail(SpawnError::Setup(format!("sending stage config: {e}"))))?;
    let mut reader = SyncReader::new(agent_end);
    let mut final_pid = pid;
    let mut warnings = Vec::new();
    let mut console = None;
    loop {
        let line = reader
            .read_line()
            .map_err(|e| fail(SpawnError::Setup(e.to_string())))?;
        let Some(line) = line else {
            return Err(fail(SpawnError::Setup(
                "init stage exited without reporting".into(),
            )));
        };
        let line = line.trim();
        if let Some(p) = line.strip_prefix("pid ") {
            // The stage forked into a joined pid namespace; its parent exits by itself.
            final_pid = p
                .parse()
                .map_err(|_| fail(SpawnError::Setup(format!("bad pid line {line:?}"))))?;
            registry.ignore(pid);
        } else if let Some(w) = line.strip_prefix("warn ") {
            warnings.push(w.to_string());
        } else if line == "console" {
            // The fd came with the line's first byte, so it is queued by now.
            let Some(fd) = reader.fds.pop_front() else {
                let _ = kill(Pid::from_raw(final_pid), Signal::SIGKILL);
                return Err(fail(SpawnError::Setup(
                    "init stage sent `console` without a pty master".into(),
                )));
            };
            console = Some(fd);
        } else if line == "ready" {
            return Ok(ReadyStage {
                pid: final_pid,
                warnings,
                console,
                reader,
                writer,
            });
        } else {
            let _ = kill(Pid::from_raw(final_pid), Signal::SIGKILL);
            return Err(fail(SpawnError::Stage(
                line.trim_start_matches("error ").to_string(),
            )));
        }
    }
}

/// The clone child: wait for the agent's go byte, move fds into place (`srcs[i]` becomes fd
/// `i`; the last is the sync socket), exec the stage.
///
/// In a new user namespace the child starts with every capability there but still with the
/// agent's (host) ids, which the namespace does not map: once the agent wrote the maps (the
/// go byte says so), it becomes the namespace's root, as runc's nsexec does, so that the
/// stage exec'd next keeps its capabilities in the namespaces the user namespace owns
/// (sethostname, mounts). Supplementary groups of the agent are dropped with it.
///
/// # Safety
/// Must only be called in the child of a fork-like clone; never returns.
unsafe fn child_exec(
    exe: &CString,
    argv: &[*const libc::c_char; 4],
    envp: &[*const libc::c_char; 1],
    srcs: &[RawFd],
    tmp: &mut [RawFd],
    new_user: bool,
) -> ! {
    // SAFETY: async-signal-safe libc calls (and raw setgroups/setresgid/setresuid syscalls,
    // which touch only this single-threaded child's credentials) on fds and pointers owned
    // by this child;
    // argv/envp are NULL-terminated arrays of valid C strings prepared before clone.
    unsafe {
        // Copies above every target number, so that no dup2 below replaces a source.
        let floor = srcs.len().max(10) as libc::c_int;
        for (i, src) in srcs.iter().enumerate() {
            tmp[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, floor);
            if tmp[i] < 0 {
                libc::_exit(126);
            }
        }
        let sync = tmp[tmp.len() - 1];
        let mut go = 0u8;
        if libc::read(sync, &mut go as *mut u8 as *mut libc::c_void, 1) != 1 {
            libc::_exit(126);
        }
        if new_user
            && (libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0
                || libc::syscall(libc::SYS_setresgid, 0usize, 0usize, 0usize) < 0
                || libc::syscall(libc::SYS_setresuid, 0usize, 0usize, 0usize) < 0)
        {
            let msg = b"error linux.uidMappings: cannot become root of the new user namespace \
                        (are container uid and gid 0 mapped?)\n";
            libc::write(sync, msg.as_ptr() as *const libc::c_void, msg.len());
            libc::_exit(126);
        }
        for (i, t) in tmp.iter().enumerate() {
            if libc::dup2(*t, i as libc::c_int) < 0 {
                libc::_exit(126);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127)
    }
}
