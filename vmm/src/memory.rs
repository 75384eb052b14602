//! Guest RAM: anonymous or memfd-backed mmap regions laid out by [`crate::layout`].
//!
//! Owns: allocating guest memory. Registering it with KVM is [`crate::vstate::vm`]'s job.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress};

use crate::layout::ram_ranges;

/// The guest memory type used throughout the VMM.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is zero or not page aligned.
    #[error("memory size {0} bytes is invalid: it must be a non-zero multiple of 4 KiB and at least 64 MiB")]
    BadSize(u64),
    /// memfd_create or ftruncate failed.
    #[error("cannot create a memfd for guest memory: {0}")]
    Memfd(std::io::Error),
    /// mmap failed.
    #[error("cannot map guest memory: {0}")]
    Mmap(vm_memory::mmap::FromRangesError),
}

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryBacking {
    /// Private anonymous memory.
    #[default]
    Anonymous,
    /// A memfd, so another process (a vhost-user backend, a snapshot) can map the same pages.
    Memfd,
}

/// Smallest guest we accept: a Linux guest below this does not boot usefully.
pub const MIN_MEMORY_BYTES: u64 = 64 << 20;

/// Allocates guest RAM of `size` bytes.
pub fn create_guest_memory(
    size: u64,
    backing: MemoryBacking,
) -> Result<GuestMemoryMmap, MemoryError> {
    if size < MIN_MEMORY_BYTES || !size.is_multiple_of(crate::layout::PAGE_SIZE) {
        return Err(MemoryError::BadSize(size));
    }
    let ranges = ram_ranges(size);
    match backing {
        MemoryBacking::Anonymous => {
            let r: Vec<_> = ranges
                .iter()
                .map(|r| (GuestAddress(r.start), r.len as usize))
                .collect();
            GuestMemoryMmap::from_ranges(&r).map_err(MemoryError::Mmap)
        }
        MemoryBacking::Memfd => {
            let file = memfd(size)?;
            let mut offset = 0u64;
            let mut r = Vec::new();
            for range in ranges {
                let fo = FileOffset::new(file.try_clone().map_err(MemoryError::Memfd)?, offset);
                r.push((GuestAddress(range.start), range.len as usize, Some(fo)));
                offset += range.len;
            }
            GuestMemoryMmap::from_ranges_with_files(r).map_err(MemoryError::Mmap)
        }
    }
}

fn memfd(size: u64) -> Result<File, MemoryError> {
    let name = CString::new("husk-guest-ram").expect("no NUL in literal");
    // SAFETY: name is a valid NUL-terminated string; the flags are plain constants.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Memfd)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn anonymous_and_memfd_memory_work() {
        for backing in [MemoryBacking::Anonymous, MemoryBacking::Memfd] {
            let mem = create_guest_memory(128 << 20, backing).unwrap();
            mem.write_obj(0xdead_beefu32, GuestAddress(0x100_0000))
                .unwrap();
            assert_eq!(
                mem.read_obj::<u32>(GuestAddress(0x100_0000)).unwrap(),
                0xdead_beef
            );
            assert_eq!(mem.last_addr(), GuestAddress((128 << 20) - 1));
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(matches!(
            create_guest_memory(0, MemoryBacking::Anonymous),
            Err(MemoryError::BadSize(0))
        ));
        assert!(create_guest_memory((64 << 20) + 1, MemoryBacking::Anonymous).is_err());
    }
}
