//! Reading host files whose contents someone other than husk's caller may control (the
//! inside of a bind-mount source that a container's user can write). Every entry is opened
//! relative to its parent directory's descriptor with `O_NOFOLLOW`, its type and size are
//! checked with `fstat` on the descriptor that was opened, and at most the checked size is
//! read. So a symlink swapped in after a check is never followed (no /etc/shadow copied in),
//! and a FIFO or device is never read (no supervisor reading /dev/zero until it runs out of
//! memory); opens are `O_NONBLOCK`, so a FIFO cannot stall one either.
//!
//! Owns: opening and reading. Does not decide what is copied where (`binds`).

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Errors opening or reading a host file.
#[derive(Debug, thiserror::Error)]
pub enum HostFsError {
    /// A system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The entry.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Larger than the caller allows.
    #[error("{path}: {size} bytes, more than {max}")]
    TooBig {
        /// The file.
        path: PathBuf,
        /// Its size when it was checked.
        size: u64,
        /// The limit.
        max: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HostFsError + '_ {
    move |source| HostFsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An opened entry, its type taken from the descriptor.
#[derive(Debug)]
pub enum Node {
    /// A regular file.
    File(RegularFile),
    /// A directory.
    Dir(Dir),
    /// Anything else, never opened for reading (or, for a symlink, not opened at all).
    Other {
        /// The entry.
        path: PathBuf,
        /// What it is: "symlink", "fifo", "socket", "device".
        kind: &'static str,
    },
}

/// Flags of every open: nothing that blocks, follows a last-component symlink (entries) or
/// becomes a controlling terminal.
const FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// Opens a bind source the caller named. Symlinks in `path` are followed, as `mount` follows
/// them; what lies below it is opened with [`Dir::open_entry`].
pub fn open(path: &Path) -> Result<Node, HostFsError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(FLAGS.bits())
        .open(path)
        .map_err(io(path))?;
    classify(file, path.to_path_buf())
}

fn classify(file: File, path: PathBuf) -> Result<Node, HostFsError> {
    let md = file.metadata().map_err(io(&path))?;
    let ft = md.file_type();
    Ok(if ft.is_file() {
        Node::File(RegularFile { file, md, path })
    } else if ft.is_dir() {
        let dir = nix::dir::Dir::from(file).map_err(|e| io(&path)(e.into()))?;
        Node::Dir(Dir { dir, path })
    } else {
        let kind = if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "device"
        };
        Node::Other { path, kind }
    })
}

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    dir: nix::dir::Dir,
    path: PathBuf,
}

impl Dir {
    /// The path it was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names in it, without `.` and `..`.
    pub fn names(&mut self) -> Result<Vec<OsString>, HostFsError> {
        let mut names = Vec::new();
        for e in self.dir.iter() {
            let e = e.map_err(|e| io(&self.path)(e.into()))?;
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        Ok(names)
    }

    /// Opens the entry `name` (one path component) relative to this directory's descriptor,
    /// never following a symlink.
    pub fn open_entry(&self, name: &OsStr) -> Result<Node, HostFsError> {
        let path = self.path.join(name);
        if name.as_bytes().contains(&b'/') || name == "." || name == ".." || name.is_empty() {
            return Err(io(&path)(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )));
        }
        let fd = match nix::fcntl::openat(
            self.dir.as_raw_fd(),
            name,
            FLAGS | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // O_NOFOLLOW on a symlink.
            Err(Errno::ELOOP) => {
                return Ok(Node::Other {
                    path,
                    kind: "symlink",
                })
            }
            Err(e) => return Err(io(&path)(e.into())),
        };
        // SAFETY: `openat` just returned `fd`; nothing else owns or closes it.
        let file = unsafe { File::from_raw_fd(fd) };
        classify(file, path)
    }
}

/// An open regular file and what `fstat` said of it when it was opened.
#[derive(Debug)]
pub struct RegularFile {
    file: File,
    md: Metadata,
    path: PathBuf,
}

impl RegularFile {
    /// Its size when it was opened.
    pub fn len(&self) -> u64 {
        self.md.len()
    }

    /// Its metadata when it was opened (mode, owner).
    pub fn metadata(&self) -> &Metadata {
        &self.md
    }

    /// The path it was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads it: at most the size it had when it was opened (a file that grew since is cut
    /// there), which must not exceed `max`.
    pub fn read(self, max: u64) -> Result<Vec<u8>, HostFsError> {
        let size = self.len();
        if size > max {
            return Err(HostFsError::TooBig {
                path: self.path,
                size,
                max,
            });
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&self.file)
            .take(size)
            .read_to_end(&mut data)
            .map_err(io(&self.path))?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_entry(dir: &Path, name: &str) -> Node {
        let Node::Dir(d) = open(dir).unwrap() else {
            panic!("not a dir")
        };
        d.open_entry(OsStr::new(name)).unwrap()
    }

    #[test]
    fn a_symlink_swapped_in_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, "shadow").unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        // The entry was a file when it was checked and is a symlink when it is opened.
        std::fs::write(src.join("f"), "ok").unwrap();
        std::fs::remove_file(src.join("f")).unwrap();
        std::os::unix::fs::symlink(&secret, src.join("f")).unwrap();
        match open_entry(&src, "f") {
            Node::Other { kind, .. } => assert_eq!(kind, "symlink"),
            other => panic!("followed: {other:?}"),
        }
        // A symlink to a directory is not a directory either.
        std::os::unix::fs::symlink(t.path(), src.join("d")).unwrap();
        assert!(matches!(
            open_entry(&src, "d"),
            Node::Other {
                kind: "symlink",
                ..
            }
        ));
    }

    #[test]
    fn fifos_and_devices_are_never_read() {
        let t = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&t.path().join("p"), Mode::from_bits_truncate(0o600)).unwrap();
        // Opening a FIFO with no writer must not block.
        assert!(matches!(
            open_entry(t.path(), "p"),
            Node::Other { kind: "fifo", .. }
        ));
        // /dev/zero, reached as a bind source or as an entry of /dev.
        assert!(matches!(
            open(Path::new("/dev/zero")).unwrap(),
            Node::Other { kind: "device", .. }
        ));
        assert!(matches!(
            open_entry(Path::new("/dev"), "zero"),
            Node::Other { kind: "device", .. }
        ));
        for bad in ["..", "a/b", ""] {
            let Node::Dir(d) = open(t.path()).unwrap() else {
                panic!()
            };
            assert!(d.open_entry(OsStr::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_at_most_the_checked_size() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, "12345").unwrap();
        let Node::File(f) = open_entry(t.path(), "f") else {
            panic!()
        };
        assert_eq!(f.len(), 5);
        // The file grows after the check: only what was checked is read.
        std::fs::write(&p, "1234567890").unwrap();
        assert_eq!(f.read(5).unwrap(), b"12345");
        let Node::File(f) = open_entry(t.path(), "f") else {
            panic!()
        };
        assert!(matches!(
            f.read(4),
            Err(HostFsError::TooBig { size: 10, .. })
        ));
        let Node::Dir(mut d) = open(t.path()).unwrap() else {
            panic!()
        };
        assert_eq!(d.names().unwrap(), vec![OsString::from("f")]);
    }
}
