//! Relays a process's stdio between host fds and the agent's stream RPCs: one thread per
//! direction, each on its own agent connection (the reads block until data comes). For a
//! terminal process the guest has one stream (the pty master): stdin goes in, stdout comes
//! out, there is no stderr, and the host terminal's window size is forwarded as it changes.
//!
//! The container's stdio is what `create`'s caller gave the supervisor as its fds 0/1/2.
//! [`adopt_caller_stdio`] takes them over first thing: the relay gets close-on-exec copies and
//! the supervisor's own 0/1/2 become /dev/null, so the relay's copies are the only ones the
//! sandbox holds (no child inherits them) and an output relay that sees the guest's EOF closes
//! the caller's pipe: `out=$(husk run -d ...)` returns once the container closed its stdout,
//! as with runc.
//!
//! Extra fds (runc's `--preserve-fds N`: the caller's fds 3..3+N-1) cannot cross into the
//! guest either: [`classify`] decides which way each one's bytes go (in: host -> guest, out:
//! guest -> host, both: a stream socket or a read-write character device, listen: a
//! listening stream socket) and refuses what a byte relay cannot stand in for (a read-write
//! regular file, a datagram socket, ...); the relay then moves their bytes like stdio's,
//! through the same stream RPCs with the fd number set. The guest process gets a pipe or
//! socketpair end at the same number, or for a listening socket a listening AF_UNIX socket:
//! each connection accepted on the host is relayed to a connection the agent makes to it.
//!
//! Owns: copying bytes, closing stdin at EOF, window sizes, which way an extra fd goes.
//! Knows nothing of the control socket.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tty;

use super::agent::AgentClient;

/// Takes this process's fds 0, 1 and 2 as the container's stdio: returns close-on-exec
/// duplicates (None where a descriptor is not open) and points 0/1/2 at /dev/null.
pub fn adopt_caller_stdio() -> [Option<File>; 3] {
    adopt([0, 1, 2])
}

/// [`adopt_caller_stdio`] for any three descriptors.
fn adopt(fds: [RawFd; 3]) -> [Option<File>; 3] {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok();
    fds.map(|fd| {
        // SAFETY: fcntl takes no pointers; on success the result is a new descriptor that
        // nothing else owns, which the File takes.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return None;
        }
        if let Some(null) = &null {
            // SAFETY: dup2 takes no pointers; `fd` now refers to /dev/null, and every
            // descriptor Rust code owns stays valid (the copy is a new one).
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
        // SAFETY: `copy` is a fresh descriptor owned by nothing else.
        Some(unsafe { File::from_raw_fd(copy) })
    })
}

/// Which way a preserved fd's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host -> guest: the container reads it.
    In,
    /// Guest -> host: the container writes it.
    Out,
    /// Both ways (a stream socket, a read-write character device such as a tty).
    Both,
    /// A listening stream socket (socket activation): the container gets a listening
    /// AF_UNIX socket; each connection accepted here is relayed both ways to a connection
    /// the agent makes to it.
    Listen,
}

/// Why a preserved fd cannot be relayed.
#[derive(Debug, thiserror::Error)]
pub enum ExtraFdError {
    /// The fd is not open (or is husk's own, close-on-exec, so not the caller's).
    #[error("--preserve-fds: fd {fd} is not open")]
    NotOpen {
        /// The fd.
        fd: RawFd,
    },
    /// A kind of file a byte relay cannot stand in for.
    #[error("--preserve-fds: fd {fd} is {what}: {why}")]
    Refused {
        /// The fd.
        fd: RawFd,
        /// What it is.
        what: &'static str,
        /// Why that cannot be relayed.
        why: &'static str,
    },
    /// A system call on it failed.
    #[error("--preserve-fds: fd {fd}: {op}: {err}")]
    Sys {
        /// The fd.
        fd: RawFd,
        /// The call.
        op: &'static str,
        /// Its error.
        err: std::io::Error,
    },
}

/// Why a VM stands between the two ends (the tail of every refusal).
const NOT_A_STREAM: &str = "a container's process runs in its own VM and cannot hold a \
    host fd; husk relays only byte streams (pipes, FIFOs, files opened \
    read-only or write-only, character devices, connected stream sockets)";

/// Which way `fd`'s bytes go, or why it cannot be relayed: by its file type, its access mode
/// (`F_GETFL`) and, for a socket, its type (`SO_TYPE`) and whether it listens
/// (`SO_ACCEPTCONN`: [`Direction::Listen`]).
pub fn classify(fd: RawFd) -> Result<Direction, ExtraFdError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    use nix::sys::stat::fstat;
    let sys = |op| {
        move |e: nix::errno::Errno| ExtraFdError::Sys {
            fd,
            op,
            err: e.into(),
        }
    };
    let refused = |what, why| ExtraFdError::Refused { fd, what, why };
    let fl = fcntl(fd, FcntlArg::F_GETFL).map_err(|_| ExtraFdError::NotOpen { fd })?;
    let st = fstat(fd).map_err(sys("fstat"))?;
    let one_way = match OFlag::from_bits_truncate(fl) & OFlag::O_ACCMODE {
        m if m == OFlag::O_RDONLY => Some(Direction::In),
        m if m == OFlag::O_WRONLY => Some(Direction::Out),
        _ => None,
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => {
            match getsockopt(fd, sockopt::SockType).map_err(sys("getsockopt(SO_TYPE)"))? {
                SockType::Stream => {}
                SockType::Datagram => {
                    return Err(refused(
                        "a datagram socket",
                        "message boundaries and addresses do not survive a byte relay",
                    ))
                }
                SockType::SeqPacket => {
                    return Err(refused(
                        "a seqpacket socket",
                        "message boundaries do not survive a byte relay",
                    ))
                }
                _ => {
                    return Err(refused(
                        "a socket that is not a stream socket",
                        NOT_A_STREAM,
                    ))
                }
            }
            if getsockopt(fd, sockopt::AcceptConn).map_err(sys("getsockopt(SO_ACCEPTCONN)"))? {
                return Ok(Direction::Listen);
            }
            Ok(Direction::Both)
        }
        libc::S_IFIFO => one_way.ok_or_else(|| {
            refused(
                "a FIFO open for reading and writing",
                "a relay would read back its own writes; open it read-only or write-only",
            )
        }),
        libc::S_IFCHR => Ok(one_way.unwrap_or(Direction::Both)),
        libc::S_IFREG | libc::S_IFBLK => one_way.ok_or_else(|| {
            refused(
                "a file open for reading and writing",
                "the container sees a one-way byte stream (no seek, no shared offset); open \
                    it read-only or write-only",
            )
        }),
        libc::S_IFDIR => Err(refused("a directory", NOT_A_STREAM)),
        _ => Err(refused(
            "not a pipe, file, character device or socket (eventfd, epoll, ...)",
            NOT_A_STREAM,
        )),
    }
}

/// Checks that the caller's fds 3..3+n-1 are open and were inherited (husk's own fds are
/// close-on-exec), and classifies each.
pub fn check_preserved(n: u32) -> Result<Vec<Direction>, ExtraFdError> {
    (0..n as RawFd).map(|i| check_inherited(3 + i)).collect()
}

/// [`classify`] of an fd this process inherited (open and not close-on-exec).
fn check_inherited(fd: RawFd) -> Result<Direction, ExtraFdError> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    match fcntl(fd, FcntlArg::F_GETFD) {
        Ok(flags) if !FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC) => {
            classify(fd)
        }
        _ => Err(ExtraFdError::NotOpen { fd }),
    }
}

/// Takes the caller's fds 3..3+n-1 (runc's `--preserve-fds n`) as the container's extra fds,
/// first thing, before this process opens anything: each becomes close-on-exec (no child of
/// the supervisor inherits it, so the relay's copy is the only one) and is classified. The
/// first fd that is missing or cannot be relayed is the error (all are close-on-exec by then).
pub fn adopt_extra_fds(n: u32) -> Result<ExtraFds, ExtraFdError> {
    let mut taken = Vec::new();
    let mut first_err = None;
    for i in 0..n {
        let fd = 3 + i as RawFd;
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let Ok(flags) = fcntl(fd, FcntlArg::F_GETFD) else {
            first_err.get_or_insert(ExtraFdError::NotOpen { fd });
            continue;
        };
        let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
        let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
        // SAFETY: the caller gave this process the descriptor for the container; nothing
        // else in it owns the number (it is taken before anything is opened).
        let f = unsafe { File::from_raw_fd(fd) };
        match classify(fd) {
            Ok(d) => taken.push((3 + i, d, f)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(taken),
    }
}

/// The container's extra fds as the relay takes them: fd number, direction, host file.
pub type ExtraFds = Vec<(u32, Direction, File)>;

/// Classifies fds received for a process (`exec`, a pod container) as its fds 3, 4, ...
pub fn classify_received(files: Vec<File>) -> Result<ExtraFds, String> {
    files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let fd = 3 + i as u32;
            match classify(f.as_raw_fd()) {
                Ok(d) => Ok((fd, d, f)),
                // Name the caller's number, not this process's.
                Err(ExtraFdError::Refused { what, why, .. }) => Err(ExtraFdError::Refused {
                    fd: fd as RawFd,
                    what,
                    why,
                }
                .to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .collect()
}

/// Bytes asked for per read.
const CHUNK: u32 = 64 * 1024;

/// Copies the process's stdout (or stderr, or extra fd `fd` when not 0) to `out` until the
/// guest side ends. `shutdown`: `out` is a socket that the input relay also uses; the guest's
/// EOF shuts it down for writing instead of only dropping this copy.
fn spawn_output(
    client: &AgentClient,
    id: &str,
    exec: &str,
    (stderr, fd): (bool, u32),
    mut out: File,
    shutdown: bool,
) -> Option<JoinHandle<()>> {
    let client = match client.another() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("stdio relay: {e}");
            return None;
        }
    };
    let (id, exec) = (id.to_string(), exec.to_string());
    let name = match (fd, stderr) {
        (0, true) => "stderr".to_string(),
        (0, false) => "stdout".to_string(),
        (fd, _) => format!("fd{fd}"),
    };
    std::thread::Builder::new()
        .name(format!("relay-{name}"))
        .spawn(move || {
            let mut broken = false;
            loop {
                match client.read(&id, &exec, stderr, fd, CHUNK) {
                    Ok(Some(data)) => {
                        // Keep draining after the reader went away, so the process never
                        // blocks on a full pipe.
                        if !broken && out.write_all(&data).is_err() {
                            broken = true;
                        }
                    }
                    // The guest's EOF: the thread ends and drops `out`, closing the caller's
                    // copy (the relay holds the only one).
                    Ok(None) => {
                        if shutdown {
                            let _ = nix::sys::socket::shutdown(
                                out.as_raw_fd(),
                                nix::sys::socket::Shutdown::Write,
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(exec = %exec, "{name} relay ends: {e}");
                        break;
                    }
                }
            }
        })
        .ok()
}

/// Copies `input` to the process's stdin (or extra fd `fd` when not 0); closes it at EOF.
/// Gives up (without closing) once `done` is set, so a caller's stdin that never ends does
/// not keep the thread.
fn spawn_input(
    client: &AgentClient,
    id: &str,
    exec: &str,
    fd: u32,
    mut input: File,
    done: Arc<AtomicBool>,
) {
    use nix::poll::{poll, PollFd, PollFlags};
    let client = match client.another() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("stdin relay: {e}");
            return;
        }
    };
    let (id, exec) = (id.to_string(), exec.to_string());
    let _ = std::thread::Builder::new()
        .name(if fd == 0 {
            "relay-stdin".into()
        } else {
            format!("relay-fd{fd}-in")
        })
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK as usize];
            loop {
                let mut pfd = [PollFd::new(input.as_raw_fd(), PollFlags::POLLIN)];
                match poll(&mut pfd, 200) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        continue;
                    }
                    _ => {}
                }
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = client.close_stdin(&id, &exec, fd);
                        break;
                    }
                    Ok(n) => {
                        if client.write_stdin(&id, &exec, fd, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
}

/// Relays the stream socket `sock` both ways with the guest stream `fd` (a both extra fd, or
/// a connection to a listening one): an input relay on a copy, and the output relay, which
/// shuts `sock` down for writing at the guest's EOF; returns the output relay's thread.
fn spawn_both(
    client: &AgentClient,
    id: &str,
    exec: &str,
    fd: u32,
    sock: File,
    done: &Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    match sock.try_clone() {
        Ok(input) => spawn_input(client, id, exec, fd, input, Arc::clone(done)),
        Err(e) => tracing::warn!("fd {fd} relay: {e}"),
    }
    spawn_output(client, id, exec, (false, fd), sock, true)
}

/// Accepts on the host listening socket `listener` (the process's extra fd `fd`) until `done`:
/// each connection gets a connection to the process's listening socket in the guest (the
/// agent's ConnectExtraFd) and is relayed both ways like a stream socket.
fn spawn_listener(
    client: &AgentClient,
    id: &str,
    exec: &str,
    fd: u32,
    listener: File,
    done: Arc<AtomicBool>,
) {
    use nix::poll::{poll, PollFd, PollFlags};
    let client = client.clone();
    let (id, exec) = (id.to_string(), exec.to_string());
    let _ = std::thread::Builder::new()
        .name(format!("relay-fd{fd}-accept"))
        .spawn(move || loop {
            let mut pfd = [PollFd::new(listener.as_raw_fd(), PollFlags::POLLIN)];
            match poll(&mut pfd, 200) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("fd {fd}: poll: {e}");
                    break;
                }
            }
            if done.load(Ordering::Relaxed) {
                break;
            }
            use nix::errno::Errno;
            let conn = match nix::sys::socket::accept4(
                listener.as_raw_fd(),
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(conn) => conn,
                Err(Errno::EINTR | Errno::EAGAIN | Errno::ECONNABORTED) => continue,
                Err(e) => {
                    tracing::warn!("fd {fd}: accept: {e}");
                    break;
                }
            };
            // SAFETY: a fresh fd nothing else owns.
            let conn = unsafe { File::from_raw_fd(conn) };
            let stream = match client.connect_extra(&id, &exec, fd) {
                Ok(s) => s,
                Err(e) => {
                    // The connection is dropped: its peer sees it closed.
                    tracing::warn!("fd {fd}: ConnectExtraFd: {e}");
                    continue;
                }
            };
            let _ = spawn_both(&client, &id, &exec, stream, conn, &done);
        });
}

/// A process's relays: output threads to join and the window-size watcher to stop.
pub struct Relay {
    outputs: Vec<JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

/// How often a terminal's window size is checked (the supervisor gets no SIGWINCH: the host
/// terminal is not its controlling terminal).
const WINSIZE_POLL: Duration = Duration::from_millis(200);

impl Relay {
    /// Starts relaying `stdin`/`stdout`/`stderr` (each optional) and the `extra` fds for
    /// process `exec` of `id`.
    pub fn start(
        client: &AgentClient,
        id: &str,
        exec: &str,
        stdio: [Option<File>; 3],
        terminal: bool,
        extra: ExtraFds,
    ) -> Relay {
        let [stdin, stdout, stderr] = stdio;
        let done = Arc::new(AtomicBool::new(false));
        if terminal {
            if let Some(f) = stdin.as_ref().and_then(|f| f.try_clone().ok()) {
                spawn_winsize(client, id, exec, f, Arc::clone(&done));
            }
        }
        if let Some(f) = stdin {
            spawn_input(client, id, exec, 0, f, Arc::clone(&done));
        }
        let stderr = if terminal { None } else { stderr };
        let mut outputs: Vec<JoinHandle<()>> = [(stdout, false), (stderr, true)]
            .into_iter()
            .filter_map(|(f, err)| spawn_output(client, id, exec, (err, 0), f?, false))
            .collect();
        for (fd, dir, f) in extra {
            match dir {
                Direction::In => spawn_input(client, id, exec, fd, f, Arc::clone(&done)),
                Direction::Out => {
                    outputs.extend(spawn_output(client, id, exec, (false, fd), f, false));
                }
                Direction::Both => outputs.extend(spawn_both(client, id, exec, fd, f, &done)),
                Direction::Listen => spawn_listener(client, id, exec, fd, f, Arc::clone(&done)),
            }
        }
        Relay { outputs, done }
    }

    /// Stops the window-size watcher and joins the output relays (at most `timeout`).
    pub fn finish(self, timeout: Duration) {
        self.done.store(true, Ordering::Relaxed);
        join_all(self.outputs, timeout);
    }
}

/// Forwards the window size of the terminal `tty` to the guest's pty while `done` is unset.
fn spawn_winsize(client: &AgentClient, id: &str, exec: &str, tty: File, done: Arc<AtomicBool>) {
    if tty::window_size(tty.as_raw_fd()).is_none() {
        return;
    }
    let client = client.clone();
    let (id, exec) = (id.to_string(), exec.to_string());
    let _ = std::thread::Builder::new()
        .name("winsize".into())
        .spawn(move || {
            let mut last = (0, 0);
            while !done.load(Ordering::Relaxed) {
                match tty::window_size(tty.as_raw_fd()) {
                    Some(ws) if ws != last && ws != (0, 0) => {
                        if let Err(e) = client.tty_resize(&id, &exec, ws.0, ws.1) {
                            tracing::debug!(exec = %exec, "TtyWinResize: {e}");
                        }
                        last = ws;
                    }
                    Some(_) => {}
                    None => break,
                }
                std::thread::sleep(WINSIZE_POLL);
            }
        });
}

/// Joins output relays, giving up after `timeout` (a grandchild may hold the pipe open).
fn join_all(handles: Vec<JoinHandle<()>>, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for h in handles {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

    fn refusal(fd: RawFd) -> String {
        classify(fd).unwrap_err().to_string()
    }

    #[test]
    fn pipes_files_and_char_devices_go_the_way_they_were_opened() {
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: pipe just returned these fds; nothing else owns them.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) };
        assert_eq!(classify(r.as_raw_fd()).unwrap(), Direction::In);
        assert_eq!(classify(w.as_raw_fd()).unwrap(), Direction::Out);
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let ro = File::open(&path).unwrap();
        assert_eq!(classify(ro.as_raw_fd()).unwrap(), Direction::In);
        let wo = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(classify(wo.as_raw_fd()).unwrap(), Direction::Out);
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let e = refusal(rw.as_raw_fd());
        assert!(
            e.starts_with(&format!(
                "--preserve-fds: fd {} is a file open for reading and writing",
                rw.as_raw_fd()
            )),
            "{e}"
        );
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        assert_eq!(classify(null.as_raw_fd()).unwrap(), Direction::Both);
        let dir = File::open(t.path()).unwrap();
        assert!(refusal(dir.as_raw_fd()).contains("is a directory"));
    }

    #[test]
    fn stream_sockets_go_both_ways_or_listen_and_others_are_refused_by_name() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(classify(a.as_raw_fd()).unwrap(), Direction::Both);
        let (d, _d2) = UnixDatagram::pair().unwrap();
        assert!(refusal(d.as_raw_fd()).contains("is a datagram socket"));
        let t = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(t.path().join("s")).unwrap();
        assert_eq!(classify(l.as_raw_fd()).unwrap(), Direction::Listen);
        let (sp, _) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        assert!(refusal(sp).contains("is a seqpacket socket"));
        // SAFETY: socketpair returned `sp`; nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(sp) });
    }

    #[test]
    fn an_fd_that_is_not_open_or_not_inherited_is_named() {
        assert_eq!(
            classify(999_999).unwrap_err().to_string(),
            "--preserve-fds: fd 999999 is not open"
        );
        // SAFETY: eventfd takes no pointers; the result is a fresh fd owned below.
        let ev = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(ev >= 0);
        // SAFETY: as above.
        let ev = unsafe { OwnedFd::from_raw_fd(ev) };
        assert!(refusal(ev.as_raw_fd()).contains("not a pipe, file"));
        // Close-on-exec: husk's own, not the caller's.
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(matches!(
            check_inherited(a.as_raw_fd()),
            Err(ExtraFdError::NotOpen { .. })
        ));
        let inherited = a.as_fd().try_clone_to_owned().unwrap();
        // SAFETY: fcntl takes no pointers; only this test's fd changes.
        unsafe { libc::fcntl(inherited.as_raw_fd(), libc::F_SETFD, 0) };
        assert_eq!(
            check_inherited(inherited.as_raw_fd()).unwrap(),
            Direction::Both
        );
    }

    /// After the adoption the original descriptor is /dev/null and only the returned copy
    /// holds the pipe: dropping the copy (the relay's EOF) gives the reader EOF although the
    /// original number stays open.
    #[test]
    fn the_callers_pipe_is_held_only_by_the_relay_copy() {
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two descriptors into the array it is given.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: the read end is a fresh descriptor owned by nothing else.
            (unsafe { File::from_raw_fd(fds[0]) }, fds[1])
        };
        let ((r, fd), (r2, fd2)) = (pipe(), pipe());
        let [a, b, c] = adopt([fd, fd2, 999_999]);
        assert!(c.is_none(), "a descriptor that is not open gives None");
        let (mut a, b) = (a.unwrap(), b.unwrap());
        a.write_all(b"hi").unwrap();
        drop(a);
        drop(b);
        let mut text = String::new();
        let mut r = r;
        r.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hi");
        let mut rest = Vec::new();
        let mut r2 = r2;
        r2.read_to_end(&mut rest).unwrap();
        // The original numbers are still open, now on /dev/null.
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"));
        // SAFETY: both are descriptors this test owns (now /dev/null).
        unsafe {
            drop(File::from_raw_fd(fd));
            drop(File::from_raw_fd(fd2));
        }
    }
}
