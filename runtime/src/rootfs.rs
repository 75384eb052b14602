//! What the container's rootfs is: a directory, which reaches the guest through the
//! sandbox's virtio-fs share as it is (no image, no copy), or a block device, which is passed
//! through as a virtio-blk disk and mounted by the guest as the filesystem its superblock
//! names.
//!
//! Owns: telling the two apart and naming a device's filesystem. Knows nothing about the VM.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Errors looking at the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Reading the path or its superblock.
    #[error("rootfs {path}: {source}")]
    Read {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A block device with a filesystem the guest does not mount as a rootfs.
    #[error("rootfs {0}: a block device rootfs must hold ext4 or EROFS")]
    UnknownFs(PathBuf),
    /// Neither a directory nor a block device.
    #[error("rootfs {0}: neither a directory nor a block device")]
    Kind(PathBuf),
}

/// The container's rootfs on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// A directory, shared with the guest.
    Dir(PathBuf),
    /// A block device and the filesystem type on it (`ext4` or `erofs`).
    Block {
        /// The device.
        path: PathBuf,
        /// Its filesystem.
        fstype: &'static str,
    },
}

impl Rootfs {
    /// Looks at `path` (root.path resolved against the bundle).
    pub fn inspect(path: &Path) -> Result<Rootfs, RootfsError> {
        let read = |source| RootfsError::Read {
            path: path.into(),
            source,
        };
        let md = std::fs::metadata(path).map_err(read)?;
        if md.is_dir() {
            return Ok(Rootfs::Dir(path.into()));
        }
        if !md.file_type().is_block_device() {
            return Err(RootfsError::Kind(path.into()));
        }
        let mut head = vec![0u8; 2048];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(read)?;
        let fstype = fs_type(&head).ok_or_else(|| RootfsError::UnknownFs(path.into()))?;
        Ok(Rootfs::Block {
            path: path.into(),
            fstype,
        })
    }
}

/// The filesystem whose superblock starts at byte 1024 of `head`: ext4 (magic 0xEF53 at
/// 0x38 into it) or EROFS (0xE0F5E1E2 at its start).
fn fs_type(head: &[u8]) -> Option<&'static str> {
    let sb = head.get(1024..)?;
    if sb.get(0..4)? == 0xE0F5_E1E2u32.to_le_bytes() {
        return Some("erofs");
    }
    if sb.get(0x38..0x3a)? == 0xEF53u16.to_le_bytes() {
        return Some("ext4");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblocks_name_the_filesystem() {
        let mut head = vec![0u8; 2048];
        assert_eq!(fs_type(&head), None);
        head[1024 + 0x38..1024 + 0x3a].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(fs_type(&head), Some("ext4"));
        head[1024..1028].copy_from_slice(&[0xe2, 0xe1, 0xf5, 0xe0]);
        assert_eq!(fs_type(&head), Some("erofs"));
        assert_eq!(fs_type(&head[..1030]), Some("erofs"));
        assert_eq!(fs_type(&[]), None);
    }

    #[test]
    fn a_directory_is_shared_and_a_file_refused() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(
            Rootfs::inspect(t.path()).unwrap(),
            Rootfs::Dir(t.path().into())
        );
        let f = t.path().join("img");
        std::fs::write(&f, "x").unwrap();
        let e = Rootfs::inspect(&f).unwrap_err().to_string();
        assert!(e.contains("neither a directory nor a block device"), "{e}");
    }
}
