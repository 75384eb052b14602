//! A recording `Syscall` fake: every call is appended to a log as a `Call`, nothing touches
//! the kernel. Path kinds are answered from a table the test fills in; a call can be made to
//! fail to exercise error paths.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{CapSets, Create, InRoot, NodeKind, PathKind, Result, Syscall, SyscallError};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount(PathBuf),
    PivotRoot(PathBuf),
    Chdir(PathBuf),
    Mkdir(PathBuf),
    CreateFile(PathBuf),
    Mknod(PathBuf, NodeKind, u64, u64),
    Chown(PathBuf),
    Symlink(PathBuf, PathBuf),
    Sethostname(String),
    Unshare(CloneFlags),
    Setns(PathBuf, CloneFlags),
    WriteFile(PathBuf, String),
    CapBoundingDrop(u32),
    KeepCaps(bool),
    Setgroups(Vec<u32>),
    Setresgid(u32),
    Setresuid(u32),
    Capset(CapSets),
    AmbientRaise(u32),
}

/// Records calls instead of making them.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
    kinds: RefCell<HashMap<PathBuf, PathKind>>,
    fail_op: RefCell<Option<&'static str>>,
    /// Calls of `fail_op` still allowed to succeed before it starts failing.
    fail_after: RefCell<usize>,
    /// Mounts of this filesystem type fail with EPERM.
    fail_fstype: RefCell<Option<&'static str>>,
}

impl RecordingSyscall {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares what exists at `path` (everything else is `Missing`).
    pub fn with_path(self, path: impl Into<PathBuf>, kind: PathKind) -> Self {
        self.kinds.borrow_mut().insert(path.into(), kind);
        self
    }

    /// Makes every call of operation `op` (e.g. "mount") fail with EPERM.
    pub fn failing(self, op: &'static str) -> Self {
        *self.fail_op.borrow_mut() = Some(op);
        self
    }

    /// Makes every mount of filesystem type `fstype` fail with EPERM (as a cgroup2 mount does
    /// in a user namespace that owns no cgroup namespace).
    pub fn failing_fstype(self, fstype: &'static str) -> Self {
        *self.fail_fstype.borrow_mut() = Some(fstype);
        self
    }

    /// Like `failing`, but the first `n` calls of `op` succeed.
    pub fn failing_after(self, op: &'static str, n: usize) -> Self {
        *self.fail_after.borrow_mut() = n;
        self.failing(op)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Targets of all recorded mounts, in order.
    pub fn mount_targets(&self) -> Vec<PathBuf> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target),
                _ => None,
            })
            .collect()
    }

    fn record(&self, op: &'static str, path: &Path, call: Call) -> Result<()> {
        if *self.fail_op.borrow() == Some(op) {
            let mut left = self.fail_after.borrow_mut();
            if *left == 0 {
                return Err(SyscallError::new(op, path, Errno::EPERM));
            }
            *left -= 1;
        }
        self.calls.borrow_mut().push(call);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        if fstype.is_some() && *self.fail_fstype.borrow() == fstype {
            return Err(SyscallError::new("mount", target, Errno::EPERM));
        }
        let call = Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        };
        self.record("mount", target, call)
    }

    fn umount2(&self, target: &Path, _flags: MntFlags) -> Result<()> {
        self.record("umount", target, Call::Umount(target.into()))
    }

    fn pivot_root(&self, new_root: &Path, _put_old: &Path) -> Result<()> {
        self.record("pivot_root", new_root, Call::PivotRoot(new_root.into()))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        self.record("chdir", path, Call::Chdir(path.into()))
    }

    fn mkdir_all(&self, path: &Path, _mode: u32) -> Result<()> {
        self.kinds.borrow_mut().insert(path.into(), PathKind::Dir);
        self.record("mkdir", path, Call::Mkdir(path.into()))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        self.kinds.borrow_mut().insert(path.into(), PathKind::File);
        self.record("create", path, Call::CreateFile(path.into()))
    }

    fn mknod(&self, path: &Path, kind: NodeKind, _mode: u32, major: u64, minor: u64) -> Result<()> {
        self.record("mknod", path, Call::Mknod(path.into(), kind, major, minor))
    }

    fn chown(&self, path: &Path, _uid: Option<u32>, _gid: Option<u32>) -> Result<()> {
        self.record("chown", path, Call::Chown(path.into()))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.record("symlink", link, Call::Symlink(target.into(), link.into()))
    }

    fn path_kind(&self, path: &Path) -> PathKind {
        self.kinds
            .borrow()
            .get(path)
            .copied()
            .unwrap_or(PathKind::Missing)
    }

    /// Joins lexically (`..` stops at `root`; symlinks are not modelled) and creates what is
    /// missing through `mkdir_all` / `create_file`, so those are recorded and can fail.
    fn open_in_root(&self, root: &Path, path: &Path, create: Create) -> Result<InRoot> {
        let mut joined = root.to_path_buf();
        for c in path.components() {
            match c {
                std::path::Component::Normal(n) => joined.push(n),
                std::path::Component::ParentDir if joined != root => {
                    joined.pop();
                }
                _ => {}
            }
        }
        if self.path_kind(&joined) == PathKind::Missing {
            match create {
                Create::Nothing => {}
                Create::Dir => self.mkdir_all(&joined, 0o755)?,
                Create::File => self.create_file(&joined)?,
            }
        }
        let kind = self.path_kind(&joined);
        Ok(InRoot::at_path(joined, kind))
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        self.record(
            "sethostname",
            Path::new(name),
            Call::Sethostname(name.into()),
        )
    }

    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        self.record("unshare", Path::new(""), Call::Unshare(flags))
    }

    fn setns(&self, path: &Path, nstype: CloneFlags) -> Result<()> {
        self.record("setns", path, Call::Setns(path.into(), nstype))
    }

    fn write_file(&self, path: &Path, data: &str) -> Result<()> {
        self.record("write", path, Call::WriteFile(path.into(), data.into()))
    }

    fn cap_bounding_drop(&self, cap: u32) -> Result<()> {
        self.record("drop bounding", Path::new(""), Call::CapBoundingDrop(cap))
    }

    fn set_keep_caps(&self, on: bool) -> Result<()> {
        self.record("keepcaps", Path::new(""), Call::KeepCaps(on))
    }

    fn setgroups(&self, gids: &[u32]) -> Result<()> {
        self.record("setgroups", Path::new(""), Call::Setgroups(gids.to_vec()))
    }

    fn setresgid(&self, gid: u32) -> Result<()> {
        self.record("setresgid", Path::new(""), Call::Setresgid(gid))
    }

    fn setresuid(&self, uid: u32) -> Result<()> {
        self.record("setresuid", Path::new(""), Call::Setresuid(uid))
    }

    fn capset(&self, sets: CapSets) -> Result<()> {
        self.record("capset", Path::new(""), Call::Capset(sets))
    }

    fn cap_ambient_raise(&self, cap: u32) -> Result<()> {
        self.record("raise ambient", Path::new(""), Call::AmbientRaise(cap))
    }
}
