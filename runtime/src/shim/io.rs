//! A process's stdio between containerd and husk. containerd names FIFOs (or `file://` paths)
//! for stdin, stdout and stderr.
//!
//! - Without a terminal, stdout and stderr are opened here and given to the husk verb as its
//!   own stdout and stderr; husk hands them on to the supervisor, which relays the guest's
//!   output straight into them. stdin goes through a pipe the shim feeds from the FIFO, so
//!   that `CloseIO` can end it (containerd's FIFO may have no writer yet when the process
//!   starts).
//! - With a terminal, the husk verb gets `--console-socket`; it sends the pty master there, and
//!   the shim copies stdin FIFO -> master and master -> stdout FIFO, and sets the window
//!   size on the master (`ResizePty`).

use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::husk::Stdio3;

/// Errors setting up a process's stdio.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Opening one of containerd's paths.
    #[error("{what} {path}: {source}")]
    Open {
        /// stdin, stdout or stderr.
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A URI scheme the shim does not handle.
    #[error("{what} {path}: only FIFOs and file:// paths are supported")]
    Scheme {
        /// stdin, stdout or stderr.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// The console socket.
    #[error("console socket {path}: {source}")]
    Console {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens an output path: a FIFO read-write (the open never blocks, and writes never fail for
/// want of a reader while containerd reopens its end), a `file://` path or plain file for
/// appending. `None` for an empty path.
fn open_output(what: &'static str, path: &str) -> Result<Option<File>, IoError> {
    if path.is_empty() {
        return Ok(None);
    }
    let err = |source| IoError::Open {
        what,
        path: path.to_owned(),
        source,
    };
    if let Some(p) = path.strip_prefix("file://") {
        if let Some(dir) = Path::new(p).parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        return OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(Some)
            .map_err(err);
    }
    if path.contains("://") {
        return Err(IoError::Scheme {
            what,
            path: path.to_owned(),
        });
    }
    let is_fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut o = OpenOptions::new();
    o.write(true);
    if is_fifo {
        o.read(true);
    } else {
        o.create(true).append(true);
    }
    o.open(path).map(Some).map_err(err)
}

/// Opens the stdin FIFO for reading, waiting for containerd's writer.
fn open_input(path: &str) -> std::io::Result<File> {
    let p = path.strip_prefix("file://").unwrap_or(path);
    OpenOptions::new().read(true).open(p)
}

/// The shim's end of a process's stdin pipe. The feeding thread closes it at the FIFO's EOF;
/// `CloseIO` asks it to close once what containerd already wrote has been passed on.
#[derive(Default)]
pub struct StdinWriter {
    w: Mutex<Option<File>>,
    closing: AtomicBool,
    path: String,
}

impl StdinWriter {
    /// `CloseIO`: the process's stdin reaches EOF after what is already in the FIFO.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // A feeder still waiting in open(2) for containerd's writer wakes for this one (which
        // goes at once: the FIFO then reads as EOF).
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path);
    }

    fn drop_writer(&self) {
        self.w.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn write_all(&self, buf: &[u8]) -> bool {
        match self.w.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(w) => w.write_all(buf).is_ok(),
            None => false,
        }
    }
}

/// Copies the stdin FIFO into `sink` until EOF (no writer left), or until `CloseIO` and
/// nothing more to read; then closes the process's stdin.
fn feed_stdin(sink: Arc<StdinWriter>) {
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            if let Ok(f) = open_input(&sink.path) {
                copy_until_closed(&f, &sink);
            }
            sink.drop_writer();
        });
}

fn copy_until_closed(f: &File, sink: &StdinWriter) {
    use nix::poll::{poll, PollFd, PollFlags};
    if nix::fcntl::fcntl(
        f.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [PollFd::new(f.as_raw_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, 100);
        match (&*f).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !sink.write_all(&buf[..n]) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if sink.closing.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A console socket: a listener in a private temporary directory.
pub struct ConsoleSocket {
    dir: tempfile::TempDir,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new() -> Result<ConsoleSocket, IoError> {
        let dir = tempfile::Builder::new()
            .prefix("husk-shim-pty")
            .tempdir()
            .map_err(|source| IoError::Console {
                path: std::env::temp_dir(),
                source,
            })?;
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).map_err(|source| IoError::Console {
            path: path.clone(),
            source,
        })?;
        Ok(ConsoleSocket { dir, listener })
    }

    /// Its path (`--console-socket`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// The pty master the verb sent, if it sent one (the verb has returned by now, so the
    /// connection is already queued).
    fn take_master(&self) -> Result<File, IoError> {
        let err = |source| IoError::Console {
            path: self.path(),
            source,
        };
        self.listener.set_nonblocking(true).map_err(err)?;
        let (conn, _) = self.listener.accept().map_err(err)?;
        conn.set_nonblocking(false).map_err(err)?;
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| err(e.into()))?;
        for c in msg.cmsgs() {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this descriptor for us; nothing else
                    // owns it (any others in the message are closed with their OwnedFds).
                    let master = unsafe { OwnedFd::from_raw_fd(fd) };
                    for &other in &fds[1..] {
                        // SAFETY: as above, received and unowned.
                        drop(unsafe { OwnedFd::from_raw_fd(other) });
                    }
                    return Ok(File::from(master));
                }
            }
        }
        Err(err(std::io::Error::other("no pty master in the message")))
    }
}

/// Copies `from` to `to` with plain read(2)/write(2) until EOF or an error (EIO from a pty
/// master once every slave is closed). Not `std::io::copy`: it splices between a pipe and a
/// tty, which on some kernels holds terminal output back until more arrives.
fn pump(from: &File, to: &File) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match (&*from).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if (&*to).write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// What a process's stdio needs while its husk verb runs.
pub struct Prepared {
    /// The verb's stdio.
    pub stdio: Stdio3,
    /// With a terminal: the socket to pass as `--console-socket`.
    pub console: Option<ConsoleSocket>,
    stdin: Option<Arc<StdinWriter>>,
    paths: Paths,
}

/// containerd's three paths.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    /// stdin.
    pub stdin: String,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
    /// The owner (uid, gid) of the stdin pipe the shim makes (runtime options IoUid/IoGid).
    pub owner: Option<(u32, u32)>,
}

/// A running process's stdio, as the shim holds it.
#[derive(Default)]
pub struct ProcIo {
    /// The stdin pipe (no terminal).
    pub stdin: Option<Arc<StdinWriter>>,
    /// The pty master (terminal).
    pub master: Option<Arc<File>>,
}

impl ProcIo {
    /// `CloseIO`: the process's stdin reaches EOF (without a terminal).
    pub fn close_stdin(&self) {
        if let Some(s) = &self.stdin {
            s.close();
        }
    }

    /// `ResizePty`.
    pub fn resize(&self, width: u32, height: u32) -> std::io::Result<()> {
        let Some(m) = &self.master else {
            return Err(std::io::Error::other("the process has no terminal"));
        };
        let ws = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is the master we own.
        let r = unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Opens what the verb needs for `paths`.
pub fn prepare(paths: &Paths) -> Result<Prepared, IoError> {
    if paths.terminal {
        return Ok(Prepared {
            stdio: Stdio3::null(),
            console: Some(ConsoleSocket::new()?),
            stdin: None,
            paths: paths.clone(),
        });
    }
    let out = |what, p: &str| -> Result<Stdio, IoError> {
        Ok(open_output(what, p)?.map_or_else(Stdio::null, Stdio::from))
    };
    let (stdin, writer) = if paths.stdin.is_empty() {
        (Stdio::null(), None)
    } else {
        let (r, w) = std::io::pipe().map_err(|source| IoError::Open {
            what: "stdin",
            path: paths.stdin.clone(),
            source,
        })?;
        if let Some((uid, gid)) = paths.owner {
            // Both ends are one pipe inode.
            nix::unistd::fchown(
                r.as_raw_fd(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| IoError::Open {
                what: "stdin",
                path: format!("{} (IoUid/IoGid {uid}:{gid})", paths.stdin),
                source: e.into(),
            })?;
        }
        let writer = Arc::new(StdinWriter {
            w: Mutex::new(Some(File::from(OwnedFd::from(w)))),
            closing: AtomicBool::new(false),
            path: paths
                .stdin
                .strip_prefix("file://")
                .unwrap_or(&paths.stdin)
                .to_owned(),
        });
        (Stdio::from(r), Some(writer))
    };
    Ok(Prepared {
        stdio: Stdio3 {
            stdin,
            stdout: out("stdout", &paths.stdout)?,
            stderr: out("stderr", &paths.stderr)?,
        },
        console: None,
        stdin: writer,
        paths: paths.clone(),
    })
}

impl Prepared {
    /// After the verb succeeded: start feeding stdin, or take the pty master and start
    /// copying.
    pub fn finish(self) -> Result<ProcIo, IoError> {
        if let Some(sock) = &self.console {
            let master = Arc::new(sock.take_master()?);
            // Without a stdout the terminal is still drained (a full pty stalls the process).
            let stdout = match open_output("stdout", &self.paths.stdout)? {
                Some(f) => f,
                None => File::options()
                    .write(true)
                    .open("/dev/null")
                    .map_err(|source| IoError::Open {
                        what: "stdout",
                        path: "/dev/null".into(),
                        source,
                    })?,
            };
            if !self.paths.stdin.is_empty() {
                let path = self.paths.stdin.clone();
                let m = Arc::clone(&master);
                let _ = std::thread::Builder::new()
                    .name("pty-in".into())
                    .spawn(move || {
                        if let Ok(f) = open_input(&path) {
                            pump(&f, &m);
                        }
                    });
            }
            let m = Arc::clone(&master);
            let _ = std::thread::Builder::new()
                .name("pty-out".into())
                .spawn(move || {
                    // EIO once every slave is closed (the process and its supervisor gone).
                    pump(&m, &stdout);
                });
            return Ok(ProcIo {
                stdin: None,
                master: Some(master),
            });
        }
        if let Some(w) = &self.stdin {
            feed_stdin(Arc::clone(w));
        }
        Ok(ProcIo {
            stdin: self.stdin,
            master: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_open_without_blocking_and_refuse_unknown_schemes() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No reader: a write-only open would block or fail (ENXIO).
        let f = open_output("stdout", fifo.to_str().unwrap()).unwrap();
        assert!(f.is_some());
        let file = t.path().join("log");
        let p = format!("file://{}", file.display());
        open_output("stdout", &p)
            .unwrap()
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        assert!(open_output("stdout", "").unwrap().is_none());
        let e = open_output("stdout", "binary:///bin/logger").unwrap_err();
        assert!(e.to_string().contains("only FIFOs"), "{e}");
    }

    #[test]
    fn stdin_is_fed_from_the_fifo_and_closes_at_eof() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let paths = Paths {
            stdin: fifo.to_str().unwrap().to_owned(),
            ..Default::default()
        };
        let p = prepare(&paths).unwrap();
        let Stdio3 { stdin, .. } = p.stdio;
        let io = Prepared {
            stdio: Stdio3::null(),
            console: None,
            stdin: p.stdin,
            paths: p.paths,
        }
        .finish()
        .unwrap();
        assert!(io.stdin.is_some());
        let mut w = OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(b"hello").unwrap();
        drop(w);
        // containerd's CloseIO comes right after its writer closes: nothing written is lost.
        io.close_stdin();
        // The pipe's read end is what the verb would get; read it through a child.
        let out = std::process::Command::new("cat")
            .stdin(stdin)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn io_uid_and_gid_own_the_stdin_pipe() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown of a pipe needs root");
            return;
        }
        let paths = Paths {
            stdin: "/nonexistent-fifo".into(),
            owner: Some((4321, 4322)),
            ..Default::default()
        };
        let p = prepare(&paths).unwrap();
        let w = p.stdin.as_ref().unwrap().w.lock().unwrap();
        let m = w.as_ref().unwrap().metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), (4321, 4322));
    }

    #[test]
    fn close_io_ends_stdin_that_never_had_a_writer() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let paths = Paths {
            stdin: fifo.to_str().unwrap().to_owned(),
            ..Default::default()
        };
        let mut p = prepare(&paths).unwrap();
        let stdin = std::mem::replace(&mut p.stdio.stdin, Stdio::null());
        let io = p.finish().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        io.close_stdin();
        let out = std::process::Command::new("timeout")
            .args(["10", "cat"])
            .stdin(stdin)
            .output()
            .unwrap();
        assert!(out.status.success(), "cat saw no EOF: {:?}", out.status);
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn terminal_output_reaches_the_stdout_fifo_at_once() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let paths = Paths {
            stdout: fifo.to_str().unwrap().to_owned(),
            terminal: true,
            ..Default::default()
        };
        let p = prepare(&paths).unwrap();
        let pty = crate::tty::Pty::open().unwrap();
        pty.send_master(&p.console.as_ref().unwrap().path())
            .unwrap();
        let _io = p.finish().unwrap();
        File::from(pty.slave.try_clone().unwrap())
            .write_all(b"/ # ")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..200 {
            match (&reader).read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => {}
            }
            if got.ends_with(b"/ # ") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(got, b"/ # ");
    }

    #[test]
    fn the_pty_master_travels_over_the_console_socket() {
        let sock = ConsoleSocket::new().unwrap();
        let pty = crate::tty::Pty::open().unwrap();
        pty.send_master(&sock.path()).unwrap();
        let m = sock.take_master().unwrap();
        let io = ProcIo {
            stdin: None,
            master: Some(Arc::new(m)),
        };
        io.resize(111, 33).unwrap();
        assert_eq!(
            crate::tty::window_size(pty.slave.as_raw_fd()),
            Some((33, 111))
        );
    }
}
