//! Identity-mapped long-mode page tables for the boot vCPU.
//!
//! Owns: the page-table entries written below 1 MiB (see [`crate::layout`]). The kernel
//! replaces them early; they only need to cover the kernel, the zero page and the command line.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

use crate::layout::{IDENTITY_MAPPED_GIB, PDE_START, PDPTE_START, PML4_START};

/// Present + writable.
const PRESENT_RW: u64 = 0x3;
/// Present + writable + 2 MiB page.
const PRESENT_RW_HUGE: u64 = 0x83;

/// Errors writing the page tables.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    /// Guest memory does not cover the page-table area.
    #[error("cannot write boot page tables at {0:#x}: {1}")]
    Write(u64, vm_memory::GuestMemoryError),
}

/// The entries of the identity map, as (guest address, value) pairs. Pure, so it is tested
/// without guest memory.
pub fn identity_map_entries() -> Vec<(u64, u64)> {
    let mut entries = vec![(PML4_START, PDPTE_START | PRESENT_RW)];
    for gib in 0..IDENTITY_MAPPED_GIB {
        let pd = PDE_START + gib * 0x1000;
        entries.push((PDPTE_START + gib * 8, pd | PRESENT_RW));
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            entries.push((pd + i * 8, phys | PRESENT_RW_HUGE));
        }
    }
    entries
}

/// Writes the identity map into guest memory and returns the value for CR3.
pub fn write_identity_map(mem: &GuestMemoryMmap) -> Result<u64, PagingError> {
    for (addr, value) in identity_map_entries() {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|e| PagingError::Write(addr, e))?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU does for a 2 MiB mapping.
    fn translate(mem: &GuestMemoryMmap, va: u64) -> u64 {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(PML4_START + ((va >> 39) & 0x1ff) * 8))
            .unwrap();
        assert_eq!(pml4e & 1, 1);
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8))
            .unwrap();
        assert_eq!(pdpte & 1, 1, "no PDPT entry for {va:#x}");
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8))
            .unwrap();
        assert_eq!(pde & 0x81, 0x81, "no 2 MiB PDE for {va:#x}");
        (pde & !0x1f_ffff & !0xfff) | (va & 0x1f_ffff)
    }

    #[test]
    fn identity_maps_first_gib_and_the_hole() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_map(&mem).unwrap();
        assert_eq!(cr3, PML4_START);
        for va in [
            0u64,
            0x7000,
            0x100_0000,
            0x3fff_ffff,
            0xd000_0000,
            0xfee0_0000,
        ] {
            assert_eq!(translate(&mem, va), va);
        }
    }

    #[test]
    fn entry_count_matches_mapped_size() {
        assert_eq!(
            identity_map_entries().len() as u64,
            1 + IDENTITY_MAPPED_GIB * 513
        );
    }

    #[test]
    fn too_little_memory_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x9000)]).unwrap();
        assert!(matches!(
            write_identity_map(&mem),
            Err(PagingError::Write(PML4_START, _))
        ));
    }
}
