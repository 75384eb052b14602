//! Private files. Everything husk creates under its state root (`--root`) is its owner's
//! alone, whatever the caller's umask: files and sockets 0600, directories 0700 (the root
//! itself too, as runc makes it). Two layers, so that a forgotten call site cannot regress:
//! `main` sets the process umask to 077 before anything else runs ([`restrict_umask`]), and
//! the code that creates files under the root asks for the mode explicitly (the helpers here,
//! `tempfile`'s 0600 temporaries in `state::write_atomic`, `sockpath::bind`'s chmod).
//!
//! Files husk writes for its caller outside the root (`--pid-file`, `husk spec`'s
//! config.json) follow the caller's umask, as runc's do ([`caller_mode`]).
//!
//! Owns: the modes. Does not decide where files go.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::Mode;

/// Mode of every file and socket under the root.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory under the root, and of the root.
pub const DIR_MODE: u32 = 0o700;
/// The umask husk runs with.
pub const UMASK: u32 = 0o077;

/// Sets the process umask to [`UMASK`]; returns the caller's.
pub fn restrict_umask() -> u32 {
    nix::sys::stat::umask(Mode::from_bits_truncate(UMASK)).bits()
}

/// The mode runc gives a file it creates for its caller (0666 less the caller's umask).
pub fn caller_mode(caller_umask: u32) -> u32 {
    0o666 & !caller_umask
}

/// Opens a private file for appending (a log), creating it.
pub fn append_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)?;
    private(&f)?;
    Ok(f)
}

fn private(f: &File) -> io::Result<()> {
    if f.metadata()?.permissions().mode() & 0o7777 != FILE_MODE {
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// A builder for private directories (`recursive` as asked).
pub fn dir_builder(recursive: bool) -> DirBuilder {
    let mut b = DirBuilder::new();
    b.recursive(recursive).mode(DIR_MODE);
    b
}

/// Makes a socket (or any file) at `path` private; `path` may be a `sockpath` short path.
pub fn private_path(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
}

#[cfg(test)]
pub mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::Mutex;

    /// Serializes tests that change the process umask.
    pub static UMASK_LOCK: Mutex<()> = Mutex::new(());

    /// Runs `f` with the process umask at 000 (the worst a caller can hand husk).
    pub fn with_open_umask<T>(f: impl FnOnce() -> T) -> T {
        let _g = UMASK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        nix::sys::stat::umask(old);
        r.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// The permission bits of `path` (not following a symlink).
    pub fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn helpers_are_private_under_an_open_umask() {
        let dir = tempfile::tempdir().unwrap();
        with_open_umask(|| {
            let d = dir.path().join("a/b");
            super::dir_builder(true).create(&d).unwrap();
            assert_eq!(mode(&dir.path().join("a")), 0o700);
            assert_eq!(mode(&d), 0o700);
            let l = d.join("log");
            std::fs::write(&l, "").unwrap();
            std::fs::set_permissions(&l, std::fs::Permissions::from_mode(0o666)).unwrap();
            super::append_file(&l).unwrap();
            assert_eq!(mode(&l), 0o600, "an existing log is made private");
        });
        assert_eq!(super::caller_mode(0o022), 0o644);
        assert_eq!(super::caller_mode(0), 0o666);
    }
}
