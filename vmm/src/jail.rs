//! Confining the VMM process once its VM is built (Firecracker's jailer, done in-process):
//! after guest memory is loaded, every device has opened what it needs (disk image, vsock
//! listener, TAP, console log) and the vCPUs are configured, [`enter`] leaves the VMM with
//! only those fds and nothing else of the host:
//!
//! 1. new mount, network, IPC and UTS namespaces (no abstract Unix sockets of the host, no
//!    host SysV IPC, no mount events reach or leave it);
//! 2. the root becomes the jail directory, bind-mounted read-only, nosuid, nodev, noexec
//!    (`pivot_root` then the old root is detached): the VMM sees that directory and nothing
//!    else; husk puts only the vsock socket there, so guest-initiated vsock connections to
//!    `vsock.sock_<port>` still resolve;
//! 3. the capability bounding set, ambient, inheritable, permitted and effective sets are
//!    emptied, securebits lock root's special treatment off, and `no_new_privs` is set.
//!
//! Then each VMM thread installs its seccomp filter ([`crate::seccomp`]). The process must be
//! single-threaded when [`enter`] runs: `unshare(CLONE_NEWNS)` refuses a process whose
//! threads share its filesystem context, and capabilities are per thread.
//!
//! Owns: the confinement steps. The caller chooses the jail directory and keeps it private
//! (0700, owned by root).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Errors confining the process.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// One step failed.
    #[error("jail: {step}: {source}")]
    Step {
        /// What was being done.
        step: String,
        /// The OS error.
        source: io::Error,
    },
}

fn step(step: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let step = step.into();
    move |source| JailError::Step { step, source }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What [`enter`] did, for the log.
#[derive(Debug, Clone)]
pub struct Jailed {
    /// The directory that is now `/`.
    pub root: PathBuf,
}

/// Confines the calling (single-threaded) process to `dir`; see the module docs.
pub fn enter(dir: &Path) -> Result<Jailed, JailError> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| JailError::Step {
        step: format!("{}: path contains NUL", dir.display()),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // SAFETY: unshare takes no pointers; it only changes this process's namespaces.
    check(unsafe { libc::unshare(flags) }).map_err(step("unshare(mount, net, ipc, uts)"))?;
    // SAFETY: the strings are valid NUL-terminated C strings for the duration of each call;
    // null data pointers are allowed for these mount flags.
    unsafe {
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))
        .map_err(step("making / private"))?;
        check(libc::mount(
            c.as_ptr(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))
        .map_err(step(format!("bind-mounting {}", dir.display())))?;
        check(libc::mount(
            c.as_ptr(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            std::ptr::null(),
        ))
        .map_err(step(format!("making {} read-only", dir.display())))?;
        check(libc::chdir(c.as_ptr())).map_err(step(format!("chdir {}", dir.display())))?;
        // pivot_root(".", "."): the old root is stacked under the new one at "/", then
        // detached (the runc trick, no put_old directory needed).
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)
            .map_err(step("pivot_root"))?;
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))
            .map_err(step("detaching the old root"))?;
        check(libc::chdir(c"/".as_ptr())).map_err(step("chdir /"))?;
    }
    drop_privileges()?;
    Ok(Jailed {
        root: dir.to_path_buf(),
    })
}

/// Highest capability number this kernel knows (`/proc` is gone after the pivot, so probe
/// with PR_CAPBSET_READ, which fails with EINVAL past the last one).
fn last_cap() -> u32 {
    let mut cap = 0;
    // SAFETY: PR_CAPBSET_READ takes an integer and reads nothing from memory.
    while cap < 64 && unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap + 1, 0, 0, 0) } >= 0 {
        cap += 1;
    }
    cap
}

// securebits (linux/securebits.h): root gets no capabilities from exec or setuid, locked.
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

/// capset(2)'s header and data (linux/capability.h, version 3: two 32-bit words per set).
/// libc has no wrapper and nix 0.26 none either; two plain structs are all it takes.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties every capability set of this thread (the process is single-threaded here), locks
/// root's special cases off and sets `no_new_privs`.
pub fn drop_privileges() -> Result<(), JailError> {
    for cap in 0..=last_cap() {
        // SAFETY: integer arguments only. Needs CAP_SETPCAP, still held here.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) }).map_err(step(
            format!("dropping capability {cap} from the bounding set"),
        ))?;
    }
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) })
        .map_err(step("setting securebits"))?;
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })
    .map_err(step("clearing ambient capabilities"))?;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and data are valid for capset's v3 layout (two CapData entries).
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) as libc::c_int
    })
    .map_err(step("emptying the capability sets"))?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map_err(step("setting no_new_privs"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a forked child and returns its exit status (0 = the body returned true).
    fn in_child(body: impl FnOnce() -> bool) -> i32 {
        // SAFETY: the child runs `body` and _exits; the tests below only use raw syscalls,
        // std::fs on paths and no locks another thread could hold.
        match unsafe { libc::fork() } {
            0 => {
                let ok = body();
                // SAFETY: leaves the child without running the parent's atexit handlers.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                status
            }
            _ => panic!("fork failed"),
        }
    }

    fn cap_line(status: &str, key: &str) -> String {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn drop_privileges_empties_every_set() {
        if unsafe_geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let status = in_child(|| {
            if drop_privileges().is_err() {
                return false;
            }
            let s = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
            ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
                .iter()
                .all(|k| cap_line(&s, k) == "0000000000000000")
                && cap_line(&s, "NoNewPrivs:") == "1"
        });
        assert_eq!(status, 0, "capabilities or no_new_privs not as expected");
    }

    #[test]
    fn enter_leaves_only_the_jail_directory() {
        if unsafe_geteuid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        std::fs::write(dir.as_path().join("inside"), b"x").unwrap();
        let path = dir.as_path().to_path_buf();
        let status = in_child(move || match enter(&path) {
            Ok(_) => {
                Path::new("/inside").exists()
                    && !Path::new("/etc/passwd").exists()
                    && !Path::new("/proc/self").exists()
                    // the root is read-only
                    && std::fs::write("/new", b"x").is_err()
            }
            Err(e) => {
                // pivot_root is refused in some sandboxes (a chroot'ed rootfs); say so.
                eprintln!("enter: {e}");
                false
            }
        });
        assert_eq!(status, 0, "the jail leaked the host filesystem or failed");
    }

    fn unsafe_geteuid() -> u32 {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    }
}
