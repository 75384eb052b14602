//! One process the agent started (a container's init or an exec): its pid, its stdio as seen
//! from the agent (pipe ends or a pty master), and its exit status once reaped.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::reaper::ExitRegistry;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("process has no {0} stream")]
    NoStream(&'static str),
    #[error("fd {0}: the process has no such extra fd")]
    NoExtra(u32),
    #[error("fd {0}: not a listening extra fd")]
    NotListening(u32),
    #[error("extra_fds: {0} extra fds (at most 256)")]
    TooMany(usize),
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("setting up stdio: {0}")]
    Setup(nix::errno::Errno),
    /// The reader's deadline passed before any data came; nothing was taken from the stream.
    #[error("{0}: no data before the caller's deadline")]
    DeadlineExceeded(&'static str),
    /// The reader's connection went away before any data came; nothing was taken.
    #[error("{0}: the caller went away")]
    Abandoned(&'static str),
}

/// What tells a blocked read that its caller gave up, so that it returns without taking data
/// from the stream (the next reader gets it instead).
pub struct ReadWatch<'a> {
    /// The caller's deadline, if it set one.
    pub deadline: Option<Instant>,
    /// The caller's connection: hang-up (POLLRDHUP/POLLHUP) means it left.
    pub peer: Option<BorrowedFd<'a>>,
    /// Checked at least once a second: true once the caller is known to be gone.
    pub gone: &'a dyn Fn() -> bool,
}

impl ReadWatch<'_> {
    /// A read that waits for data however long it takes.
    pub fn forever() -> ReadWatch<'static> {
        ReadWatch {
            deadline: None,
            peer: None,
            gone: &|| false,
        }
    }
}

/// Our own reference to a caller's connection fd, so that polling it stays valid (and never
/// sees a reused fd number) after the server closes its copy.
pub fn dup_peer(fd: RawFd) -> Option<OwnedFd> {
    let dup = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0)).ok()?;
    // SAFETY: fcntl just returned this new fd and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// How long one poll may sleep before the `gone` check runs again.
const WATCH_TICK: Duration = Duration::from_secs(1);

/// Which way bytes go through an extra fd (runc's `--preserve-fds`, relayed by the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraDir {
    /// Host -> process: the process gets a pipe's read end.
    In,
    /// Process -> host: the process gets a pipe's write end.
    Out,
    /// Both ways: the process gets one end of an AF_UNIX stream socketpair.
    Both,
    /// A listening socket (socket activation): the process gets a listening AF_UNIX stream
    /// socket (autobound, abstract); each host connection is relayed to a connection the
    /// agent makes to it ([`ProcessIo::connect_extra`]).
    Listen,
}

/// Where the agent connects for a listening extra fd: its autobound abstract address.
type ListenAddr = nix::sys::socket::UnixAddr;

/// Stream ids of connections to a listening extra fd start here (fds are below).
pub const CONNECTION_BASE: u32 = 1 << 20;

/// Most extra fds one process may have.
pub const MAX_EXTRA_FDS: usize = 256;

/// The agent's end of one extra fd: what it writes to (In, Both) and reads from (Out, Both).
struct ExtraStream {
    fd: u32,
    writer: Mutex<Option<File>>,
    reader: Mutex<Option<File>>,
    /// Both: closing the writer shuts the socket down for writing (the reader shares it).
    socket: bool,
    /// A listening extra fd: where its connections go (no writer, no reader).
    listen: Option<ListenAddr>,
    /// A connection's directions that ended (host closed, process's EOF read): with both,
    /// the connection is forgotten.
    closed: AtomicBool,
    eof: AtomicBool,
}

impl ExtraStream {
    fn new(fd: u32, writer: Option<File>, reader: Option<File>, socket: bool) -> ExtraStream {
        ExtraStream {
            fd,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            socket,
            listen: None,
            closed: AtomicBool::new(false),
            eof: AtomicBool::new(false),
        }
    }
}

/// A close-on-exec AF_UNIX stream socket.
fn unix_stream_socket() -> Result<OwnedFd, IoError> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| IoError::Io("socket", e.into()))?;
    // SAFETY: socket just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening AF_UNIX stream socket, autobound to an abstract address (close-on-exec here).
fn listening_socket() -> Result<(OwnedFd, ListenAddr), IoError> {
    use nix::sys::socket::{bind, getsockname, listen, UnixAddr};
    let err = |what| move |e: nix::errno::Errno| IoError::Io(what, e.into());
    let sock = unix_stream_socket()?;
    // Binding the family alone autobinds an abstract name.
    bind(sock.as_raw_fd(), &UnixAddr::new_unnamed()).map_err(err("bind (autobind)"))?;
    let addr: UnixAddr = getsockname(sock.as_raw_fd()).map_err(err("getsockname"))?;
    listen(sock.as_raw_fd(), 128).map_err(err("listen"))?;
    Ok((sock, addr))
}

/// The container side of a process' stdio, handed to the stage and closed in the agent once
/// the stage has it.
pub struct ChildStdio {
    fds: Vec<OwnedFd>,
    /// The process's ends of its extra fds, in order (fd 3, 4, ...).
    extra: Vec<OwnedFd>,
}

impl ChildStdio {
    /// /dev/null as all three, for a stage that makes its own stdio (a terminal process:
    /// the pty comes from the container's devpts).
    pub fn null() -> Result<ChildStdio, IoError> {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| IoError::Io("/dev/null", e))?;
        Ok(ChildStdio {
            fds: vec![null.into()],
            extra: Vec::new(),
        })
    }

    /// The process's ends of its extra fds (to become its fds 3, 4, ...).
    pub fn extra_raw(&self) -> Vec<RawFd> {
        self.extra.iter().map(AsRawFd::as_raw_fd).collect()
    }

    pub fn raw(&self) -> [RawFd; 3] {
        match self.fds.len() {
            1 => [self.fds[0].as_raw_fd(); 3],
            _ => [
                self.fds[0].as_raw_fd(),
                self.fds[1].as_raw_fd(),
                self.fds[2].as_raw_fd(),
            ],
        }
    }
}

/// The agent's ends of a terminal process's extra fds, kept until its pty master comes.
pub struct PendingExtra(Vec<ExtraStream>);

/// The agent side of a process' stdio.
pub struct ProcessIo {
    stdin: Mutex<Option<File>>,
    stdout: Mutex<Option<File>>,
    stderr: Mutex<Option<File>>,
    /// The pty master, for window size changes (terminal processes only).
    tty: Option<File>,
    /// The agent's ends of the extra fds (3, 4, ...) and of connections to listening ones.
    extra: Mutex<Vec<Arc<ExtraStream>>>,
    next_connection: AtomicU32,
}

/// Makes the extra fds `dirs` asks for: the agent's ends (close-on-exec) and the process's
/// (also close-on-exec here: only the stage's dup2 makes them the process's).
fn extra_streams(dirs: &[ExtraDir]) -> Result<(Vec<ExtraStream>, Vec<OwnedFd>), IoError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    if dirs.len() > MAX_EXTRA_FDS {
        return Err(IoError::TooMany(dirs.len()));
    }
    let mut ours = Vec::with_capacity(dirs.len());
    let mut theirs = Vec::with_capacity(dirs.len());
    for (i, dir) in dirs.iter().enumerate() {
        let fd = 3 + i as u32;
        let pipe = || {
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(IoError::Setup)?;
            // SAFETY: pipe2 just returned these fds and nothing else owns them.
            Ok::<_, IoError>(unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) })
        };
        let (writer, reader, child, socket) = match dir {
            ExtraDir::In => {
                let (r, w) = pipe()?;
                (Some(file(w)), None, r, false)
            }
            ExtraDir::Out => {
                let (r, w) = pipe()?;
                (None, Some(file(r)), w, false)
            }
            ExtraDir::Listen => {
                let (sock, addr) = listening_socket()?;
                let mut e = ExtraStream::new(fd, None, None, true);
                e.listen = Some(addr);
                ours.push(e);
                theirs.push(sock);
                continue;
            }
            ExtraDir::Both => {
                let (a, b) = socketpair(
                    AddressFamily::Unix,
                    SockType::Stream,
                    None,
                    SockFlag::SOCK_CLOEXEC,
                )
                .map_err(IoError::Setup)?;
                // SAFETY: socketpair just returned these fds and nothing else owns them.
                let (a, b) = unsafe { (OwnedFd::from_raw_fd(a), OwnedFd::from_raw_fd(b)) };
                let a = file(a);
                let r = a.try_clone().map_err(|e| IoError::Io("socketpair", e))?;
                (Some(a), Some(r), b, true)
            }
        };
        ours.push(ExtraStream::new(fd, writer, reader, socket));
        theirs.push(child);
    }
    Ok((ours, theirs))
}

/// Waits (as `watch` allows) until `f` is readable, then reads up to `len` bytes; empty at
/// EOF. `pty`: `f` is a pty master, which reads EIO once every slave fd is closed: that is EOF.
fn read_some(
    f: &mut File,
    name: &'static str,
    len: usize,
    watch: &ReadWatch,
    pty: bool,
) -> Result<Vec<u8>, IoError> {
    wait_readable(f.as_fd(), name, watch)?;
    let mut buf = vec![0; len.clamp(1, 1 << 20)];
    loop {
        match f.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if pty && e.raw_os_error() == Some(libc::EIO) => return Ok(Vec::new()),
            Err(e) => return Err(IoError::Io(name, e)),
        }
    }
}

fn file(fd: OwnedFd) -> File {
    File::from(fd)
}

impl ProcessIo {
    /// Pipes for stdin, stdout and stderr.
    pub fn pipes() -> Result<(ProcessIo, ChildStdio), IoError> {
        Self::pipes_with(&[])
    }

    /// Pipes for stdin, stdout and stderr, and the extra fds `extra` asks for.
    pub fn pipes_with(extra: &[ExtraDir]) -> Result<(ProcessIo, ChildStdio), IoError> {
        let p = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(IoError::Setup);
        let own = |fd: RawFd| {
            // SAFETY: pipe2 just returned this fd and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let (in_r, in_w) = p()?;
        let (out_r, out_w) = p()?;
        let (err_r, err_w) = p()?;
        let (ours, theirs) = extra_streams(extra)?;
        let io = ProcessIo {
            stdin: Mutex::new(Some(file(own(in_w)))),
            stdout: Mutex::new(Some(file(own(out_r)))),
            stderr: Mutex::new(Some(file(own(err_r)))),
            tty: None,
            extra: Mutex::new(ours.into_iter().map(Arc::new).collect()),
            next_connection: AtomicU32::new(CONNECTION_BASE),
        };
        Ok((
            io,
            ChildStdio {
                fds: vec![own(in_r), own(out_w), own(err_w)],
                extra: theirs,
            },
        ))
    }

    /// A terminal process's stdio before its stage is ready: /dev/null for the stage (it
    /// makes the pty) and the extra fds `extra` asks for; the agent's extra ends are kept
    /// for [`ProcessIo::console_with`].
    pub fn console_pending(extra: &[ExtraDir]) -> Result<(PendingExtra, ChildStdio), IoError> {
        let mut child = ChildStdio::null()?;
        let (ours, theirs) = extra_streams(extra)?;
        child.extra = theirs;
        Ok((PendingExtra(ours), child))
    }

    /// A terminal process' stdio: the pty master its stage allocated from the container's
    /// devpts (the slave is the process' stdio and controlling terminal).
    pub fn console(master: OwnedFd) -> Result<ProcessIo, IoError> {
        Self::console_with(master, PendingExtra(Vec::new()))
    }

    /// [`ProcessIo::console`] with the extra fds made by [`ProcessIo::console_pending`].
    pub fn console_with(master: OwnedFd, extra: PendingExtra) -> Result<ProcessIo, IoError> {
        let master = file(master);
        let dup = |f: &File| f.try_clone().map_err(|e| IoError::Io("dup pty", e));
        Ok(ProcessIo {
            stdin: Mutex::new(Some(dup(&master)?)),
            stdout: Mutex::new(Some(dup(&master)?)),
            stderr: Mutex::new(None),
            tty: Some(master),
            extra: Mutex::new(extra.0.into_iter().map(Arc::new).collect()),
            next_connection: AtomicU32::new(CONNECTION_BASE),
        })
    }

    fn extras(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ExtraStream>>> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn extra(&self, fd: u32) -> Result<Arc<ExtraStream>, IoError> {
        self.extras()
            .iter()
            .find(|e| e.fd == fd)
            .cloned()
            .ok_or(IoError::NoExtra(fd))
    }

    /// Forgets a connection whose both directions ended.
    fn reap(&self, e: &ExtraStream) {
        if e.fd >= CONNECTION_BASE
            && e.closed.load(Ordering::SeqCst)
            && e.eof.load(Ordering::SeqCst)
        {
            self.extras().retain(|x| x.fd != e.fd);
        }
    }

    /// Connects to the listening extra fd `fd` (what the process accepts) and returns the
    /// new connection's stream id, which the stream RPCs take as `fd` (both ways).
    pub fn connect_extra(&self, fd: u32) -> Result<u32, IoError> {
        let e = self.extra(fd)?;
        let Some(addr) = e.listen else {
            return Err(IoError::NotListening(fd));
        };
        let sock = file(unix_stream_socket()?);
        nix::sys::socket::connect(sock.as_raw_fd(), &addr)
            .map_err(|e| IoError::Io("connecting to the process's listening socket", e.into()))?;
        let reader = sock.try_clone().map_err(|e| IoError::Io("dup", e))?;
        let id = self.next_connection.fetch_add(1, Ordering::SeqCst);
        self.extras().push(Arc::new(ExtraStream::new(
            id,
            Some(sock),
            Some(reader),
            true,
        )));
        Ok(id)
    }

    /// Writes all of `data` to the process's extra fd `fd` (an in or both fd).
    pub fn write_extra(&self, fd: u32, data: &[u8]) -> Result<usize, IoError> {
        let e = self.extra(fd)?;
        let mut g = e.writer.lock().unwrap_or_else(|e| e.into_inner());
        let f = g.as_mut().ok_or(IoError::NoStream("extra fd input"))?;
        f.write_all(data).map_err(|e| IoError::Io("extra fd", e))?;
        Ok(data.len())
    }

    /// Ends the host -> process direction of extra fd `fd`: the process reads EOF.
    pub fn close_extra(&self, fd: u32) -> Result<(), IoError> {
        let e = self.extra(fd)?;
        let mut g = e.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let (true, Some(f)) = (e.socket, g.as_ref()) {
            // The reader holds the same socket: shut it down for writing, not just close.
            let _ = nix::sys::socket::shutdown(f.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        }
        *g = None;
        drop(g);
        e.closed.store(true, Ordering::SeqCst);
        self.reap(&e);
        Ok(())
    }

    /// Reads up to `len` bytes the process wrote to extra fd `fd` (an out or both fd); empty
    /// at EOF. Waits as [`ProcessIo::read`] does.
    pub fn read_extra(&self, fd: u32, len: usize, watch: &ReadWatch) -> Result<Vec<u8>, IoError> {
        let e = self.extra(fd)?;
        let mut g = e.reader.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = g.as_mut() else {
            return Err(IoError::NoStream("extra fd output"));
        };
        let buf = read_some(f, "extra fd", len, watch, false)?;
        if buf.is_empty() && e.fd >= CONNECTION_BASE {
            *g = None;
            drop(g);
            e.eof.store(true, Ordering::SeqCst);
            self.reap(&e);
        }
        Ok(buf)
    }

    pub fn write_stdin(&self, data: &[u8]) -> Result<usize, IoError> {
        let mut g = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let f = g.as_mut().ok_or(IoError::NoStream("stdin"))?;
        f.write_all(data).map_err(|e| IoError::Io("stdin", e))?;
        Ok(data.len())
    }

    /// Closes stdin; on a terminal, sends EOF (^D) instead, since the master stays open.
    pub fn close_stdin(&self) -> Result<(), IoError> {
        let mut g = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if self.tty.is_some() {
            if let Some(f) = g.as_mut() {
                f.write_all(&[4]).map_err(|e| IoError::Io("stdin", e))?;
            }
        }
        *g = None;
        Ok(())
    }

    /// Reads up to `len` bytes; an empty result means EOF. Blocks until data is available,
    /// unless `watch` says the caller left first: then nothing is read, so no output is lost
    /// to a caller that is no longer there. Readers of one stream take turns.
    pub fn read(&self, stderr: bool, len: usize, watch: &ReadWatch) -> Result<Vec<u8>, IoError> {
        let (m, name) = if stderr {
            (&self.stderr, "stderr")
        } else {
            (&self.stdout, "stdout")
        };
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = g.as_mut() else {
            return Ok(Vec::new());
        };
        read_some(f, name, len, watch, self.tty.is_some())
    }

    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), IoError> {
        let tty = self.tty.as_ref().ok_or(IoError::NoStream("terminal"))?;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize struct that outlives the call.
        let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            return Err(IoError::Io("terminal", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Waits until `stream` is readable (data, EOF or error), or fails if the caller left first.
/// A departure seen together with data still counts as a departure: the data stays.
fn wait_readable(stream: BorrowedFd, name: &'static str, watch: &ReadWatch) -> Result<(), IoError> {
    loop {
        if (watch.gone)() {
            return Err(IoError::Abandoned(name));
        }
        let mut tick = WATCH_TICK;
        if let Some(d) = watch.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IoError::DeadlineExceeded(name));
            }
            tick = tick.min(left);
        }
        let pollfd = |fd: RawFd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let mut fds = [
            pollfd(stream.as_raw_fd(), libc::POLLIN),
            // A negative fd is ignored by poll(2).
            pollfd(watch.peer.map_or(-1, |p| p.as_raw_fd()), libc::POLLRDHUP),
        ];
        match crate::syscall::linux::poll(&mut fds, tick) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(IoError::Io(name, e)),
        }
        let hangup = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
        if fds[1].revents & hangup != 0 {
            return Err(IoError::Abandoned(name));
        }
        if fds[0].revents != 0 {
            return Ok(());
        }
    }
}

/// A started (or about to be started) process.
pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    pub io: ProcessIo,
    exit: Mutex<Option<i32>>,
    cv: Condvar,
}

impl Process {
    /// Tracks `pid`; a background thread records its exit status from the registry.
    pub fn new(exec_id: &str, pid: i32, io: ProcessIo, registry: &Arc<ExitRegistry>) -> Arc<Self> {
        let p = Arc::new(Process {
            exec_id: exec_id.to_string(),
            pid,
            io,
            exit: Mutex::new(None),
            cv: Condvar::new(),
        });
        let (reg, me) = (Arc::clone(registry), Arc::clone(&p));
        std::thread::spawn(move || {
            let status = reg.wait(pid);
            *me.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
            me.cv.notify_all();
        });
        p
    }

    pub fn exit_status(&self) -> Option<i32> {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until the process exits.
    pub fn wait(&self) -> i32 {
        let mut g = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = *g {
                return s;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits at most `timeout`; None if still running.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<i32> {
        let g = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |s| s.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn with_output(data: &[u8]) -> (ProcessIo, ChildStdio) {
        let (io, child) = ProcessIo::pipes().unwrap();
        nix::unistd::write(child.raw()[1], data).unwrap();
        (io, child)
    }

    #[test]
    fn a_read_whose_caller_hung_up_leaves_the_data_for_the_next_reader() {
        let (io, _child) = with_output(b"hello");
        let (caller, server_end) = UnixStream::pair().unwrap();
        drop(caller);
        let gone = ReadWatch {
            deadline: None,
            peer: Some(server_end.as_fd()),
            gone: &|| false,
        };
        assert!(matches!(
            io.read(false, 64, &gone),
            Err(IoError::Abandoned("stdout"))
        ));
        assert_eq!(io.read(false, 64, &ReadWatch::forever()).unwrap(), b"hello");
    }

    #[test]
    fn a_passed_deadline_or_a_cancelled_caller_takes_nothing() {
        let (io, _child) = with_output(b"x");
        let late = ReadWatch {
            deadline: Some(Instant::now()),
            peer: None,
            gone: &|| false,
        };
        assert!(matches!(
            io.read(false, 64, &late),
            Err(IoError::DeadlineExceeded(_))
        ));
        let cancelled = ReadWatch {
            deadline: None,
            peer: None,
            gone: &|| true,
        };
        assert!(matches!(
            io.read(false, 64, &cancelled),
            Err(IoError::Abandoned(_))
        ));
        assert_eq!(io.read(false, 64, &ReadWatch::forever()).unwrap(), b"x");
    }

    #[test]
    fn a_live_caller_waits_for_data_until_its_deadline() {
        let (io, child) = ProcessIo::pipes().unwrap();
        let (_caller, server_end) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        let watch = ReadWatch {
            deadline: Some(t0 + Duration::from_millis(150)),
            peer: Some(server_end.as_fd()),
            gone: &|| false,
        };
        assert!(matches!(
            io.read(false, 64, &watch),
            Err(IoError::DeadlineExceeded(_))
        ));
        assert!(t0.elapsed() >= Duration::from_millis(150));
        drop(child);
        assert_eq!(io.read(false, 64, &ReadWatch::forever()).unwrap(), b"");
    }
}
