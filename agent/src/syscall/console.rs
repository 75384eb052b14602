//! Console ptys for terminal processes, made the way runc makes them: the init stage opens the
//! `ptmx` of the devpts instance it sees (the container's own, after pivot_root or after
//! joining the container's mount namespace), makes the slave its stdio and controlling
//! terminal, and passes the master to the agent over the sync socket with SCM_RIGHTS. This
//! module owns the pty ioctls and the fd passing; it decides nothing about when they happen.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::Mode;

use super::{Result, SyscallError};

/// A fresh pty pair; both ends close on exec.
pub struct Console {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass an fd the kernel has just returned to us, which nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens a new pty on the devpts instance behind `ptmx` (e.g. `/dev/pts/ptmx`), unlocks it,
/// sets its window size and opens the slave through the master (TIOCGPTPEER, so no path
/// lookup can reach another instance's `N`).
pub fn open_console(ptmx: &Path, rows: u16, cols: u16) -> Result<Console> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = own(nix::fcntl::open(ptmx, flags, Mode::empty())
        .map_err(|e| SyscallError::new("open", ptmx, e))?);
    let m = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int that outlives the call.
    if unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(SyscallError::new("unlockpt", ptmx, Errno::last()));
    }
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct that outlives the call.
    if unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(SyscallError::new("TIOCSWINSZ", ptmx, Errno::last()));
    }
    // SAFETY: TIOCGPTPEER takes open flags as an integer argument and returns a new fd.
    let slave = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, flags.bits()) };
    if slave < 0 {
        return Err(SyscallError::new("open pty slave", ptmx, Errno::last()));
    }
    Ok(Console {
        master,
        slave: own(slave),
    })
}

/// Makes `slave` stdin, stdout and stderr, starts a new session and makes it the session's
/// controlling terminal. `slave` itself stays close-on-exec.
pub fn take_as_controlling_terminal(slave: &OwnedFd) -> Result<()> {
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd)
            .map_err(|e| SyscallError::new("dup2 pty slave", "", e))?;
    }
    nix::unistd::setsid().map_err(|e| SyscallError::new("setsid", "", e))?;
    // SAFETY: TIOCSCTTY on fd 0 with an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(SyscallError::new("TIOCSCTTY", "", Errno::last()));
    }
    Ok(())
}

/// Sends `data` with `fd` attached (SCM_RIGHTS) on a Unix stream socket.
pub fn send_with_fd(sock: BorrowedFd, data: &[u8], fd: BorrowedFd) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(data)];
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| SyscallError::new("sendmsg", "", e))?;
    if n != data.len() {
        return Err(SyscallError::new("sendmsg (short)", "", Errno::EMSGSIZE));
    }
    Ok(())
}

/// Reads what is there (0 at EOF) into `buf` and returns it with any fds that came attached,
/// close-on-exec. read(2) would silently close such fds; the kernel ends a read at the first
/// message carrying fds, so they arrive with the bytes they were sent with.
pub fn recv_with_fds(sock: BorrowedFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs() {
            if let ControlMessageOwned::ScmRights(list) = c {
                fds.extend(list.into_iter().map(own));
            }
        }
        return Ok((msg.bytes, fds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_passed_master_still_drives_its_slave() {
        let Ok(c) = open_console(Path::new("/dev/ptmx"), 30, 100) else {
            eprintln!("SKIPPED: no /dev/ptmx here");
            return;
        };
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fd(a.as_fd(), b"console\n", c.master.as_fd()).unwrap();
        drop(c.master);
        let mut buf = [0u8; 64];
        let (n, mut fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"console\n");
        assert_eq!(fds.len(), 1);
        let master = fds.pop().unwrap();
        let flags = nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received fds close on exec");

        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize struct we own.
        let rc = unsafe { libc::ioctl(c.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (30, 100));
        nix::unistd::write(master.as_raw_fd(), b"hi\n").unwrap();
        let n = nix::unistd::read(c.slave.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
    }

    #[test]
    fn plain_bytes_come_without_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        use std::io::Write;
        (&a).write_all(b"ready\n").unwrap();
        drop(a);
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"ready\n"[..], 0));
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf).unwrap().0, 0, "EOF");
    }
}
