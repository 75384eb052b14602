//! The guest physical address map: every fixed address the VMM uses lives here.
//!
//! Owns: where RAM, the MMIO hole, boot structures and devices sit; the e820 map.
//! Must not touch: KVM or guest memory (pure arithmetic, unit-tested).
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BDA (RAM)
//! 0x0000_0500  GDT                      0x0000_0520  IDT (empty)
//! 0x0000_7000  boot_params (zero page)  0x0000_8ff0  initial stack top
//! 0x0000_9000  PML4   0xa000 PDPT   0xb000..0xf000 four PDs (identity map of 4 GiB, 2 MiB pages)
//! 0x0002_0000  kernel command line (2 KiB)
//! 0x0009_fc00  MP table (EBDA, reserved up to 1 MiB)
//! 0x0010_0000  high memory: the kernel loads at its ELF physical address (16 MiB for x86_64)
//! ...          initrd at the top of low RAM
//! 0xd000_0000  MMIO hole (768 MiB): husk control page, then virtio-mmio slots
//! 0xfec0_0000  IOAPIC   0xfee0_0000  LAPIC
//! 0x1_0000_0000  RAM above 4 GiB when the guest has more than 3.25 GiB
//! ```

/// One page.
pub const PAGE_SIZE: u64 = 0x1000;

/// Start of the GDT the boot vCPU runs on.
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the (empty) boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// The zero page (`struct boot_params`) for the Linux 64-bit boot protocol.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level 4 page table.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of the page directories (one per GiB identity-mapped).
pub const PDE_START: u64 = 0xb000;
/// How many GiB the boot page tables identity-map.
pub const IDENTITY_MAPPED_GIB: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line we pass (x86's COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area, where the MP table goes.
pub const EBDA_START: u64 = 0x9fc00;
/// First byte of high memory (the kernel and initrd live above it).
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole; RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xd000_0000;
/// Size of the 32-bit MMIO hole.
pub const MMIO_HOLE_SIZE: u64 = FIRST_ADDR_PAST_32BITS - MMIO_HOLE_START;
/// 4 GiB.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;

/// The husk control page (boot-complete marker and shutdown requests), see
/// [`crate::devices::control`].
pub const CONTROL_PAGE_START: u64 = MMIO_HOLE_START;
/// Size of the control page.
pub const CONTROL_PAGE_SIZE: u64 = PAGE_SIZE;
/// First virtio-mmio slot; each device gets [`VIRTIO_MMIO_SLOT_SIZE`] bytes.
pub const VIRTIO_MMIO_START: u64 = MMIO_HOLE_START + PAGE_SIZE;
/// Size of a virtio-mmio slot.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = PAGE_SIZE;

/// The IOAPIC's MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APIC's MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's three-page TSS region (needed on Intel), inside the MMIO hole.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// KVM's identity map page (Intel real-mode support), just below the TSS.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;

/// Legacy IRQ of the first serial port (COM1).
pub const SERIAL_IRQ: u32 = 4;
/// I/O port base of COM1.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// I/O port base of the i8042 keyboard controller (data 0x60, command 0x64).
pub const I8042_PORT_BASE: u16 = 0x60;
/// First GSI handed to virtio devices.
pub const IRQ_DEVICE_BASE: u32 = 5;
/// Last GSI the IOAPIC has (24 pins).
pub const IRQ_MAX: u32 = 23;

/// Largest vCPU count the MP table and APIC id layout support.
pub const MAX_VCPUS: u8 = 254;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
/// e820 reserved entry type.
pub const E820_RESERVED: u32 = 2;

/// One contiguous range of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// Guest physical start.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The RAM ranges for a guest of `mem_size` bytes: everything below the MMIO hole, the rest
/// above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<RamRange> {
    if mem_size <= MMIO_HOLE_START {
        vec![RamRange {
            start: 0,
            len: mem_size,
        }]
    } else {
        vec![
            RamRange {
                start: 0,
                len: MMIO_HOLE_START,
            },
            RamRange {
                start: FIRST_ADDR_PAST_32BITS,
                len: mem_size - MMIO_HOLE_START,
            },
        ]
    }
}

/// One e820 entry as the boot protocol wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The e820 map for a guest of `mem_size` bytes. Low memory below the EBDA is RAM, the EBDA
/// up to 1 MiB is reserved (the MP table lives there), and the rest follows [`ram_ranges`].
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for range in ram_ranges(mem_size) {
        let start = range.start.max(HIMEM_START);
        let end = range.start + range.len;
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// End (exclusive) of RAM below the MMIO hole.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_HOLE_START)
}

/// Guest physical base of virtio-mmio slot `index`.
pub fn virtio_mmio_slot(index: u32) -> u64 {
    VIRTIO_MMIO_START + u64::from(index) * VIRTIO_MMIO_SLOT_SIZE
}

// The stack sits between the zero page and the page tables; device IRQs start above COM1's.
const _: () =
    assert!(BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + PAGE_SIZE);
const _: () = assert!(IRQ_DEVICE_BASE > SERIAL_IRQ && IRQ_MAX == 23);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_low_range() {
        assert_eq!(
            ram_ranges(256 << 20),
            vec![RamRange {
                start: 0,
                len: 256 << 20
            }]
        );
    }

    #[test]
    fn big_guest_is_split_around_the_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].start + r[0].len, MMIO_HOLE_START);
        assert_eq!(r[1].start, FIRST_ADDR_PAST_32BITS);
        assert_eq!(r[0].len + r[1].len, 4 << 30);
    }

    #[test]
    fn e820_reserves_ebda_and_skips_hole() {
        let map = e820_map(4 << 30);
        assert_eq!(map[0].kind, E820_RAM);
        assert_eq!(map[1].addr, EBDA_START);
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(map[2].addr, HIMEM_START);
        assert_eq!(map[2].addr + map[2].size, MMIO_HOLE_START);
        assert_eq!(map[3].addr, FIRST_ADDR_PAST_32BITS);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (4 << 30) - (HIMEM_START - EBDA_START));
        for e in &map {
            let end = e.addr + e.size;
            assert!(end <= MMIO_HOLE_START || e.addr >= FIRST_ADDR_PAST_32BITS);
        }
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        let mut regions = [
            (BOOT_GDT_START, 0x20),
            (BOOT_IDT_START, 8),
            (ZERO_PAGE_START, PAGE_SIZE),
            (PML4_START, PAGE_SIZE),
            (PDPTE_START, PAGE_SIZE),
            (PDE_START, IDENTITY_MAPPED_GIB * PAGE_SIZE),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
            (EBDA_START, HIMEM_START - EBDA_START),
        ];
        regions.sort();
        for w in regions.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{:x?} overlaps {:x?}",
                w[0],
                w[1]
            );
        }
        assert!(virtio_mmio_slot(0) >= CONTROL_PAGE_START + CONTROL_PAGE_SIZE);
        assert!(virtio_mmio_slot(1000) < IOAPIC_START);
    }
}
