//! Path resolution inside a container rootfs with runc's securejoin semantics: symlinks,
//! absolute ones included, and `..` resolve as if the rootfs were `/`, so an image cannot
//! point a mount target, a device node or a created directory at the guest's own files or a
//! sibling container's rootfs. Missing components can be created on the way (a dangling
//! symlink's target is created inside the rootfs, as runc does).
//!
//! Why not openat2(RESOLVE_IN_ROOT) or a crate: RESOLVE_IN_ROOT stops with ENOENT at the first
//! missing component, so creating a path still needs a walk of our own, and `pathrs` (C
//! bindings) or `safe-path` (another copy of this walk, with its own error type) add a
//! dependency for ~100 lines. The walk is fd-based, like securejoin's `MkdirAllInRoot`: each
//! component is opened with O_PATH|O_NOFOLLOW relative to its parent's fd, symlinks are read
//! from the fd and spliced into the remaining components, `..` pops to the parent fd we came
//! from (never above the root, and never the kernel's `..`, which a concurrent rename could
//! move), and what is missing is created with mkdirat/openat(O_EXCL|O_NOFOLLOW) relative to
//! its parent fd. The result is an O_PATH fd; callers act on `/proc/self/fd/N` (runc's
//! approach), never on a re-walked path.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use super::{Create, InRoot, PathKind, Result, SyscallError};

/// The kernel's limit on symlinks followed in one lookup (MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open/openat and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The components of `p` below its root, `..` kept, `.` and `/` dropped.
fn components(p: &Path) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// Resolves `path` inside `root` (see the module doc), creating missing components as 0755
/// directories when `create` is not `Nothing`, the last one as `create` says.
pub fn open_in_root(root: &Path, path: &Path, create: Create) -> Result<InRoot> {
    let err = |op: &'static str, e: Errno| SyscallError::new(op, root.join(path), e);
    let path_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
    .map_err(|e| SyscallError::new("open root", root, e))?;
    // Directories walked below the root, innermost last; `..` pops.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut last: Option<(OwnedFd, PathKind)> = None;
    let mut todo: VecDeque<OsString> = components(path).collect();
    // `races`: creations that found something there already (bounded, so a racing remover
    // cannot keep us looping).
    let (mut links, mut races) = (0, 0);
    while let Some(name) = todo.pop_front() {
        if last.is_some() {
            // A component follows a non-directory.
            return Err(err("resolve", Errno::ENOTDIR));
        }
        if name == ".." {
            dirs.pop();
            continue;
        }
        let parent = dirs.last().unwrap_or(&root_fd).as_raw_fd();
        let fd = match nix::fcntl::openat(parent, name.as_os_str(), path_flags, Mode::empty()) {
            Ok(fd) => own(fd),
            Err(Errno::ENOENT) if create != Create::Nothing && races < 16 => {
                let made = if todo.is_empty() && create == Create::File {
                    let flags = OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_WRONLY
                        | OFlag::O_CLOEXEC;
                    nix::fcntl::openat(
                        parent,
                        name.as_os_str(),
                        flags,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map(|fd| drop(own(fd)))
                    .map_err(|e| ("create", e))
                } else {
                    nix::sys::stat::mkdirat(
                        parent,
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                    .map_err(|e| ("mkdir", e))
                };
                match made {
                    // EEXIST: something appeared meanwhile; look at it again.
                    Ok(()) => {}
                    Err((_, Errno::EEXIST)) => races += 1,
                    Err((op, e)) => return Err(err(op, e)),
                }
                todo.push_front(name);
                continue;
            }
            Err(e) => return Err(err("resolve", e)),
        };
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| err("stat", e))?;
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(err("resolve", Errno::ELOOP));
                }
                let target = nix::fcntl::readlinkat(fd.as_raw_fd(), OsStr::from_bytes(b""))
                    .map_err(|e| err("readlink", e))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    dirs.clear();
                }
                for c in components(&target).rev() {
                    todo.push_front(c);
                }
            }
            SFlag::S_IFDIR => dirs.push(fd),
            _ => last = Some((fd, PathKind::File)),
        }
    }
    let (fd, kind) = match last {
        Some(l) => l,
        None => match dirs.pop() {
            Some(fd) => (fd, PathKind::Dir),
            None => (root_fd, PathKind::Dir),
        },
    };
    Ok(InRoot::new(fd, kind))
}
