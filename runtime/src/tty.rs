//! Host-side terminals: the pty `create`/`exec` make for `--console-socket` (its master goes
//! to the caller over the socket, as runc sends it; its slave becomes the supervisor's stdio
//! for the process), raw mode, and window sizes.
//!
//! The guest's agent owns the process's real terminal (a guest pty, which does the line
//! discipline); the host pty only carries bytes, so its slave is put in raw mode. Window size
//! changes on the host pty are forwarded to the guest pty by the supervisor, which polls the
//! size (it has no controlling terminal, so no SIGWINCH reaches it).
//!
//! Owns: the module's few `unsafe` blocks (adopting openpty's fds, TIOCGWINSZ).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// A host pty pair.
pub struct Pty {
    /// The master: sent to the caller.
    pub master: OwnedFd,
    /// The slave: the supervisor's side.
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a pty with the slave in raw mode (the guest's pty does the line discipline).
    pub fn open() -> std::io::Result<Pty> {
        let r = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        // SAFETY: openpty just returned these two descriptors; nothing else owns them.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(r.master),
                OwnedFd::from_raw_fd(r.slave),
            )
        };
        for fd in [&master, &slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(std::io::Error::from)?;
        }
        make_raw(slave.as_raw_fd())?;
        Ok(Pty { master, slave })
    }

    /// Sends the master over the Unix socket at `path` (SCM_RIGHTS, with the slave's name as
    /// the payload, like runc's `utils.SendFile`).
    pub fn send_master(&self, path: &Path) -> std::io::Result<()> {
        let name = std::fs::read_link(format!("/proc/self/fd/{}", self.slave.as_raw_fd()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/dev/ptmx".into());
        let sock = crate::sockpath::connect(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("--console-socket {}: {e}", path.display()),
            )
        })?;
        let fds = [self.master.as_raw_fd()];
        sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(name.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(std::io::Error::from)?;
        Ok(())
    }
}

/// Puts a terminal in raw mode.
pub fn make_raw(fd: RawFd) -> std::io::Result<()> {
    let mut t = termios::tcgetattr(fd).map_err(std::io::Error::from)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(fd, SetArg::TCSANOW, &t).map_err(std::io::Error::from)
}

/// Puts the caller's terminal (fd 0) in raw mode for as long as it lives, when fd 0 is one
/// (as runc does for a foreground terminal process).
pub struct RawGuard {
    saved: Option<Termios>,
}

impl RawGuard {
    /// Raw mode on fd 0 if it is a terminal; a no-op otherwise.
    pub fn stdin() -> RawGuard {
        let saved = termios::tcgetattr(0).ok();
        if saved.is_some() && make_raw(0).is_err() {
            return RawGuard { saved: None };
        }
        RawGuard { saved }
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(0, SetArg::TCSANOW, t);
        }
    }
}

/// The window size (rows, columns) of the terminal at `fd`; `None` when it is not one.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize struct, which lives across the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn pty_master_travels_over_the_console_socket() {
        let dir = std::env::temp_dir().join(format!("husk-tty-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let pty = Pty::open().unwrap();
        assert!(window_size(pty.slave.as_raw_fd()).is_some());
        assert!(window_size(listener.as_raw_fd()).is_none());
        pty.send_master(&path).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let (name, fds): (String, _) = {
            let mut buf = [0u8; 256];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = nix::sys::socket::recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .unwrap();
            let fds: Vec<RawFd> = msg
                .cmsgs()
                .flat_map(|c| match c {
                    nix::sys::socket::ControlMessageOwned::ScmRights(r) => r,
                    _ => Vec::new(),
                })
                .collect();
            let n = msg.bytes;
            (String::from_utf8_lossy(&buf[..n]).into(), fds)
        };
        assert!(name.starts_with("/dev/pts/"), "{name}");
        assert_eq!(fds.len(), 1);
        // SAFETY: the kernel just installed this fd for the test.
        let mut master = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        master.write_all(b"hi\n").unwrap();
        let mut slave = std::fs::File::from(pty.slave);
        let mut got = [0u8; 3];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi\n", "raw mode passes bytes unchanged");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
