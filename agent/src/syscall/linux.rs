//! The real `Syscall` implementation: thin wrappers over nix/libc. No policy here.

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{makedev, Mode, SFlag};

use super::{CapSets, Create, InRoot, NodeKind, PathKind, Result, Syscall, SyscallError};

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Performs the calls for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
            .map_err(|e| SyscallError::new("mount", target, e))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags).map_err(|e| SyscallError::new("umount", target, e))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
            .map_err(|e| SyscallError::new("pivot_root", new_root, e))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).map_err(|e| SyscallError::new("chdir", path, e))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| SyscallError::new("mkdir", path, io_errno(&e)))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent, 0o755)?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| SyscallError::new("create", path, io_errno(&e)))
    }

    fn mknod(&self, path: &Path, kind: NodeKind, mode: u32, major: u64, minor: u64) -> Result<()> {
        let kind = match kind {
            NodeKind::Char => SFlag::S_IFCHR,
            NodeKind::Block => SFlag::S_IFBLK,
            NodeKind::Fifo => SFlag::S_IFIFO,
        };
        // The exact mode asked for, not less the umask (runc's createDevices does the same).
        let old = nix::sys::stat::umask(Mode::empty());
        let r = nix::sys::stat::mknod(
            path,
            kind,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        );
        nix::sys::stat::umask(old);
        r.map_err(|e| SyscallError::new("mknod", path, e))
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        nix::unistd::chown(path, uid.map(Into::into), gid.map(Into::into))
            .map_err(|e| SyscallError::new("chown", path, e))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(SyscallError::new("symlink", link, io_errno(&e))),
        }
    }

    fn path_kind(&self, path: &Path) -> PathKind {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => PathKind::Dir,
            Ok(_) => PathKind::File,
            Err(_) => PathKind::Missing,
        }
    }

    fn open_in_root(&self, root: &Path, path: &Path, create: Create) -> Result<InRoot> {
        super::in_root::open_in_root(root, path, create)
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).map_err(|e| SyscallError::new("sethostname", name, e))
    }

    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        nix::sched::unshare(flags).map_err(|e| SyscallError::new("unshare", "", e))
    }

    fn setns(&self, path: &Path, nstype: CloneFlags) -> Result<()> {
        let file = fs::File::open(path)
            .map_err(|e| SyscallError::new("open namespace", path, io_errno(&e)))?;
        nix::sched::setns(file.as_raw_fd(), nstype).map_err(|e| SyscallError::new("setns", path, e))
    }

    fn write_file(&self, path: &Path, data: &str) -> Result<()> {
        fs::write(path, data).map_err(|e| SyscallError::new("write", path, io_errno(&e)))
    }

    fn cap_bounding_drop(&self, cap: u32) -> Result<()> {
        // SAFETY: prctl with integer arguments only; no memory is passed.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        check(rc.into(), "drop bounding", cap_path(cap))
    }

    fn set_keep_caps(&self, on: bool) -> Result<()> {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) };
        check(rc.into(), "keepcaps", "")
    }

    fn setgroups(&self, gids: &[u32]) -> Result<()> {
        let gids: Vec<nix::unistd::Gid> = gids
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&gids).map_err(|e| SyscallError::new("setgroups", "", e))
    }

    fn setresgid(&self, gid: u32) -> Result<()> {
        let g = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
            .map_err(|e| SyscallError::new("setresgid", gid.to_string(), e))
    }

    fn setresuid(&self, uid: u32) -> Result<()> {
        let u = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
            .map_err(|e| SyscallError::new("setresuid", uid.to_string(), e))
    }

    fn capset(&self, sets: CapSets) -> Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
            version: 0x2008_0522,
            pid: 0,
        };
        let word = |i: u32| Data {
            effective: (sets.effective >> (32 * i)) as u32,
            permitted: (sets.permitted >> (32 * i)) as u32,
            inheritable: (sets.inheritable >> (32 * i)) as u32,
        };
        let data = [word(0), word(1)];
        // SAFETY: capset reads a v3 header and two data structs, laid out as the kernel
        // expects; both outlive the call.
        let rc =
            unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
        check(rc, "capset", "")
    }

    fn cap_ambient_raise(&self, cap: u32) -> Result<()> {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        check(rc.into(), "raise ambient", cap_path(cap))
    }
}

fn check(rc: libc::c_long, op: &'static str, what: impl Into<std::path::PathBuf>) -> Result<()> {
    if rc < 0 {
        Err(SyscallError::new(op, what, Errno::last()))
    } else {
        Ok(())
    }
}

fn cap_path(cap: u32) -> String {
    crate::caps::name(cap).map_or_else(|| cap.to_string(), str::to_string)
}

/// poll(2) on `fds` for at most `timeout` (rounded up to 1 ms, capped at ~24 days); the
/// number of fds with events. Here rather than nix 0.26's, which lacks POLLRDHUP.
pub fn poll(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> std::io::Result<usize> {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: poll reads and writes exactly `fds.len()` pollfd structs of `fds`, which
    // outlives the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}
