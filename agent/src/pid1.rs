//! PID 1 duties in the guest: mount the pseudo-filesystems the agent and containers need,
//! bring up loopback, and power the VM off. (Reaping is `reaper`'s job.) Nothing here runs in
//! host mode.

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::syscall::{MsFlags, Syscall, SyscallError};

/// The guest's base mounts, in order: (source, target, fstype, flags, data).
pub const BASE_MOUNTS: &[(&str, &str, &str, libc::c_ulong, Option<&str>)] = &[
    (
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("nsdelegate"),
    ),
];

/// Mounts the base filesystems; an already-mounted target (EBUSY) is fine.
pub fn mount_base(sys: &dyn Syscall) -> Result<(), SyscallError> {
    for (src, target, fstype, flags, data) in BASE_MOUNTS {
        let target = Path::new(target);
        sys.mkdir_all(target, 0o755)?;
        let flags = MsFlags::from_bits_truncate(*flags);
        match sys.mount(Some(Path::new(src)), target, Some(fstype), flags, *data) {
            Err(e) if e.errno == nix::errno::Errno::EBUSY => {}
            other => other?,
        }
    }
    let _ = sys.symlink(Path::new("pts/ptmx"), Path::new("/dev/ptmx"));
    let _ = sys.symlink(Path::new("/proc/self/fd"), Path::new("/dev/fd"));
    Ok(())
}

/// Sets IFF_UP on `lo`.
pub fn loopback_up() -> std::io::Result<()> {
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own, on our socket.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Syncs and powers the VM off. Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot() only returns on failure; PID 1 must not exit (that panics the kernel).
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::fake::RecordingSyscall;

    #[test]
    fn mounts_proc_first_and_cgroup2_at_sys_fs_cgroup() {
        let sys = RecordingSyscall::new();
        mount_base(&sys).unwrap();
        let t = sys.mount_targets();
        assert_eq!(t[0], Path::new("/proc"));
        assert!(
            t.iter().position(|p| p == Path::new("/sys"))
                < t.iter().position(|p| p == Path::new("/sys/fs/cgroup"))
        );
        assert!(
            t.iter().position(|p| p == Path::new("/dev"))
                < t.iter().position(|p| p == Path::new("/dev/pts"))
        );
    }
}
