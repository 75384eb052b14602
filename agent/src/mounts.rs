//! Container filesystem setup: rootfs propagation, spec mounts, /dev population, pivot_root,
//! sysctls, read-only and masked paths (runc's order: sysctls are written while /proc/sys is
//! still writable). Decisions only: every effect goes through `&dyn Syscall`, so the
//! order and flags are unit-tested with the recording fake. Runs inside the container's new
//! mount namespace (in the init stage process), never in the agent's.
//!
//! Every path inside the rootfs (mount targets, /dev nodes and links, `linux.devices`) is
//! resolved with `Syscall::open_in_root` before pivot_root: the image's symlinks and `..`
//! resolve as if the rootfs were `/` (runc's securejoin), missing directories are created on
//! the way, and the calls act on the resolved object, never on a re-walked path. A mount
//! target is resolved again for each call on it, since after a mount the old handle names
//! the covered directory, not the new mount (runc does the same).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use crate::syscall::{
    Create, InRoot, MntFlags, MsFlags, NodeKind, PathKind, Syscall, SyscallError,
};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounts[{index}] ({dest}): {source}")]
    Mount {
        index: usize,
        dest: String,
        source: SyscallError,
    },
    #[error("linux.rootfsPropagation: unknown value {0:?}")]
    BadPropagation(String),
    #[error("{field}: {source}")]
    Step {
        field: &'static str,
        source: SyscallError,
    },
}

/// Everything the filesystem setup needs from the spec.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RootfsPlan {
    pub rootfs: PathBuf,
    pub mounts: Vec<Mount>,
    pub propagation: Option<String>,
    pub devices: Vec<LinuxDevice>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub root_readonly: bool,
    /// `linux.sysctl` (dotted names, checked by `spec::validate`), written after pivot_root and
    /// before the read-only and masked paths, in name order.
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Where the guest's cgroup2 hierarchy is mounted: bind-mounted instead when a `cgroup`
    /// mount is refused (a user namespace without a cgroup namespace of its own), as runc does.
    #[serde(default)]
    pub cgroup2_mount: Option<PathBuf>,
}

/// Devices every container gets when /dev is a fresh tmpfs (as runc does).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

const DEFAULT_SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
];

/// Mount flags and the leftover data string parsed from OCI mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: Vec::new(),
        };
        for opt in options {
            let (clear, flag) = match opt.as_str() {
                "ro" => (false, MsFlags::MS_RDONLY),
                "rw" => (true, MsFlags::MS_RDONLY),
                "nosuid" => (false, MsFlags::MS_NOSUID),
                "suid" => (true, MsFlags::MS_NOSUID),
                "nodev" => (false, MsFlags::MS_NODEV),
                "dev" => (true, MsFlags::MS_NODEV),
                "noexec" => (false, MsFlags::MS_NOEXEC),
                "exec" => (true, MsFlags::MS_NOEXEC),
                "sync" => (false, MsFlags::MS_SYNCHRONOUS),
                "async" => (true, MsFlags::MS_SYNCHRONOUS),
                "noatime" => (false, MsFlags::MS_NOATIME),
                "atime" => (true, MsFlags::MS_NOATIME),
                "nodiratime" => (false, MsFlags::MS_NODIRATIME),
                "diratime" => (true, MsFlags::MS_NODIRATIME),
                "relatime" => (false, MsFlags::MS_RELATIME),
                "norelatime" => (true, MsFlags::MS_RELATIME),
                "strictatime" => (false, MsFlags::MS_STRICTATIME),
                "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
                "bind" => (false, MsFlags::MS_BIND),
                "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
                "remount" => (false, MsFlags::MS_REMOUNT),
                "mand" => (false, MsFlags::MS_MANDLOCK),
                "nomand" => (true, MsFlags::MS_MANDLOCK),
                other => {
                    if let Some(p) = propagation_flags(other) {
                        out.propagation |= p;
                    } else {
                        out.data.push(other.to_string());
                    }
                    continue;
                }
            };
            if clear {
                out.flags.remove(flag);
            } else {
                out.flags.insert(flag);
            }
        }
        out
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

fn propagation_flags(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Joins a container path onto the rootfs, refusing `..`: the lexical check `spec::validate`
/// makes on mount destinations. Never used to reach a file: symlinks in the image are resolved
/// inside the rootfs by `Syscall::open_in_root`.
pub fn join_rootfs(rootfs: &Path, dest: &Path) -> Option<PathBuf> {
    let mut out = rootfs.to_path_buf();
    for c in dest.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn is_bind(m: &Mount, opts: &MountOptions) -> bool {
    opts.flags.contains(MsFlags::MS_BIND) || m.typ().as_deref() == Some("bind")
}

/// Sets up the container's filesystem and pivots into it. Must run in a new mount namespace.
pub fn setup_rootfs(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), MountError> {
    prepare_rootfs(sys, plan)?;
    enter_rootfs(sys, plan)
}

/// The first half of `setup_rootfs`: propagation, the rootfs bind, spec mounts and devices,
/// everything before pivot_root (where the createContainer hooks run).
pub fn prepare_rootfs(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), MountError> {
    let step = |field: &'static str| move |source| MountError::Step { field, source };
    let root_prop = match plan.propagation.as_deref() {
        None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(p) => propagation_flags(p).ok_or_else(|| MountError::BadPropagation(p.into()))?,
    };
    // Nothing we mount may propagate back to the agent's namespace.
    sys.mount(None, Path::new("/"), None, root_prop, None)
        .map_err(step("linux.rootfsPropagation"))?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(
        Some(&plan.rootfs),
        &plan.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(step("root.path"))?;

    let mut dev_is_tmpfs = false;
    for (index, m) in plan.mounts.iter().enumerate() {
        let err = |source| MountError::Mount {
            index,
            dest: m.destination().display().to_string(),
            source,
        };
        mount_one(sys, plan, m).map_err(err)?;
        if m.destination() == Path::new("/dev")
            && !is_bind(
                m,
                &MountOptions::parse(m.options().as_deref().unwrap_or_default()),
            )
        {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        populate_dev(sys, &plan.rootfs).map_err(step("mounts (/dev)"))?;
    }
    for d in &plan.devices {
        create_device(sys, &plan.rootfs, d).map_err(step("linux.devices"))?;
    }
    Ok(())
}

/// The second half of `setup_rootfs`: pivot_root, sysctls, read-only and masked paths.
pub fn enter_rootfs(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<(), MountError> {
    let step = |field: &'static str| move |source| MountError::Step { field, source };
    pivot(sys, &plan.rootfs).map_err(step("root.path (pivot_root)"))?;

    for (k, v) in &plan.sysctl {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        sys.write_file(&path, v).map_err(step("linux.sysctl"))?;
    }
    for p in &plan.readonly_paths {
        readonly_path(sys, Path::new(p)).map_err(step("linux.readonlyPaths"))?;
    }
    for p in &plan.masked_paths {
        mask_path(sys, Path::new(p)).map_err(step("linux.maskedPaths"))?;
    }
    if plan.root_readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        sys.mount(None, Path::new("/"), None, flags, None)
            .map_err(step("root.readonly"))?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, plan: &RootfsPlan, m: &Mount) -> Result<(), SyscallError> {
    let rootfs = plan.rootfs.as_path();
    let dest = m.destination();
    let at = |create| sys.open_in_root(rootfs, dest, create);
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let source = m.source().as_deref();
    let data = opts.data();
    // A bind mount ignores other flags; they take effect on a remount.
    let remount_bind_flags = || {
        let rest = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if rest.is_empty() {
            return Ok(());
        }
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rest;
        sys.mount(None, at(Create::Nothing)?.path(), None, flags, None)
    };
    if is_bind(m, &opts) {
        let src = source.ok_or_else(|| {
            SyscallError::new("bind (no source)", dest, nix::errno::Errno::EINVAL)
        })?;
        let create = match sys.path_kind(src) {
            PathKind::Dir => Create::Dir,
            PathKind::File => Create::File,
            PathKind::Missing => {
                return Err(SyscallError::new(
                    "bind source",
                    src,
                    nix::errno::Errno::ENOENT,
                ))
            }
        };
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        sys.mount(Some(src), at(create)?.path(), None, bind, None)?;
        remount_bind_flags()?;
    } else {
        let fstype = m.typ().as_deref().unwrap_or("none");
        // cgroup v1 does not exist in the guest; "cgroup" means the container's cgroup2 view.
        let fstype = if fstype == "cgroup" {
            "cgroup2"
        } else {
            fstype
        };
        let mounted = sys.mount(
            source.or(Some(Path::new(fstype))),
            at(Create::Dir)?.path(),
            Some(fstype),
            opts.flags,
            data.as_deref(),
        );
        match (mounted, &plan.cgroup2_mount) {
            (Ok(()), _) => {}
            // A user namespace may mount cgroup2 only with a cgroup namespace it owns; without
            // one runc bind-mounts the cgroup2 hierarchy instead (its mountCgroupV2).
            (Err(e), Some(cg))
                if fstype == "cgroup2"
                    && matches!(e.errno, nix::errno::Errno::EPERM | nix::errno::Errno::EBUSY) =>
            {
                tracing::debug!(
                    "cgroup2 mount at {}: {e}; bind-mounting {}",
                    dest.display(),
                    cg.display()
                );
                sys.mount(
                    Some(cg),
                    at(Create::Dir)?.path(),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )?;
                remount_bind_flags()?;
            }
            (Err(e), _) => return Err(e),
        }
    }
    if !opts.propagation.is_empty() {
        sys.mount(
            None,
            at(Create::Nothing)?.path(),
            None,
            opts.propagation,
            None,
        )?;
    }
    Ok(())
}

fn populate_dev(sys: &dyn Syscall, rootfs: &Path) -> Result<(), SyscallError> {
    let dev = sys.open_in_root(rootfs, Path::new("/dev"), Create::Dir)?;
    for (path, major, minor) in DEFAULT_DEVICES {
        let target = in_dir(&dev, path);
        if sys.path_kind(&target) == PathKind::Missing {
            match sys.mknod(&target, NodeKind::Char, 0o666, *major, *minor) {
                Err(e) if e.errno == nix::errno::Errno::EPERM => {
                    bind_device_node(sys, rootfs, Path::new(path))?
                }
                other => other?,
            }
        }
    }
    for (target, link) in DEFAULT_SYMLINKS {
        sys.symlink(Path::new(target), &in_dir(&dev, link))?;
    }
    Ok(())
}

/// `dir`'s entry named like the last component of `path` (mknod and symlink do not follow a
/// final symlink; the directory itself was resolved inside the rootfs).
fn in_dir(dir: &InRoot, path: &str) -> PathBuf {
    dir.path()
        .join(Path::new(path).file_name().unwrap_or_default())
}

fn create_device(sys: &dyn Syscall, rootfs: &Path, d: &LinuxDevice) -> Result<(), SyscallError> {
    let bad = || SyscallError::new("resolve", d.path(), nix::errno::Errno::EINVAL);
    let name = d.path().file_name().ok_or_else(bad)?;
    let parent = d.path().parent().ok_or_else(bad)?;
    let kind = match d.typ() {
        LinuxDeviceType::B => NodeKind::Block,
        LinuxDeviceType::P => NodeKind::Fifo,
        _ => NodeKind::Char,
    };
    let dir = sys.open_in_root(rootfs, parent, Create::Dir)?;
    let target = dir.path().join(name);
    if sys.path_kind(&target) != PathKind::Missing {
        return Ok(());
    }
    let mode = d.file_mode().unwrap_or(0o666);
    match sys.mknod(&target, kind, mode, d.major() as u64, d.minor() as u64) {
        // In a user namespace mknod is refused: bind the guest's node instead (runc's way),
        // which keeps the guest's mode and owner.
        Err(e) if e.errno == nix::errno::Errno::EPERM => {
            return bind_device_node(sys, rootfs, d.path())
        }
        other => other?,
    }
    if d.uid().is_some() || d.gid().is_some() {
        // chown follows symlinks: act on the node as resolved inside the rootfs.
        let node = sys.open_in_root(rootfs, d.path(), Create::Nothing)?;
        sys.chown(node.path(), d.uid(), d.gid())?;
    }
    Ok(())
}

/// Where mknod is refused (a container with its own user namespace), the node at `path` in
/// the guest's /dev is bind-mounted onto an empty file at the same path inside the rootfs, as
/// runc binds the host's nodes. The setup process still sees the guest's root here (before
/// pivot_root).
fn bind_device_node(sys: &dyn Syscall, rootfs: &Path, path: &Path) -> Result<(), SyscallError> {
    let node = sys.open_in_root(rootfs, path, Create::File)?;
    sys.mount(Some(path), node.path(), None, MsFlags::MS_BIND, None)
}

fn pivot(sys: &dyn Syscall, rootfs: &Path) -> Result<(), SyscallError> {
    // pivot_root(".", ".") stacks the old root under the new one; detach it (runc's trick,
    // no temporary directory needed inside a possibly read-only rootfs).
    sys.chdir(rootfs)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))
}

fn mask_path(sys: &dyn Syscall, path: &Path) -> Result<(), SyscallError> {
    match sys.path_kind(path) {
        PathKind::Missing => Ok(()),
        PathKind::Dir => sys.mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        ),
        PathKind::File => sys.mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            MsFlags::MS_BIND,
            None,
        ),
    }
}

fn readonly_path(sys: &dyn Syscall, path: &Path) -> Result<(), SyscallError> {
    if sys.path_kind(path) == PathKind::Missing {
        return Ok(());
    }
    sys.mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
    sys.mount(None, path, None, flags, None)
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
