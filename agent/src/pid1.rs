//! PID 1 duties in the guest: leave the initial rootfs for a bind mount of it (pivot_root
//! refuses the initial rootfs), mount the pseudo-filesystems the agent and containers need, bring up
//! loopback, tell the VMM through its control page that the guest is up, and power the VM off.
//! (Reaping is `reaper`'s job.) Nothing here runs in host mode.

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

/// The initramfs is the initial rootfs, which pivot_root(2) refuses to pivot away from (its
/// mount has no parent), so no container could get its own root. A bind mount of `/` moved
/// over `/` and chrooted into has a parent: from then on pivot_root works. No copy, no
/// re-exec (`/proc/self/exe` stays valid).
pub fn leave_initramfs() -> std::io::Result<()> {
    let errno = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
    let new_root = Path::new("/husk-root");
    std::fs::create_dir_all(new_root)?;
    nix::mount::mount(
        Some("/"),
        new_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(errno)?;
    nix::unistd::chdir(new_root).map_err(errno)?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(errno)?;
    nix::unistd::chroot(".").map_err(errno)?;
    nix::unistd::chdir("/").map_err(errno)?;
    // The bind shows the (empty) mount-point directory itself; it is of no further use.
    let _ = std::fs::remove_dir(new_root);
    Ok(())
}

/// The VMM's control page (husk-vmm `devices/control.rs`): a byte write of 123 at offset 0
/// marks boot complete, 1 at offset 8 requests power-off.
pub const CONTROL_PAGE: u64 = 0xd000_0000;
pub const BOOT_COMPLETE_OFFSET: usize = 0;
pub const BOOT_COMPLETE_MAGIC: u8 = 123;
pub const POWER_OFFSET: usize = 8;
pub const POWER_OFF: u8 = 1;

/// Writes one byte to the control page through a /dev/mem mapping (a single byte store, as
/// the device expects).
pub fn control_write(offset: usize, value: u8) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mem")?;
    let len = 4096usize;
    // SAFETY: a fresh shared mapping of one page of /dev/mem at the control page's physical
    // address; nothing else in this process aliases it; it is unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            CONTROL_PAGE as libc::off_t,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: offset < len (callers pass the page's 0 or 8), the mapping is writable; a
    // volatile store makes exactly one byte-wide MMIO write.
    unsafe {
        std::ptr::write_volatile((addr as *mut u8).add(offset.min(len - 1)), value);
        libc::munmap(addr, len);
    }
    Ok(())
}

/// Tells the VMM the guest is up (the agent listens). Logs instead of failing: a VMM without
/// the page still works.
pub fn signal_boot_complete() {
    match control_write(BOOT_COMPLETE_OFFSET, BOOT_COMPLETE_MAGIC) {
        Ok(()) => {
            tracing::info!("boot-complete marker written to the control page at {CONTROL_PAGE:#x}")
        }
        Err(e) => tracing::warn!("boot-complete marker at {CONTROL_PAGE:#x}: {e}"),
    }
}

/// Syncs and powers the VM off: first through the control page (the VM exits at once), then
/// reboot(RB_POWER_OFF) (without ACPI the kernel halts, which the VMM recognises from the
/// console). Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    eprintln!("husk-agent: powering off");
    if let Err(e) = control_write(POWER_OFFSET, POWER_OFF) {
        eprintln!("husk-agent: power-off through the control page at {CONTROL_PAGE:#x}: {e}");
    }
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
