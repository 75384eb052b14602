//! Unix socket paths of any length. `sun_path` holds 107 bytes, and a container's directory
//! under a long `--root` with podman's 64-hex ids (`/tmp/tmp.XXXXXXXXXX/husk-podman/<id>/
//! control.sock` is 109) does not fit. A longer path is reached through an `O_PATH` descriptor
//! of its directory: `/proc/self/fd/<n>/<name>` is short and resolves to the same place, for
//! `bind` as for `connect`, in this process (and its threads, such as the VMM's).
//!
//! Owns: choosing the path to hand to the kernel. Knows nothing of what the sockets carry.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Longest path `sun_path` takes (108 bytes with the terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// A directory whose sockets are addressed by paths that fit `sun_path`. Keep it alive as
/// long as the paths it gave are used.
#[derive(Debug)]
pub struct SockDir {
    dir: PathBuf,
    fd: Option<File>,
}

impl SockDir {
    /// Opens `dir` (only when some name in it could be too long).
    pub fn open(dir: &Path) -> io::Result<SockDir> {
        // The longest socket name husk uses is "control.sock" (12), plus the slash.
        let fd = if dir.as_os_str().len() + 13 > SUN_PATH_MAX {
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(dir)?,
            )
        } else {
            None
        };
        Ok(SockDir {
            dir: dir.to_path_buf(),
            fd,
        })
    }

    /// The path to bind or connect to for `name` in this directory.
    pub fn path(&self, name: &str) -> PathBuf {
        let real = self.dir.join(name);
        match &self.fd {
            Some(fd) if real.as_os_str().len() > SUN_PATH_MAX => {
                PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()))
            }
            _ => real,
        }
    }
}

/// Splits a socket path into its directory and name.
fn split(path: &Path) -> io::Result<(SockDir, String)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "not a socket path");
    let dir = path.parent().ok_or_else(bad)?;
    let name = path.file_name().ok_or_else(bad)?.to_string_lossy();
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Ok((SockDir::open(dir)?, name.into_owned()))
}

/// Connects to the socket at `path`, however long.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let (dir, name) = split(path)?;
    UnixStream::connect(dir.path(&name))
}

/// Binds a socket at `path`, however long, private to its owner (0600) whatever the umask.
/// (Under husk's umask of 077 it is never reachable by others, even before the chmod.)
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let (dir, name) = split(path)?;
    let short = dir.path(&name);
    let listener = UnixListener::bind(&short)?;
    if let Err(e) = crate::perms::private_path(&short) {
        let _ = std::fs::remove_file(&short);
        return Err(e);
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_bind_and_connect() {
        let base = std::env::temp_dir().join(format!("husk-sockpath-{}", std::process::id()));
        let long = base.join("d".repeat(60)).join("e".repeat(64));
        std::fs::create_dir_all(&long).unwrap();
        let sock = long.join("control.sock");
        assert!(sock.as_os_str().len() > SUN_PATH_MAX);
        assert!(UnixListener::bind(&sock).is_err());
        let l = bind(&sock).unwrap();
        assert!(sock.exists());
        assert_eq!(crate::perms::tests::mode(&sock), 0o600);
        let t = std::thread::spawn(move || l.accept().map(|_| ()));
        connect(&sock).unwrap();
        t.join().unwrap().unwrap();
        let short = SockDir::open(&base).unwrap();
        assert_eq!(short.path("x.sock"), base.join("x.sock"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
