//! Per-vCPU CPUID: KVM's supported list, with APIC ids and topology filled in.
//!
//! Owns: the CPUID adjustments (pure functions over `kvm_cpuid_entry2`, unit-tested).
//! The topology is one socket, one thread per core, `vcpus` cores; APIC id = vCPU index.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// CPU vendor, read from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD (or HygonGenuine).
    Amd,
    /// Anything else.
    Other,
}

const LEAF_1_EBX_APIC_ID_SHIFT: u32 = 24;
const LEAF_1_EBX_CPU_COUNT_SHIFT: u32 = 16;
const LEAF_1_EBX_CLFLUSH_SHIFT: u32 = 8;
const LEAF_1_EDX_HTT: u32 = 1 << 28;
const LEAF_1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF_1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEVEL_TYPE_THREAD: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Reads the vendor from leaf 0's EBX/EDX/ECX signature.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(leaf0) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut sig = Vec::with_capacity(12);
    for reg in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
        sig.extend_from_slice(&reg.to_le_bytes());
    }
    match &sig[..] {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Bits needed to number `n` items (the x2APIC topology shift).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Makes sure the extended topology leaf 0xb has its thread, core and terminating subleaves
/// whenever the CPU's basic leaves reach it. KVM copies the host's subleaves, and where the
/// host (a nested or emulated one) has none, a guest with N vCPUs would see N one-core packages.
pub fn ensure_topology_leaves(entries: &mut Vec<kvm_cpuid_entry2>) {
    let max_basic = entries
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    if max_basic < 0xb {
        return;
    }
    entries.retain(|e| e.function != 0xb);
    for index in 0..3 {
        entries.push(kvm_cpuid_entry2 {
            function: 0xb,
            index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            ..Default::default()
        });
    }
}

/// Adjusts KVM's supported CPUID for vCPU `index` of `count`.
pub fn adjust(entries: &mut [kvm_cpuid_entry2], index: u8, count: u8, tsc_deadline: bool) {
    let vendor = vendor(entries);
    let apic_id = u32::from(index);
    let count = u32::from(count);
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (apic_id << LEAF_1_EBX_APIC_ID_SHIFT)
                    | (count << LEAF_1_EBX_CPU_COUNT_SHIFT)
                    | (8 << LEAF_1_EBX_CLFLUSH_SHIFT);
                e.ecx |= LEAF_1_ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= LEAF_1_ECX_TSC_DEADLINE;
                } else {
                    e.ecx &= !LEAF_1_ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= LEAF_1_EDX_HTT;
                } else {
                    e.edx &= !LEAF_1_EDX_HTT;
                }
            }
            4 if vendor == Vendor::Intel => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
            }
            6 => {
                // No power management to offer (APERF/MPERF, turbo).
                e.eax = 0;
                e.ecx &= !1;
            }
            0xb | 0x1f => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_TYPE_THREAD << 8) | e.index;
                    }
                    1 => {
                        e.eax = bits_for(count);
                        e.ebx = count;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // ECX[7:0]: threads - 1; ECX[15:12]: APIC id size.
                e.ecx = (e.ecx & !0xf0ff) | (bits_for(count) << 12) | (count - 1);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                e.eax = apic_id;
                e.ebx = apic_id & 0xff; // one thread per core, core id = APIC id
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn vendor_leaf(sig: &[u8; 12]) -> kvm_cpuid_entry2 {
        let w = |i: usize| u32::from_le_bytes(sig[i..i + 4].try_into().unwrap());
        kvm_cpuid_entry2 {
            function: 0,
            ebx: w(0),
            edx: w(4),
            ecx: w(8),
            ..Default::default()
        }
    }

    #[test]
    fn vendor_is_read_from_leaf_0() {
        assert_eq!(vendor(&[vendor_leaf(b"GenuineIntel")]), Vendor::Intel);
        assert_eq!(vendor(&[vendor_leaf(b"AuthenticAMD")]), Vendor::Amd);
        assert_eq!(vendor(&[vendor_leaf(b"KVMKVMKVM\0\0\0")]), Vendor::Other);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn leaf_1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = vec![vendor_leaf(b"GenuineIntel"), entry(1, 0)];
        adjust(&mut e, 3, 4, false);
        assert_eq!(e[1].ebx >> 24, 3);
        assert_eq!((e[1].ebx >> 16) & 0xff, 4);
        assert_ne!(e[1].ecx & LEAF_1_ECX_HYPERVISOR, 0);
        assert_ne!(e[1].edx & LEAF_1_EDX_HTT, 0);
        adjust(&mut e, 0, 1, true);
        assert_eq!(e[1].edx & LEAF_1_EDX_HTT, 0);
        assert_ne!(e[1].ecx & LEAF_1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn extended_topology_describes_cores() {
        let mut e = vec![
            vendor_leaf(b"GenuineIntel"),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
        ];
        adjust(&mut e, 5, 6, false);
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx >> 8, e[1].edx), (0, 1, 1, 5));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx >> 8, e[2].edx), (3, 6, 2, 5));
        assert_eq!((e[3].ebx, e[3].ecx >> 8), (0, 0));
    }

    #[test]
    fn intel_cache_leaf_counts_cores() {
        let mut l1 = entry(4, 0);
        l1.eax = (1 << 5) | 0x1; // level 1 data cache
        let mut l3 = entry(4, 3);
        l3.eax = (3 << 5) | 0x3;
        let mut e = vec![vendor_leaf(b"GenuineIntel"), l1, l3];
        adjust(&mut e, 0, 4, false);
        assert_eq!(e[1].eax >> 26, 3);
        assert_eq!((e[1].eax >> 14) & 0xfff, 0);
        assert_eq!((e[2].eax >> 14) & 0xfff, 3);
        assert_eq!(e[2].eax & 0x1f, 3, "cache type preserved");
    }

    #[test]
    fn amd_leaves_count_threads() {
        let mut e = vec![
            vendor_leaf(b"AuthenticAMD"),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
        ];
        adjust(&mut e, 2, 3, false);
        assert_eq!(e[1].ecx & 0xff, 2);
        assert_eq!((e[1].ecx >> 12) & 0xf, 2);
        assert_eq!(e[2].eax, 2);
    }

    #[test]
    fn topology_leaf_is_completed_when_reachable() {
        let mut leaf0 = vendor_leaf(b"AuthenticAMD");
        leaf0.eax = 0xd;
        let mut e = vec![leaf0, entry(0xb, 0)];
        ensure_topology_leaves(&mut e);
        let idx: Vec<u32> = e
            .iter()
            .filter(|x| x.function == 0xb)
            .map(|x| x.index)
            .collect();
        assert_eq!(idx, vec![0, 1, 2]);
        adjust(&mut e, 1, 2, false);
        let core = e
            .iter()
            .find(|x| x.function == 0xb && x.index == 1)
            .unwrap();
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (1, 2, 2, 1));

        let mut old = vendor_leaf(b"AuthenticAMD");
        old.eax = 0x7;
        let mut e = vec![old];
        ensure_topology_leaves(&mut e);
        assert_eq!(
            e.len(),
            1,
            "no 0xb leaf on a CPU whose basic leaves stop below it"
        );
    }

    #[test]
    fn topology_shift() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(bits_for), [0, 1, 2, 2, 3, 3, 4]);
    }
}
