//! The KVM VM: creation, in-kernel irqchip and PIT, guest memory slots, irqfds, ioeventfds, vCPU
//! fds.
//!
//! Drop order is structural here, not a promise callers keep. KVM maps guest RAM through the
//! host addresses it is given; if that mapping went away while a vCPU could still run, the guest
//! would read and write whatever the process maps there next. So:
//!
//! - [`Vm::register_memory`] keeps a clone of the memory it hands to KVM (a clone shares the
//!   mapping), so however the caller orders its locals, or returns early, the mapping outlives
//!   the VM fd: the VM's state drops its fd before its memory (field order of `VmState`).
//! - A vCPU fd made by [`Vm::create_vcpu`] holds the VM's state too, and drops its own fd first.
//!   The VM state (fd, then memory) goes only after the last vCPU fd and the [`Vm`] are gone; a
//!   vCPU thread left behind in `KVM_RUN` keeps the memory mapped for as long as it lives.
//!
//! So the order is always: vCPU fds, then the VM fd, then guest memory.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::layout::{KVM_IDENTITY_MAP_START, KVM_TSS_START};
use crate::memory::GuestMemoryMmap;

/// Errors creating or configuring the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// KVM lacks something the VMM needs.
    #[error("KVM lacks the {0:?} capability")]
    MissingCap(Cap),
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// A VM with an in-kernel irqchip and PIT, and the guest memory registered with it.
pub struct Vm {
    state: Arc<VmState>,
}

/// What the [`Vm`] and every vCPU fd share. Fields drop in declaration order: the VM fd closes
/// (destroying the VM once no vCPU fd is left, as none is by then) before the memory it maps is
/// released.
struct VmState {
    fd: VmFd,
    kvm: Kvm,
    memory: Mutex<Vec<GuestMemoryMmap>>,
}

/// A vCPU fd that keeps its VM, and so the guest memory, alive; it derefs to the [`VcpuFd`].
pub struct VmVcpuFd {
    // Declared first: dropped before the VM state it holds.
    fd: VcpuFd,
    _vm: Arc<VmState>,
}

impl Deref for VmVcpuFd {
    type Target = VcpuFd;

    fn deref(&self) -> &VcpuFd {
        &self.fd
    }
}

impl DerefMut for VmVcpuFd {
    fn deref_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }
}

impl Vm {
    /// Opens /dev/kvm and creates a VM with the interrupt controllers Linux expects.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for cap in [Cap::Irqchip, Cap::Ioeventfd, Cap::Irqfd, Cap::UserMemory] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(cap));
            }
        }
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        fd.set_tss_address(KVM_TSS_START as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        if kvm.check_extension(Cap::SetIdentityMapAddr) {
            fd.set_identity_map_address(KVM_IDENTITY_MAP_START)
                .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        }
        fd.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        Ok(Self {
            state: Arc::new(VmState {
                fd,
                kvm,
                memory: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The system fd, for CPUID and MSR queries.
    pub fn kvm(&self) -> &Kvm {
        &self.state.kvm
    }

    /// The VM fd. Make vCPUs with [`Self::create_vcpu`], not through this.
    pub fn fd(&self) -> &VmFd {
        &self.state.fd
    }

    /// Creates vCPU `id`; its fd keeps this VM and its memory alive (see the module header).
    pub fn create_vcpu(&self, id: u64) -> Result<VmVcpuFd, kvm_ioctls::Error> {
        Ok(VmVcpuFd {
            fd: self.state.fd.create_vcpu(id)?,
            _vm: self.state.clone(),
        })
    }

    /// Hands every guest memory region to KVM, one slot each, and keeps `mem` (a clone sharing
    /// its mapping) until the VM fd is closed.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        // Kept before KVM sees any address, so an error half way cannot leave a slot behind
        // that points at memory nobody keeps.
        self.state
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mem.clone());
        for (slot, region) in mem.iter().enumerate() {
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mapping of `mem`, a clone of which the VM state now
            // holds: it is released only after the VM fd is closed and every vCPU fd made by
            // `create_vcpu` is gone (field order of `VmState` and `VmVcpuFd`), so no vCPU can run
            // against this address once it is unmapped.
            unsafe { self.state.fd.set_user_memory_region(region_desc) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// Routes writes to `evt` to the guest interrupt line `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.state
            .fd
            .register_irqfd(evt, gsi)
            .map_err(kvm_err("KVM_IRQFD"))
    }

    /// Makes a 4-byte guest write of `datamatch` to MMIO address `addr` signal `evt` inside KVM,
    /// without an exit to the vCPU thread (virtio queue notifications).
    pub fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), VmError> {
        self.state
            .fd
            .register_ioevent(evt, &kvm_ioctls::IoEventAddress::Mmio(addr), datamatch)
            .map_err(kvm_err("KVM_IOEVENTFD"))
    }

    /// Whether the host can give the guest a TSC-deadline timer.
    pub fn has_tsc_deadline(&self) -> bool {
        self.state.kvm.check_extension(Cap::TscDeadlineTimer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, MemoryBacking};

    /// Whether the memfd mapping of guest RAM that started at `addr` is still mapped.
    fn mapped(addr: u64) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = format!("{addr:x}-");
        maps.lines()
            .any(|l| l.starts_with(&start) && l.contains("husk-guest-ram"))
    }

    fn kvm_usable() -> bool {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: no /dev/kvm on this host");
            return false;
        }
        true
    }

    #[test]
    fn guest_memory_outlives_the_vm_fd_and_every_vcpu_fd() {
        if !kvm_usable() {
            return;
        }
        let mem = create_guest_memory(64 << 20, MemoryBacking::Memfd).unwrap();
        let addr = mem.iter().next().unwrap().as_ptr() as u64;
        let vm = Vm::new().unwrap();
        vm.register_memory(&mem).unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        assert!(mapped(addr));
        // An early return in the builder drops its locals in reverse order: the memory first.
        drop(mem);
        assert!(mapped(addr), "the VM keeps the memory it registered");
        // Then the VM, with a vCPU (a thread left behind in KVM_RUN) still holding its fd.
        drop(vm);
        assert!(mapped(addr), "a vCPU fd keeps the VM and its memory");
        assert!(vcpu.get_regs().is_ok(), "the vCPU fd still works");
        drop(vcpu);
        assert!(!mapped(addr), "released once nothing can run the guest");
    }

    #[test]
    fn a_vm_without_vcpus_releases_its_memory_when_dropped() {
        if !kvm_usable() {
            return;
        }
        let mem = create_guest_memory(64 << 20, MemoryBacking::Memfd).unwrap();
        let addr = mem.iter().next().unwrap().as_ptr() as u64;
        let vm = Vm::new().unwrap();
        vm.register_memory(&mem).unwrap();
        drop(vm);
        assert!(mapped(addr), "the caller's clone still maps it");
        drop(mem);
        assert!(!mapped(addr));
    }
}
