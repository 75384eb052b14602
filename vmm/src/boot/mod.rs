//! Putting a Linux kernel, initrd and command line into guest memory, and the boot structures
//! the 64-bit entry needs (zero page with e820, GDT, page tables, MP table).
//!
//! Owns: everything written to guest memory before the first `KVM_RUN`.
//! Must not touch: KVM (the vCPU registers are set by [`crate::vstate`] from what this returns).

pub mod gdt;
pub mod mptable;
pub mod paging;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::{self, BzImage, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{
    self, BOOT_GDT_START, BOOT_IDT_START, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START,
    PAGE_SIZE, ZERO_PAGE_START,
};
use crate::memory::GuestMemoryMmap;

/// Errors preparing guest memory for boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened or read.
    #[error("kernel {path}: {source}")]
    KernelFile {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel is neither an ELF vmlinux nor a bzImage.
    #[error("kernel {0}: not an ELF vmlinux or a bzImage (no ELF magic, no \"HdrS\" at 0x202)")]
    KernelFormat(PathBuf),
    /// linux-loader refused the kernel.
    #[error("kernel {path}: {source}")]
    KernelLoad {
        /// The path given.
        path: PathBuf,
        /// The loader's error.
        source: loader::Error,
    },
    /// The bzImage cannot be entered in 64-bit mode.
    #[error("kernel {0}: this bzImage has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")]
    No64BitEntry(PathBuf),
    /// The initrd could not be read.
    #[error("initrd {path}: {source}")]
    InitrdFile {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The initrd does not fit between the kernel and the end of low memory.
    #[error("initrd {path} ({size} bytes) does not fit in guest memory above the kernel; give the guest more memory")]
    InitrdTooBig {
        /// The path given.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The command line is too long or has invalid characters.
    #[error("cmdline: {0} (at most {max} bytes, printable ASCII)", max = CMDLINE_MAX_SIZE - 1)]
    Cmdline(linux_loader::cmdline::Error),
    /// Writing the command line failed.
    #[error("cmdline: cannot write it to guest memory: {0}")]
    CmdlineLoad(loader::Error),
    /// Writing a boot structure failed.
    #[error("cannot write {what} to guest memory: {source}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// The memory error.
        source: vm_memory::GuestMemoryError,
    },
    /// The zero page could not be written.
    #[error("cannot write boot_params: {0}")]
    BootParams(linux_loader::configurator::Error),
    /// Page tables.
    #[error(transparent)]
    Paging(#[from] paging::PagingError),
    /// MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
}

/// What the loader found, for vCPU setup and the initrd.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Where the boot vCPU starts, in long mode.
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage's setup header, to start the zero page from.
    pub setup_header: Option<setup_header>,
}

/// Where the initrd was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitrd {
    /// Guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_MAGIC: u32 = 0x5372_6448; // "HdrS"
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const XLF_KERNEL_64: u16 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
/// Offset of `startup_64` in a bzImage's protected-mode part.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// The image formats we boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF `vmlinux`.
    Elf,
    /// Compressed `bzImage`.
    BzImage,
}

/// Looks at the first bytes of a kernel image to decide its format.
pub fn detect_format<R: Read + Seek>(image: &mut R) -> std::io::Result<Option<KernelFormat>> {
    let mut magic = [0u8; 4];
    image.seek(SeekFrom::Start(0))?;
    if image.read_exact(&mut magic).is_ok() && &magic == ELF_MAGIC {
        image.seek(SeekFrom::Start(0))?;
        return Ok(Some(KernelFormat::Elf));
    }
    image.seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET))?;
    let found = image.read_exact(&mut magic).is_ok() && u32::from_le_bytes(magic) == BZIMAGE_MAGIC;
    image.seek(SeekFrom::Start(0))?;
    Ok(found.then_some(KernelFormat::BzImage))
}

/// Loads a `vmlinux` or `bzImage` into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let file_err = |source| BootError::KernelFile {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(file_err)?;
    let load_err = |source| BootError::KernelLoad {
        path: path.to_owned(),
        source,
    };
    match detect_format(&mut file).map_err(file_err)? {
        Some(KernelFormat::Elf) => {
            let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            tracing::debug!(pvh = %r.pvh_boot_cap, "ELF kernel loaded at {:#x}", r.kernel_load.0);
            Ok(LoadedKernel {
                // For vmlinux, e_entry is the physical address of startup_64.
                entry: r.kernel_load,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Some(KernelFormat::BzImage) => {
            let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            let hdr = r
                .setup_header
                .expect("bzImage loader returns a setup header");
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry(path.to_owned()));
            }
            Ok(LoadedKernel {
                entry: r.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
                end: r.kernel_end,
                setup_header: Some(hdr),
            })
        }
        None => Err(BootError::KernelFormat(path.to_owned())),
    }
}

/// Places the initrd at the top of low RAM, page aligned, above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    mem_size: u64,
    kernel_end: u64,
    max_addr: Option<u64>,
) -> Result<LoadedInitrd, BootError> {
    let err = |source| BootError::InitrdFile {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let top = max_addr
        .map(|m| m + 1)
        .unwrap_or(u64::MAX)
        .min(layout::low_ram_end(mem_size));
    let addr = initrd_address(top, size, kernel_end).ok_or_else(|| BootError::InitrdTooBig {
        path: path.to_owned(),
        size,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| BootError::Write {
            what: "the initrd",
            source,
        })?;
    Ok(LoadedInitrd { addr, size })
}

/// Highest page-aligned start so that `[start, start + size)` ends at or below `top` and starts
/// at or above `floor`.
pub fn initrd_address(top: u64, size: u64, floor: u64) -> Option<u64> {
    let start = top.checked_sub(size)? & !(PAGE_SIZE - 1);
    (start >= floor).then_some(start)
}

/// Builds the command line, checking the length limit.
pub fn build_cmdline(text: &str) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    for word in text.split_whitespace() {
        cmdline.insert_str(word).map_err(BootError::Cmdline)?;
    }
    Ok(cmdline)
}

/// The zero page for the Linux 64-bit boot protocol.
pub fn build_boot_params(
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<LoadedInitrd>,
    mem_size: u64,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = BZIMAGE_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    let map = layout::e820_map(mem_size);
    for (slot, e) in params.e820_table.iter_mut().zip(map.iter()) {
        slot.addr = e.addr;
        slot.size = e.size;
        slot.r#type = e.kind;
    }
    params.e820_entries = map.len() as u8;
    params
}

/// Everything the boot vCPU needs from memory setup.
#[derive(Debug, Clone, Copy)]
pub struct BootLayout {
    /// Long-mode entry point.
    pub entry: GuestAddress,
    /// CR3 for the identity map.
    pub cr3: u64,
}

/// Writes the GDT, an empty IDT and the identity page tables. Shared by Linux boot and the
/// flat long-mode payloads the tests use.
pub fn write_cpu_tables(mem: &GuestMemoryMmap) -> Result<u64, BootError> {
    for (i, entry) in gdt::BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))
            .map_err(|source| BootError::Write {
                what: "the GDT",
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|source| BootError::Write {
            what: "the IDT",
            source,
        })?;
    Ok(paging::write_identity_map(mem)?)
}

/// Writes the MP table for `vcpus` CPUs.
pub fn write_mptable(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), BootError> {
    let bytes = mptable::build(vcpus)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|source| BootError::Write {
            what: "the MP table",
            source,
        })
}

/// A Linux boot: kernel, optional initrd, command line.
#[derive(Debug, Clone)]
pub struct LinuxBoot {
    /// vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

/// Loads a Linux guest and writes every boot structure. Returns the entry and CR3.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    boot: &LinuxBoot,
    mem_size: u64,
    vcpus: u8,
) -> Result<BootLayout, BootError> {
    let cmdline = build_cmdline(&boot.cmdline)?;
    let kernel = load_kernel(mem, &boot.kernel)?;
    let initrd = match &boot.initrd {
        Some(path) => {
            let max = kernel
                .setup_header
                .map(|h| u64::from(h.initrd_addr_max))
                .filter(|m| *m != 0);
            Some(load_initrd(mem, path, mem_size, kernel.end, max)?)
        }
        None => None,
    };
    loader::load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline)
        .map_err(BootError::CmdlineLoad)?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(BootError::Cmdline)?
        .as_bytes()
        .len();
    let params = build_boot_params(kernel.setup_header, cmdline_len, initrd, mem_size);
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(BootError::BootParams)?;
    write_mptable(mem, vcpus)?;
    let cr3 = write_cpu_tables(mem)?;
    debug_assert!(mem.address_in_range(GuestAddress(ZERO_PAGE_START)));
    Ok(BootLayout {
        entry: kernel.entry,
        cr3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn detects_formats() {
        let mut elf = Cursor::new(b"\x7fELF\x02\x01\x01".to_vec());
        assert_eq!(detect_format(&mut elf).unwrap(), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(
            detect_format(&mut Cursor::new(bz)).unwrap(),
            Some(KernelFormat::BzImage)
        );
        assert_eq!(
            detect_format(&mut Cursor::new(vec![0u8; 16])).unwrap(),
            None
        );
    }

    #[test]
    fn initrd_goes_to_the_top_page_aligned() {
        assert_eq!(
            initrd_address(0x800_0000, 0x1234, 0x200_0000),
            Some(0x7ffe000)
        );
        assert_eq!(initrd_address(0x800_0000, 0x700_0000, 0x200_0000), None);
        assert_eq!(initrd_address(0x1000, 0x2000, 0), None);
    }

    #[test]
    fn boot_params_carry_cmdline_initrd_and_e820() {
        let initrd = LoadedInitrd {
            addr: 0x7f0_0000,
            size: 0x10_0000,
        };
        let p = build_boot_params(None, 42, Some(initrd), 128 << 20);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr } as u64, CMDLINE_START);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x7f0_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x10_0000);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        let (addr, size) = (last.addr, last.size);
        assert_eq!((addr, addr + size), (HIMEM_START, 128 << 20));
    }

    #[test]
    fn boot_params_keep_the_bzimage_header() {
        let hdr = setup_header {
            version: 0x020f,
            xloadflags: 1,
            ..Default::default()
        };
        let p = build_boot_params(Some(hdr), 1, None, 64 << 20);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn cmdline_limits_are_enforced() {
        assert!(build_cmdline("console=ttyS0 reboot=k").is_ok());
        let long = "a".repeat(CMDLINE_MAX_SIZE + 10);
        assert!(matches!(build_cmdline(&long), Err(BootError::Cmdline(_))));
    }

    #[test]
    fn garbage_kernel_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("husk-boot-test-{}", std::process::id()));
        std::fs::write(&dir, b"not a kernel at all").unwrap();
        let mem = crate::memory::create_guest_memory(64 << 20, Default::default()).unwrap();
        let err = load_kernel(&mem, &dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(
            err.to_string().contains("not an ELF vmlinux or a bzImage"),
            "{err}"
        );
        let missing = load_kernel(&mem, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/vmlinux"));
    }
}
