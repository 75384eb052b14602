//! One process the agent started (a container's init or an exec): its pid, its stdio as seen
//! from the agent (pipe ends or a pty master), and its exit status once reaped.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};

use crate::reaper::ExitRegistry;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("process has no {0} stream")]
    NoStream(&'static str),
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("setting up stdio: {0}")]
    Setup(nix::errno::Errno),
}

/// The container side of a process' stdio, handed to the stage and closed in the agent once
/// the stage has it.
pub struct ChildStdio {
    fds: Vec<OwnedFd>,
}

impl ChildStdio {
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

/// The agent side of a process' stdio.
pub struct ProcessIo {
    stdin: Mutex<Option<File>>,
    stdout: Mutex<Option<File>>,
    stderr: Mutex<Option<File>>,
    /// The pty master, for window size changes (terminal processes only).
    tty: Option<File>,
}

fn file(fd: OwnedFd) -> File {
    File::from(fd)
}

impl ProcessIo {
    /// Pipes for stdin, stdout and stderr.
    pub fn pipes() -> Result<(ProcessIo, ChildStdio), IoError> {
        let p = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(IoError::Setup);
        let own = |fd: RawFd| {
            // SAFETY: pipe2 just returned this fd and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let (in_r, in_w) = p()?;
        let (out_r, out_w) = p()?;
        let (err_r, err_w) = p()?;
        let io = ProcessIo {
            stdin: Mutex::new(Some(file(own(in_w)))),
            stdout: Mutex::new(Some(file(own(out_r)))),
            stderr: Mutex::new(Some(file(own(err_r)))),
            tty: None,
        };
        Ok((
            io,
            ChildStdio {
                fds: vec![own(in_r), own(out_w), own(err_w)],
            },
        ))
    }

    /// A pty: the slave becomes the process' stdio and controlling terminal.
    pub fn pty(rows: u16, cols: u16) -> Result<(ProcessIo, ChildStdio), IoError> {
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).map_err(IoError::Setup)?;
        for fd in [pty.master, pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(IoError::Setup)?;
        }
        // SAFETY: openpty just returned these fds and nothing else owns them.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(pty.master),
                OwnedFd::from_raw_fd(pty.slave),
            )
        };
        let master = file(master);
        let dup = |f: &File| f.try_clone().map_err(|e| IoError::Io("dup pty", e));
        let io = ProcessIo {
            stdin: Mutex::new(Some(dup(&master)?)),
            stdout: Mutex::new(Some(dup(&master)?)),
            stderr: Mutex::new(None),
            tty: Some(master),
        };
        Ok((io, ChildStdio { fds: vec![slave] }))
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

    /// Reads up to `len` bytes; an empty result means EOF. Blocks until data is available.
    pub fn read(&self, stderr: bool, len: usize) -> Result<Vec<u8>, IoError> {
        let (m, name) = if stderr {
            (&self.stderr, "stderr")
        } else {
            (&self.stdout, "stdout")
        };
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = g.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0; len.clamp(1, 1 << 20)];
        loop {
            match f.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A pty master reads EIO once every slave fd is closed: that is EOF.
                Err(e) if e.raw_os_error() == Some(libc::EIO) && self.tty.is_some() => {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(IoError::Io(name, e)),
            }
        }
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
