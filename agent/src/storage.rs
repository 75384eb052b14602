//! Storages: block devices and filesystems the agent mounts for the sandbox or a container
//! before the container is created, and unmounts when the owner goes away. A `virtio-fs`
//! storage is the sandbox's share (the host directory the runtime bind-mounts each container's
//! rootfs and bind-mount sources into), named by its mount tag and mounted as `virtiofs`. A
//! `virtio-blk` storage names its disk by serial (`/sys/block/vd*/serial`, set by the VMM's
//! `--disk ...,serial=S`) and is mounted as ext4 or EROFS, read-only when asked (EROFS always);
//! with the `overlay` option the disk becomes the read-only lower layer of an overlay whose
//! writable upper lives on a tmpfs. Mount decisions go through `Syscall`, so they are
//! unit-tested with the recording fake; only `find_disk_by_serial` reads sysfs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::protocol as pb;
use crate::syscall::{MntFlags, MsFlags, Syscall, SyscallError};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: no virtio-blk disk with serial {serial:?} (looked in {dir})", dir = .sys_block.display())]
    NoDisk {
        field: String,
        serial: String,
        sys_block: PathBuf,
    },
    #[error("{field}: {source}")]
    Mount { field: String, source: SyscallError },
}

type Result<T> = std::result::Result<T, StorageError>;

/// Where a storage comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// A virtio-blk disk found by its serial.
    VirtioBlk { serial: String },
    /// A virtio-fs device found by its mount tag.
    VirtioFs { tag: String },
    /// A guest directory bind-mounted.
    Bind { source: PathBuf },
    /// A fresh tmpfs.
    Tmpfs,
    /// `source` mounted with the storage's fstype as is.
    Other { source: String },
}

/// A validated storage request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub driver: Driver,
    pub fstype: String,
    pub flags: MsFlags,
    /// Options the kernel gets as mount data (comma-joined), flags removed.
    pub data: Vec<String>,
    /// Lower the disk into an overlay with a writable tmpfs upper.
    pub overlay: bool,
    pub mount_point: PathBuf,
}

fn invalid(field: impl Into<String>, reason: impl ToString) -> StorageError {
    StorageError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

fn flag_of(opt: &str) -> Option<(MsFlags, bool)> {
    // (flag, set?) — "rw" clears MS_RDONLY.
    Some(match opt {
        "ro" => (MsFlags::MS_RDONLY, true),
        "rw" => (MsFlags::MS_RDONLY, false),
        "nosuid" => (MsFlags::MS_NOSUID, true),
        "nodev" => (MsFlags::MS_NODEV, true),
        "noexec" => (MsFlags::MS_NOEXEC, true),
        "noatime" => (MsFlags::MS_NOATIME, true),
        "nodiratime" => (MsFlags::MS_NODIRATIME, true),
        "relatime" => (MsFlags::MS_RELATIME, true),
        "sync" => (MsFlags::MS_SYNCHRONOUS, true),
        _ => return None,
    })
}

impl Storage {
    /// Validates storage `index` of a request; `what` is the request field ("storages").
    pub fn from_pb(what: &str, index: usize, s: &pb::Storage) -> Result<Storage> {
        let field = |f: &str| format!("{what}[{index}].{f}");
        let mount_point = PathBuf::from(&s.mount_point);
        if !mount_point.is_absolute()
            || mount_point
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || mount_point == Path::new("/")
        {
            return Err(invalid(
                field("mount_point"),
                format!(
                    "{:?} must be an absolute path other than / without '..'",
                    s.mount_point
                ),
            ));
        }
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let mut overlay = false;
        for o in &s.options {
            match (o.as_str(), flag_of(o)) {
                ("overlay", _) => overlay = true,
                (_, Some((f, true))) => flags |= f,
                (_, Some((f, false))) => flags &= !f,
                ("", None) => {}
                (o, None) => data.push(o.to_string()),
            }
        }
        let fstype = s.fstype.clone();
        let driver = match s.driver.as_str() {
            "virtio-blk" => {
                if s.source.is_empty() {
                    return Err(invalid(field("source"), "the disk serial is required"));
                }
                match fstype.as_str() {
                    "ext4" => {}
                    "erofs" => flags |= MsFlags::MS_RDONLY,
                    other => {
                        return Err(invalid(
                            field("fstype"),
                            format!("{other:?}: a virtio-blk storage is ext4 or erofs"),
                        ))
                    }
                }
                Driver::VirtioBlk {
                    serial: s.source.clone(),
                }
            }
            "virtio-fs" => {
                valid_tag(&s.source).map_err(|reason| invalid(field("source"), reason))?;
                if fstype != "virtiofs" {
                    return Err(invalid(
                        field("fstype"),
                        format!("{fstype:?}: a virtio-fs storage is \"virtiofs\""),
                    ));
                }
                Driver::VirtioFs {
                    tag: s.source.clone(),
                }
            }
            "bind" => {
                if !Path::new(&s.source).is_absolute() {
                    return Err(invalid(
                        field("source"),
                        format!("{:?} must be an absolute guest path", s.source),
                    ));
                }
                Driver::Bind {
                    source: s.source.clone().into(),
                }
            }
            "tmpfs" => Driver::Tmpfs,
            "" => return Err(invalid(field("driver"), "required")),
            other => {
                if fstype.is_empty() {
                    return Err(invalid(
                        field("fstype"),
                        format!("required for driver {other:?}"),
                    ));
                }
                Driver::Other {
                    source: s.source.clone(),
                }
            }
        };
        if overlay && !matches!(driver, Driver::VirtioBlk { .. }) {
            return Err(invalid(
                field("options"),
                "overlay is only for virtio-blk storages",
            ));
        }
        Ok(Storage {
            driver,
            fstype,
            flags,
            data,
            overlay,
            mount_point,
        })
    }
}

/// Longest virtio-fs tag (the device's config space holds 36 bytes).
const TAG_MAX: usize = 36;

/// A virtio-fs mount tag: 1 to 36 printable ASCII characters without spaces (what the VMM
/// puts in the device's config space).
fn valid_tag(tag: &str) -> std::result::Result<(), String> {
    if tag.is_empty() || tag.len() > TAG_MAX || !tag.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{tag:?}: a virtio-fs tag is 1 to {TAG_MAX} printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// The guest device node of the virtio-blk disk whose serial is `serial`: scans
/// `<sys_block>/vd*/serial`. Disks are probed before the agent starts; it still waits up to
/// `wait` for a late one.
pub fn find_disk_by_serial(sys_block: &Path, serial: &str, wait: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(entries) = std::fs::read_dir(sys_block) {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vd"))
                .collect();
            names.sort();
            for name in names {
                let found = std::fs::read_to_string(sys_block.join(&name).join("serial"))
                    .map(|s| s.trim_end_matches(['\n', '\0']).trim() == serial)
                    .unwrap_or(false);
                if found {
                    return Some(Path::new("/dev").join(name));
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one storage mounted, in mount order (unmounted in reverse).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounted {
    pub targets: Vec<PathBuf>,
}

/// Mounts `st`. `device` is the resolved source of a virtio-blk storage; `scratch` is a
/// private directory for the overlay's lower layer and tmpfs (unused otherwise). On failure
/// whatever this call mounted is unmounted again.
pub fn mount(
    sys: &dyn Syscall,
    field: &str,
    st: &Storage,
    device: Option<&Path>,
    scratch: &Path,
) -> Result<Mounted> {
    let mut done = Mounted::default();
    match mount_steps(sys, st, device, scratch, &mut done) {
        Ok(()) => Ok(done),
        Err(source) => {
            unmount(sys, &done);
            Err(StorageError::Mount {
                field: field.to_string(),
                source,
            })
        }
    }
}

fn mount_steps(
    sys: &dyn Syscall,
    st: &Storage,
    device: Option<&Path>,
    scratch: &Path,
    done: &mut Mounted,
) -> std::result::Result<(), SyscallError> {
    let data = (!st.data.is_empty()).then(|| st.data.join(","));
    let mut mount_at = |source: Option<&Path>,
                        target: &Path,
                        fstype: Option<&str>,
                        flags: MsFlags,
                        data: Option<&str>|
     -> std::result::Result<(), SyscallError> {
        sys.mkdir_all(target, 0o755)?;
        sys.mount(source, target, fstype, flags, data)?;
        done.targets.push(target.to_path_buf());
        Ok(())
    };
    match &st.driver {
        Driver::VirtioBlk { .. } => {
            let dev = device.unwrap_or(Path::new(""));
            if !st.overlay {
                return mount_at(
                    Some(dev),
                    &st.mount_point,
                    Some(&st.fstype),
                    st.flags,
                    data.as_deref(),
                );
            }
            let lower = scratch.join("lower");
            let rw = scratch.join("rw");
            mount_at(
                Some(dev),
                &lower,
                Some(&st.fstype),
                st.flags | MsFlags::MS_RDONLY,
                data.as_deref(),
            )?;
            mount_at(
                Some(Path::new("tmpfs")),
                &rw,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("mode=0755"),
            )?;
            let (upper, work) = (rw.join("upper"), rw.join("work"));
            sys.mkdir_all(&upper, 0o755)?;
            sys.mkdir_all(&work, 0o755)?;
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            );
            // The overlay itself is writable: "ro" applies to the disk.
            let flags = st.flags & !MsFlags::MS_RDONLY;
            mount_at(
                Some(Path::new("overlay")),
                &st.mount_point,
                Some("overlay"),
                flags,
                Some(&opts),
            )
        }
        Driver::Bind { source } => {
            mount_at(
                Some(source),
                &st.mount_point,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            if st.flags.contains(MsFlags::MS_RDONLY) {
                sys.mount(
                    None,
                    &st.mount_point,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | st.flags,
                    None,
                )?;
            }
            Ok(())
        }
        Driver::VirtioFs { tag } => mount_at(
            Some(Path::new(tag)),
            &st.mount_point,
            Some("virtiofs"),
            st.flags,
            data.as_deref(),
        ),
        Driver::Tmpfs => mount_at(
            Some(Path::new("tmpfs")),
            &st.mount_point,
            Some("tmpfs"),
            st.flags,
            data.as_deref(),
        ),
        Driver::Other { source } => mount_at(
            Some(Path::new(source)),
            &st.mount_point,
            Some(&st.fstype),
            st.flags,
            data.as_deref(),
        ),
    }
}

/// Unmounts in reverse order; a busy mount is detached (lazily unmounted) instead.
pub fn unmount(sys: &dyn Syscall, m: &Mounted) {
    for t in m.targets.iter().rev() {
        if let Err(e) = sys.umount2(t, MntFlags::empty()) {
            tracing::debug!("umount {}: {e}; detaching", t.display());
            if let Err(e) = sys.umount2(t, MntFlags::MNT_DETACH) {
                tracing::warn!("umount {}: {e}", t.display());
            }
        }
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
