//! A TAP interface with the 12-byte virtio-net header (`IFF_VNET_HDR`), opened by name in the
//! VMM's network namespace or taken from an inherited fd (which may come from another one).
//!
//! Owns: the three TAP ioctls. They are the only unsafe code in the virtio devices; each call
//! passes a properly sized, initialised `ifreq` or integer the kernel only reads or fills.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

/// Length of `struct virtio_net_hdr_v1`, the header in front of every frame.
pub const VNET_HDR_LEN: usize = 12;

/// Errors opening a TAP.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// /dev/net/tun could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(std::io::Error),
    /// TUNSETIFF failed (no such device and no CAP_NET_ADMIN, or a non-TAP device).
    #[error("tap {name}: {source}")]
    SetIff {
        /// The interface name.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// The inherited fd is not a TAP with a virtio-net header.
    #[error("fd {fd}: {message}")]
    BadFd {
        /// The fd.
        fd: RawFd,
        /// What is wrong.
        message: String,
    },
    /// Another ioctl or fcntl failed.
    #[error("tap: {0}")]
    Io(std::io::Error),
}

#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// An open TAP.
#[derive(Debug)]
pub struct Tap {
    file: File,
}

impl Tap {
    /// Opens (creating it if this process may) the TAP called `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            ..Default::default()
        };
        let n = name.len().min(15);
        req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        // SAFETY: `file` is /dev/net/tun and `req` is a live, correctly sized ifreq.
        if unsafe { ioctl_with_ref(&file, TUNSETIFF, &req) } < 0 {
            return Err(TapError::SetIff {
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        let tap = Self { file };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// Takes ownership of an inherited TAP fd, which must have `IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR`.
    pub fn from_fd(fd: RawFd) -> Result<Self, TapError> {
        let bad = |message: &str| TapError::BadFd {
            fd,
            message: message.to_owned(),
        };
        // SAFETY: F_GETFD only inspects the descriptor table; an invalid fd yields -1.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(bad("not an open file descriptor"));
        }
        // SAFETY: the caller handed this fd to the VMM to own (`--net fd=N`); nothing else in
        // the process uses it, and it was just checked to be open.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut req = IfReq::default();
        // SAFETY: TUNGETIFF fills at most the ifreq `req` points to.
        if unsafe { ioctl_with_mut_ref(&file, TUNGETIFF, &mut req) } < 0 {
            return Err(bad("not a TAP device (TUNGETIFF failed)"));
        }
        let want = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if req.flags & want != want {
            return Err(bad(
                "TAP must be opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR",
            ));
        }
        // SAFETY: plain fcntl flag update on an fd we own.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(TapError::Io(std::io::Error::last_os_error()));
        }
        let tap = Self { file };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    fn set_vnet_hdr_len(&self) -> Result<(), TapError> {
        let len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from `len`.
        if unsafe { ioctl_with_ref(&self.file, TUNSETVNETHDRSZ, &len) } < 0 {
            return Err(TapError::Io(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Frame-at-a-time I/O: a TAP, or a datagram socket pair in tests.
pub trait FrameIo: AsRawFd + Send {
    /// Reads one frame (virtio-net header included); `WouldBlock` when none is queued.
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one frame (virtio-net header included).
    fn write_frame(&mut self, buf: &[u8]) -> std::io::Result<usize>;
}

impl FrameIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
    fn write_frame(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
}

impl FrameIo for std::os::unix::net::UnixDatagram {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.recv(buf)
    }
    fn write_frame(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.send(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn inherited_fd_must_be_a_vnet_tap() {
        let f = File::open("/dev/null").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        let e = Tap::from_fd(fd).unwrap_err();
        assert!(e.to_string().contains("not a TAP"), "{e}");
        assert!(Tap::from_fd(100_000).is_err());
    }

    /// Opens a real TAP, gives the host side an address and checks the host's ARP request for
    /// a guest address comes out of it with a virtio-net header; then answers nothing.
    /// Needs CAP_NET_ADMIN and /dev/net/tun; skips (and says so) without them.
    #[test]
    fn real_tap_carries_host_frames() {
        let name = format!("husk-t{}", std::process::id() % 100_000);
        let mut tap = match Tap::open(&name) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("SKIP: cannot create a TAP here: {e}");
                return;
            }
        };
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let addr = format!("10.213.{}.1/24", std::process::id() % 200 + 1);
        let peer = format!("10.213.{}.2", std::process::id() % 200 + 1);
        if !ip(&["addr", "add", &addr, "dev", &name]) || !ip(&["link", "set", &name, "up"]) {
            eprintln!("SKIP: cannot configure {name} with ip(8)");
            return;
        }
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut buf = vec![0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut arp = false;
        while Instant::now() < deadline && !arp {
            let _ = sock.send_to(b"x", format!("{peer}:9"));
            std::thread::sleep(Duration::from_millis(50));
            while let Ok(n) = tap.read_frame(&mut buf) {
                let eth = &buf[VNET_HDR_LEN..n];
                // EtherType 0x0806, opcode 1 (request), target IP = peer.
                if eth.len() >= 42 && eth[12..14] == [0x08, 0x06] && eth[21] == 1 {
                    let target: Vec<String> = eth[38..42].iter().map(u8::to_string).collect();
                    arp = target.join(".") == peer;
                }
            }
        }
        ip(&["link", "del", &name]);
        assert!(arp, "no ARP request for {peer} came out of {name}");
    }
}
