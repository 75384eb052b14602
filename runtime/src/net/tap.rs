//! Creating a TAP for husk-vmm's virtio-net: `/dev/net/tun` + `TUNSETIFF` with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (the flags `husk_vmm`'s `Tap::from_fd` insists on) and
//! `TUNSETVNETHDRSZ` 12 (`virtio_net_hdr_v1`, which the VMM sets again). No offloads are
//! enabled (`TUNSETOFFLOAD` is never called): the VMM's virtio-net offers none to the guest, so
//! the kernel hands the TAP only complete, checksummed frames.
//!
//! The TAP is not persistent (no `TUNSETPERSIST`): it exists while an fd to it is open and
//! vanishes with the last one, so a `kill -9` of the supervisor and the VMM removes it.
//!
//! Owns: the two tun ioctls. They are declared with nix's `ioctl_write_ptr_bad!` over libc's
//! request numbers and `ifreq` (no crate wraps just these two without an async runtime); each
//! passes a fully initialised value the kernel only reads.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Length of `struct virtio_net_hdr_v1`, what husk-vmm's virtio-net puts before every frame.
pub const VNET_HDR_LEN: libc::c_int = 12;

nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
nix::ioctl_write_ptr_bad!(tun_set_vnet_hdr_sz, libc::TUNSETVNETHDRSZ, libc::c_int);

/// Creates the TAP `name` in the calling thread's network namespace and returns its fd
/// (close-on-exec, non-blocking). Fails with `EBUSY` when a TAP of that name is open elsewhere.
pub(super) fn create(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name (1 to 15 bytes)"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data (integers, arrays and a union of them); all zeroes is a
    // valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // IFF_* fit in the c_short the kernel reads.
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: the fd is /dev/net/tun and `req` is a live, initialised ifreq the kernel reads.
    unsafe { tun_set_iff(file.as_raw_fd(), &req) }.map_err(io::Error::from)?;
    let len = VNET_HDR_LEN;
    // SAFETY: TUNSETVNETHDRSZ reads one int from `len`, which lives across the call.
    unsafe { tun_set_vnet_hdr_sz(file.as_raw_fd(), &len) }.map_err(io::Error::from)?;
    Ok(file.into())
}
