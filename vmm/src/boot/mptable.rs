//! The Intel MultiProcessor table, so the guest finds N CPUs, the IOAPIC and the ISA IRQ routing
//! without ACPI.
//!
//! Owns: MP table encoding (spec 1.4) at [`crate::layout::EBDA_START`]. Pure byte building; the
//! caller writes the bytes into guest memory.

use crate::layout::{APIC_START, EBDA_START, IOAPIC_START, IRQ_MAX, MAX_VCPUS};

/// Errors building the MP table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MpTableError {
    /// Zero or too many vCPUs.
    #[error("vcpus = {0}: the MP table supports 1 to {max}", max = MAX_VCPUS)]
    VcpuCount(u8),
}

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;
const ENTRY_CPU: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;

/// The IOAPIC's id in the MP table: the first id after the CPUs' APIC ids.
pub fn ioapic_id(vcpus: u8) -> u8 {
    vcpus + 1
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP floating pointer followed by the configuration table for `vcpus` CPUs.
/// Returns the bytes to write at [`EBDA_START`].
pub fn build(vcpus: u8) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MpTableError::VcpuCount(vcpus));
    }
    let table_addr = EBDA_START + FLOATING_POINTER_LEN as u64;
    let ioapic = ioapic_id(vcpus);

    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        entries.extend_from_slice(&[ENTRY_CPU, cpu, APIC_VERSION]);
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOT_PROCESSOR } else { 0 };
        entries.push(flags);
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..=IRQ_MAX as u8 {
        // type, irqtype, irqflag (conforming), source bus, source irq, dest apic, dest pin
        entries.extend_from_slice(&[ENTRY_INTSRC, MP_IRQ_INT, 0, 0, 0, irq, ioapic, irq]);
        count += 1;
    }
    // LINT0 of every CPU is ExtINT (the PIC), LINT1 is NMI.
    entries.extend_from_slice(&[ENTRY_LINTSRC, MP_IRQ_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, MP_IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = HEADER_LEN + entries.len();
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, patched below
    header.extend_from_slice(b"HUSK    ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // extended length + checksum + reserved
    debug_assert_eq!(header.len(), HEADER_LEN);

    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(FLOATING_POINTER_LEN);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4); // spec revision
    fp.push(0); // checksum
    fp.extend_from_slice(&[0u8; 5]); // feature bytes: 0 = a config table is present
    fp[10] = checksum(&fp);

    let mut out = fp;
    out.extend_from_slice(&table);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn checksums_are_valid_and_pointer_targets_table() {
        let t = build(2).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let table_addr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(table_addr, EBDA_START + 16);
        let table = &t[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes(table[4..6].try_into().unwrap()) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        assert!(EBDA_START + t.len() as u64 <= crate::layout::HIMEM_START);
    }

    #[test]
    fn lists_every_cpu_once_with_one_bsp() {
        for n in [1u8, 2, 8, MAX_VCPUS] {
            let t = build(n).unwrap();
            let table = &t[16..];
            let count = u16::from_le_bytes(table[34..36].try_into().unwrap()) as usize;
            let mut off = HEADER_LEN;
            let (mut cpus, mut bsps, mut seen) = (0, 0, 0);
            while off < table.len() {
                let len = if table[off] == ENTRY_CPU { 20 } else { 8 };
                if table[off] == ENTRY_CPU {
                    assert_eq!(table[off + 1], cpus as u8, "APIC ids are 0..n in order");
                    cpus += 1;
                    bsps += usize::from(table[off + 3] & CPU_BOOT_PROCESSOR != 0);
                }
                if table[off] == ENTRY_IOAPIC {
                    assert_eq!(table[off + 1], ioapic_id(n));
                }
                off += len;
                seen += 1;
            }
            assert_eq!(off, table.len());
            assert_eq!((cpus, bsps, seen), (n as usize, 1, count));
        }
    }

    #[test]
    fn bad_vcpu_counts_are_rejected() {
        assert_eq!(build(0), Err(MpTableError::VcpuCount(0)));
        assert_eq!(build(255), Err(MpTableError::VcpuCount(255)));
    }
}
