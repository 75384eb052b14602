//! The agent's syscall layer: the `Syscall` trait through which container setup performs
//! mounts, namespace and filesystem changes, with the real Linux implementation (`linux`) and
//! a recording fake (`fake`, tests and the `test-utils` feature) so that mount and namespace
//! decisions are unit-tested without root. Only this layer (and the process spawner) may use
//! `unsafe`.

pub mod console;
pub mod in_root;
pub mod linux;
pub mod netlink;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use nix::mount::{MntFlags, MsFlags};
pub use nix::sched::CloneFlags;

/// A failed system call, with the operation and the path it was applied to.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {errno}", path = .path.display())]
pub struct SyscallError {
    pub op: &'static str,
    pub path: PathBuf,
    pub errno: nix::errno::Errno,
}

impl SyscallError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, errno: nix::errno::Errno) -> Self {
        SyscallError {
            op,
            path: path.into(),
            errno,
        }
    }
}

pub type Result<T> = std::result::Result<T, SyscallError>;

/// What a path is, as far as mount decisions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    Dir,
    /// Anything that is not a directory (file, device node, socket, ...).
    File,
}

/// What `Syscall::open_in_root` creates where a component is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing component is an error.
    Nothing,
    /// Directories, the last component included.
    Dir,
    /// Directories, then an empty file as the last component.
    File,
}

/// An object inside a container rootfs, resolved by `Syscall::open_in_root`. `path()` names
/// it for path-based calls while this value lives: `/proc/self/fd/N` of an O_PATH fd in the
/// real implementation (the kernel follows that magic link to the resolved object, so nothing
/// is re-walked), the joined path in the fake.
#[derive(Debug)]
pub struct InRoot {
    path: PathBuf,
    kind: PathKind,
    _fd: Option<OwnedFd>,
}

impl InRoot {
    /// Wraps an O_PATH fd; the current mount namespace must have /proc mounted.
    pub fn new(fd: OwnedFd, kind: PathKind) -> InRoot {
        InRoot {
            path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            kind,
            _fd: Some(fd),
        }
    }

    /// A plain path (the recording fake).
    pub fn at_path(path: PathBuf, kind: PathKind) -> InRoot {
        InRoot {
            path,
            kind,
            _fd: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Dir` or `File` (whatever is not a directory).
    pub fn kind(&self) -> PathKind {
        self.kind
    }
}

/// A device node to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

/// The operations container setup performs on the kernel. Mount and namespace planning code
/// takes `&dyn Syscall`, so it can be driven by the recording fake in tests.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()>;
    fn chdir(&self, path: &Path) -> Result<()>;
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()>;
    /// Creates an empty file (and its parent directories) if nothing exists at `path`.
    fn create_file(&self, path: &Path) -> Result<()>;
    fn mknod(&self, path: &Path, kind: NodeKind, mode: u32, major: u64, minor: u64) -> Result<()>;
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    fn path_kind(&self, path: &Path) -> PathKind;
    /// Resolves `path` inside the container rootfs `root` as if `root` were `/` (symlinks,
    /// absolute ones included, and `..` never leave it: runc's securejoin semantics), creating
    /// what is missing as `create` says.
    fn open_in_root(&self, root: &Path, path: &Path, create: Create) -> Result<InRoot>;
    fn sethostname(&self, name: &str) -> Result<()>;
    fn unshare(&self, flags: CloneFlags) -> Result<()>;
    /// Joins the namespace at `path` (a `/proc/<pid>/ns/<type>` style file).
    fn setns(&self, path: &Path, nstype: CloneFlags) -> Result<()>;
    fn write_file(&self, path: &Path, data: &str) -> Result<()>;

    // Credentials and capabilities of the calling process (the init stage), in the order
    // `caps::drop_privileges` decides.
    /// Removes capability `cap` from the bounding set (needs CAP_SETPCAP).
    fn cap_bounding_drop(&self, cap: u32) -> Result<()>;
    /// PR_SET_KEEPCAPS: keep the permitted set across a setuid away from 0.
    fn set_keep_caps(&self, on: bool) -> Result<()>;
    fn setgroups(&self, gids: &[u32]) -> Result<()>;
    fn setresgid(&self, gid: u32) -> Result<()>;
    fn setresuid(&self, uid: u32) -> Result<()>;
    /// capset(2) of the effective, permitted and inheritable sets (64-bit masks).
    fn capset(&self, sets: CapSets) -> Result<()>;
    /// PR_CAP_AMBIENT_RAISE: only works for a capability in both permitted and inheritable.
    fn cap_ambient_raise(&self, cap: u32) -> Result<()>;
}

/// The three capset(2) sets as 64-bit masks (bit n = capability n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}
