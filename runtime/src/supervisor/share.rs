//! The sandbox's virtio-fs share on the host: how host files reach the guest. The supervisor
//! lives in a mount namespace of its own (entered first thing, see
//! [`enter_private_mount_namespace`]); in it, `<state>/share` is bind-mounted onto itself,
//! read-only and `MS_SHARED`, and each container's rootfs and bind-mount sources are bind-mounted
//! below it:
//!
//! ```text
//! <state>/share/                  served by virtiofsd as tag `husk-share`, at /run/husk/share
//!   <id>/rootfs                   rbind of the bundle's rootfs
//!   <id>/mounts/<i>               mounts[i]'s source, bind or rbind, read-only when `ro`
//! ```
//!
//! `root.readonly` is applied by the agent, as runc applies it: the rootfs stays writable on
//! the host because the agent first creates the spec's missing mount points in it (runc does
//! the same on the host), and a later read-only remount on the host would not reach
//! virtiofsd's copy of the mount (mount flags do not propagate).
//!
//! What the guest writes there lands in the host's files: nothing is copied or packed, and
//! there is no size limit. The share's own directories are read-only to the guest (only the
//! mounts below are writable), so all `husk delete` ever finds in it are the empty stubs the
//! supervisor made. Every mount lives only in the supervisor's namespace (and virtiofsd's
//! copy of it): none is visible on the host, and all go with those processes, even after a
//! `kill -9`. `MS_SHARED` is for mounts added later (a pod's later containers): they propagate
//! into virtiofsd's namespace, a slave of this one.
//!
//! Owns: the share's layout, its mounts, and removing what is left of it. Does not start
//! virtiofsd (`virtiofsd`) or talk to the guest.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde_json::Value;

/// The share's directory, relative to the container's state directory.
pub const SHARE_DIR: &str = "share";
/// The virtio-fs tag the guest mounts.
pub const TAG: &str = "husk-share";
/// Where the guest mounts the share.
pub const GUEST_DIR: &str = "/run/husk/share";
/// Mode of the share's own directories (`share`, `<id>`, `<id>/mounts`; set explicitly, past
/// husk's umask of 077). The host's privacy comes from `<root>/<id>` (0700); the guest sees
/// these modes, and a container with its own user namespace (its root is not the guest's)
/// must traverse them to its rootfs and mounts (with 0700: `root.path: mount
/// /run/husk/share/<id>/rootfs: EACCES`). The stubs that mounts cover stay 0700.
const DIR_MODE: u32 = 0o711;
/// Mode of a directory stub (hidden by its mount).
const STUB_MODE: u32 = 0o700;

/// Makes directory `path` with `mode` exactly (whatever the umask); an existing directory
/// is taken as it is.
fn make_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Errors setting up or removing the share.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The process had threads when it entered a mount namespace (only the calling thread
    /// would have moved).
    #[error("entering a mount namespace: the process has {0} threads, not 1")]
    Threaded(usize),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done, with its paths.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The rootfs or a bind mount of the spec could not be set up.
    #[error("{what}: {message}")]
    Mount {
        /// `root.path`, or `mounts[i] (destination)`.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// Something is still mounted in the share (in the caller's namespace): it is not removed,
    /// lest a removal descend into the mounted files.
    #[error("{0}: still mounted; the share is kept (unmount it and delete again)")]
    StillMounted(PathBuf),
}

type Result<T> = std::result::Result<T, ShareError>;

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShareError {
    let what = what.into();
    move |source| ShareError::Sys { what, source }
}

fn errno(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Moves the supervisor into a mount namespace of its own whose mounts never propagate back
/// to the host (`/` recursively a slave). Must run while the process is single-threaded:
/// `unshare(CLONE_NEWNS)` moves only the calling thread, so every later thread and child
/// inherits it only if it is the process's one thread.
pub fn enter_private_mount_namespace() -> Result<()> {
    single_threaded()?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| sys("unshare(CLONE_NEWNS)")(errno(e)))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| sys("making / a recursive slave")(errno(e)))
}

/// The share of one sandbox, set up in the supervisor's mount namespace.
#[derive(Debug)]
pub struct Share {
    /// `<state>/share` (the read-only bind mount).
    dir: PathBuf,
    /// The directory under the bind mount, where the stubs are made (`O_PATH`).
    base: File,
}

impl Share {
    /// Makes `<state>/share` and bind-mounts it onto itself, read-only and shared.
    pub fn create(state_dir: &Path) -> Result<Share> {
        let dir = state_dir.join(SHARE_DIR);
        match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => {
                return Err(sys(dir.display().to_string())(
                    std::io::ErrorKind::AlreadyExists.into(),
                ))
            }
        }
        make_dir(&dir, DIR_MODE).map_err(sys(dir.display().to_string()))?;
        let base = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&dir)
            .map_err(sys(format!("{}", dir.display())))?;
        mount_bind(&dir, &dir, false)?;
        nix::mount::mount(
            None::<&str>,
            &dir,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .map_err(|e| sys(format!("making {} shared", dir.display()))(errno(e)))?;
        make_read_only(&dir, false)?;
        Ok(Share { dir, base })
    }

    /// The share's host directory (what virtiofsd serves).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path under the share's own directory, not through its read-only bind mount.
    fn under(&self, rel: &str) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}/{rel}", self.base.as_raw_fd()))
    }

    /// Mounts container `id`'s rootfs (a directory; `None` for a block device, which the VM
    /// gets as a disk) at `<share>/<id>/rootfs` and every bind mount of `spec` at
    /// `<share>/<id>/mounts/<i>`, rewriting each source to the guest's path of it. Relative
    /// sources are taken from `bundle`. Returns the guest path of the rootfs, if mounted.
    /// The layout and the rules are [`plan`]'s, shared with a pod's later containers
    /// ([`attach_in_namespace`]).
    pub fn add_container(
        &self,
        id: &str,
        rootfs: Option<&Path>,
        bundle: &Path,
        spec: &mut Value,
    ) -> Result<Option<String>> {
        let (guest_root, attaches) = plan(id, rootfs, bundle, spec)?;
        make_stubs(|rel| self.under(rel), id, &attaches)?;
        for a in &attaches {
            let target = self.dir.join(&a.rel);
            mount_bind(&a.source, &target, a.recursive).map_err(|e| a.error(e))?;
            if a.read_only {
                make_read_only(&target, a.recursive).map_err(|e| a.error(e))?;
            }
            tracing::info!(source = %a.source.display(), what = %a.what(), "in the share");
        }
        Ok(guest_root)
    }
}

/// One host file or directory a container needs in the share.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attach {
    /// Index in the spec's mounts; `None` for the rootfs.
    pub index: Option<usize>,
    /// The mount's destination in the container (`/` for the rootfs).
    pub destination: String,
    /// The host path.
    pub source: PathBuf,
    /// Where it goes, relative to the share (`<id>/rootfs`, `<id>/mounts/<i>`).
    pub rel: String,
    /// A directory (else a file).
    pub dir: bool,
    /// With the mounts below it (the rootfs, `rbind`).
    pub recursive: bool,
    /// Read-only (`ro` in the mount's options).
    pub read_only: bool,
}

impl Attach {
    /// What an error names: `root.path` or `mounts[i] (destination)`.
    pub fn what(&self) -> String {
        match self.index {
            None => "root.path".into(),
            Some(i) => format!("mounts[{i}] ({})", self.destination),
        }
    }

    /// `e` as an error naming this entry.
    fn error(&self, e: impl ToString) -> ShareError {
        ShareError::Mount {
            what: self.what(),
            message: e.to_string(),
        }
    }
}

/// What container `id` needs in the share: its rootfs (when a directory) and each bind mount
/// of `spec` (relative sources from `bundle`), with the spec rewritten to the guest paths
/// (`/dev/shm` becomes a guest tmpfs). Checks each source (a file or a directory) and names
/// `mounts[i]` when one is wrong; mounts nothing. Returns the rootfs's guest path.
pub fn plan(
    id: &str,
    rootfs: Option<&Path>,
    bundle: &Path,
    spec: &mut Value,
) -> Result<(Option<String>, Vec<Attach>)> {
    let mut out = Vec::new();
    let guest_root = rootfs.map(|src| {
        out.push(Attach {
            index: None,
            destination: "/".into(),
            source: src.to_path_buf(),
            rel: format!("{id}/rootfs"),
            dir: true,
            recursive: true,
            read_only: false,
        });
        format!("{GUEST_DIR}/{id}/rootfs")
    });
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok((guest_root, out));
    };
    for (index, m) in mounts.iter_mut().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let destination = m["destination"].as_str().unwrap_or("?").to_string();
        let at = |message: String| ShareError::Mount {
            what: format!("mounts[{index}] ({destination})"),
            message,
        };
        if destination.trim_end_matches('/') == "/dev/shm" {
            // POSIX shared memory is the guest's own: a host tmpfs (podman's shm) seen
            // through virtio-fs would only be slower, and shared with nothing (Kata does
            // the same).
            *m = guest_tmpfs(m, &destination);
            continue;
        }
        let Some(src) = m["source"].as_str().map(PathBuf::from) else {
            return Err(at("a bind mount needs a source".into()));
        };
        let src = bundle.join(src);
        let md = std::fs::metadata(&src).map_err(|e| at(format!("{}: {e}", src.display())))?;
        if !md.is_dir() && !md.is_file() {
            return Err(at(format!(
                "{}: only files and directories can be bind mounted into a husk sandbox \
                 (this is a {})",
                src.display(),
                kind(&md)
            )));
        }
        let opts = options(m);
        let rel = format!("{id}/mounts/{index}");
        out.push(Attach {
            index: Some(index),
            destination: destination.clone(),
            source: src,
            rel: rel.clone(),
            dir: md.is_dir(),
            recursive: opts.contains(&"rbind"),
            read_only: opts.contains(&"ro"),
        });
        m["source"] = format!("{GUEST_DIR}/{rel}").into();
    }
    Ok((guest_root, out))
}

/// Makes `<id>` ([`DIR_MODE`]), `<id>/mounts` when needed, and each entry's stub ([`STUB_MODE`]
/// directory, or an empty 0600 file), `path` mapping a share-relative name to where it is made.
pub fn make_stubs(path: impl Fn(&str) -> PathBuf, id: &str, attaches: &[Attach]) -> Result<()> {
    make_dir(&path(id), DIR_MODE).map_err(sys(format!("{SHARE_DIR}/{id}")))?;
    for a in attaches {
        let at = path(&a.rel);
        if a.index.is_some() {
            let mounts = format!("{id}/mounts");
            make_dir(&path(&mounts), DIR_MODE)
                .map_err(|e| a.error(format!("{SHARE_DIR}/{mounts}: {e}")))?;
        }
        let made = if a.dir {
            make_dir(&at, STUB_MODE)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&at)
                .map(drop)
        };
        made.map_err(|e| a.error(format!("{SHARE_DIR}/{}: {e}", a.rel)))?;
    }
    Ok(())
}

fn options(m: &Value) -> Vec<&str> {
    m["options"]
        .as_array()
        .map(|o| o.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether a spec mount is a bind mount.
fn is_bind(m: &Value) -> bool {
    m["type"].as_str() == Some("bind") || options(m).iter().any(|o| matches!(*o, "bind" | "rbind"))
}

/// A bind mount's replacement by a guest tmpfs with its other options.
fn guest_tmpfs(m: &Value, destination: &str) -> Value {
    let opts: Vec<&str> = options(m)
        .into_iter()
        .filter(|o| {
            !matches!(
                *o,
                "bind"
                    | "rbind"
                    | "private"
                    | "rprivate"
                    | "slave"
                    | "rslave"
                    | "shared"
                    | "rshared"
            )
        })
        .collect();
    serde_json::json!({
        "destination": destination, "type": "tmpfs", "source": "shm", "options": opts,
    })
}

fn kind(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_socket() {
        "socket"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

fn mount_bind(src: &Path, target: &Path, recursive: bool) -> Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    nix::mount::mount(Some(src), target, None::<&str>, flags, None::<&str>).map_err(|e| {
        sys(format!(
            "bind-mounting {} at {}",
            src.display(),
            target.display()
        ))(errno(e))
    })
}

/// Makes the mount at `target` read-only, with everything below it when `recursive`
/// (`mount_setattr`; a kernel without it gets the top mount remounted).
fn make_read_only(target: &Path, recursive: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let what = || format!("making {} read-only", target.display());
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| sys(what())(std::io::ErrorKind::InvalidInput.into()))?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `path` is a NUL-terminated string and `attr` a mount_attr, both alive for the
    // call, whose size is passed; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(sys(what())(e));
    }
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| sys(what())(errno(e)))
}

/// Removes `<state>/share` as `husk delete` finds it, never descending through a mount: it
/// refuses while anything at or below it is mounted in the caller's namespace (mountinfo, and
/// every entry's mount id must be the share's), and removes only the layout's empty stubs, with
/// `rmdir` and `unlink`: a stub that is not empty fails the removal rather than being emptied.
pub fn remove(state_dir: &Path) -> Result<()> {
    let share = state_dir.join(SHARE_DIR);
    let md = match std::fs::symlink_metadata(&share) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(sys(share.display().to_string())(e)),
    };
    if !md.is_dir() {
        return std::fs::remove_file(&share).map_err(sys(share.display().to_string()));
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(sys("/proc/self/mountinfo"))?;
    if let Some(p) = mount_points(&mountinfo)
        .into_iter()
        .find(|p| p.starts_with(&share))
    {
        return Err(ShareError::StillMounted(p));
    }
    let mnt = mount_id(&share)?;
    for c in entries(&share, mnt)? {
        remove_container_tree(&c, mnt)?;
    }
    std::fs::remove_dir(&share).map_err(sys(format!("rmdir {}", share.display())))
}

/// Removes `<share>/<id>` (`{rootfs, mounts/<i>}`: two levels of directories, then the
/// stubs), each entry checked to be on mount `mnt`, with `rmdir` and `unlink` only.
fn remove_container_tree(c: &(PathBuf, bool), mnt: u64) -> Result<()> {
    if c.1 {
        for e in entries(&c.0, mnt)? {
            if e.1 && e.0.file_name().is_some_and(|n| n == "mounts") {
                for stub in entries(&e.0, mnt)? {
                    remove_stub(&stub)?;
                }
            }
            remove_stub(&e)?;
        }
    }
    remove_stub(c)
}

/// Removes one pod container's stubs, `<share_dir>/<id>`, as [`remove`] does for the whole
/// share (never through a mount: anything still mounted there in the caller's namespace
/// fails it). The mounts in the supervisor's namespace go first ([`detach_in_namespace`]).
pub fn remove_container_stubs(share_dir: &Path, id: &str) -> Result<()> {
    let top = share_dir.join(id);
    let md = match std::fs::symlink_metadata(&top) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(sys(top.display().to_string())(e)),
    };
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(sys("/proc/self/mountinfo"))?;
    if let Some(p) = mount_points(&mountinfo)
        .into_iter()
        .find(|p| p.starts_with(&top))
    {
        return Err(ShareError::StillMounted(p));
    }
    let mnt = mount_id(share_dir)?;
    remove_container_tree(&(top, md.is_dir()), mnt)
}

/// Checks that the calling process has one thread: `setns(CLONE_NEWNS)` and
/// `unshare(CLONE_NEWNS)` need it.
fn single_threaded() -> Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(sys("/proc/self/task"))?
        .count();
    if threads != 1 {
        return Err(ShareError::Threaded(threads));
    }
    Ok(())
}

/// Enters the mount namespace of process `pid` (the supervisor's).
fn enter_namespace_of(pid: i32) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/{pid}/ns/mnt");
    let ns = File::open(&path).map_err(sys(path.clone()))?;
    nix::sched::setns(ns.as_raw_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| sys(format!("setns {path}"))(errno(e)))
}

/// A pod's later container's files, attached to the sandbox's share by a process of its own
/// (single-threaded: `husk create --sandbox`'s child). Takes a detached copy of each entry's
/// source in the caller's mount namespace (`open_tree(OPEN_TREE_CLONE)`, recursive for the
/// rootfs and `rbind`; read-only ones made so with `mount_setattr` before they are attached),
/// which sees mounts made after the supervisor started (the shim's overlay rootfs, kubelet's
/// volumes); then enters the mount namespace of the supervisor `sup_pid` and attaches each
/// copy (`move_mount`) at `<share_dir>/<rel>`, whose stubs exist ([`make_stubs`] from the
/// host's side of the same directory). The mounts propagate from the share (`MS_SHARED`) into
/// virtiofsd's namespace, where the guest sees them as new submounts. `share_dir` must be
/// absolute (`setns` moves the working directory).
pub fn attach_in_namespace(sup_pid: i32, share_dir: &Path, attaches: &[Attach]) -> Result<()> {
    single_threaded()?;
    let mut trees = Vec::with_capacity(attaches.len());
    for a in attaches {
        let fd = open_tree(&a.source, a.recursive).map_err(|e| a.error(e))?;
        if a.read_only {
            set_read_only_fd(&fd, a.recursive).map_err(|e| a.error(e))?;
        }
        trees.push(fd);
    }
    enter_namespace_of(sup_pid)?;
    for (a, fd) in attaches.iter().zip(&trees) {
        let target = share_dir.join(&a.rel);
        move_mount(fd, &target).map_err(|e| a.error(format!("{}: {e}", target.display())))?;
    }
    Ok(())
}

/// Undoes [`attach_in_namespace`] for container `id`: enters the supervisor's mount namespace
/// and lazily unmounts (`MNT_DETACH`) everything mounted below `<share_dir>/<id>`, deepest
/// first; what is already gone is skipped. Returns how many it unmounted. Single-threaded,
/// like attaching.
pub fn detach_in_namespace(sup_pid: i32, share_dir: &Path, id: &str) -> Result<usize> {
    single_threaded()?;
    enter_namespace_of(sup_pid)?;
    let top = share_dir.join(id);
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(sys("/proc/self/mountinfo"))?;
    let mut points: Vec<PathBuf> = mount_points(&mountinfo)
        .into_iter()
        .filter(|p| p.starts_with(&top))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    let mut n = 0;
    for p in points {
        match nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => n += 1,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(sys(format!("unmounting {}", p.display()))(errno(e))),
        }
    }
    Ok(n)
}

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

/// `open_tree(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC [| AT_RECURSIVE])`: a detached copy of the
/// mount at `path`.
fn open_tree(path: &Path, recursive: bool) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = c_path(path)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `c` is NUL-terminated and alive for the call; the kernel only reads it.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::other(format!(
            "open_tree {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Makes a detached mount tree read-only (`mount_setattr` on its descriptor).
fn set_read_only_fd(fd: &std::os::fd::OwnedFd, recursive: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: the empty path is a NUL-terminated static string and `attr` a mount_attr whose
    // size is passed, both alive for the call; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::other(format!(
            "making it read-only: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached tree.
fn move_mount(fd: &std::os::fd::OwnedFd, target: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = c_path(target)?;
    // SAFETY: both paths are NUL-terminated and alive for the call; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::other(format!(
            "move_mount: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The id of the mount `path` is on (not following a symlink). Unlike `st_dev` (which
/// overlayfs reports per layer for files), it tells a mount point from what is beside it.
fn mount_id(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let what = || path.display().to_string();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| sys(what())(std::io::ErrorKind::InvalidInput.into()))?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is NUL-terminated and `stx` is a zeroed statx the kernel writes, both alive
    // for the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(sys(what())(std::io::Error::last_os_error()));
    }
    // SAFETY: statx succeeded and filled the struct (it was zeroed before, so every field is
    // initialized either way).
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(sys(what())(std::io::Error::other(
            "the kernel gives no mount id (statx STATX_MNT_ID, Linux 5.8)",
        )));
    }
    Ok(stx.stx_mnt_id)
}

/// The entries of `dir` as (path, is a directory), each checked to be on mount `mnt`.
fn entries(dir: &Path, mnt: u64) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(sys(dir.display().to_string()))? {
        let e = e.map_err(sys(dir.display().to_string()))?;
        let path = e.path();
        let md = std::fs::symlink_metadata(&path).map_err(sys(path.display().to_string()))?;
        if mount_id(&path)? != mnt {
            return Err(ShareError::StillMounted(path));
        }
        out.push((path, md.is_dir()));
    }
    Ok(out)
}

fn remove_stub((path, is_dir): &(PathBuf, bool)) -> Result<()> {
    if *is_dir {
        std::fs::remove_dir(path).map_err(sys(format!("rmdir {}", path.display())))
    } else {
        std::fs::remove_file(path).map_err(sys(format!("unlink {}", path.display())))
    }
}

/// The mount points in a mountinfo text (field 5, octal escapes decoded).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| {
            let b = field.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                let octal = b.get(i + 1..i + 4).and_then(|d| {
                    std::str::from_utf8(d)
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 8).ok())
                });
                match (b[i], octal) {
                    (b'\\', Some(c)) => {
                        out.push(c);
                        i += 4;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            PathBuf::from(std::ffi::OsString::from_vec(out))
        })
        .collect()
}

#[cfg(test)]
#[path = "share_tests.rs"]
mod tests;
