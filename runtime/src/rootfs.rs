//! The container's rootfs as a virtio-blk disk: a block device is passed through; a directory
//! is packed into a sparse ext4 image with `mkfs.ext4 -d` (no journal: the image lives as long
//! as the container).
//!
//! Owns: sizing and packing the image. Knows nothing about the VM.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Errors preparing the rootfs disk.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Walking the directory.
    #[error("rootfs {path}: {source}")]
    Walk {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// mkfs.ext4 failed.
    #[error("mkfs.ext4 -d {dir}: {message}")]
    Mkfs {
        /// The rootfs.
        dir: PathBuf,
        /// Its stderr or the spawn error.
        message: String,
    },
}

/// A disk ready for the VMM.
#[derive(Debug, Clone)]
pub struct RootfsDisk {
    /// Image or block device.
    pub path: PathBuf,
    /// Filesystem type for the guest mount (`ext4`, or empty to let the guest probe).
    pub fstype: String,
    /// Whether `path` is an image husk made (removed with the container).
    pub packed: bool,
    /// Bytes of file data packed.
    pub bytes: u64,
    /// Time spent packing.
    pub took: Duration,
}

/// Total size and entry count of a tree (not following symlinks, staying on one filesystem).
fn measure(dir: &Path) -> Result<(u64, u64), RootfsError> {
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let dev = std::fs::symlink_metadata(dir)
        .map_err(|source| RootfsError::Walk {
            path: dir.into(),
            source,
        })?
        .dev();
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| RootfsError::Walk {
            path: d.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| RootfsError::Walk {
                path: d.clone(),
                source,
            })?;
            let md = e.metadata().map_err(|source| RootfsError::Walk {
                path: e.path(),
                source,
            })?;
            entries += 1;
            bytes += md.blocks() * 512;
            if md.is_dir() && md.dev() == dev {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, entries))
}

/// Image size for `bytes` of data and `entries` inodes: data plus 30% and 32 MiB of slack
/// for metadata and the container's writes, rounded up to MiB.
fn image_size(bytes: u64, entries: u64) -> u64 {
    let raw = bytes + bytes / 10 * 3 + entries * 512 + (32 << 20);
    raw.div_ceil(1 << 20) << 20
}

/// Prepares the disk for `rootfs`, packing into `image` when it is a directory.
pub fn prepare(rootfs: &Path, image: &Path) -> Result<RootfsDisk, RootfsError> {
    let t0 = Instant::now();
    let md = std::fs::metadata(rootfs).map_err(|source| RootfsError::Walk {
        path: rootfs.into(),
        source,
    })?;
    if md.file_type().is_block_device() {
        return Ok(RootfsDisk {
            path: rootfs.into(),
            fstype: String::new(),
            packed: false,
            bytes: 0,
            took: t0.elapsed(),
        });
    }
    let (bytes, entries) = measure(rootfs)?;
    let size = image_size(bytes, entries);
    let mkfs_err = |message: String| RootfsError::Mkfs {
        dir: rootfs.into(),
        message,
    };
    // The container's whole filesystem: private (0600) like everything under the root.
    let f = crate::perms::create_file(image)
        .map_err(|e| mkfs_err(format!("{}: {e}", image.display())))?;
    f.set_len(size)
        .map_err(|e| mkfs_err(format!("{}: {e}", image.display())))?;
    drop(f);
    let inodes = (entries + entries / 4 + 4096).to_string();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-L", "husk-rootfs", "-E"])
        .arg("lazy_itable_init=1,nodiscard")
        .args(["-N", &inodes, "-d"])
        .arg(rootfs)
        .arg(image)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(|e| mkfs_err(e.to_string()))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(image);
        return Err(mkfs_err(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(RootfsDisk {
        path: image.into(),
        fstype: "ext4".into(),
        packed: true,
        bytes,
        took: t0.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_leave_room() {
        assert_eq!(image_size(0, 0), 32 << 20);
        assert!(image_size(100 << 20, 1000) >= 130 << 20);
        assert_eq!(image_size(1, 1) % (1 << 20), 0);
    }

    #[test]
    fn packs_a_directory() {
        if Command::new("mkfs.ext4").arg("-V").output().is_err()
            && !Path::new("/usr/sbin/mkfs.ext4").exists()
        {
            eprintln!("SKIPPED: mkfs.ext4 missing (apt install e2fsprogs)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("husk-rootfs-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
        std::fs::write(dir.join("rootfs/bin/hello"), b"hi").unwrap();
        std::os::unix::fs::symlink("hello", dir.join("rootfs/bin/link")).unwrap();
        let disk = prepare(&dir.join("rootfs"), &dir.join("rootfs.img")).unwrap();
        assert!(disk.packed);
        assert_eq!(disk.fstype, "ext4");
        let magic = std::fs::read(&disk.path).unwrap();
        assert_eq!(&magic[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
